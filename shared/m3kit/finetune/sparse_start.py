"""How a new sparse head starts: fitted to the training passages' inverse document frequencies.

A dense-only start model (a sentence-transformers checkpoint) has no sparse head, so
fine-tuning gives it one: ``ReLU(Linear(hidden, 1))`` of each token's hidden state is the
token's weight. Started at one uniform weight (``SparseStart.UNIFORM``), the untrained head
scores plain token overlap and one epoch on a thousand rows leaves it well below BM25. Started
at each token's BM25 inverse document frequency over the training passages, regressed from
the token's hidden state (``SparseStart.IDF``, the default), it weighs rare words up and
common ones down before the first step, and training refines that. On squad_en's validation
articles (all-MiniLM-L6-v2, the library's defaults, ``benchmarks/results/finetune_sweep.md``)
the untrained head rose from 0.7277 to 0.7854 nDCG@10 and the trained one from 0.7867 to 0.8011;
the other heads moved by 0.3 points or less.

The fit is one linear layer solved in closed form (ridge least squares over the normal
equations, summed a batch at a time so memory stays at ``hidden x hidden``): written here
because no library fits a model's head to a per-token target; the inverse document frequency
is BM25's (as bm25s computes it), over the tokenizer's ids rather than words so that it is the
quantity the head can express.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3kit.model import M3Model

__all__ = ["SparseStart", "fit_sparse_head", "token_idf"]

logger = logging.getLogger(__name__)

#: Passages the fit reads at the most (a sample, seeded): the statistics settle long before
#: that, and the fit costs one forward pass over them.
MAX_FIT_PASSAGES = 2000
#: The ridge penalty on the head's weights (not its bias), against near-collinear hidden units.
RIDGE = 1.0


class SparseStart(str, enum.Enum):
    """How fine-tuning starts a new sparse head (a dense-only start model has none).

    ``IDF``: each token weighted by its inverse document frequency over the training passages,
    fitted from its hidden state (:func:`fit_sparse_head`). ``UNIFORM``: every token weighted
    0.1 (plain token overlap; what m3kit did before).
    """

    IDF = "idf"
    UNIFORM = "uniform"


def token_idf(
    documents: Iterable[Sequence[int]], ignore_ids: Iterable[int] = ()
) -> dict[int, float]:
    """BM25's inverse document frequency of every token id in ``documents`` (lists of ids):
    ``ln(1 + (N - df + 0.5) / (df + 0.5))``, ``ignore_ids`` (special tokens) left out.

    >>> idf = token_idf([[1, 2, 0], [1, 3, 0]], ignore_ids=[0])
    >>> sorted(idf), round(idf[1], 4), round(idf[2], 4)
    ([1, 2, 3], 0.1823, 0.6931)
    """
    ignored = set(ignore_ids)
    df: Counter[int] = Counter()
    n = 0
    for ids in documents:
        n += 1
        df.update({i for i in ids if i not in ignored})
    return {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}


def fit_sparse_head(
    model: M3Model,
    tokenizer: Any,
    passages: Sequence[str],
    *,
    max_length: int,
    ignore_ids: Sequence[int],
    scale: float,
    seed: int = 0,
    batch_size: int = 32,
) -> float:
    """Set ``model``'s sparse head so that each token of ``passages`` gets about
    ``scale * sqrt(idf / mean idf)``: a query token and a passage token of the same id then
    score about ``scale**2 * idf / mean idf``, BM25's weighting of a shared term, and the
    weights average ``scale`` (the uniform start's size, which keeps the first sparse logits
    moderate).

    Args:
        model: The start model, with its new heads.
        tokenizer: Its tokenizer.
        passages: The training passages (distinct; at most :data:`MAX_FIT_PASSAGES`, a seeded
            sample, are read).
        max_length: Tokens read of each passage (the training's passage length).
        ignore_ids: Special token ids (never weighted by the index either).
        scale: The mean token weight of the fit.
        seed: The sample's seed.
        batch_size: Passages per forward pass.

    Returns:
        The fit's R² over the sampled tokens (how much of the target the hidden states
        explain), also logged.

    Raises:
        ValueError: No passage has a token outside ``ignore_ids``.
    """
    import torch  # (late: the CLI reads SparseStart without loading torch)

    texts = list(dict.fromkeys(passages))
    if len(texts) > MAX_FIT_PASSAGES:
        texts = random.Random(seed).sample(texts, MAX_FIT_PASSAGES)
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    idf = token_idf(ids, ignore_ids)
    if not idf:
        raise ValueError(
            "the training passages have no token to fit the new sparse head to (give "
            "passages with text, or sparse_start='uniform')"
        )
    ignored = torch.tensor(sorted(set(ignore_ids)), dtype=torch.long)
    mean = sum(idf[t] for row in ids for t in row if t in idf) / sum(
        1 for row in ids for t in row if t in idf
    )
    target = torch.zeros(max(idf) + 1, dtype=torch.float64)
    for t, v in idf.items():
        target[t] = scale * math.sqrt(v / mean)
    heads = model.require_heads()
    width = model.hidden_size + 1  # (the bias as a constant input)
    xtx = torch.zeros(width, width, dtype=torch.float64)
    xty = torch.zeros(width, dtype=torch.float64)
    yty, ysum, count = 0.0, 0.0, 0
    training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    texts[start : start + batch_size],
                    truncation=True,
                    max_length=max_length,
                    padding=True,
                    return_tensors="pt",
                )
                input_ids, mask = batch["input_ids"], batch["attention_mask"]
                hidden = model.backbone(
                    input_ids=input_ids.to(device), attention_mask=mask.to(device), return_dict=True
                ).last_hidden_state
                keep = mask.bool() & ~torch.isin(input_ids, ignored)
                x = hidden[keep.to(device)].to(torch.float64).cpu()
                x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
                y = target[input_ids[keep]]
                xtx += x.T @ x
                xty += x.T @ y
                yty += float(y @ y)
                ysum += float(y.sum())
                count += len(y)
    finally:
        model.train(training)
    penalty = torch.eye(width, dtype=torch.float64) * RIDGE
    penalty[-1, -1] = 0.0  # (the bias is not penalised)
    w = torch.linalg.solve(xtx + penalty, xty)
    sse = yty - 2 * float(w @ xty) + float(w @ xtx @ w)
    r2 = 1.0 - sse / max(yty - ysum * ysum / count, 1e-12)
    with torch.no_grad():
        heads.sparse_linear.weight.copy_(w[:-1].to(heads.sparse_linear.weight)[None, :])
        heads.sparse_linear.bias.fill_(float(w[-1]))
    logger.info(
        "new sparse head fitted to the inverse document frequencies of %d passage(s) "
        "(%d tokens, R² %.3f)",
        len(texts),
        count,
        r2,
    )
    return r2
