"""The ``m3`` calibration grid ranks a query's candidates exactly as a search with the saved
weights does (one code path: weights divided by the sum of those of the heads that score)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from m3kit.evaluation import ndcg_at_k
from m3kit.outputs import Head, SparseVector
from m3kit.store.calibration import _grid
from m3kit.store.calibration_task import CalibrationTask
from m3kit.store.plan import RawHit, Stage
from m3kit.store.query import QueryOptions
from m3kit.store.schema import CollectionSchema
from m3kit.store.stock_record import Recheck
from m3kit.store.store_reads import StoreReads
from m3kit.store.store_search import StoreSearch

#: Exact per-head scores, as Qdrant would return them. Under the grid's (0.2, 0.7, 0.1) both
#: candidates sum to 0.351 (to 9 digits), a tie ordered by id; a search divides the weights
#: by their float sum 0.9999999999999999, which tips "b" to 0.351000001, first.
HEADS = {
    "dense": {"a": 0.63, "b": 0.6300000025},
    "sparse": {"a": 0.25, "b": 0.25},
    "colbert": {"a": 0.5, "b": 0.5},  # one query token: Qdrant's MaxSim sum is the mean
}


class _FixedScores:
    """A storage backend answering the ``m3`` plan's queries from :data:`HEADS`."""

    def query_batch(self, stages: Sequence[Stage], *, with_payload: bool) -> list[list[RawHit]]:
        out = []
        for stage in stages:
            assert not isinstance(stage.query, str)  # nearest on a vector, no fusion
            scores: Mapping[str, float] = HEADS[stage.query.using]  # type: ignore[union-attr]
            hits = sorted((RawHit(i, s) for i, s in scores.items()), key=lambda h: -h.score)
            out.append(hits[: stage.limit])
        return out

    def retrieve(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {i: {} for i in ids}


class _Store(StoreSearch, StoreReads):  # M3Store's search and read bases
    def __init__(self) -> None:
        self._backend = _FixedScores()  # type: ignore[assignment]
        self.schema = CollectionSchema(dense_dim=2, colbert_dim=2, sparse=True)
        self.query_options = QueryOptions()
        self._record_recheck = Recheck()


def test_m3_grid_measures_the_ranking_a_search_returns() -> None:
    weights = (0.2, 0.7, 0.1)  # a point of weight_grid(0.1, 3) whose float sum is not 1
    vectors = {
        "dense": np.array([1.0, 0.0], dtype=np.float32),
        "sparse": SparseVector.from_mapping({1: 1.0}),
        "colbert": np.array([[1.0, 0.0]], dtype=np.float32),
    }
    store = _Store()
    searched = store.query(**vectors, k=10, fusion="m3", weights=weights)  # type: ignore[arg-type]
    assert [(h.id, h.score) for h in searched] == [("b", 0.351000001), ("a", 0.351)]
    queries = SimpleNamespace(heads=frozenset(Head), **{name: [v] for name, v in vectors.items()})
    task = CalibrationTask(store, queries, ("q",), {"a": "a", "b": "b"}, {"q": {"b": 1.0}})  # type: ignore[arg-type]
    scores: dict[str, float] = {}
    ((settings, measured),) = _grid(task, [weights], True, 50, None, scores, "all heads", False)
    assert settings.weights == weights
    # the grid used to rank the tie by id ("a" first: nDCG 0.63) where the search puts "b" first
    assert measured == ndcg_at_k([h.doc_id for h in searched], {"b": 1.0}, 10) == 1.0
    # the per-head scores rank as the search does, scores too
    per_head = store.head_scores(**vectors, candidates=50)  # type: ignore[arg-type]
    assert per_head.rank(weights) == [(h.id, h.score) for h in searched]
