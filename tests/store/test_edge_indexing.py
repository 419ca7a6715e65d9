"""The embedded engine builds its indexes from the collection's own state, across opens.

Each open writes fewer points than ``index_after``; the shard's own counters (read with
qdrant-edge directly, not through m3kit) show that the collection ends up indexed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from m3kit.outputs import Head, M3Output, SparseVector
from m3kit.store import Backend, ChunkRecord, Fusion, M3Store

DENSE, COLBERT = 16, 8
ARGS = {"collection": "grow", "dense_dim": DENSE, "colbert_dim": COLBERT, "sparse": True}


def _records(start: int, n: int) -> list[ChunkRecord]:
    out = []
    for i in range(start, start + n):
        rng = np.random.default_rng(i)  # per point: the same vectors from any call
        dense = rng.standard_normal((1, DENSE)).astype(np.float32)
        colbert = rng.standard_normal((3, COLBERT)).astype(np.float32)
        vectors = M3Output(
            heads=frozenset(Head),
            token_counts=(4,),
            _dense=dense / np.linalg.norm(dense),
            _sparse=(SparseVector(np.array([i % 7, 100 + i]), np.array([0.5, 0.25])),),
            _colbert=(colbert / np.linalg.norm(colbert, axis=1, keepdims=True),),
        )
        out.append(ChunkRecord(f"doc{i}", 0, f"text {i}", {"n": i}, vectors))
    return out


def _engine_info(path: Path) -> qe.ShardInfo:
    shard = qe.EdgeShard.load(str(path / ARGS["collection"]))
    try:
        return shard.info()
    finally:
        shard.close()


def test_small_runs_end_up_indexed(tmp_path: Path) -> None:
    per_run, index_after = 30, 50
    for run in range(2):  # 30 points (under the threshold), then 60 (a pass)
        with M3Store.open(tmp_path, backend=Backend.EDGE, index_after=index_after, **ARGS) as s:
            s.upsert(_records(run * per_run, per_run))
        info = _engine_info(tmp_path)
        assert info.points_count == (run + 1) * per_run
        if run == 0:  # only the sparse vectors count as indexed in the plain segment
            assert info.indexed_vectors_count == per_run
    # Every dense, sparse and ColBERT vector is in an indexed segment: nothing plain is left,
    # although no single open wrote index_after points.
    assert info.indexed_vectors_count == 3 * 2 * per_run
    assert info.segments_count >= 2  # the indexed segment + a fresh appendable one
    with M3Store.open(tmp_path, backend=Backend.EDGE, **ARGS) as s:
        rec = _records(37, 1)[0]
        hits = s.query(
            dense=rec.vectors.dense[0],
            sparse=rec.vectors.sparse[0],
            colbert=rec.vectors.colbert[0],
            k=1,
            fusion=Fusion.RRF,
        )
        assert hits[0].doc_id == "doc37"


def test_unindexed_points_follow_the_engine(tmp_path: Path) -> None:
    with M3Store.open(tmp_path, backend=Backend.EDGE, index_after=10_000, **ARGS) as s:
        backend = s._backend
        s.upsert(_records(0, 40))
        assert backend.unindexed_points() == 40  # type: ignore[attr-defined]
        s.optimize()
        assert backend.unindexed_points() == 0  # type: ignore[attr-defined]
        s.upsert(_records(40, 25))
        assert backend.unindexed_points() == 25  # type: ignore[attr-defined]
    info = _engine_info(tmp_path)
    assert (info.points_count, info.indexed_vectors_count) == (65, 3 * 40 + 25)


def test_index_after_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="index_after must be a positive integer"):
        M3Store.open(tmp_path, backend=Backend.EDGE, index_after=0, **ARGS)
    with pytest.raises(ValueError, match="embedded engine"):
        M3Store.open(":memory:", backend=Backend.CLIENT, index_after=10, **ARGS)
