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

Optional terms beyond FlagEmbedding's recipe (all off in :meth:`LossConfig.flagembedding`):
per-head temperatures, a symmetric passage -> query InfoNCE term per head (as
sentence-transformers' ``MultipleNegativesSymmetricRankingLoss``) and false-negative
filtering (candidates scoring within a margin of the positive are not negatives).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from m3kit.outputs import ALL_HEADS, Head

__all__ = [
    "LossBreakdown",
    "LossConfig",
    "colbert_scores",
    "dense_scores",
    "false_negative_mask",
    "info_nce",
    "m3_loss",
    "reverse_info_nce",
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
        sparse_temperature: Temperature of the sparse head's terms (default ``temperature``).
        colbert_temperature: Temperature of the ColBERT head's terms (default ``temperature``).
        symmetric: Average each head's query -> passage InfoNCE with the passage -> query
            term (:func:`reverse_info_nce`).
        false_negative_margin: Exclude every candidate whose score (dense head, detached)
            is above ``positive - margin`` (:func:`false_negative_mask`); ``None``: off.
    """

    heads: frozenset[Head] = frozenset({Head.DENSE, Head.SPARSE, Head.COLBERT})
    temperature: float = 0.02
    ensemble_weights: tuple[float, float, float] = (1.0, 0.3, 1.0)
    self_distill: bool = True
    sparse_loss_weight: float = 0.1
    sparse_temperature: float | None = None
    colbert_temperature: float | None = None
    symmetric: bool = False
    false_negative_margin: float | None = None

    def __post_init__(self) -> None:
        if not self.heads:
            raise ValueError("train at least one head")
        for name in ("temperature", "sparse_temperature", "colbert_temperature"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        head_names = sorted(h.value for h in self.heads)
        for head, name in (
            (Head.SPARSE, "sparse_temperature"),
            (Head.COLBERT, "colbert_temperature"),
        ):
            if getattr(self, name) is not None and head not in self.heads:
                # no loss term would read it: the run would train as if it were not given
                raise ValueError(
                    f"{name} is the {head.value} head's temperature, which is not trained here "
                    f"(heads {head_names}): train the {head.value} head, or leave {name} None"
                )
        if len(self.ensemble_weights) != 3:
            raise ValueError("ensemble_weights are (dense, sparse, colbert)")
        if not all(math.isfinite(w) and w >= 0 for w in self.ensemble_weights):
            # a negative weight trains the ensemble (and what it distils) against that head
            raise ValueError(
                f"ensemble_weights must be finite numbers >= 0, got {self.ensemble_weights}"
            )
        order = (Head.DENSE, Head.SPARSE, Head.COLBERT)
        trained = [w for h, w in zip(order, self.ensemble_weights, strict=True) if h in self.heads]
        if len(trained) > 1 and not any(w > 0 for w in trained):
            raise ValueError(
                f"ensemble_weights {self.ensemble_weights} weigh every trained head 0: the "
                "ensemble score would be 0 for every candidate (a constant ensemble term and "
                "uniform self-distillation targets); give a trained head a positive weight"
            )
        if self.false_negative_margin is not None and self.false_negative_margin < 0:
            raise ValueError(
                f"false_negative_margin must be >= 0 (or None), got {self.false_negative_margin}"
            )
        if self.false_negative_margin is not None and Head.DENSE not in self.heads:
            # the margin is on the dense score: without it, another head's scale would be read
            raise ValueError(
                "false_negative_margin is a margin on the dense head's score, which is not "
                f"trained here (heads {head_names}): train the dense head, or leave "
                "false_negative_margin None"
            )

    @classmethod
    def flagembedding(cls, heads: frozenset[Head] | None = None) -> LossConfig:
        """FlagEmbedding's BGE-M3 loss: temperature 0.02 for every head, no extra terms."""
        return cls(
            heads=heads if heads is not None else ALL_HEADS,
            temperature=0.02,
            ensemble_weights=(1.0, 0.3, 1.0),
            self_distill=True,
            sparse_loss_weight=0.1,
        )

    def head_temperature(self, head: Head) -> float:
        """The temperature of one head's InfoNCE and distillation terms."""
        own = {Head.SPARSE: self.sparse_temperature, Head.COLBERT: self.colbert_temperature}
        value = own.get(head)
        return self.temperature if value is None else value


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


def reverse_info_nce(
    scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """Passage -> query InfoNCE: each query's positive must pick its query among the queries.

    Row ``i`` holds the scores of query ``i``'s positive against every query of the batch;
    a query that shares that positive (or has a copy of it among its positives, per
    ``exclude``) is not a negative. For square scores with ``targets = arange`` and no
    exclusions this is ``info_nce(scores.T, targets, None, temperature)``.

    Args:
        scores: ``[nq, np]`` raw similarity scores.
        targets: ``[nq]`` column of each query's positive.
        exclude: ``[nq, np]`` candidates that are not negatives of a query (see
            :func:`info_nce`), or ``None``.
        temperature: Logits are ``scores / temperature``.
    """
    logits = scores[:, targets].T / temperature  # [positive of i, query j]
    same = targets[:, None] == targets[None, :]
    if exclude is not None:
        same = same | exclude[:, targets].T
    eye = torch.eye(len(targets), dtype=torch.bool, device=scores.device)
    logits = logits.masked_fill(same & ~eye, _MASKED)
    return F.cross_entropy(logits, torch.arange(len(targets), device=scores.device))


def false_negative_mask(scores: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """Candidates scoring above ``positive - margin``: likely unlabelled positives.

    Args:
        scores: ``[nq, np]`` scores (read detached).
        targets: ``[nq]`` column of each query's positive (never masked).
        margin: How far below the positive a negative must score to stay one.

    Returns:
        ``[nq, np]`` bool mask, True for the candidates to exclude.

    >>> s = torch.tensor([[0.8, 0.79, 0.7, 0.9]])
    >>> false_negative_mask(s, torch.tensor([0]), 0.05).tolist()
    [[False, True, False, True]]
    """
    scores = scores.detach()
    positive = scores.gather(1, targets[:, None])
    mask = scores > positive - margin
    mask[torch.arange(len(targets), device=scores.device), targets] = False
    return mask


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
        config: Which heads, temperatures, weights and extra terms.
    """
    missing = config.heads - scores.keys()
    if missing:
        raise ValueError(f"scores missing for heads {sorted(h.value for h in missing)}")
    weight = {Head.DENSE: 1.0, Head.SPARSE: config.sparse_loss_weight, Head.COLBERT: 1.0}
    order = [h for h in (Head.DENSE, Head.SPARSE, Head.COLBERT) if h in config.heads]
    terms: dict[str, float] = {}
    if config.false_negative_margin is not None:
        mask = false_negative_mask(scores[Head.DENSE], targets, config.false_negative_margin)
        terms["false_negatives"] = float(mask.sum()) / len(targets)
        exclude = mask if exclude is None else exclude | mask
    logits: dict[Head, torch.Tensor] = {}
    total = torch.zeros((), device=targets.device)
    for head in order:
        temperature = config.head_temperature(head)
        loss, logits[head] = info_nce(scores[head], targets, exclude, temperature)
        if config.symmetric:
            loss = (loss + reverse_info_nce(scores[head], targets, exclude, temperature)) / 2
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
