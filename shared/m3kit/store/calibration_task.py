"""The collection a calibration measures in: validation passages stored in memory, queries
encoded (:func:`calibration_task`), and searches of it scored (:func:`run_task`).

Split from :mod:`m3kit.store.calibration`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from qdrant_client import models

from m3kit.encode_sets import encode_corpus_and_queries
from m3kit.evaluation import check_identical_ids, judged_queries, ndcg_at_k
from m3kit.outputs import Head, M3Output
from m3kit.store.records import ChunkRecord, output_row
from m3kit.store.schema import point_id
from m3kit.store.search_settings import SearchSettings
from m3kit.store.sparse_cut import settle_sparse_cut
from m3kit.store.store import M3Store

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder
    from m3kit.store.sparse_cut import SparseCut

__all__ = ["CalibrationTask", "calibration_task", "per_query_ndcg", "query_vectors", "run_task"]

#: The cut-off of the metric calibrations maximise (nDCG@10).
K = 10


@dataclass(frozen=True)
class CalibrationTask:
    """A validation set stored in an in-memory collection, its queries encoded (uncut: the
    store cuts them when it searches, as it cut the passages it stored). ``left_out``: for a
    query whose id is a passage's, that passage's point id, which its searches leave out."""

    store: M3Store
    queries: M3Output
    qids: tuple[str, ...]
    doc_of: dict[str, str]  # point id -> passage id
    qrels: Mapping[str, Mapping[str, float]]
    left_out: Mapping[str, str] = field(default_factory=dict)  # query id -> point id


@contextmanager
def calibration_task(
    encoder: M3Encoder,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, float]],
    max_length: int | None,
    show_progress: bool,
    sparse_cut: SparseCut | None = None,
    ignore_identical_ids: bool = False,
) -> Iterator[CalibrationTask]:
    """``corpus`` written into an in-memory collection (closed on exit), the judged queries
    encoded; with ``sparse_cut``, every stored and query sparse vector is cut with it, as an
    :class:`~m3kit.store.M3Index` with that cut cuts them. With ``ignore_identical_ids``, a
    query whose id is a passage's searches as if that passage were not stored (a filter
    leaves it out, so its candidate lists are as long, of other passages), as BEIR's
    evaluator leaves such hits out (:func:`~m3kit.evaluation.drop_identical_ids`).

    Raises:
        ValueError: An empty corpus or query set, no query with a relevant passage, or
            (``ignore_identical_ids``) a query that judges its own id relevant.
    """
    if not corpus or not queries:
        raise ValueError("calibration needs a non-empty corpus and queries")
    judgements = judged_queries(qrels, among=queries)  # ids compared as strings
    judged = [q for q in queries if str(q) in judgements]
    if not judged:
        raise ValueError("no query has a relevant passage in qrels")
    if ignore_identical_ids:
        check_identical_ids(judgements)
    doc_ids = list(corpus)
    # stored under their text (ids are compared as strings, as by every metric here): int ids
    # failed as ChunkRecord ids, after the whole corpus was encoded
    by_id = {str(d): d for d in doc_ids}
    if len(by_id) != len(doc_ids):
        twins = sorted({str(d) for d in doc_ids if str(d) in by_id and by_id[str(d)] != d})
        raise ValueError(f"corpus has two ids of one text (ids are compared as strings): {twins}")
    heads = sorted(encoder.available_heads)
    docs, qs = encode_corpus_and_queries(
        encoder,
        [corpus[d] for d in doc_ids],
        [queries[q] for q in judged],
        heads=heads,
        max_length=max_length,
        show_progress=show_progress,
        query_progress=False,
    )  # uncut, as an index encodes: its store cuts what it stores and searches with
    store = M3Store.open(
        None,
        collection="calibration",
        dense_dim=encoder.dense_dim,
        colbert_dim=encoder.colbert_dim if Head.COLBERT in heads else None,
        sparse=Head.SPARSE in heads,
    )
    try:
        # as an index's store: it cuts every sparse vector it stores (upsert) and every
        # query's (query, head_scores); recorded, as an index records it (its writes check it)
        settle_sparse_cut(store, sparse_cut)
        records = [
            ChunkRecord(str(d), 0, corpus[d], {}, output_row(docs, i))
            for i, d in enumerate(doc_ids)
        ]
        store.upsert(records, show_progress=show_progress)
        doc_of = {point_id(str(d), 0): d for d in doc_ids}
        left_out = {
            q: point_id(str(q), 0) for q in judged if ignore_identical_ids and str(q) in by_id
        }
        yield CalibrationTask(
            store, qs, tuple(judged), doc_of, {q: judgements[str(q)] for q in judged}, left_out
        )
    finally:
        store.close()


def query_vectors(task: CalibrationTask, i: int, colbert: bool) -> dict[str, object]:
    """The query vectors of query ``i`` for ``M3Store.query`` / ``head_scores``, and the
    filter leaving out its own passage (:attr:`CalibrationTask.left_out`; else ``None``)."""
    q = task.queries
    heads = q.heads
    own = task.left_out.get(task.qids[i])
    return {
        "dense": q.dense[i],
        "sparse": q.sparse[i] if Head.SPARSE in heads else None,
        "colbert": q.colbert[i] if colbert and Head.COLBERT in heads else None,
        "filter": None if own is None else _without_point(own),
    }


def _without_point(point: str) -> models.Filter:
    """Every point but ``point`` (a point id)."""
    return models.Filter(must_not=[models.HasIdCondition(has_id=[point])])


def run_task(
    task: CalibrationTask, settings: SearchSettings, k: int, budget: int
) -> dict[str, list[str]]:
    """``{query id: passage ids}`` of a ``k``-deep search of every query with ``settings``."""
    colbert = settings.reranks(task.store.heads)
    run: dict[str, list[str]] = {}
    for i, qid in enumerate(task.qids):
        hits = task.store.query(
            **query_vectors(task, i, colbert),  # type: ignore[arg-type]
            k=k,
            fusion=settings.fusion,
            rerank=colbert,
            weights=settings.weights,
            candidates=settings.candidates or budget,
        )
        run[qid] = [h.doc_id for h in hits]
    return run


def per_query_ndcg(task: CalibrationTask, run: Mapping[str, Sequence[str]]) -> np.ndarray:
    """nDCG@10 of each judged query of ``run``."""
    return np.array([ndcg_at_k(run[q], task.qrels[q], K) for q in task.qids])
