"""A write request that fails leaves no document half old, half new, nor a stale tail.

Point ids are per (document, chunk), so new chunks overwrite old ones in place: a document cut
across two requests, one of which failed, was served half old, half new; and the stale chunks
of a document that shrank were deleted only after every request had succeeded, so a document
written whole before the failure kept serving its old tail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from m3kit.store import ChunkRecord, ClusterSettings, M3Index, output_row
from m3kit.store.points import document_versions
from tests.store.conftest import BACKENDS, PATH_BACKENDS, stored_texts


def _records(encoder: Any, doc_id: str, tag: str, n: int) -> list[ChunkRecord]:
    texts = [f"{tag} {doc_id} chunk {i}" for i in range(n)]
    out = encoder.encode(texts)
    return [ChunkRecord(doc_id, i, t, {}, output_row(out, i)) for i, t in enumerate(texts)]


def test_a_failed_request_leaves_each_document_whole(
    open_index: Callable[..., M3Index], tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = open_index(tiny_encoder)
    store = index.store
    store.upsert([*_records(tiny_encoder, "A", "old", 10), *_records(tiny_encoder, "C", "old", 3)])
    backend = store._backend
    real_upsert = backend.upsert

    def upsert(points: Any) -> None:
        if any(p.payload["doc_id"] == "C" for p in points):
            raise ConnectionError("server went away")
        real_upsert(points)

    monkeypatch.setattr(backend, "upsert", upsert)
    new = [
        *_records(tiny_encoder, "A", "new", 4),  # shrinks: chunks 4-9 are stale
        *_records(tiny_encoder, "B", "new", 5),
        *_records(tiny_encoder, "C", "new", 3),  # its request fails
    ]
    with pytest.raises(ConnectionError):
        store.upsert(new, batch_size=6, replace=True)
    stored = stored_texts(index)
    assert stored["A"] == [f"new A chunk {i}" for i in range(4)]  # no stale tail served
    assert stored["B"] == [f"new B chunk {i}" for i in range(5)]  # not cut across requests
    assert stored["C"] == [f"old C chunk {i}" for i in range(3)]  # wholly the old version
    monkeypatch.setattr(backend, "upsert", real_upsert)
    store.upsert(new, batch_size=6, replace=True)
    assert stored_texts(index) == {
        d: [f"new {d} chunk {i}" for i in range(n)] for d, n in (("A", 4), ("B", 5), ("C", 3))
    }


def test_a_document_larger_than_a_request_is_never_half_old(
    open_index: Callable[..., M3Index], tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document cut across requests, one of which fails, keeps only its new chunks: it is
    incomplete (the next write completes it) but serves no chunk of its old version."""
    index = open_index(tiny_encoder)
    store = index.store
    store.upsert(_records(tiny_encoder, "D", "old", 10))
    backend = store._backend
    real_upsert = backend.upsert

    def upsert(points: Any) -> None:
        if any(p.payload["chunk_index"] == 6 for p in points):
            raise ConnectionError("server went away")
        real_upsert(points)

    monkeypatch.setattr(backend, "upsert", upsert)
    new = _records(tiny_encoder, "D", "new", 8)
    with pytest.raises(ConnectionError):
        store.upsert(new, batch_size=3, replace=True)  # requests: chunks 0-2, 3-5, 6-7
    assert stored_texts(index)["D"] == [f"new D chunk {i}" for i in range(6)]
    ((doc_hash, count),) = document_versions(new).values()
    assert count == 8 and store.complete_documents({"D": doc_hash}) == set()
    monkeypatch.setattr(backend, "upsert", real_upsert)
    store.upsert(new, batch_size=3, replace=True)
    assert stored_texts(index)["D"] == [f"new D chunk {i}" for i in range(8)]
    assert store.complete_documents({"D": doc_hash}) == {"D"}


