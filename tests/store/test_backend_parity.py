"""The two local engines answer every query plan alike.

The embedded engine (qdrant-edge, Qdrant's Rust engine, as on a server) and qdrant-client's
local mode hold the same points and must return the same hits in the same order with the same
scores, for every fusion (RRF, DBSF, the ``m3`` weighted sum), with and without ColBERT,
dense-only, sparse-only and term-less sparse queries, filters, ``k`` beyond the matching
points and a candidate budget below ``k``. ColBERT vectors are float16 on the embedded engine
and float32 in local mode (README), so plans that score with ColBERT agree to ~1e-3 and may
swap hits whose scores are that close.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from m3kit.outputs import Head, M3Output, SparseVector
from m3kit.store import Backend, ChunkRecord, Hit, M3Index, M3Store

#: Random (tie-free) points; 3 groups, ``n`` counts them.
POINTS = 90
#: (fusion, rerank, weights) of each plan.
PLANS: list[tuple[str, bool, tuple[float, float, float] | None]] = [
    ("rrf", False, None),
    ("rrf", True, None),
    ("dbsf", False, None),
    ("dbsf", True, None),
    ("m3", False, None),
    ("m3", True, None),
    ("m3", True, (0.6, 0.3, 0.1)),
]
FILTERS: list[Any] = [
    None,
    {"group": 1},
    models.Filter(
        must=[models.FieldCondition(key="metadata.n", range=models.Range(gte=10, lt=25))]
    ),
]
#: The ``n`` each filter of :data:`FILTERS` keeps.
KEPT = [set(range(POINTS)), set(range(1, POINTS, 3)), set(range(10, 25))]


def _row(rng: np.random.Generator, dim: int) -> M3Output:
    def unit(shape: tuple[int, ...]) -> np.ndarray:
        v = rng.normal(size=shape).astype(np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    terms = np.sort(rng.choice(200, size=10, replace=False)).astype(np.int64)
    return M3Output(
        heads=frozenset(Head),
        token_counts=(8,),
        _dense=unit((1, dim)),
        _sparse=(SparseVector(terms, rng.uniform(0.05, 1.0, size=10).astype(np.float32)),),
        _colbert=(unit((int(rng.integers(3, 10)), dim)),),
    )


@pytest.fixture
def stores(tiny_encoder: Any, tmp_path: Path) -> Any:
    assert tiny_encoder.dense_dim == tiny_encoder.colbert_dim
    rng = np.random.default_rng(23)
    records = [
        ChunkRecord(f"doc{i:02d}", 0, f"text {i}", {"group": i % 3, "n": i}, _row(rng, 32))
        for i in range(POINTS)
    ]
    opened = {
        "edge": M3Index.open(tiny_encoder, tmp_path / "edge", backend=Backend.EDGE),
        "client": M3Index.open(tiny_encoder, None, backend=Backend.CLIENT),
    }
    for index in opened.values():
        index.store.upsert(records)
    queries = [_row(rng, 32) for _ in range(2)]
    yield {name: index.store for name, index in opened.items()}, queries
    for index in opened.values():
        index.close()


def _assert_same(edge: list[Hit], client: list[Hit], tol: float, case: object) -> None:
    assert len(edge) == len(client), case
    e = {h.id: h for h in edge}
    c = {h.id: h for h in client}
    assert len(e) == len(edge), ("a point twice", case)
    for pid in e.keys() & c.keys():
        assert e[pid].score == pytest.approx(c[pid].score, abs=tol), case
        assert (e[pid].doc_id, e[pid].metadata) == (c[pid].doc_id, c[pid].metadata), case
    if not edge:
        return
    cut = min(edge[-1].score, client[-1].score)
    for pid in e.keys() ^ c.keys():  # only a near-tie at the k-th hit may differ
        only = e.get(pid) or c[pid]
        assert only.score <= cut + tol, case
    for a, b in zip(edge, client, strict=True):  # swaps only between near-equal scores
        assert a.id == b.id or abs(a.score - b.score) <= tol, case


def test_edge_and_client_local_mode_answer_alike(stores: Any) -> None:
    by_name, queries = stores
    edge: M3Store = by_name["edge"]
    client: M3Store = by_name["client"]
    no_terms = SparseVector(np.zeros(0, np.int64), np.zeros(0, np.float32))
    for q, (fusion, rerank, weights), (flt, kept), k, candidates in itertools.product(
        queries, PLANS, zip(FILTERS, KEPT, strict=True), (5, 40), (None, 3)
    ):
        vector_sets = {
            "dense+sparse": {"dense": q.dense[0], "sparse": q.sparse[0]},
            "dense": {"dense": q.dense[0]},
            "sparse": {"sparse": q.sparse[0]},
            "dense+no terms": {"dense": q.dense[0], "sparse": no_terms},
        }
        for label, vectors in vector_sets.items():
            args = {
                **vectors,
                "colbert": q.colbert[0],
                "k": k,
                "fusion": fusion,
                "rerank": rerank,
                "filter": flt,
                "weights": weights,
                "candidates": candidates,
            }
            case = (label, fusion, rerank, weights, flt, k, candidates)
            got_edge = edge.query(**args)
            got_client = client.query(**args)
            assert got_edge, case
            # no filtered-out point comes back through fusion or rerank; with a dense query
            # every kept point is a candidate, so k past them returns them all
            assert {h.metadata["n"] for h in got_edge} <= kept, case
            if "dense" in vectors:
                assert len(got_edge) == min(k, len(kept)), case
            _assert_same(got_edge, got_client, 2e-3 if rerank else 1e-5, case)


def test_zero_sparse_weights_are_dropped_by_both_engines(tmp_path: Path) -> None:
    """A hand-built sparse vector with zero weights: qdrant-client's local mode matched (score
    0) the points and queries the embedded engine left out, so the two returned other hits."""
    sv = SparseVector.from_mapping
    docs = {"zero": sv({3: 0.0}), "mixed": sv({3: 0.0, 5: 0.2}), "plain": sv({5: 0.5})}
    got = {}
    for backend in (Backend.EDGE, Backend.CLIENT):
        args = {"collection": "c", "dense_dim": 4, "colbert_dim": None, "sparse": True}
        with M3Store.open(tmp_path / backend.value, backend=backend, **args) as s:
            s.upsert(
                [
                    ChunkRecord(
                        name,
                        0,
                        name,
                        {},
                        M3Output(
                            heads=frozenset({Head.DENSE, Head.SPARSE}),
                            token_counts=(1,),
                            _dense=np.eye(4, dtype=np.float32)[:1],
                            _sparse=(vec,),
                        ),
                    )
                    for name, vec in docs.items()
                ]
            )
            got[backend] = [
                sorted((h.doc_id, round(h.score, 4)) for h in s.query(sparse=q, k=10))
                for q in (sv({3: 1.0}), sv({3: 0.0, 5: 1.0}))
            ]
    assert got[Backend.EDGE] == got[Backend.CLIENT] == [[], [("mixed", 0.2), ("plain", 0.5)]]
