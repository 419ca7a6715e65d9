"""Documents whose metadata alone changed, updated in place (:mod:`m3kit.store.metadata_updates`):
as safe as any other write.

- Many of them go in requests that fit a server's size limit (one request of 4,000 documents'
  metadata passed a 1 MiB limit: HTTP 413, ``max_request_mb`` ignored).
- A document of the same call that is refused leaves them unwritten too (they were updated
  before the encoded documents were checked).
- Another process's re-encoding of the collection refuses them, as it refuses other writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.fingerprint import encoder_fingerprint
from m3kit.outputs import Head, M3Output
from m3kit.store import ChunkRecord, M3Index, M3Store
from m3kit.store.collection_record import _read, _write
from m3kit.store.connection import ConnectionSettings
from tests import fake_qdrant


def _record(i: int) -> ChunkRecord:
    vectors = M3Output(
        heads=frozenset({Head.DENSE}),
        token_counts=(2,),
        _dense=np.eye(4, dtype=np.float32)[i % 4][None, :],
    )
    return ChunkRecord(f"r{i}", 0, f"row {i}", {"source": "/data/part.jsonl", "line": i}, vectors)


def test_many_updates_go_in_requests_under_the_servers_limit() -> None:
    n = 4000
    with fake_qdrant.fake_qdrant_server(max_request_bytes=1024 * 1024) as server:
        connection = ConnectionSettings(max_request_mb=1)
        args: dict[str, Any] = {"collection": "c", "dense_dim": 4, "colbert_dim": None}
        with M3Store.open(url=server.url, sparse=False, connection=connection, **args) as store:
            records = [_record(i) for i in range(n)]
            store.upsert(records, show_progress=False)
            stored = {r.doc_id: r for r in records}
            versions = {
                p["payload"]["doc_id"]: p["payload"]["doc_hash"]
                for p in server.state["points"].values()
            }
            before = len(server.requests)
            store.set_document_metadata(
                {
                    d: (versions[d], "new-" + versions[d], {**stored[d].metadata, "line": 0})
                    for d in stored
                }
            )
        updates = [b for m, p, b in server.requests[before:] if p.endswith("/points/batch")]
        assert len(updates) > 1
        assert max(server.state["sizes"][before:]) < 1024 * 1024


def test_a_refused_document_of_the_call_leaves_the_metadata_updates_unwritten(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    with M3Index.open(tiny_encoder, tmp_path / "db", payload_indexes={"n": "integer"}) as index:
        index.add_texts(["alpha text"], [{"n": 1}], doc_ids=["a"])
        with pytest.raises(ValueError, match="non-integer number"):
            index.add_texts(["alpha text", "beta text"], [{"n": 2}, {"n": 2.5}], doc_ids=["a", "b"])
        assert index.store.document_metadata() == {"a": {"n": 1}}
        index.add_texts(["alpha text"], [{"n": 3}], doc_ids=["a"])  # alone: updated
        assert index.store.document_metadata() == {"a": {"n": 3}}


def test_another_processs_reindex_refuses_a_metadata_update(
    tiny_encoder: M3Encoder, tmp_path: Path, path_b: Path
) -> None:
    index = M3Index.open(tiny_encoder, tmp_path / "db")
    index.add_texts(["The Rhine flows north."], [{"v": 1}], doc_ids=["d1"])
    stored, _ = _read(index.store)  # what another process's reindex=True records at its start
    assert stored is not None
    other = M3Encoder.from_pretrained(path_b, dtype="fp32")
    _write(index.store, stored, encoder_fingerprint(other))
    with pytest.raises(FingerprintMismatchError, match="re-encoding the collection"):
        index.add_texts(["The Rhine flows north."], [{"v": 2}], doc_ids=["d1"])
    assert index.store.document_metadata(["d1"]) == {"d1": {"v": 1}}
    index.close()


def test_one_lookup_serves_the_version_check_and_the_metadata_updates(
    tiny_encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the version check and the metadata-only split scrolled the same documents twice
    with M3Index.open(tiny_encoder, tmp_path / "db") as index:
        index.add_texts(["alpha text", "beta text"], [{"v": 1}, {"v": 1}], doc_ids=["a", "b"])
        backend = index.store._backend
        scrolled: list[Any] = []
        real = backend.scroll

        def counted(selector: Any, keys: Any) -> Any:
            scrolled.append(selector)
            return real(selector, keys)

        monkeypatch.setattr(backend, "scroll", counted)
        index.add_texts(
            ["alpha text", "beta text", "gamma text"],
            [{"v": 2}, {"v": 1}, {"v": 1}],
            doc_ids=["a", "b", "c"],
        )
        assert len(scrolled) == 1
        monkeypatch.undo()
        assert index.store.document_metadata() == {"a": {"v": 2}, "b": {"v": 1}, "c": {"v": 1}}


def test_a_version_check_alone_reads_no_metadata(
    tiny_encoder: M3Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # complete_documents (the adapters' version check) read every chunk's metadata since it
    # shared stored_versions' lookup, which needs it only for metadata-only updates
    with M3Index.open(tiny_encoder, tmp_path / "db") as index:
        index.add_texts(["alpha text"], [{"v": 1}], doc_ids=["a"])
        backend = index.store._backend
        read: list[Any] = []
        real = backend.scroll

        def keys_read(selector: Any, keys: Any) -> Any:
            read.append(list(keys))
            return real(selector, keys)

        monkeypatch.setattr(backend, "scroll", keys_read)
        versions = index.store.stored_versions(["a"])
        assert index.store.complete_documents({"a": versions["a"].doc_hash}) == {"a"}
        assert "metadata" in read[0] and "metadata" not in read[1]
