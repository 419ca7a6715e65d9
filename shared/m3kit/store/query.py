"""Hybrid query: dense + sparse prefetch, fusion (RRF, DBSF or M3), optional ColBERT rerank.

Plans, by case (``n`` = candidates per retriever, ``max(oversample * k, min_candidates)``):

* RRF / DBSF: prefetch dense and sparse (``n`` each, filtered), fuse with Qdrant's own
  fusion; with rerank every candidate (the union of both prefetches, up to ``2n``) is
  re-scored by Qdrant's ColBERT MaxSim instead (prefetch -> query ``colbert``), so the
  fusion does not change a reranked ranking. One round trip.
* M3: the union of the dense and sparse candidates is scored exactly by every head with
  exhaustive Qdrant searches restricted to those ids, then combined with FlagEmbedding's
  weighted sum ``w_d * dense + w_s * sparse + w_c * colbert``
  (:func:`m3kit.scoring.m3_score`), its weights divided by the sum of the weights of the heads
  that score (as FlagEmbedding's ``compute_score`` does: a dense-only search scores the cosine,
  not ``w_d`` x cosine). Qdrant has no weighted-sum fusion of per-head scores
  (its formula query only sees the scores of the prefetches a point was found in), so the
  sum is taken here; every term is Qdrant's exact score. Two round trips.
* One retriever only (a dense-only collection, or a query given one vector): fusion is moot;
  hits carry that retriever's score (or the rerank / M3 score). A dense query with a sparse one
  that has no terms (a text the sparse head, or the sparse cut, gives no weight) is still
  fused, as one whose terms match nothing is: its scores are on the fusion's scale, which
  ``score_threshold`` is set for.

ColBERT scores are reported as FlagEmbedding does (MaxSim averaged over query tokens, like
:func:`m3kit.scoring.maxsim`); Qdrant's MaxSim sums over query tokens, so it is divided here.
``score_threshold`` applies to the reported (final) score.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from qdrant_client import models

from m3kit.outputs import SparseVector
from m3kit.scoring import DEFAULT_M3_WEIGHTS, m3_score
from m3kit.store.filters import and_filters, ids_filter
from m3kit.store.plan import Nearest, RawHit, Stage, StorageBackend
from m3kit.store.points import non_finite_head
from m3kit.store.records import Fusion
from m3kit.store.schema import (
    COLBERT,
    DENSE,
    DOC_HASH,
    SPARSE,
    CollectionSchema,
)
from m3kit.store.search_settings import SearchSettings, check_count, check_score_threshold

__all__ = [
    "HeadScores",
    "QueryOptions",
    "QueryVectors",
    "check_finite_query",
    "m3_head_scores",
    "run_query",
]


@dataclass(frozen=True)
class QueryOptions:
    """Candidate budget of hybrid queries.

    Attributes:
        oversample: Candidates per retriever as a multiple of ``k``.
        min_candidates: Fewest candidates per retriever, whatever ``k``.
    """

    oversample: int = 4
    min_candidates: int = 50

    def __post_init__(self) -> None:
        for name in ("oversample", "min_candidates"):
            value = getattr(self, name)
            # a float (1.5) made a fractional candidate budget that each engine refused
            # mid-search in its own words; a bool would be read as 0 or 1
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
            object.__setattr__(self, name, int(value))  # numpy ints as plain ints
        if self.oversample < 1 or self.min_candidates < 1:
            raise ValueError("oversample and min_candidates must be >= 1")

    def candidates(self, k: int) -> int:
        return max(self.oversample * k, self.min_candidates, k)

    def per_retriever(self, k: int, candidates: int | None = None) -> int:
        """Candidates each retriever fetches for a query of ``k`` hits: ``candidates`` (at
        least ``k``) when given, else :meth:`candidates`' rule. Every plan fetches this many,
        and a calibration scores its settings with it (so they rank as a search will).

        >>> o = QueryOptions()
        >>> o.per_retriever(10), o.per_retriever(10, 3), o.per_retriever(10, 200)
        (50, 10, 200)
        """
        if candidates is not None and candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        return self.candidates(k) if candidates is None else max(candidates, k)


@dataclass(frozen=True, eq=False)
class QueryVectors:
    """Validated query vectors (one query).

    ``sparse_empty``: a sparse query was given without terms (an empty or stop-word query):
    ``sparse`` is ``None`` (nothing to search with), but the sparse head still scores, 0.
    """

    dense: npt.NDArray[np.float32] | None
    sparse: SparseVector | None
    colbert: npt.NDArray[np.float32] | None
    sparse_empty: bool = False

    @classmethod
    def check(
        cls,
        schema: CollectionSchema,
        dense: npt.ArrayLike | None,
        sparse: SparseVector | None,
        colbert: npt.ArrayLike | None,
    ) -> QueryVectors:
        """Validate shapes against the collection; raise ValueError naming the problem."""
        d = None
        if dense is not None:
            d = np.asarray(dense, dtype=np.float32)
            if d.ndim == 2 and d.shape[0] == 1:
                d = d[0]
            if d.shape != (schema.dense_dim,):
                raise ValueError(
                    f"dense query has shape {d.shape}; the collection's dense vectors have "
                    f"{schema.dense_dim} dimensions"
                )
        if sparse is not None:
            if not isinstance(sparse, SparseVector):
                raise TypeError(f"sparse query must be an m3kit SparseVector, got {type(sparse)}")
            if not schema.sparse:
                raise ValueError("this collection has no sparse vectors; query without sparse")
        c = None
        if colbert is not None:
            if schema.colbert_dim is None:
                raise ValueError("this collection has no ColBERT vectors; query without colbert")
            c = np.asarray(colbert, dtype=np.float32)
            if c.ndim != 2 or c.shape[1] != schema.colbert_dim or c.shape[0] == 0:
                raise ValueError(
                    f"colbert query has shape {c.shape}; expected [tokens >= 1, "
                    f"{schema.colbert_dim}]"
                )
        if d is None and (sparse is None or len(sparse) == 0):
            raise ValueError("give a dense query vector or a non-empty sparse one")
        empty = sparse is not None and len(sparse) == 0
        return cls(d, None if sparse is None or empty else sparse, c, sparse_empty=empty)


def check_finite_query(
    dense: npt.ArrayLike | None, sparse: SparseVector | None, colbert: npt.ArrayLike | None
) -> None:
    """Refuse NaN / inf query values, naming the head (before the sparse cut, which drops a
    NaN weight).

    An encoder gives them from an fp16 overflow or NaN weights; the embedded engine answered
    such a query with no hit, or left the head out of the scores, and qdrant-client's local mode
    with NaN scores or its own error.

    >>> check_finite_query([0.5, float("nan")], None, None)
    Traceback (most recent call last):
    ValueError: the dense query vector has NaN or infinite values: the encoder gave non-finite \
