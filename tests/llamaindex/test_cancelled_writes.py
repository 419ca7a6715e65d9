"""A cancelled ``async_add`` of ``M3VectorStore`` (or ``aadd_documents`` of ``M3Retriever``)
writes nothing once it has raised.

An add holds the store's write lock while it encodes and writes, so a second add waits for
it. Cancelled while waiting, it used to raise at once and still write its nodes once the
first was done (over what the user did since); now it raises once its thread is done, and
writes nothing.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from llama_index.core.schema import Document, NodeRelationship, RelatedNodeInfo, TextNode

from llamaindex_m3 import M3Retriever, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import M3Index
from tests.reliability.killing import Gate, WatchedLock, cancel_when_held, index_held_at_d
from tests.store.conftest import stored_texts


def _node(text: str, doc: str) -> TextNode:
    return TextNode(
        text=text,
        id_=f"{doc}-0",
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc)},
    )


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
def test_a_cancelled_async_add_waiting_for_another_writes_nothing(
    tiny_encoder: M3Encoder, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = M3Index.open(tiny_encoder, collection="c")
    store = M3VectorStore(index=index)
    lock = WatchedLock(index.store.write_lock)
    monkeypatch.setattr(index.store, "write_lock", lock)
    gate = Gate(tiny_encoder.encode_tokenized, hold=1)  # the first add's encoding
    monkeypatch.setattr(tiny_encoder, "encode_tokenized", gate)

    async def adds() -> dict[str, list[str]]:
        first = asyncio.ensure_future(store.async_add([_node("the first add", "a")]))
        assert await asyncio.to_thread(gate.held.wait, 30)
        second = asyncio.ensure_future(store.async_add([_node("the cancelled add", "b")]))
        assert await asyncio.to_thread(lock.waiting, 2)  # its thread waits for the first
        await cancel_when_held(second, gate, how)
        await first
        return stored_texts(index)

    after_cancel = asyncio.run(adds())  # returns once every worker thread is done
    assert after_cancel == {"a": ["the first add"]}
    assert stored_texts(index) == {"a": ["the first add"]}, "the cancelled add wrote after"
    asyncio.run(store.async_add([_node("the cancelled add", "b")]))  # the retry
    assert stored_texts(index) == {"a": ["the first add"], "b": ["the cancelled add"]}
    index.close()


def test_a_cancelled_retriever_add_writes_nothing_more(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, gate = index_held_at_d(tiny_encoder, monkeypatch)
    retriever = M3Retriever(index)
    docs = [Document(text="a new document e", id_="e"), Document(text="second version", id_="d")]

    async def cancelled_add() -> dict[str, list[str]]:
        await cancel_when_held(
            asyncio.ensure_future(retriever.aadd_documents(docs)), gate, "cancel"
        )
        after_cancel = stored_texts(index)
        retriever.delete(["d"])  # what the user does next
        return after_cancel

    after_cancel = asyncio.run(cancelled_add())  # returns once every worker thread is done
    assert after_cancel == {"e": ["a new document e"], "d": ["first version of d"]}
    assert stored_texts(index) == {"e": ["a new document e"]}, "the cancelled add wrote after"
    index.close()


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
def test_an_async_add_cancelled_while_encoding_writes_nothing(
    tiny_encoder: M3Encoder, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while its nodes were encoded, ``async_add`` still wrote them (and had
    already given an edited document's stored chunks a new version) before its thread was
    done; it now stops once the encoding returns, as ``M3Index.aadd_texts`` does."""
    index = M3Index.open(tiny_encoder, collection="c")
    store = M3VectorStore(index=index)
    store.add([_node("the stored node", "a")])
    (edited,) = store.get_nodes()  # read back, then edited in place: a new version of "a"
    edited.set_content("the edited node")
    versions = {h.payload["doc_hash"] for h in index.store._backend.scroll(None, ["doc_hash"])}
    gate = Gate(tiny_encoder.encode_tokenized, hold=1)  # this add's encoding
    monkeypatch.setattr(tiny_encoder, "encode_tokenized", gate)

    async def cancelled_add() -> None:
        nodes = [edited, _node("the cancelled add", "b")]
        await cancel_when_held(asyncio.ensure_future(store.async_add(nodes)), gate, how)

    asyncio.run(cancelled_add())  # returns once every worker thread is done
    assert stored_texts(index) == {"a": ["the stored node"]}, "the cancelled add wrote"
    assert {h.payload["doc_hash"] for h in index.store._backend.scroll(None, ["doc_hash"])} == (
        versions
    )
    asyncio.run(store.async_add([edited, _node("the cancelled add", "b")]))  # the retry
    assert stored_texts(index) == {"a": ["the edited node"], "b": ["the cancelled add"]}
    index.close()


@pytest.mark.parametrize("kind", ["adelete", "adelete_nodes", "aclear", "langchain-adelete"])
def test_a_delete_timed_out_behind_a_long_write_returns_at_its_timeout(
    tiny_encoder: M3Encoder, kind: str
) -> None:
    """A delete queued behind another write (a long ingestion holding the store's write lock)
    and timed out by ``asyncio.wait_for`` raised only once that write was done, minutes later
    on a real ingestion, holding an executor thread meanwhile; it now raises at its timeout,
    while the other write still runs, and deletes nothing."""
    from langchain_m3 import M3VectorStore as LangChainStore

    index = M3Index.open(tiny_encoder, collection="c")
    store = M3VectorStore(index=index)
    store.add([_node("a document to keep", "x")])
    held, release = threading.Event(), threading.Event()

    def long_write() -> None:
        with index.store.write_lock:
            held.set()
            release.wait(10)

    writer = threading.Thread(target=long_write)
    writer.start()
    assert held.wait(10)
    deletes = {
        "adelete": lambda: store.adelete("x"),
        "adelete_nodes": lambda: store.adelete_nodes(["x-0"]),
        "aclear": store.aclear,
        "langchain-adelete": lambda: LangChainStore(index).adelete(["x"]),
    }

    async def timed_out() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(deletes[kind](), 0.2)

    try:
        asyncio.run(timed_out())
        assert writer.is_alive() and not release.is_set()  # raised while the write runs
    finally:
        release.set()
        writer.join()
    assert stored_texts(index) == {"x": ["a document to keep"]}
    index.close()
