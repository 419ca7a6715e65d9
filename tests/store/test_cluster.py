"""Cluster settings reach the server where the collection is created; writes go in parallel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from m3kit.errors import SchemaMismatchError
from m3kit.outputs import Head, M3Output
from m3kit.store import (
    ChunkRecord,
    ClusterSettings,
    CollectionSchema,
    M3Store,
    Quantization,
    estimate_collection_size,
)

ARGS: dict[str, Any] = {"collection": "c", "dense_dim": 4, "colbert_dim": 3, "sparse": True}
#: The ``qdrant_recorder`` fixture (tests/conftest.py): url, requests, state.
Server = tuple[str, list[tuple[str, str, Any]], dict[str, Any]]


def _record(i: int) -> ChunkRecord:
    from m3kit.outputs import SparseVector

    vectors = M3Output(
        heads=frozenset({Head.DENSE, Head.SPARSE, Head.COLBERT}),
        token_counts=(2,),
        _dense=np.eye(4, dtype=np.float32)[i % 4][None, :],
        _sparse=(SparseVector(np.array([i]), np.array([1.0], dtype=np.float32)),),
        _colbert=(np.ones((2, 3), dtype=np.float32) / np.sqrt(3),),
    )
    return ChunkRecord(f"d{i}", 0, f"text {i}", {"i": i}, vectors)


def test_settings_are_sent_at_creation_and_writes_overlap(
    qdrant_recorder: Server,
) -> None:
    url, requests, state = qdrant_recorder
    cluster = ClusterSettings(
        shard_number=6,
        replication_factor=2,
        write_consistency_factor=2,
        on_disk_vectors=True,
        on_disk_payload=True,
        quantization="scalar",
        write_batch_size=3,
        write_parallelism=4,
    )
    with M3Store.open(url=url, cluster=cluster, **ARGS) as store:
        (create,) = [b for m, p, b in requests if m == "PUT" and p == "/collections/c"]
        assert create["shard_number"] == 6
        assert create["replication_factor"] == 2
        assert create["write_consistency_factor"] == 2
        assert create["on_disk_payload"] is True
        assert create["vectors"]["dense"]["on_disk"] is True
        assert create["vectors"]["colbert"]["on_disk"] is True
        assert create["vectors"]["colbert"]["datatype"] == "float16"
        # the dense vector's copy only: a collection-wide one quantises ColBERT too (in RAM)
        assert create.get("quantization_config") is None
        assert create["vectors"]["dense"]["quantization_config"] == {
            "scalar": {"type": "int8", "always_ram": True}
        }
        assert create["vectors"]["colbert"].get("quantization_config") is None
        store.upsert([_record(i) for i in range(12)])
    writes = [b for m, p, b in requests if m == "PUT" and p == "/collections/c/points"]
    assert [len(b["points"]) for b in writes] == [3, 3, 3, 3]  # write_batch_size
    assert sorted(p["payload"]["doc_id"] for b in writes for p in b["points"]) == sorted(
        f"d{i}" for i in range(12)
    )
    assert state["most"] > 1  # several requests were in flight at once
    # Re-open with the same settings: no second creation. Other settings: an error naming them.
    M3Store.open(url=url, cluster=cluster, **ARGS).close()
    assert sum(1 for m, p, _ in requests if m == "PUT" and p == "/collections/c") == 1
    with pytest.raises(SchemaMismatchError, match="shard_number: collection has 6, asked 3"):
        M3Store.open(url=url, cluster=ClusterSettings(shard_number=3), **ARGS)
    with pytest.raises(SchemaMismatchError, match="quantization: collection has scalar, asked"):
        M3Store.open(url=url, cluster=ClusterSettings(quantization="binary"), **ARGS)


def test_defaults_send_nothing_new(
    qdrant_recorder: Server,
) -> None:
    url, requests, _ = qdrant_recorder
    with M3Store.open(url=url, **ARGS) as store:
        store.upsert([_record(i) for i in range(3)])
    (create,) = [b for m, p, b in requests if m == "PUT" and p == "/collections/c"]
    for key in ("shard_number", "replication_factor", "on_disk_payload", "quantization_config"):
        assert create.get(key) is None
    assert create["vectors"]["dense"].get("on_disk") is None
    # asked for on open, settings fixed at creation are errors, not silently left out
    for asked, named in (
        (ClusterSettings(quantization="scalar"), "quantization: collection has none"),
        (ClusterSettings(on_disk_vectors=True), "on_disk_vectors: collection has False"),
    ):
        with pytest.raises(SchemaMismatchError, match=named):
            M3Store.open(url=url, cluster=asked, **ARGS)


def test_bad_settings_are_errors(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="shard_number must be an integer >= 1"):
        ClusterSettings(shard_number=0)
    with pytest.raises(ValueError, match="write_consistency_factor 3 exceeds"):
        ClusterSettings(replication_factor=2, write_consistency_factor=3)
    with pytest.raises(ValueError, match="'int4' is not a valid Quantization"):
        ClusterSettings(quantization="int4")
    with pytest.raises(ValueError, match="apply to a Qdrant server"):
        M3Store.open(tmp_path, cluster=ClusterSettings(shard_number=2), **ARGS)


def test_collection_size_from_the_schema() -> None:
    m3 = CollectionSchema(dense_dim=1024, colbert_dim=1024, sparse=True)
    size = estimate_collection_size(m3, 1_000_000, colbert_tokens=256, sparse_terms=100)
    assert size.dense_bytes == 1_000_000 * 1024 * 4
    assert size.hnsw_bytes == 1_000_000 * 128
    assert size.sparse_bytes == 1_000_000 * 100 * 16
    assert size.colbert_bytes == 1_000_000 * 256 * 1024 * 2  # float16
    assert size.quantized_bytes == 0
    assert size.total_bytes == (
        size.dense_bytes + size.hnsw_bytes + size.sparse_bytes + size.colbert_bytes + 1500 * 10**6
    )
    assert size.ram_bytes == size.dense_bytes + size.colbert_bytes + size.hnsw_bytes + 16 * 10**8
    scalar = estimate_collection_size(m3, 1_000_000, quantization="scalar", on_disk_vectors=True)
    binary = estimate_collection_size(m3, 1_000_000, quantization=Quantization.BINARY)
    assert scalar.quantized_bytes == 1024 * 10**6 and binary.quantized_bytes == 128 * 10**6
    assert scalar.ram_bytes == scalar.quantized_bytes + scalar.hnsw_bytes + scalar.sparse_bytes
    dense_only = estimate_collection_size(CollectionSchema(384, None, False), 10)
    assert dense_only.colbert_bytes == dense_only.sparse_bytes == 0
    with pytest.raises(ValueError, match="chunks must be >= 0"):
        estimate_collection_size(m3, -1)


def test_settings_of_the_wrong_type_are_errors() -> None:
    # on_disk_vectors="false" was truthy: the vectors went on disk; True passed as a count
    for kw in ({"on_disk_vectors": "false"}, {"on_disk_payload": "no"}):
        with pytest.raises(ValueError, match="must be a bool"):
            ClusterSettings(**kw)
    for kw in ({"shard_number": True}, {"write_parallelism": True}):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            ClusterSettings(**kw)


@pytest.mark.parametrize("cluster", [None, ClusterSettings(write_batch_size=256)])
def test_write_requests_fit_the_servers_request_limit(
    qdrant_recorder: Server, cluster: ClusterSettings | None
) -> None:
    """A BGE-M3 chunk of 256 tokens is ~5.6 MB of JSON (its ColBERT vectors): 64 per request
    (the default; 256 with cluster settings) passed Qdrant's default 32 MiB request limit, so
    every write of such chunks to a server was refused (HTTP 413)."""
    url, requests, state = qdrant_recorder
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        colbert = rng.normal(size=(256, 1024)).astype(np.float32)
        colbert /= np.linalg.norm(colbert, axis=1, keepdims=True)
        vectors = M3Output(
            heads=frozenset({Head.DENSE, Head.COLBERT}),
            token_counts=(256,),
            _dense=colbert[:1].copy(),
            _colbert=(colbert,),
        )
        records.append(ChunkRecord(f"d{i}", 0, f"text {i}", {}, vectors))
    args = {**ARGS, "dense_dim": 1024, "colbert_dim": 1024, "sparse": False}
    with M3Store.open(url=url, cluster=cluster, **args) as store:
        store.upsert(records)
    writes = [
        size
        for size, (m, p, _) in zip(state["sizes"], requests, strict=True)
        if m == "PUT" and p == "/collections/c/points"
    ]
    assert len(writes) > 1 and max(writes) <= 32 * 1024 * 1024
    assert len(state["points"]) == 8


def test_a_collection_another_process_created_meanwhile_is_opened(
    qdrant_recorder: Server,
) -> None:
    """Two workers opening one new collection on a server: the second one's create got
    Qdrant's 409 "already exists" (after its own check found none), a StoreConnectionError;
    it now opens the collection, its schema checked as any existing one's."""
    url, requests, state = qdrant_recorder
    M3Store.open(url=url, **ARGS).close()
    state["stale_exists"] = 1  # the second worker asked before the first one's create
    with M3Store.open(url=url, **ARGS) as store:
        store.upsert([_record(0)])
        assert store.count() == 1
    creates = [m for m, p, _ in requests if m == "PUT" and p == "/collections/c"]
    assert len(creates) == 2  # the refused one included
    state["stale_exists"] = 1
    with pytest.raises(SchemaMismatchError):
        M3Store.open(url=url, **{**ARGS, "dense_dim": 8})