output (a checkpoint with NaN / inf weights, or an fp16 overflow: load the encoder with \
dtype='fp32' or 'bf16'); nothing was searched

    Raises:
        ValueError: A query vector holds a NaN or infinite value (in float32).
    """
    weights = sparse.values if isinstance(sparse, SparseVector) else None
    as_stored = [
        None if v is None else np.asarray(v, np.float32) for v in (dense, weights, colbert)
    ]
    name = non_finite_head(*as_stored)
    if name is not None:
        raise ValueError(
            f"the {name} query vector has NaN or infinite values: the encoder gave "
            "non-finite output (a checkpoint with NaN / inf weights, or an fp16 overflow: "
            "load the encoder with dtype='fp32' or 'bf16'); nothing was searched"
        )


def _retrievers(q: QueryVectors, n: int, flt: models.Filter | None) -> list[Stage]:
    stages = []
    if q.dense is not None:
        stages.append(Stage(n, Nearest(DENSE, q.dense), filter=flt))
    if q.sparse is not None:
        stages.append(Stage(n, Nearest(SPARSE, q.sparse), filter=flt))
    return stages


def run_query(
    backend: StorageBackend,
    q: QueryVectors,
    *,
    k: int,
    fusion: Fusion,
    rerank: bool,
    filter: models.Filter | None,
    score_threshold: float | None,
    weights: Sequence[float] = DEFAULT_M3_WEIGHTS,
    options: QueryOptions = QueryOptions(),
    candidates: int | None = None,
) -> list[RawHit]:
    """Run one hybrid query; hits best first with payloads, at most ``k``.

    Args:
        backend: The storage backend.
        q: Validated query vectors.
        k: Number of hits.
        fusion: How dense and sparse candidates are combined.
        rerank: Re-score with ColBERT MaxSim (only when ``q.colbert`` is given).
        filter: Payload filter applied to every candidate search.
        score_threshold: Drop hits scoring below this (final score).
        weights: M3 weights ``[dense, sparse, colbert]`` (``Fusion.M3`` only).
        options: Candidate budget (the rule used when ``candidates`` is ``None``).
        candidates: Candidates per retriever for this query (at least ``k`` are fetched).

    Raises:
        ValueError: ``k`` or ``candidates`` is not an int >= 1 (``True`` included),
            ``score_threshold`` is not a finite number (or ``None``), or ``weights`` is not
            three values.
    """
    check_count("k", k)
    check_count("candidates", candidates, optional=True)
    score_threshold = check_score_threshold(score_threshold)
    fusion = Fusion(fusion)
    if len(weights) != 3:
        raise ValueError(f"weights are [dense, sparse, colbert]; got {len(weights)} values")
    use_colbert = rerank and q.colbert is not None
    n = options.per_retriever(k, candidates)
    if fusion is Fusion.M3:
        hits = _m3(backend, q, k, n, use_colbert, filter, weights)
    else:
        retrievers = _retrievers(q, n, filter)
        # A few hits past k, so that equal scores straddling the k-th hit are ordered by id
        # too (below), not by the engine's internal point order.
        limit = k + _TIE_SLACK
        if use_colbert:
            assert q.colbert is not None
            # ColBERT re-scores every candidate (the union of each retriever's n). A pool cut
            # to n after fusion cut inside RRF ties (a point ranked r by dense alone ties one
            # ranked r by sparse alone), and the engine chose which tied point was reranked:
            # differently between runs of one query, and between backends.
            stage = Stage(limit, Nearest(COLBERT, q.colbert), prefetch=tuple(retrievers))
        elif len(retrievers) == 1 and not q.sparse_empty:
            stage = Stage(limit, retrievers[0].query, filter=filter)
        else:  # a term-less sparse query is fused too: its scores on the fusion's scale
            stage = Stage(limit, fusion, prefetch=tuple(retrievers))
        hits = backend.query_batch([stage], with_payload=True)[0]
        if use_colbert:
            assert q.colbert is not None
            scale = 1.0 / q.colbert.shape[0]
            hits = [RawHit(h.id, round(h.score * scale, 7), h.payload) for h in hits]
        hits = _ties_by_id(hits)
    if score_threshold is not None:
        hits = [h for h in hits if h.score >= score_threshold]
    return hits[:k]


#: Extra hits fetched past ``k`` so ties at the cut are broken by id (see ``_ties_by_id``).
_TIE_SLACK = 8


def _ties_by_id(hits: list[RawHit]) -> list[RawHit]:
    """Hits best first, equal scores by point id.

    Qdrant orders equal scores by its internal point order, which depends on write order and,
    in the embedded engine, differs between processes: RRF gives exactly equal scores to a
    point ranked (1, 2) and one ranked (2, 1). Ordering them by id makes the final order of
    equal fused scores a function of the collection's contents (the ``m3`` plan does the
    same). Ties *inside* one retriever's candidate list stay the engine's: two identical
    chunks (same vectors) take adjacent ranks in the engine's order there, so RRF gives them
    slightly different scores, and a candidate budget that cuts between them keeps the one the
    engine put first; which copy ranks first can differ between backends and write orders.

    >>> hits = [RawHit("b", 0.5), RawHit("c", 0.7), RawHit("a", 0.5)]
    >>> [h.id for h in _ties_by_id(hits)]
    ['c', 'a', 'b']
    """
    return sorted(hits, key=lambda h: (-h.score, h.id))


def _m3(
    backend: StorageBackend,
    q: QueryVectors,
    k: int,
    n: int,
    use_colbert: bool,
    flt: models.Filter | None,
    weights: Sequence[float],
) -> list[RawHit]:
    # A point's payload is fetched after it was scored and filtered: one a write replaced in
    # between came back with the new version's text and metadata (even one the filter
    # excludes) under the old version's score. Only the version scored is kept; another is
    # left out, the next best fetched in its place.
    per_head = m3_head_scores(backend, q, n, use_colbert, flt, with_versions=True)
    ranked = per_head.rank(weights)  # checks the weights even when nothing was found
    hits: list[RawHit] = []
    start = 0
    while len(hits) < k and start < len(ranked):
        batch = ranked[start : start + k - len(hits)]
        start += len(batch)
        payloads = backend.retrieve([pid for pid, _ in batch])
        hits.extend(
            RawHit(pid, score, payloads[pid])
            for pid, score in batch
            if pid in payloads and payloads[pid].get(DOC_HASH) == per_head.versions[pid]
        )
    return hits


@dataclass(frozen=True)
class HeadScores:
    """Exact per-head scores of the M3 plan's candidates (one query).

    Attributes:
        ids: The candidates: the union of the dense and sparse candidates, sorted.
        dense: Dense score per candidate (0 where the query has no dense vector).
        sparse: Sparse score per candidate (0 where a candidate shares no term).
        colbert: ColBERT score per candidate, averaged over query tokens (0 when not used).
        scoring: Which heads score the query ``(dense, sparse, colbert)``: those it has a
            vector for (a sparse query without terms scores 0, but it scores), ColBERT when
            it was used.
        versions: Each candidate's document version as scored (its ``doc_hash``;
            ``with_versions=True``; else empty).
    """

    ids: tuple[str, ...]
    dense: npt.NDArray[np.float64]
    sparse: npt.NDArray[np.float64]
    colbert: npt.NDArray[np.float64]
    scoring: tuple[bool, bool, bool] = (True, True, True)
    versions: Mapping[str, Any] = field(default_factory=dict)

    def rank(self, weights: Sequence[float]) -> list[tuple[str, float]]:
        """``(id, m3_score)`` best first (ties by id) under the ``m3`` weights ``weights``:
        the ranking and scores of ``query(fusion="m3", weights=weights)``, which this is.

        The weights are divided by the sum of those of the heads that score
        (:meth:`SearchSettings.m3_scoring_weights`): over the heads that score, an exact match
        scores 1.0 whichever heads a collection holds (ranking is unchanged; a
        ``score_threshold`` means the same on every collection). A calibration ranks its grid
        here too, so a weight setting is measured on the ranking a search with it returns (to
        the last bit: weights whose float sum is not exactly 1 shift a score by one unit of
        its 9th digit, which decides ties).

        Raises:
            ValueError: Bad weights, or every head that scores has weight 0.
        """
        wd, ws, wc = weights
        dense, sparse, colbert = self.scoring
        scoring = SearchSettings(fusion=Fusion.M3, weights=(wd, ws, wc)).m3_scoring_weights(
            dense=dense, sparse=sparse, colbert=colbert
        )
        fused = [
            m3_score(float(d), float(s), float(c), scoring)
            for d, s, c in zip(self.dense, self.sparse, self.colbert, strict=True)
        ]
        return sorted(zip(self.ids, fused, strict=True), key=lambda kv: (-kv[1], kv[0]))


def m3_head_scores(
    backend: StorageBackend,
    q: QueryVectors,
    n: int,
    use_colbert: bool,
    flt: models.Filter | None,
    *,
    with_versions: bool = False,
) -> HeadScores:
    """The M3 plan's first two round trips: candidates, then every head's exact score.

    ``with_versions``: each candidate's document version (``doc_hash``) from the second
    round trip, which scores and filters it (the version its payload must still have when
    fetched). A candidate the dense or ColBERT search there does not return (deleted, or
    changed so that the filter no longer passes it, since the first) is left out.
    """
    scoring = (
        q.dense is not None,
        q.sparse is not None or q.sparse_empty,
        use_colbert and q.colbert is not None,
    )
    found = backend.query_batch(_retrievers(q, n, flt), with_payload=False)
    ids = sorted({h.id for hits in found for h in hits})
    if not ids:
        empty = np.zeros(0)
        return HeadScores((), empty, empty, empty, scoring)
    only = and_filters(ids_filter(ids), flt)
    heads: list[tuple[str, Nearest]] = []
    if q.dense is not None:
        heads.append((DENSE, Nearest(DENSE, q.dense)))
    if q.sparse is not None:
        heads.append((SPARSE, Nearest(SPARSE, q.sparse)))
    if use_colbert and q.colbert is not None:
        heads.append((COLBERT, Nearest(COLBERT, q.colbert)))
    # the versions from one search that returns every candidate (dense, else ColBERT, else
    # the sparse one, which then found them all): reading them in every head's search cost
    # ~10 % of an m3 search, for a write landing between two heads' searches of one batch
    timed = next((i for i, (name, _) in enumerate(heads) if name != SPARSE), 0)
    scored = backend.query_batch(
        [
            Stage(
                len(ids),
                near,
                filter=only,
                exact=True,
                payload_keys=(DOC_HASH,) if i == timed else (),
            )
            for i, (_, near) in enumerate(heads)
        ],
        with_payload=with_versions,
    )
    per_head: dict[str, dict[str, float]] = {}
    versions: dict[str, Any] = {}
    for i, ((name, _), hits) in enumerate(zip(heads, scored, strict=True)):
        scale = 1.0 / q.colbert.shape[0] if name == COLBERT and q.colbert is not None else 1.0
        per_head[name] = {h.id: h.score * scale for h in hits}
        if with_versions and i == timed:
            versions = {h.id: h.payload.get(DOC_HASH) for h in hits}
    if with_versions:
        # every point holds dense and ColBERT vectors: a candidate one of those searches did
        # not return was deleted or left the filter between the heads' searches
        whole = [per_head[name] for name, _ in heads if name != SPARSE]
        ids = [pid for pid in ids if pid in versions and all(pid in got for got in whole)]

    def column(name: str) -> npt.NDArray[np.float64]:
        # A candidate absent from a head's results shares no term with the query (sparse): 0.
        got = per_head.get(name, {})
        return np.array([got.get(pid, 0.0) for pid in ids], dtype=np.float64)

    columns = (column(DENSE), column(SPARSE), column(COLBERT))
    scored_versions = {pid: versions[pid] for pid in ids} if with_versions else {}
    return HeadScores(tuple(ids), *columns, scoring, scored_versions)
