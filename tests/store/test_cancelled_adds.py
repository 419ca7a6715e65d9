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
