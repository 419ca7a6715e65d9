"""Pure scoring maths for M3 retrieval (numpy only, doctested).

The formulas follow BGE-M3 (Chen et al., 2024) and FlagEmbedding's ``compute_score``:
dense = dot product of normalised vectors; sparse = lexical matching, the sum over shared
tokens of the product of weights; ColBERT = MaxSim averaged over query tokens; the M3
score is the weighted sum of the three.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from m3kit.outputs import SparseVector

__all__ = [
    "DEFAULT_M3_WEIGHTS",
    "dense_score",
    "m3_score",
    "maxsim",
    "reciprocal_rank_fusion",
    "sparse_score",
]

#: BGE-M3's published weights for ``[dense, sparse, colbert]`` (its model card's
#: ``compute_score`` example); ``compute_score`` itself weighs the three equally when given none.
DEFAULT_M3_WEIGHTS: tuple[float, float, float] = (0.4, 0.2, 0.4)


def dense_score(query: npt.ArrayLike, docs: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Dot product of a query vector ``[d]`` with document vectors ``[n, d]`` (or ``[d]``).

    >>> dense_score([1.0, 0.0], [[1.0, 0.0], [0.6, 0.8]]).tolist()
    [1.0, 0.6000000238418579]
    """
    q = np.asarray(query, dtype=np.float32)
    d = np.asarray(docs, dtype=np.float32)
    return np.atleast_1d(d @ q).astype(np.float32)


def sparse_score(query: SparseVector, doc: SparseVector) -> float:
    """Lexical matching score: sum of ``w_q * w_d`` over the token ids both contain.

    >>> q = SparseVector.from_mapping({1: 0.5, 2: 1.0})
    >>> d = SparseVector.from_mapping({2: 0.5, 3: 2.0})
    >>> sparse_score(q, d)
    0.5
    >>> sparse_score(q, SparseVector.empty())
    0.0
    """
    _, qi, di = np.intersect1d(query.indices, doc.indices, assume_unique=True, return_indices=True)
    if qi.size == 0:
        return 0.0
    return float(np.dot(query.values[qi].astype(np.float64), doc.values[di].astype(np.float64)))


def maxsim(query: npt.ArrayLike, doc: npt.ArrayLike) -> float:
    """ColBERT late interaction: for each query token the best document token, averaged.

    Args:
        query: Query token vectors ``[t_q, d]``.
        doc: Document token vectors ``[t_d, d]``.

    >>> maxsim([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.6, 0.8]])
    0.9
    >>> maxsim(np.zeros((0, 2)), [[1.0, 0.0]])
    0.0
    """
    q = np.asarray(query, dtype=np.float32)
    d = np.asarray(doc, dtype=np.float32)
    if q.shape[0] == 0 or d.shape[0] == 0:
        return 0.0
    sims = q @ d.T
    return round(float(sims.max(axis=1).mean()), 7)


def m3_score(
    dense: float, sparse: float, colbert: float, weights: Sequence[float] = DEFAULT_M3_WEIGHTS
) -> float:
    """Weighted M3 fusion ``w_d * dense + w_s * sparse + w_c * colbert`` (weights not renormalised).

    >>> m3_score(0.8, 0.2, 0.6, (0.4, 0.2, 0.4))
    0.6
    """
    if len(weights) != 3:
        raise ValueError(f"M3 weights are [dense, sparse, colbert]; got {len(weights)} values")
    wd, ws, wc = (float(w) for w in weights)
    return round(wd * dense + ws * sparse + wc * colbert, 9)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], k: int = 60, weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Reciprocal rank fusion of several ranked id lists: ``sum_i w_i / (k + rank_i)``.

    Ranks start at 1. Returns ``{id: score}``; sort it for the fused ranking. An id a
    ranking lists twice counts at its first (best) rank only, as Qdrant's RRF counts a point.

    >>> fused = reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=1)
    >>> sorted(fused.items(), key=lambda kv: -kv[1])
    [('b', 0.8333333333333333), ('a', 0.5), ('c', 0.3333333333333333)]

    Raises:
        ValueError: ``k`` below 1 (``k=-1`` divided by zero at rank 1), or not one weight
            per ranking.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"RRF k must be a whole number >= 1, got {k!r}")
    if weights is not None and len(weights) != len(rankings):
        raise ValueError("give one RRF weight per ranking")
    scores: dict[str, float] = {}
    for i, ranking in enumerate(rankings):
        w = 1.0 if weights is None else float(weights[i])
        for rank, key in enumerate(dict.fromkeys(ranking), start=1):
            scores[key] = scores.get(key, 0.0) + w / (k + rank)
    return scores
