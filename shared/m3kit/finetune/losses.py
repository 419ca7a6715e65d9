"""Unified M3 fine-tuning loss (dense + sparse + ColBERT), after BGE-M3 / FlagEmbedding.

Follows FlagEmbedding's ``EncoderOnlyEmbedderM3Model`` (``finetune/embedder/encoder_only/m3``):
InfoNCE over in-batch and hard negatives for each head, the ensemble score
``w_d * dense + w_s * sparse + w_c * colbert`` with its own InfoNCE term, and
self-distillation (the softmax of the detached ensemble scores as soft targets for each head).
With all three heads the total is ``(L_d + L_ens + 0.1 L_s + L_c) / 4``, plus
``(KD_d + 0.1 KD_s + KD_c) / 3`` and halved when self-distillation is on; the same formula
restricted to the heads being trained otherwise.

Two deliberate differences, both exact:

* The sparse score is computed over the batch's own token ids (a compact vocabulary of
  the ids that occur) instead of a ``[b, t, vocab]`` scatter: ``max`` per id per text, then
  a dot product. Same value and gradient (to the max token), memory ``O(b * ids_in_batch)``.
* ColBERT MaxSim ignores padded passage tokens (FlagEmbedding lets a zero padding vector
  win the max when every real similarity is negative); the query side divides by the
  number of real query tokens exactly like FlagEmbedding (``q_mask[:, 1:].sum()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from m3kit.outputs import Head

__all__ = [
    "LossBreakdown",
    "LossConfig",
    "colbert_scores",
    "dense_scores",
    "info_nce",
    "m3_loss",
    "self_distillation",
    "sparse_scores",
]

_MASKED = -1e4  # after division by the temperature: exp() underflows to exactly 0


@dataclass(frozen=True)
class LossConfig:
    """Loss settings.

    Attributes:
        heads: Heads that get a loss term (a subset of dense, sparse, colbert).
        temperature: Softmax temperature (BGE-M3 fine-tuning uses 0.02).
        ensemble_weights: ``(w_d, w_s, w_c)`` of the ensemble score (FlagEmbedding: 1, 0.3, 1).
        self_distill: Add the self-distillation terms (needs at least two heads).
        sparse_loss_weight: Weight of the sparse InfoNCE and distillation terms (0.1).
    """

    heads: frozenset[Head] = frozenset({Head.DENSE, Head.SPARSE, Head.COLBERT})
    temperature: float = 0.02
    ensemble_weights: tuple[float, float, float] = (1.0, 0.3, 1.0)
    self_distill: bool = True
    sparse_loss_weight: float = 0.1

    def __post_init__(self) -> None:
        if not self.heads:
            raise ValueError("train at least one head")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if len(self.ensemble_weights) != 3:
            raise ValueError("ensemble_weights are (dense, sparse, colbert)")


@dataclass(frozen=True)
class LossBreakdown:
    """The total loss (differentiable) and each term as a float, for logging."""

    total: torch.Tensor
    terms: dict[str, float]


def dense_scores(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``[nq, d] x [np, d] -> [nq, np]`` dot products (vectors already normalised)."""
    return q @ p.T