def test_parallel_requests_that_land_after_the_failed_one_lose_their_stale_chunks(
    open_index: Callable[..., M3Index], tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several requests in flight (cluster settings), one that fails does not stop those
    already sent: they land, so their documents' stale chunks must go too. Before, only the
    requests ahead of the failed one in writing order were cleaned, so a document that shrank
    in a later request kept serving its old tail."""
    index = open_index(tiny_encoder)
    store = index.store
    store.upsert([*_records(tiny_encoder, "A", "old", 3), *_records(tiny_encoder, "B", "old", 6)])
    backend = store._backend
    real_upsert = backend.upsert
    lock = threading.Lock()
    b_landed = threading.Event()

    def upsert(points: Any) -> None:
        if any(p.payload["doc_id"] == "A" for p in points):
            assert b_landed.wait(10)  # fails only once B's request (sent after it) has landed
            raise ConnectionError("server went away")
        with lock:  # the engine under test, not the server, is one writer at a time
            real_upsert(points)
        b_landed.set()

    monkeypatch.setattr(backend, "upsert", upsert)
    monkeypatch.setattr(store, "cluster", ClusterSettings(write_parallelism=2))
    new = [
        *_records(tiny_encoder, "A", "new", 3),  # its request fails
        *_records(tiny_encoder, "B", "new", 2),  # shrinks: chunks 2-5 are stale
    ]
    with pytest.raises(ConnectionError):
        store.upsert(new, batch_size=3, replace=True)  # requests: A's, B's
    stored = stored_texts(index)
    assert stored["A"] == [f"old A chunk {i}" for i in range(3)]  # wholly the old version
    assert stored["B"] == [f"new B chunk {i}" for i in range(2)]  # no stale tail served


def _shrinking(encoder: Any, docs: str, tag: str, n: int) -> list[ChunkRecord]:
    return [r for d in docs for r in _records(encoder, d, tag, n)]


def test_parallel_requests_still_in_flight_when_one_fails_are_waited_for(
    open_index: Callable[..., M3Index], tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A's request fails first; B's, in flight, lands afterwards: its document is cleaned too.
    Every document ends wholly old or wholly new without a stale tail, whichever of the
    later requests a worker had already picked up."""
    index = open_index(tiny_encoder)
    store = index.store
    store.upsert(_shrinking(tiny_encoder, "ABCD", "old", 4))
    backend = store._backend
    real_upsert = backend.upsert
    lock = threading.Lock()
    a_failed = threading.Event()

    def upsert(points: Any) -> None:
        doc = points[0].payload["doc_id"]
        if doc == "A":
            a_failed.set()
            raise ConnectionError("server went away")
        if doc == "B":
            assert a_failed.wait(10)
            time.sleep(0.2)  # lands well after A's error reached the writer
        with lock:
            real_upsert(points)

    monkeypatch.setattr(backend, "upsert", upsert)
    monkeypatch.setattr(store, "cluster", ClusterSettings(write_parallelism=2))
    with pytest.raises(ConnectionError):
        store.upsert(_shrinking(tiny_encoder, "ABCD", "new", 2), batch_size=2, replace=True)
    stored = stored_texts(index)
    assert stored["A"] == [f"old A chunk {i}" for i in range(4)]
    assert stored["B"] == [f"new B chunk {i}" for i in range(2)]  # waited for and cleaned
    for doc in "CD":  # sent or cancelled, depending on the race with A's worker
        assert stored[doc] in (
            [f"old {doc} chunk {i}" for i in range(4)],
            [f"new {doc} chunk {i}" for i in range(2)],
        )


def test_interrupted_parallel_write_sends_nothing_more_and_cleans_what_landed(
    open_index: Callable[..., M3Index], tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while requests are in flight: the queued ones are never sent, and the two in
    flight land and lose their stale chunks before the interrupt propagates."""
    from m3kit.store import store_writes

    index = open_index(tiny_encoder)
    store = index.store
    store.upsert(_shrinking(tiny_encoder, "ABCD", "old", 4))
    backend = store._backend
    real_upsert = backend.upsert
    lock = threading.Lock()
    sent: list[str] = []
    two_in_flight = threading.Barrier(3)  # both workers and the interrupting main thread
    release = threading.Event()

    def upsert(points: Any) -> None:
        with lock:
            sent.append(points[0].payload["doc_id"])
        two_in_flight.wait(10)
        assert release.wait(10)
        with lock:
            real_upsert(points)

    def interrupted(futures: Any) -> Any:
        two_in_flight.wait(10)  # both workers are inside a request
        threading.Timer(0.3, release.set).start()  # they land after the interrupt
        raise KeyboardInterrupt
        yield  # a generator, like as_completed

    monkeypatch.setattr(backend, "upsert", upsert)
    monkeypatch.setattr(store, "cluster", ClusterSettings(write_parallelism=2))
    monkeypatch.setattr(store_writes, "as_completed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.upsert(_shrinking(tiny_encoder, "ABCD", "new", 2), batch_size=2, replace=True)
    assert sorted(sent) == ["A", "B"]  # C's and D's requests were cancelled, never sent
    stored = stored_texts(index)
    for doc in "AB":
        assert stored[doc] == [f"new {doc} chunk {i}" for i in range(2)]
    for doc in "CD":
        assert stored[doc] == [f"old {doc} chunk {i}" for i in range(4)]


def test_a_delete_failing_after_its_first_batch_says_what_was_deleted(
    open_index: Callable[..., M3Index],
    tiny_encoder: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ids are deleted 256 at a time: an engine error in the second batch must not leave the
    caller believing nothing was deleted; deleting again with the same ids finishes it."""
    index = open_index(tiny_encoder)
    store = index.store
    ids = [f"d{i}" for i in range(300)]
    store.upsert([r for d in ids for r in _records(tiny_encoder, d, "t", 1)])
    backend = store._backend
    real_delete = backend.delete
    calls: list[int] = []

    def delete(flt: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionError("server went away")
        real_delete(flt)

    monkeypatch.setattr(backend, "delete", delete)
    with caplog.at_level("ERROR", logger="m3kit.store.store"), pytest.raises(ConnectionError):
        store.delete_documents(ids)
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "m3kit.store.store"]
    assert "256 of the 300 documents were deleted before this failure" in logged
    assert "call delete_documents again with the same ids" in logged
    assert sorted(stored_texts(index)) == sorted(ids[256:])  # what the log says is so
    monkeypatch.setattr(backend, "delete", real_delete)
    store.delete_documents(ids)  # as the log says
    assert stored_texts(index) == {}


def test_a_delete_failing_in_its_only_batch_logs_nothing_extra(
    open_index: Callable[..., M3Index],
    tiny_encoder: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    index = open_index(tiny_encoder)
    store = index.store
    store.upsert(_records(tiny_encoder, "A", "t", 2))

    def delete(flt: Any) -> None:
        raise ConnectionError("server went away")

    monkeypatch.setattr(store._backend, "delete", delete)
    with caplog.at_level("ERROR", logger="m3kit.store.store"), pytest.raises(ConnectionError):
        store.delete_documents(["A"])
    assert not [r for r in caplog.records if r.name == "m3kit.store.store"]
    assert sorted(stored_texts(index)) == ["A"]


@pytest.mark.parametrize("backend_id", PATH_BACKENDS)
def test_closing_during_a_write_leaves_no_document_half_replaced(
    backend_id: str, tiny_encoder: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``close()`` from another thread while a write deletes the stale chunks of the documents
    it just wrote: the close waits for that write, so no document is left with its new chunks
    beside its old tail (served by every search after a reopen, until it is written again);
    a write after the close is refused."""
    kind, _ = BACKENDS[backend_id]
    index = M3Index.open(tiny_encoder, tmp_path / "db", collection="c", backend=kind)
    store = index.store
    old = [_records(tiny_encoder, doc, "old", 6) for doc in "AB"]
    store.upsert([r for doc in old for r in doc])
    cleaning, real_delete = threading.Event(), store._backend.delete

    def delete(*args: Any, **kwargs: Any) -> Any:
        cleaning.set()
        time.sleep(0.3)  # the close is called meanwhile
        return real_delete(*args, **kwargs)

    monkeypatch.setattr(store._backend, "delete", delete)

    def write() -> None:
        for doc in "AB":  # A, then B: shrunk to 2 chunks each
            store.upsert(_records(tiny_encoder, doc, "new", 2), replace=True)

    writer_error: list[BaseException] = []
    writer = threading.Thread(target=lambda: _catch(write, writer_error))
    writer.start()
    assert cleaning.wait(10)  # A's new chunks are written, its stale ones being deleted
    index.close()
    writer.join(10)
    reopened = M3Index.open(tiny_encoder, tmp_path / "db", collection="c", backend=kind)
    stored = stored_texts(reopened)
    assert stored["A"] == [f"new A chunk {i}" for i in range(2)]
    # B's write came after the close (refused), or took the lock first (written whole)
    new_b = [f"new B chunk {i}" for i in range(2)]
    assert stored["B"] == (new_b if not writer_error else [f"old B chunk {i}" for i in range(6)])
    reopened.close()


def _catch(func: Callable[[], None], errors: list[BaseException]) -> None:
    try:
        func()
    except Exception as exc:  # what the writer thread raised, for the test to check
        errors.append(exc)
