"""The query half of :class:`~m3kit.store.M3Store`: hybrid search and per-head scores.

Split from :mod:`m3kit.store.store`: :class:`StoreSearch` is a base class of ``M3Store``
holding :meth:`~m3kit.store.M3Store.query`, :meth:`~m3kit.store.M3Store.head_scores` and
:meth:`~m3kit.store.M3Store.aquery`; ``M3Store.__init__`` sets the attributes they read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import numpy.typing as npt

from m3kit.outputs import SparseVector
from m3kit.scoring import DEFAULT_M3_WEIGHTS
from m3kit.store.filters import FilterLike
from m3kit.store.hits import to_hit
from m3kit.store.plan import StorageBackend
from m3kit.store.query import (
    HeadScores,
    QueryOptions,
    QueryVectors,
    check_finite_query,
    m3_head_scores,
    run_query,
)
from m3kit.store.record_check import check_hits, check_record
from m3kit.store.records import Fusion, Hit
from m3kit.store.schema import CollectionSchema
from m3kit.store.search_settings import check_count, check_score_threshold
from m3kit.store.sparse_cut import SparseCut
from m3kit.store.stock_record import Recheck

if TYPE_CHECKING:
    from m3kit.store.store import M3Store

__all__ = ["StoreSearch"]


class StoreSearch:
    """The query methods of :class:`~m3kit.store.M3Store` (its base; ``M3Store`` sets these).

    Attributes:
        schema: The collection's vectors (queries are checked against it).
        query_options: Candidate rules of the query plans.
    """

    _backend: StorageBackend
    schema: CollectionSchema
    query_options: QueryOptions
    encoder_check: Callable[[], None] | None = None  # set by M3Index (M3Store.__init__)
    sparse_cut: SparseCut | None = None  # set by M3Index (M3Store.__init__)
    writer_ids: frozenset[str] = frozenset()  # set by M3Index (M3Store.__init__)
    _own_change: int = 0  # see M3Store.__init__
    _record_recheck: Recheck  # see M3Store.__init__

    def _vectors(
        self,
        dense: npt.ArrayLike | None,
        sparse: SparseVector | None,
        colbert: npt.ArrayLike | None,
    ) -> QueryVectors:
        """The query's vectors, finite and checked against the collection, sparse cut."""
        check_finite_query(dense, sparse, colbert)  # before the cut, which drops a NaN weight
        return QueryVectors.check(self.schema, dense, self._cut(sparse), colbert)

    def _recheck_record(self) -> None:
        """Read the collection's record again once the last read is
        :data:`~m3kit.store.stock_record.RECHECK_SECONDS` old, and refuse to search a
        collection another index or process re-encodes (or recuts), or has re-encoded.

        The stamps of a search's hits (:func:`~m3kit.store.record_check.check_hits`) see a
        change only once its chunks rank: while another process's reindex was part-way (still
        running, or killed), the chunks it had re-encoded scored as noise against this store's
        queries and never ranked, so a long-lived service answered without them, silently. One
        metadata read per interval (a file read, or one request) bounds that to the interval.
        """
        if self._own_change or not self._record_recheck.due():
            return
        check_record(cast("M3Store", self), "nothing was searched")
        self._record_recheck.done()

    def _cut(self, sparse: SparseVector | None) -> SparseVector | None:
        """The query's sparse vector cut as the stored ones are (:attr:`sparse_cut`)."""
        if self.sparse_cut is None or not isinstance(sparse, SparseVector):
            return sparse  # (anything else is refused by QueryVectors.check)
        return self.sparse_cut.apply(sparse)

    def query(
        self,
        *,
        dense: npt.ArrayLike | None = None,
        sparse: SparseVector | None = None,
        colbert: npt.ArrayLike | None = None,
        k: int = 10,
        fusion: Fusion | str = Fusion.RRF,
        rerank: bool = True,
        filter: FilterLike | None = None,
        score_threshold: float | None = None,
        weights: Sequence[float] | None = None,
        candidates: int | None = None,
    ) -> list[Hit]:
        """Hybrid search (see :mod:`m3kit.store.query` for the plans).

        Args:
            dense: Query dense vector ``[d]``.
            sparse: Query sparse vector.
            colbert: Query ColBERT vectors ``[t, d]`` (used for rerank / M3).
            k: Number of hits.
            fusion: ``rrf``, ``dbsf`` or ``m3``.
            rerank: Re-score candidates with ColBERT MaxSim when ``colbert`` is given;
                ``False`` leaves ColBERT out (also out of the M3 sum).
            filter: ``{key: value}`` equality on ``metadata.<key>`` (a list means any-of)
                or a ``qdrant_client.models.Filter`` on the full payload.
            score_threshold: Minimum final score.
            weights: M3 weights ``[dense, sparse, colbert]``, divided by the sum of those of
                the heads that score (a dense-only search scores the cosine); ``None``:
                FlagEmbedding's ``[0.4, 0.2, 0.4]``. Only ``fusion="m3"`` uses them.
            candidates: Candidates per retriever (default: :attr:`query_options`' rule,
                ``max(4 * k, 50)``).

        Raises:
            EncoderChangedError: The store belongs to an :class:`~m3kit.store.M3Index` whose
                encoder changed in memory since it was opened (nothing searched).
            FingerprintMismatchError: A hit is stamped with another encoder than the store's:
                another index or process re-encoded the collection since this store was
                opened (open it again), or a writer of another encoder wrote it (nothing
                returned; :mod:`m3kit.store.record_check`); or the collection's record, read
                again once :data:`~m3kit.store.stock_record.RECHECK_SECONDS` old, names
                another encoder or a reindex under way (nothing searched).
            ValueError: ``k`` or ``candidates`` is not an int >= 1 (``True`` included);
                ``score_threshold`` is not a finite number; a query vector holds NaN or an
                infinite value (nothing searched); or a hit is stamped with, or the record
                names, another sparse cut than the store's (likewise).
        """
        if self.encoder_check is not None:
            self.encoder_check()
        q = self._vectors(dense, sparse, colbert)
        threshold = check_score_threshold(score_threshold)
        self._recheck_record()
        raw = run_query(
            self._backend,
            q,
            k=k,
            fusion=Fusion(fusion),
            rerank=rerank,
            filter=cast("M3Store", self)._filter(filter),
            score_threshold=None,  # applied below, once the stamps of every hit are checked
            weights=DEFAULT_M3_WEIGHTS if weights is None else weights,
            options=self.query_options,
            candidates=candidates,
        )
        # (a threshold that dropped every hit of a re-encoded collection hid the change: the
        # search answered "nothing found" where the same one without it raised)
        check_hits(cast("M3Store", self), [h.payload for h in raw])
        return [to_hit(h) for h in raw if threshold is None or h.score >= threshold]

    def head_scores(
        self,
        *,
        dense: npt.ArrayLike | None = None,
        sparse: SparseVector | None = None,
        colbert: npt.ArrayLike | None = None,
        candidates: int,
        filter: FilterLike | None = None,
    ) -> HeadScores:
        """Exact per-head scores of the ``m3`` plan's candidates (for calibrating weights).

        The candidates are the union of the ``candidates`` best dense and sparse points; each
        gets its exact dense, sparse and (with ``colbert``) ColBERT score, so any weights can
        rank them (:meth:`HeadScores.rank`) as ``query(fusion="m3", weights=...)`` would.

        Raises:
            ValueError: ``candidates`` is not an int >= 1 (``True`` included), or a query
                vector holds NaN or an infinite value.
        """
        check_count("candidates", candidates)
        q = self._vectors(dense, sparse, colbert)
        self._recheck_record()
        return m3_head_scores(
            self._backend,
            q,
            candidates,
            q.colbert is not None,
            cast("M3Store", self)._filter(filter),
        )

    async def aquery(
        self,
        *,
        dense: npt.ArrayLike | None = None,
        sparse: SparseVector | None = None,
        colbert: npt.ArrayLike | None = None,
        k: int = 10,
        fusion: Fusion | str = Fusion.RRF,
        rerank: bool = True,
        filter: FilterLike | None = None,
        score_threshold: float | None = None,
        weights: Sequence[float] | None = None,
        candidates: int | None = None,
    ) -> list[Hit]:
        """:meth:`query` in a worker thread."""
        return await asyncio.to_thread(
            self.query,
            dense=dense,
            sparse=sparse,
            colbert=colbert,
            k=k,
            fusion=fusion,
            rerank=rerank,
            filter=filter,
            score_threshold=score_threshold,
            weights=weights,
            candidates=candidates,
        )
