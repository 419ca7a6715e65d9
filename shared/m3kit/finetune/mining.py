"""Hard-negative mining with the current model (dense, sparse or fused ranking).

For each query the corpus is ranked by the model being fine-tuned; negatives are sampled
(seeded) from a window of ranks, by default 10-100 as in FlagEmbedding's ``hn_mine``
(the top ranks are skipped because they often hold unlabelled positives). A negative is
never one of the query's positives and never repeated.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Sequence

import numpy as np

from m3kit.encoder import M3Encoder
from m3kit.finetune.data import TrainingExample
from m3kit.finetune.evaluate import score_matrix
from m3kit.outputs import Head
from m3kit.scoring import reciprocal_rank_fusion

__all__ = ["MiningScore", "mine_hard_negatives"]

logger = logging.getLogger(__name__)


class MiningScore(str, enum.Enum):
    """How the corpus is ranked for mining."""

    DENSE = "dense"
    SPARSE = "sparse"
    FUSED = "fused"  # reciprocal rank fusion of the dense and sparse rankings


def _rankings(
    encoder: M3Encoder, queries: list[str], corpus: list[str], score: MiningScore, depth: int
) -> list[list[int]]:
    heads = {
        MiningScore.DENSE: [Head.DENSE],
        MiningScore.SPARSE: [Head.SPARSE],
        MiningScore.FUSED: [Head.DENSE, Head.SPARSE],
    }[score]
    docs = encoder.encode(corpus, heads=heads)
    qs = encoder.encode(queries, heads=heads, query=True)
    per_head = []
    for head in heads:
        matrix = score_matrix(qs, docs, head)
        per_head.append(np.argsort(-matrix, axis=1, kind="stable")[:, :depth])
    if len(per_head) == 1:
        return [row.tolist() for row in per_head[0]]
    fused = []
    for i in range(len(queries)):
        runs = [[str(j) for j in ranking[i]] for ranking in per_head]
        scores = reciprocal_rank_fusion(runs)
        fused.append([int(d) for d in sorted(scores, key=lambda d: -scores[d])[:depth]])
    return fused


def mine_hard_negatives(
    encoder: M3Encoder,
    examples: Sequence[TrainingExample],
    corpus: Sequence[str] | None = None,
    *,
    num_negatives: int = 7,
    rank_range: tuple[int, int] = (10, 100),
    score: MiningScore | str = MiningScore.DENSE,
    seed: int = 0,
) -> list[TrainingExample]:
    """Replace each example's negatives with ones mined from the model's own ranking.

    Args:
        encoder: The model to mine with (usually the start checkpoint of fine-tuning).
        examples: Queries with their positives (existing negatives are replaced).
        corpus: Candidate passages (default: every positive and negative of ``examples``).
        num_negatives: Negatives per query.
        rank_range: ``(start, end)`` 0-based ranks to sample from, end excluded.
        score: Ranking used: dense, sparse or fused (RRF of both).
        seed: Seeds the sampling.

    Returns:
        New examples, in order. A query whose window holds fewer than ``num_negatives``
        usable passages gets fewer (counted in a warning).
    """
    start, end = rank_range
    if not 0 <= start < end:
        raise ValueError(f"rank_range must be (start, end) with 0 <= start < end, got {rank_range}")
    if num_negatives < 1:
        raise ValueError("num_negatives must be >= 1")
    if not examples:
        return []
    if corpus is None:
        corpus = list(dict.fromkeys(t for ex in examples for t in (*ex.pos, *ex.neg)))
    texts = list(dict.fromkeys(corpus))  # dedupe, keep order
    if not texts:
        raise ValueError("the corpus to mine from is empty")
    rankings = _rankings(
        encoder, [ex.query for ex in examples], texts, MiningScore(score), min(end, len(texts))
    )
    rng = random.Random(seed)
    out: list[TrainingExample] = []
    short = 0
    for ex, ranking in zip(examples, rankings, strict=True):
        positives = set(ex.pos)
        window = [texts[j] for j in ranking[start:end] if texts[j] not in positives]
        window = list(dict.fromkeys(window))
        negs = rng.sample(window, min(num_negatives, len(window)))
        short += len(negs) < num_negatives
        out.append(TrainingExample(ex.query, ex.pos, tuple(negs)))
    if short:
        logger.warning(
            "%d of %d queries got fewer than %d negatives (ranks %d-%d of a %d-passage corpus)",
            short,
            len(examples),
            num_negatives,
            start,
            end,
            len(texts),
        )
    return out
