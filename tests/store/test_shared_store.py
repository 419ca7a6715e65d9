"""Several :class:`M3Index` objects on one :class:`M3Store`: a refused one leaves no trace.

``M3Index(encoder, store)`` pairs an encoder with an opened store, and several indexes may
share a store. A pairing refused because the collection belongs to another encoder
(:class:`FingerprintMismatchError`) used to leave its encoder's identity and check on the
store: the index still in use then stamped its own vectors with the refused encoder's
identity (a later reindex to that encoder skipped them as done, leaving vectors of the old
model under the new one's name) and checked the refused encoder instead of its own before
each write.

An index whose store another index took over with another encoder (opened on the same store
object with ``reindex=True``, or on an empty collection) used to keep working: its writes were
stamped with the other encoder's identity (a later reindex skipped them) and its queries,
encoded with its own model, ranked the other model's vectors. It now refuses to write or
search, and stays refused: the store is the other encoder's for good.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from m3kit import EncoderChangedError, FingerprintMismatchError, M3Encoder
from m3kit.store import ChunkRecord, M3Index, M3Store
from m3kit.store.schema import DOC_ID, ENCODER_ID
from tests.reliability.killing import FailingEncoder
from tests.store.conftest import open_shared_store

BACKENDS = ["edge", "client"]


@pytest.fixture
def enc(tiny_m3_path: Path) -> M3Encoder:
    """A tiny M3 encoder of the test's own (some tests train it: never the session's)."""
    return M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, enc: M3Encoder) -> Iterator[M3Store]:
    """:func:`open_shared_store` for ``enc`` on each backend (closed after the test)."""
    with open_shared_store(enc, request.param) as opened:
        yield opened


def _stamps(store: M3Store) -> dict[str, str]:
    """``{doc_id: encoder_id}`` of every stored chunk (one chunk per document here)."""
    return {
        str(h.payload[DOC_ID]): str(h.payload[ENCODER_ID])
        for h in store._backend.scroll(None, [DOC_ID, ENCODER_ID])
    }


def test_a_refused_index_leaves_the_store_to_the_index_in_use(
    enc: M3Encoder, store: M3Store, other_tiny_encoder: M3Encoder
) -> None:
    index = M3Index(enc, store)
    index.add_texts(["the first document."], doc_ids=["x"])
    with pytest.raises(FingerprintMismatchError, match="another encoder"):
        M3Index(other_tiny_encoder, store)

    # the index in use still writes and searches as itself
    index.add_texts(["the second document."], doc_ids=["y"])
    assert _stamps(store) == {"x": index.fingerprint.identity, "y": index.fingerprint.identity}
    assert index.search("the second document.", k=1)[0].doc_id == "y"

    # so a reindex to the other encoder re-encodes every document, "y" included
    other = M3Index(other_tiny_encoder, store, reindex=True)
    assert set(_stamps(store).values()) == {other.fingerprint.identity}
    want = other_tiny_encoder.encode(["the second document."]).dense[0]
    hit = store.query(dense=want, k=1)[0]
    assert hit.doc_id == "y" and hit.score == pytest.approx(1.0, abs=1e-4)


def _train_step(model: Any) -> None:
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01)
    torch.optim.AdamW(model.parameters(), lr=0.1).step()


def test_after_a_refused_index_the_store_still_checks_the_encoder_in_use(
    enc: M3Encoder, store: M3Store, other_tiny_encoder: M3Encoder
) -> None:
    index = M3Index(enc, store)
    index.add_texts(["the first document."], doc_ids=["x"])
    with pytest.raises(FingerprintMismatchError):
        M3Index(other_tiny_encoder, store)
    _train_step(enc.model)  # the index's encoder changes in memory
    text = "written through the store, as the adapters do"
    record = ChunkRecord("z", 0, text, {}, enc.encode([text]))
    with pytest.raises(EncoderChangedError, match="changed in memory"):
        store.upsert([record])
    with pytest.raises(EncoderChangedError, match="changed in memory"):
        store.query(dense=np.ones(enc.dense_dim, dtype=np.float32))
    assert store.count() == 1


def _index_calls(index: M3Index) -> dict[str, Callable[[], object]]:
    """Every write and search of an index (sync and async), each with a harmless argument."""
    text = "a document the index should not write"
    record = ChunkRecord("r", 0, text, {}, index.encoder.encode([text]))
    return {
        "add_texts": lambda: index.add_texts([text], doc_ids=["new"]),
        "aadd_texts": lambda: asyncio.run(index.aadd_texts([text], doc_ids=["new"])),
        "write_records": lambda: index.write_records([record]),
        "delete": lambda: index.delete(["x"]),
        "search": lambda: index.search("the first document."),
        "asearch": lambda: asyncio.run(index.asearch("the first document.")),
        "search_mean": lambda: index.search_mean(["the first", "document"]),
    }


def _assert_refused(index: M3Index, other: M3Index) -> None:
    """Every write and search of ``index`` raises, naming both encoders; nothing changes."""
    before = _stamps(index.store)
    for name, call in _index_calls(index).items():
        with pytest.raises(FingerprintMismatchError, match="open a new index") as err:
            call()
        message = str(err.value)
        assert index.fingerprint.identity in message, name
        assert other.fingerprint.identity in message, name
        assert index.fingerprint.describe() in message, name
    assert _stamps(index.store) == before


def test_a_taken_over_index_refuses_writes_and_searches(
    enc: M3Encoder, store: M3Store, other_tiny_encoder: M3Encoder
) -> None:
    index = M3Index(enc, store)
    index.add_texts(["the first document.", "the second document."], doc_ids=["x", "y"])
    other = M3Index(other_tiny_encoder, store, reindex=True)
    assert set(_stamps(store).values()) == {other.fingerprint.identity}

    _assert_refused(index, other)

    # the index that took the store over writes and searches as itself
    other.add_texts(["the third document."], doc_ids=["z"])
    assert set(_stamps(store).values()) == {other.fingerprint.identity}
    assert other.search("the third document.", k=1)[0].doc_id == "z"


def test_an_index_taken_over_on_an_empty_collection_is_refused_too(
    enc: M3Encoder, store: M3Store, other_tiny_encoder: M3Encoder
) -> None:
    """An empty collection is recorded for the new encoder without ``reindex``."""
    index = M3Index(enc, store)
    other = M3Index(other_tiny_encoder, store)
    with pytest.raises(FingerprintMismatchError, match=other.fingerprint.identity):
        index.add_texts(["the first document."], doc_ids=["x"])
    assert store.count() == 0


def test_a_taken_over_index_stays_refused_when_the_other_is_dropped_or_closed(
    enc: M3Encoder, store: M3Store, other_tiny_encoder: M3Encoder
) -> None:
    index = M3Index(enc, store)
    index.add_texts(["the first document."], doc_ids=["x"])
    other = M3Index(other_tiny_encoder, store, reindex=True)
    other_id = other.fingerprint.identity
    del other
    gc.collect()
    # the collection holds the other encoder's vectors whatever became of that index
    with pytest.raises(FingerprintMismatchError, match=other_id):
        index.search("the first document.")
    # a new index on the store is checked against the collection, as on any open
    with pytest.raises(FingerprintMismatchError, match="another encoder"):
        M3Index(enc, store)
    with pytest.raises(FingerprintMismatchError, match=other_id):
        index.add_texts(["the second document."], doc_ids=["y"])
    again = M3Index(other_tiny_encoder, store)
    assert again.search("the first document.", k=1)[0].doc_id == "x"
    again.close()  # closes the shared store
    with pytest.raises(FingerprintMismatchError, match=other_id):
        index.search("the first document.")


def test_indexes_of_one_encoder_share_a_store(
    tiny_m3_path: Path, enc: M3Encoder, store: M3Store
) -> None:
    """As the LangChain and LlamaIndex adapters do: each writes and searches as itself."""
    same = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")  # another object, same model
    first = M3Index(enc, store)
    first.add_texts(["the first document."], doc_ids=["x"])
    second = M3Index(same, store)
    second.add_texts(["the second document."], doc_ids=["y"])
    first.add_texts(["the third document."], doc_ids=["z"])
    assert set(_stamps(store).values()) == {first.fingerprint.identity}
    assert first.search("the second document.", k=1)[0].doc_id == "y"
    assert second.search("the third document.", k=1)[0].doc_id == "z"
    first.delete(["z"])
    assert store.count() == 2


def test_an_interrupted_takeover_leaves_the_index_in_use_refused(
    enc: M3Encoder,
    store: M3Store,
    other_tiny_encoder: M3Encoder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reindex that failed part-way leaves vectors of both encoders: nothing may search them
    as either's until a reindex finishes (as a fresh open would say)."""
    texts = [f"document {i} about topic {i % 3}." for i in range(6)]
    ids = [f"d{i}" for i in range(6)]
    index = M3Index(enc, store)
    index.add_texts(texts, doc_ids=ids)
    monkeypatch.setattr(M3Index, "write_group", 2)
    failing = FailingEncoder(other_tiny_encoder, 2)
    with pytest.raises(RuntimeError, match="interrupted"):
        M3Index(failing, store, reindex=True)  # type: ignore[arg-type]
    assert len(set(_stamps(store).values())) == 2  # the first group was re-encoded

    with pytest.raises(FingerprintMismatchError, match="open a new index"):
        index.search("document 1")
    with pytest.raises(FingerprintMismatchError, match="open a new index"):
        index.add_texts(["another document."], doc_ids=["new"])
    # writing or searching through the store directly (as the adapters do) is refused
    text = "written through the store"
    record = ChunkRecord("z", 0, text, {}, enc.encode([text]))
    with pytest.raises(FingerprintMismatchError, match="part-way through a reindex"):
        store.upsert([record])
    with pytest.raises(FingerprintMismatchError, match="part-way through a reindex"):
        store.query(dense=np.ones(enc.dense_dim, dtype=np.float32))

    # finishing the reindex gives the store to the new encoder
    done = M3Index(other_tiny_encoder, store, reindex=True)
    assert set(_stamps(store).values()) == {done.fingerprint.identity}
    assert done.search("document 1", k=1)[0].doc_id == "d1"
