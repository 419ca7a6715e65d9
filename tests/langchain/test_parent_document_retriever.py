"""LangChain's ParentDocumentRetriever with M3LateChunkingSplitter as its child splitter.

The children reach the store with their late-chunked vectors (never encoded alone), a search
returns the parent, and re-adding a parent under the same id replaces its children.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from langchain_classic.retrievers import ParentDocumentRetriever
from langchain_classic.storage import InMemoryStore
from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter, TextSplitter

from langchain_m3 import (
    M3LateChunkingSplitter,
    M3VectorStore,
)
from langchain_m3.splitter import LATE_CHUNK_KEY, late_chunk_vectors
from m3kit import M3Encoder
from m3kit.store.cancelling import in_worker
from m3kit.testing import SAMPLE_TEXTS
from tests.langchain.qdrant_stores import memory_qdrant_store
from tests.reliability.killing import Gate, cancel_when_held
from tests.store.conftest import count_encoded

PARENTS = [
    Document(" ".join(SAMPLE_TEXTS[:4]), metadata={"src": "a"}),
    Document(" ".join(SAMPLE_TEXTS[4:8]), metadata={"src": "b"}),
]


@pytest.fixture(scope="module")
def splitter(tiny_encoder: M3Encoder) -> M3LateChunkingSplitter:
    return M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=12)


@pytest.fixture
def store(tiny_encoder: M3Encoder) -> Iterator[M3VectorStore]:
    s = M3VectorStore.open(tiny_encoder)
    yield s
    s.close()


def _all_points(store: M3VectorStore) -> list[Document]:
    return store.similarity_search(SAMPLE_TEXTS[0], k=1000)


def test_the_splitter_is_a_text_splitter(splitter: M3LateChunkingSplitter) -> None:
    assert isinstance(splitter, TextSplitter)


def test_children_keep_their_late_vectors_and_search_returns_the_parent(
    splitter: M3LateChunkingSplitter, store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever = ParentDocumentRetriever(
        vectorstore=store, docstore=InMemoryStore(), child_splitter=splitter
    )
    # the children ParentDocumentRetriever writes are the splitter's chunks, id key added
    children = splitter.split_documents([PARENTS[0]])
    encoded = count_encoded(store.index, monkeypatch)
    retriever.add_documents(PARENTS, ids=["pa", "pb"])
    assert encoded == []  # no child encoded again: each kept its late-chunked vectors
    stored = _all_points(store)
    assert len(stored) == len(children) + len(splitter.split_text(PARENTS[1].page_content))
    assert {d.metadata["doc_id"] for d in stored} == {"pa", "pb"}
    assert not any(LATE_CHUNK_KEY in d.metadata for d in stored)
    # the stored dense vector of a child is its late one, not its text encoded alone
    child = children[2]
    late = late_chunk_vectors(child).dense
    naive = store.index.encoder.encode([child.page_content], heads="dense").dense[0]
    assert not np.allclose(late, naive, atol=1e-6)
    (hit, score), *_ = store.similarity_search_with_score_by_vector(late.tolist(), k=1)
    assert hit.page_content == child.page_content and hit.metadata["doc_id"] == "pa"
    assert score == pytest.approx(1.0, abs=1e-5)
    # invoke returns the parent documents, not the chunks
    got = retriever.invoke(SAMPLE_TEXTS[5])
    assert got and {d.page_content for d in got} <= {p.page_content for p in PARENTS}
    assert all(d.metadata["src"] in {"a", "b"} for d in got)


def test_re_adding_a_parent_under_its_id_writes_no_duplicate_children(
    splitter: M3LateChunkingSplitter, store: M3VectorStore
) -> None:
    retriever = ParentDocumentRetriever(
        vectorstore=store, docstore=InMemoryStore(), child_splitter=splitter
    )
    retriever.add_documents(PARENTS[:1], ids=["pa"])
    first = sorted(d.page_content for d in _all_points(store))
    retriever.add_documents(PARENTS[:1], ids=["pa"])
    assert sorted(d.page_content for d in _all_points(store)) == first
    assert retriever.docstore.mget(["pa"]) == [PARENTS[0]]
    # without ids ParentDocumentRetriever draws a new parent id: new children, as in any store
    retriever.add_documents(PARENTS[:1])
    assert len(_all_points(store)) == 2 * len(first)
    # ParentDocumentRetriever has no delete: a parent's children go by its id key
    store.index.store.delete_points(filter={"doc_id": "pa"})
    assert len(_all_points(store)) == len(first)
    assert all(d.metadata["doc_id"] != "pa" for d in _all_points(store))


async def test_async_add_keeps_late_vectors(
    splitter: M3LateChunkingSplitter, store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever = ParentDocumentRetriever(
        vectorstore=store, docstore=InMemoryStore(), child_splitter=splitter
    )
    encoded = count_encoded(store.index, monkeypatch)
    await retriever.aadd_documents(PARENTS[:1], ids=["pa"])
    assert encoded == [] and _all_points(store)
    (got, *_) = await retriever.ainvoke(SAMPLE_TEXTS[1])
    assert got == PARENTS[0]


def test_parent_splitter_then_late_chunked_children(
    splitter: M3LateChunkingSplitter, store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent_splitter = RecursiveCharacterTextSplitter(chunk_size=120, chunk_overlap=0)
    retriever = ParentDocumentRetriever(
        vectorstore=store,
        docstore=InMemoryStore(),
        child_splitter=splitter,
        parent_splitter=parent_splitter,
    )
    parents = parent_splitter.split_documents(PARENTS[:1])
    assert len(parents) > 1
    encoded = count_encoded(store.index, monkeypatch)
    retriever.add_documents(PARENTS[:1])
    assert encoded == []
    stored = _all_points(store)
    # every child is late-chunked within its parent chunk (offsets relative to it)
    doc_ids = {d.metadata["doc_id"] for d in stored}
    assert len(doc_ids) == len(parents)
    got = retriever.invoke(SAMPLE_TEXTS[2])
    assert got and all(d in parents for d in got)


def test_child_metadata_fields_keeping_the_marker(
    splitter: M3LateChunkingSplitter, store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ParentDocumentRetriever(child_metadata_fields=[...]) replaces each child's metadata
    # with those keys only: the marker must be one of them for the vectors to be found
    retriever = ParentDocumentRetriever(
        vectorstore=store,
        docstore=InMemoryStore(),
        child_splitter=splitter,
        child_metadata_fields=["src", LATE_CHUNK_KEY],
    )
    encoded = count_encoded(store.index, monkeypatch)
    retriever.add_documents(PARENTS[:1], ids=["pa"])
    assert encoded == []
    assert {tuple(sorted(d.metadata)) for d in _all_points(store)} == {("doc_id", "src")}


def test_child_metadata_fields_dropping_the_marker_raise(
    splitter: M3LateChunkingSplitter, store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without the marker the children were stored as plain texts, each encoded alone: the
    # late chunking silently lost
    retriever = ParentDocumentRetriever(
        vectorstore=store,
        docstore=InMemoryStore(),
        child_splitter=splitter,
        child_metadata_fields=["src"],
    )
    encoded = count_encoded(store.index, monkeypatch)
    with pytest.raises(ValueError, match=r"documents\[0\].*child_metadata_fields"):
        retriever.add_documents(PARENTS[:1], ids=["pa"])
    assert encoded == [] and _all_points(store) == []
    # the same as an explicit edit of a chunk the splitter returned
    chunk = splitter.split_documents([PARENTS[0]])[1]
    del chunk.metadata[LATE_CHUNK_KEY]
    edited = splitter.split_documents([PARENTS[0]])[2]
    encoded.clear()  # (the search of _all_points encoded its query)
    with pytest.raises(ValueError, match="m3_late_chunk"):
        store.add_documents([chunk])
    # a new Document of its text and metadata is a plain text: encoded alone, on purpose
    store.add_documents([Document(chunk.page_content, metadata=chunk.metadata)])
    assert encoded == [1]
    # so is a chunk the splitter returned whose text was edited
    edited.page_content += " Edited."
    del edited.metadata[LATE_CHUNK_KEY]
    store.add_documents([edited])
    assert encoded == [1, 1]


def test_qdrant_store_refuses_children_that_lost_the_marker(
    splitter: M3LateChunkingSplitter, tiny_encoder: M3Encoder
) -> None:
    store = memory_qdrant_store(tiny_encoder, "children")
    retriever = ParentDocumentRetriever(
        vectorstore=store,
        docstore=InMemoryStore(),
        child_splitter=splitter,
        child_metadata_fields=["src"],
    )
    with pytest.raises(ValueError, match="child_metadata_fields"):
        retriever.add_documents(PARENTS[:1], ids=["pa"])
    with pytest.raises(ValueError, match="child_metadata_fields"):
        asyncio.run(retriever.aadd_documents(PARENTS[:1], ids=["pa"]))
    assert store.client.count("children").count == 0


def test_the_tokenizer_constructors_are_refused() -> None:
    # TextSplitter's length-function constructors make no sense for a model's own tokens
    with pytest.raises(TypeError, match="from_encoder"):
        M3LateChunkingSplitter.from_tiktoken_encoder(chunk_size=10)
    with pytest.raises(TypeError, match="from_encoder"):
        M3LateChunkingSplitter.from_huggingface_tokenizer(object(), chunk_size=10)


def test_qdrant_store_children_keep_their_late_vectors(
    splitter: M3LateChunkingSplitter, tiny_encoder: M3Encoder
) -> None:
    store = memory_qdrant_store(tiny_encoder, "children")
    retriever = ParentDocumentRetriever(
        vectorstore=store, docstore=InMemoryStore(), child_splitter=splitter
    )
    retriever.add_documents(PARENTS, ids=["pa", "pb"])
    children = splitter.split_documents([PARENTS[0]])
    points, _ = store.client.scroll("children", limit=1000, with_vectors=True)
    dense = {}
    for p in points:
        assert p.payload is not None and isinstance(p.vector, dict)
        dense[p.payload["page_content"], p.payload["metadata"]["doc_id"]] = p.vector[
            store.vector_name
        ]
    assert (
        len(dense)
        == len(points)
        == len(children) + len(splitter.split_text(PARENTS[1].page_content))
    )
    for child in children:
        np.testing.assert_allclose(
            dense[(child.page_content, "pa")], late_chunk_vectors(child).dense, atol=1e-5
        )
    got = retriever.invoke(SAMPLE_TEXTS[5])
    assert got and all(d in PARENTS for d in got)


def test_the_readme_async_recipe_writes_nothing_once_cancelled(
    splitter: M3LateChunkingSplitter,
    store: M3VectorStore,
    tiny_encoder: M3Encoder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's way to add parents from async code, ``in_worker(parents.add_documents,
    ...)``, cancelled (an ``asyncio.wait_for`` timeout) while the splitter runs the model:
    the update writes neither children nor the parent, so a delete made next holds. The
    README advised ``asyncio.to_thread``, whose thread went on after the timeout and wrote the
    deleted parent back, children and docstore entry."""
    docstore = InMemoryStore()
    parents = ParentDocumentRetriever(vectorstore=store, docstore=docstore, child_splitter=splitter)
    parents.add_documents(PARENTS[:1], ids=["pa"])
    gate = Gate(tiny_encoder.token_states, hold=1)  # the update's late-chunking pass
    monkeypatch.setattr(tiny_encoder, "token_states", gate)

    async def timed_out_update() -> None:
        update = asyncio.ensure_future(in_worker(parents.add_documents, PARENTS[1:], ids=["pa"]))
        await cancel_when_held(update, gate, "wait_for")  # its thread is done when it raises
        store.index.store.delete_points(filter={"doc_id": "pa"})  # the README's delete
        docstore.mdelete(["pa"])

    asyncio.run(timed_out_update())
    assert gate.calls == 1 and not _all_points(store) and docstore.mget(["pa"]) == [None]
