"""A cancelled ``aadd_texts`` writes nothing once it has raised, and a retry stores it all.

The add runs in a worker thread; the thread cannot be stopped mid-encoding, so a cancelled
add used to return at once while its thread went on and wrote later: over an edit made
since, or bringing back a document deleted since.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from m3kit.store import M3Index
from tests.reliability.killing import (
    Gate,
    WatchedLock,
    assert_same_points,
    cancel_when_held,
    index_held_at_d,
    index_points,
)
from tests.store.conftest import stored_texts


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
@pytest.mark.parametrize("backend", ["edge", "client"])
def test_a_cancelled_add_writes_nothing_more_and_a_retry_stores_it(
    tiny_encoder: Any, backend: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, gate = index_held_at_d(tiny_encoder, monkeypatch, backend=backend)
    texts, ids = ["a new document e", "second version of d"], ["e", "d"]

    async def cancelled_add() -> dict[str, list[str]]:
        task = asyncio.ensure_future(index.aadd_texts(texts, doc_ids=ids))
        await cancel_when_held(task, gate, how)
        after_cancel = stored_texts(index)
        index.delete(["d"])  # what the user does next
        return after_cancel

    after_cancel = asyncio.run(cancelled_add())  # returns once every worker thread is done
    # the group written before the cancel stays; d is still its first version
    assert after_cancel == {"e": ["a new document e"], "d": ["first version of d"]}
    assert stored_texts(index) == {"e": ["a new document e"]}, "the cancelled add wrote after"

    index.add_texts(texts, doc_ids=ids)  # the retry
    reference = M3Index.open(tiny_encoder, collection="ref", backend=backend)
    reference.add_texts(texts, doc_ids=ids)
    assert_same_points(index_points(index), index_points(reference))
    index.close()
    reference.close()


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
@pytest.mark.parametrize("backend", ["edge", "client"])
def test_a_cancelled_add_waiting_for_another_write_writes_nothing(
    tiny_encoder: Any, backend: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An add whose documents are encoded waits for the store's write lock while another
    write holds it; cancelled then, it wrote its documents once the other write was done
    (before raising), although it had not started writing them."""
    index = M3Index.open(tiny_encoder, collection="c", backend=backend)
    index.add_texts(["first version of d"], doc_ids=["d"])
    lock = WatchedLock(index.store.write_lock)
    monkeypatch.setattr(index.store, "write_lock", lock)
    monkeypatch.setattr(index, "_write_lock", lock)
    gate = Gate(index.store._backend.upsert, hold=1)  # the first add's write, under the lock
    monkeypatch.setattr(index.store._backend, "upsert", gate)

    async def adds() -> None:
        first = asyncio.ensure_future(index.aadd_texts(["a new document e"], doc_ids=["e"]))
        assert await asyncio.to_thread(gate.held.wait, 30)
        second = asyncio.ensure_future(index.aadd_texts(["second version of d"], doc_ids=["d"]))
        # the first add's thread holds the lock, the second's asked for it
        assert await asyncio.to_thread(lock.waiting, 2)
        await cancel_when_held(second, gate, how)
        await first

    asyncio.run(adds())  # returns once every worker thread is done
    assert stored_texts(index) == {"e": ["a new document e"], "d": ["first version of d"]}
    index.add_texts(["second version of d"], doc_ids=["d"])  # the retry
    assert stored_texts(index) == {"e": ["a new document e"], "d": ["second version of d"]}
    index.close()
