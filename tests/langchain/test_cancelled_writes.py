"""A cancelled async add of ``M3VectorStore`` / ``M3Retriever`` / ``M3QdrantVectorStore`` writes
nothing once it has raised (it used to go on in its worker thread and write later, over what
the user did since); the same add again stores it all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.documents import Document

from langchain_m3 import M3Retriever, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import M3Index
from tests.langchain.qdrant_stores import memory_qdrant_store
from tests.reliability.killing import Gate, WatchedLock, cancel_when_held, index_held_at_d
from tests.store.conftest import stored_texts

DOCS = [Document("a new document e", id="e"), Document("second version of d", id="d")]


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
@pytest.mark.parametrize("kind", ["vectorstore", "vectorstore-texts", "retriever"])
def test_a_cancelled_async_add_writes_nothing_more(
    tiny_encoder: M3Encoder, kind: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, gate = index_held_at_d(tiny_encoder, monkeypatch)
    store, retriever = M3VectorStore(index), M3Retriever(index=index)

    def add() -> Any:
        if kind == "vectorstore":
            return store.aadd_documents(DOCS)
        if kind == "vectorstore-texts":
            return store.aadd_texts([d.page_content for d in DOCS], ids=[d.id for d in DOCS])
        return retriever.aadd_documents(DOCS, ids=[d.id for d in DOCS])

    async def cancelled_add() -> dict[str, list[str]]:
        await cancel_when_held(asyncio.ensure_future(add()), gate, how)
        after_cancel = stored_texts(index)
        await store.adelete(["d"])  # what the user does next
        return after_cancel

    after_cancel = asyncio.run(cancelled_add())  # returns once every worker thread is done
    assert after_cancel == {"e": ["a new document e"], "d": ["first version of d"]}
    assert stored_texts(index) == {"e": ["a new document e"]}, "the cancelled add wrote after"
    asyncio.run(store.aadd_documents(DOCS))  # the retry
    assert stored_texts(index) == {d.id: [d.page_content] for d in DOCS}
    index.close()


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
@pytest.mark.parametrize("kind", ["documents", "texts"])
def test_a_cancelled_qdrant_store_add_writes_nothing_more(
    tiny_encoder: M3Encoder, kind: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``M3QdrantVectorStore`` (langchain-qdrant's async add: ``add_documents`` in a thread
    nobody stopped) wrote the rest once the cancelled call had raised: a document deleted
    since came back. It now stops before its next batch, as ``M3VectorStore`` does."""
    e, d = (f"00000000-0000-0000-0000-00000000000{c}" for c in "ed")
    store = memory_qdrant_store(tiny_encoder)
    store.add_texts(["first version of d"], ids=[d])
    gate = Gate(store._build_vectors, hold=2)  # 1: e; 2: d (one text a batch)
    monkeypatch.setattr(store, "_build_vectors", gate)
    docs = [Document("a new document e", id=e), Document("second version of d", id=d)]

    def stored() -> dict[str, str]:
        points, _ = store.client.scroll("c", limit=100)
        return {str(p.id): str((p.payload or {})["page_content"]) for p in points}

    def add() -> Any:
        if kind == "documents":
            return store.aadd_documents(docs, batch_size=1)
        return store.aadd_texts([x.page_content for x in docs], ids=[e, d], batch_size=1)

    async def cancelled_add() -> dict[str, str]:
        await cancel_when_held(asyncio.ensure_future(add()), gate, how)
        after_cancel = stored()
        await store.adelete([d])  # what the user does next
        return after_cancel

    after_cancel = asyncio.run(cancelled_add())  # returns once every worker thread is done
    assert after_cancel == {e: "a new document e", d: "first version of d"}
    assert stored() == {e: "a new document e"}, "the cancelled add wrote after"
    asyncio.run(store.aadd_documents(docs, batch_size=1))  # the retry
    assert stored() == {e: "a new document e", d: "second version of d"}
    store.client.close()


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
@pytest.mark.parametrize("kind", ["documents", "texts"])
def test_a_cancelled_afrom_documents_writes_nothing_after_it_has_raised(
    tiny_encoder: M3Encoder, how: str, kind: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``M3VectorStore.afrom_documents`` ran ``from_documents`` with ``asyncio.to_thread``: a
    cancel raised at once while the thread went on and wrote the documents later (and
    ``afrom_texts``, LangChain's default, still did)."""
    gate = Gate(tiny_encoder.encode_tokenized, hold=1)
    monkeypatch.setattr(tiny_encoder, "encode_tokenized", gate)

    async def cancelled() -> None:
        where = tmp_path / "db"
        texts, ids = [d.page_content for d in DOCS], [str(d.id) for d in DOCS]
        task = asyncio.ensure_future(
            M3VectorStore.afrom_documents(DOCS, tiny_encoder, location=where)
            if kind == "documents"
            else M3VectorStore.afrom_texts(texts, tiny_encoder, ids=ids, location=where)
        )
        await cancel_when_held(task, gate, how)

    asyncio.run(cancelled())  # returns once the cancel has raised
    monkeypatch.undo()
    with M3Index.open(tiny_encoder, tmp_path / "db") as index:
        assert stored_texts(index) == {}, "the cancelled call wrote after it had raised"


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
def test_a_store_opened_by_a_cancelled_afrom_documents_is_closed(
    tiny_encoder: M3Encoder, how: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled once its documents were written (nothing left to stop), ``afrom_documents``
    threw away the open store its thread returned: the folder stayed locked until the
    garbage collector found it (a retry failed with a lock error)."""
    gate = Gate(lambda: None, hold=1)
    add = M3VectorStore.add_documents

    def add_then_hold(self: M3VectorStore, *args: Any, **kwargs: Any) -> Any:
        out = add(self, *args, **kwargs)
        gate()  # written: the cancel arrives while the store is being handed back
        return out

    monkeypatch.setattr(M3VectorStore, "add_documents", add_then_hold)

    async def cancelled() -> None:
        task = asyncio.ensure_future(
            M3VectorStore.afrom_documents(DOCS, tiny_encoder, location=tmp_path / "db")
        )
        await cancel_when_held(task, gate, how)

    asyncio.run(cancelled())
    monkeypatch.undo()
    with M3Index.open(tiny_encoder, tmp_path / "db") as index:  # not locked
        assert sorted(stored_texts(index)) == ["d", "e"]


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
def test_a_cancelled_qdrant_store_afrom_texts_writes_nothing_more_and_closes(
    tiny_encoder: M3Encoder, how: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``M3QdrantVectorStore.afrom_texts`` / ``afrom_documents`` (LangChain's default: the
    sync call in a thread nobody stopped) wrote every batch after the cancelled call had
    raised, and left the local folder locked by a client nobody held."""
    from qdrant_client import QdrantClient

    from langchain_m3 import M3Embeddings, M3QdrantVectorStore

    gate = Gate(M3QdrantVectorStore._vectors, hold=2)  # 1: e; 2: d (one text a batch)

    def gated(self: M3QdrantVectorStore, *args: Any) -> Any:
        return gate(self, *args)

    monkeypatch.setattr(M3QdrantVectorStore, "_vectors", gated)
    ids = [f"00000000-0000-0000-0000-00000000000{c}" for c in "ed"]

    async def cancelled() -> None:
        task = asyncio.ensure_future(
            M3QdrantVectorStore.afrom_texts(
                [d.page_content for d in DOCS],
                M3Embeddings.from_encoder(tiny_encoder),
                ids=ids,
                batch_size=1,
                path=str(tmp_path / "q"),
                collection_name="c",
            )
        )
        await cancel_when_held(task, gate, how)

    asyncio.run(cancelled())
    client = QdrantClient(path=str(tmp_path / "q"))  # not locked
    points, _ = client.scroll("c", limit=10)
    assert [str(p.id) for p in points] == [ids[0]], "the cancelled call wrote after it raised"
    client.close()


@pytest.mark.parametrize("how", ["cancel", "wait_for"])
def test_a_cancelled_qdrant_parent_write_waiting_for_another_writes_nothing(
    tiny_encoder: M3Encoder, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a ``parent_id_key``, ``M3QdrantVectorStore`` upserts each batch under its client's
    write lock: an add cancelled while it waited for another write's upsert still wrote its
    children (and deleted the parent's others) once the lock was free, before raising."""
    from langchain_m3 import qdrant_store

    store = memory_qdrant_store(tiny_encoder)
    store.parent_id_key = "doc_id"
    store.add_documents([Document("first child of q", metadata={"doc_id": "q"})])
    lock = WatchedLock(qdrant_store.client_write_lock(store.client))
    monkeypatch.setattr(qdrant_store, "client_write_lock", lambda client: lock)
    gate = Gate(store.client.upsert, hold=1)  # the first add's upsert, under the lock
    monkeypatch.setattr(store.client, "upsert", gate)

    def stored() -> list[str]:
        points, _ = store.client.scroll("c", limit=100)
        return sorted(str((p.payload or {})["page_content"]) for p in points)

    async def adds() -> None:
        p_child = [Document("a child of p", metadata={"doc_id": "p"})]
        first = asyncio.ensure_future(store.aadd_documents(p_child))
        assert await asyncio.to_thread(gate.held.wait, 30)
        q_child = [Document("second child of q", metadata={"doc_id": "q"})]
        second = asyncio.ensure_future(store.aadd_documents(q_child))
        assert await asyncio.to_thread(lock.waiting, 2)  # its upsert waits for the first's
        await cancel_when_held(second, gate, how)
        await first

    asyncio.run(adds())  # returns once every worker thread is done
    assert stored() == ["a child of p", "first child of q"], "the cancelled add wrote"
    store.client.close()


@pytest.mark.parametrize("kind", ["store-lock", "parent-lock", "qdrant-parent-lock"])
def test_a_parent_write_timed_out_behind_another_write_returns_at_its_timeout(
    tiny_encoder: M3Encoder, kind: str
) -> None:
    """A write of a parent's children (``parent_id_key``), queued behind another write of that
    parent (its lock) or behind the store's write lock, and timed out by ``asyncio.wait_for``,
    raised only once the other write was done, holding an executor thread meanwhile (the
    ``ParentDocumentRetriever`` + ``in_worker`` recipe of the README); it now raises at its
    timeout and writes nothing."""
    import threading

    from langchain_m3._parents import parent_locks

    index = M3Index.open(tiny_encoder, collection="c")
    qdrant = memory_qdrant_store(tiny_encoder) if kind.startswith("qdrant") else None
    held, release = threading.Event(), threading.Event()

    def other_write() -> None:
        if kind == "store-lock":
            lock: Any = index.store.write_lock
        else:
            lock = parent_locks(qdrant.client if qdrant else index.store).hold(["p"])
        with lock:
            held.set()
            release.wait(10)

    def write() -> Any:
        if qdrant is not None:
            return qdrant.aadd_texts(["a child"], [{"parent": "p"}], parent_id_key="parent")
        store = M3VectorStore(index)
        return store.aadd_texts(["a child"], [{"parent": "p"}], parent_id_key="parent")

    async def timed_out() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(write(), 0.2)

    writer = threading.Thread(target=other_write)
    writer.start()
    try:
        assert held.wait(10)
        asyncio.run(timed_out())
        assert writer.is_alive() and not release.is_set()  # raised while the other write ran
    finally:
        release.set()
        writer.join()
    stored = qdrant.client.count("c").count if qdrant else index.count()
    assert stored == 0
    index.close()