def sparse_scores(
    q_ids: torch.Tensor,
    q_weights: torch.Tensor,
    p_ids: torch.Tensor,
    p_weights: torch.Tensor,
    ignore_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Lexical matching scores ``[nq, np]`` from per-token weights.

    Each text's sparse vector keeps, per token id, the largest weight of that id (special
    tokens in ``ignore_ids`` and padding, whose weight is 0, drop out); the score is the
    dot product over shared ids. Equal to FlagEmbedding's scatter-max over the vocabulary,
    computed over the ids present in the batch.

    >>> ids_q = torch.tensor([[0, 5, 7, 5]]); w_q = torch.tensor([[0.9, 0.2, 0.5, 0.4]])
    >>> ids_p = torch.tensor([[0, 5, 9]]); w_p = torch.tensor([[0.9, 2.0, 1.0]])
    >>> sparse_scores(ids_q, w_q, ids_p, w_p, ignore_ids=[0]).tolist()  # 0.4 * 2.0
    [[0.800000011920929]]
    """
    all_ids = torch.cat([q_ids.reshape(-1), p_ids.reshape(-1)])
    vocab, inverse = torch.unique(all_ids, return_inverse=True)
    keep = torch.ones_like(vocab, dtype=q_weights.dtype)
    if len(ignore_ids):
        keep = keep * ~torch.isin(vocab, torch.tensor(list(ignore_ids), device=vocab.device))
    q_cols = inverse[: q_ids.numel()].view_as(q_ids)
    p_cols = inverse[q_ids.numel() :].view_as(p_ids)

    def lexical(cols: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        base = torch.zeros(
            cols.shape[0], vocab.shape[0], dtype=weights.dtype, device=weights.device
        )
        return base.scatter_reduce(1, cols, weights, reduce="amax", include_self=True) * keep

    return lexical(q_cols, q_weights) @ lexical(p_cols, p_weights).T


def colbert_scores(
    q_vecs: torch.Tensor, q_mask: torch.Tensor, p_vecs: torch.Tensor, p_mask: torch.Tensor
) -> torch.Tensor:
    """MaxSim scores ``[nq, np]``: mean over query tokens of the best passage token.

    Args:
        q_vecs: ``[nq, tq, d]`` normalised query token vectors (CLS already dropped; padding 0).
        q_mask: ``[nq, tq]`` mask of those tokens.
        p_vecs: ``[np, tp, d]`` passage token vectors.
        p_mask: ``[np, tp]`` mask of those tokens.
    """
    sims = torch.einsum("qid,pjd->qipj", q_vecs, p_vecs)
    sims = sims.masked_fill(~p_mask.bool()[None, None, :, :], _MASKED)
    best = sims.max(dim=-1).values * q_mask.to(sims.dtype)[:, :, None]
    return best.sum(dim=1) / q_mask.sum(dim=1, keepdim=True).clamp(min=1).to(sims.dtype)


def info_nce(
    scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each query's positive against every other candidate.

    Args:
        scores: ``[nq, np]`` raw similarity scores.
        targets: ``[nq]`` column of each query's positive.
        exclude: ``[nq, np]`` True where a candidate must not count as a negative (another
            copy of one of the query's positives); the target column itself is never excluded.
        temperature: Logits are ``scores / temperature``.

    Returns:
        ``(loss, logits)`` with the masked, scaled logits (input of self-distillation).
    """
    logits = scores / temperature
    if exclude is not None:
        logits = logits.masked_fill(exclude, _MASKED)
    return F.cross_entropy(logits, targets), logits


def self_distillation(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """FlagEmbedding's ``kl_div`` distillation: ``-mean(sum(softmax(t) * log_softmax(s)))``."""
    targets = torch.softmax(teacher_logits.detach(), dim=-1)
    return -(torch.log_softmax(student_logits, dim=-1) * targets).sum(dim=-1).mean()


def m3_loss(
    scores: dict[Head, torch.Tensor],
    targets: torch.Tensor,
    exclude: torch.Tensor | None,
    config: LossConfig,
) -> LossBreakdown:
    """Combine per-head InfoNCE, the ensemble term and self-distillation.

    Args:
        scores: Raw ``[nq, np]`` scores of each trained head.
        targets: Column of each query's positive.
        exclude: False-negative mask (see :func:`info_nce`).
        config: Which heads, temperature, weights.
    """
    missing = config.heads - scores.keys()
    if missing:
        raise ValueError(f"scores missing for heads {sorted(h.value for h in missing)}")
    weight = {Head.DENSE: 1.0, Head.SPARSE: config.sparse_loss_weight, Head.COLBERT: 1.0}
    order = [h for h in (Head.DENSE, Head.SPARSE, Head.COLBERT) if h in config.heads]
    terms: dict[str, float] = {}
    logits: dict[Head, torch.Tensor] = {}
    total = torch.zeros((), device=targets.device)
    for head in order:
        loss, logits[head] = info_nce(scores[head], targets, exclude, config.temperature)
        terms[head.value] = float(loss.detach())
        total = total + weight[head] * loss
    n_terms = len(order)
    if len(order) > 1:
        w = dict(zip((Head.DENSE, Head.SPARSE, Head.COLBERT), config.ensemble_weights, strict=True))
        ensemble = sum(w[h] * scores[h] for h in order)
        assert isinstance(ensemble, torch.Tensor)
        ens_loss, ens_logits = info_nce(ensemble, targets, exclude, config.temperature)
        terms["ensemble"] = float(ens_loss.detach())
        total = (total + ens_loss) / (n_terms + 1)
        if config.self_distill:
            kd = sum(weight[h] * self_distillation(ens_logits, logits[h]) for h in order)
            assert isinstance(kd, torch.Tensor)
            terms["self_distill"] = float(kd.detach()) / n_terms
            total = (total + kd / n_terms) / 2
    else:
        total = total / weight[order[0]] if weight[order[0]] > 0 else total
    terms["total"] = float(total.detach())
    return LossBreakdown(total=total, terms=terms)
