"""M3QdrantVectorStore under ParentDocumentRetriever: re-adding a parent replaces its children.

ParentDocumentRetriever writes a parent's children through ``vectorstore.add_documents``
without ids (each child carries the parent's id under ``id_key``); langchain-qdrant gives each
a random uuid, so re-adding a parent under its id stored its children again next to the old
(duplicated, and stale when the parent's text changed). With ``parent_id_key`` set, one write
carries all the children of each parent it names: they get ids from the parent id and their
place, and the parent's other points are deleted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from langchain_classic.retrievers import ParentDocumentRetriever
from langchain_classic.storage import InMemoryStore
from langchain_core.documents import Document
from langchain_qdrant import RetrievalMode
from langchain_text_splitters import RecursiveCharacterTextSplitter, TextSplitter

from langchain_m3 import (
    M3Embeddings,
    M3LateChunkingSplitter,
    M3QdrantVectorStore,
    M3SparseEmbeddings,
)
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

LONG = Document(" ".join(SAMPLE_TEXTS[:6]), metadata={"src": "a"})
CHANGED = Document(" ".join(SAMPLE_TEXTS[2:9]), metadata={"src": "a2"})
SHORT = Document(SAMPLE_TEXTS[0], metadata={"src": "a3"})
OTHER = Document(" ".join(SAMPLE_TEXTS[6:9]), metadata={"src": "b"})


def _store(encoder: M3Encoder, mode: RetrievalMode) -> M3QdrantVectorStore:
    store = M3QdrantVectorStore.construct_instance(
        embedding=M3Embeddings.from_encoder(encoder),
        sparse_embedding=M3SparseEmbeddings.from_encoder(encoder),
        retrieval_mode=mode,
        client_options={"location": ":memory:"},
        collection_name="children",
    )
    assert isinstance(store, M3QdrantVectorStore)
    return store


def _points(store: M3QdrantVectorStore) -> list[tuple[str, str, str]]:
    """Every stored point as (point id, text, parent id)."""
    points, _ = store.client.scroll("children", limit=10_000)
    out = []
    for p in points:
        assert p.payload is not None
        out.append((str(p.id), p.payload["page_content"], p.payload["metadata"].get("doc_id")))
    return out


def _children(splitter: TextSplitter, parent: Document) -> Counter[str]:
    return Counter(splitter.split_text(parent.page_content))


@pytest.fixture(params=["late", "recursive"])
def splitter(request: pytest.FixtureRequest, tiny_encoder: M3Encoder) -> TextSplitter:
    if request.param == "late":
        return M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=12)
    return RecursiveCharacterTextSplitter(chunk_size=60, chunk_overlap=0)


@pytest.mark.parametrize("mode", [RetrievalMode.HYBRID, RetrievalMode.DENSE, RetrievalMode.SPARSE])
def test_re_adding_a_parent_replaces_its_children(
    tiny_encoder: M3Encoder, splitter: TextSplitter, mode: RetrievalMode
) -> None:
    store = _store(tiny_encoder, mode)
    store.parent_id_key = "doc_id"
    retriever = ParentDocumentRetriever(
        vectorstore=store, docstore=InMemoryStore(), child_splitter=splitter
    )
    retriever.add_documents([LONG, OTHER], ids=["pa", "pb"])
    first = _points(store)
    others = sorted(p for p in first if p[2] == "pb")
    assert Counter(t for _, t, d in first if d == "pa") == _children(splitter, LONG)

    # unchanged: the same points, under the same ids
    retriever.add_documents([LONG], ids=["pa"])
    assert sorted(_points(store)) == sorted(first)

    # changed text: the new children only, nothing of the old left
    retriever.add_documents([CHANGED], ids=["pa"])
    now = _points(store)
    assert Counter(t for _, t, d in now if d == "pa") == _children(splitter, CHANGED)
    assert sorted(p for p in now if p[2] == "pb") == others

    # fewer children than before: no leftovers past the new last one
    assert len(_children(splitter, SHORT)) < len(_children(splitter, CHANGED))
    retriever.add_documents([SHORT], ids=["pa"])
    now = _points(store)
    assert Counter(t for _, t, d in now if d == "pa") == _children(splitter, SHORT)
    assert sorted(p for p in now if p[2] == "pb") == others

    # search sees current points only, each once (sparse mode: those sharing a query token)
    hits = store.similarity_search(SAMPLE_TEXTS[0], k=1000)
    hit_ids = [h.metadata["_id"] for h in hits]
    assert len(set(hit_ids)) == len(hit_ids) and set(hit_ids) <= {p[0] for p in now}
    if mode is not RetrievalMode.SPARSE:
        assert len(hits) == len(now)
    assert SHORT in retriever.invoke(SAMPLE_TEXTS[0])


async def test_async_re_add_and_the_per_call_key(
    tiny_encoder: M3Encoder, splitter: TextSplitter
) -> None:
    # store.parent_id_key unset: the key given to the retriever's add reaches the store
    store = _store(tiny_encoder, RetrievalMode.HYBRID)
    retriever = ParentDocumentRetriever(
        vectorstore=store, docstore=InMemoryStore(), child_splitter=splitter, id_key="parent"
    )
    await retriever.aadd_documents([LONG], ids=["pa"], parent_id_key="parent")
    await retriever.aadd_documents([CHANGED], ids=["pa"], parent_id_key="parent")
    points, _ = store.client.scroll("children", limit=10_000)
    assert Counter(p.payload["page_content"] for p in points if p.payload) == (
        _children(splitter, CHANGED)
    )


def test_plain_documents_keep_langchain_qdrant_ids(tiny_encoder: M3Encoder) -> None:
    store = _store(tiny_encoder, RetrievalMode.HYBRID)
    store.parent_id_key = "doc_id"
    # without the key: a random id each, so the same text twice is two points
    docs = [Document(SAMPLE_TEXTS[0], metadata={"src": "x"})]
    first = store.add_documents(docs)
    second = store.add_documents(docs)
    assert first != second and len(_points(store)) == 2
    # explicit ids are kept as given
    assert store.add_documents(docs, ids=[7]) == [7]
    # a parent's children ids are uuid strings, the same for the same parent and place
    assert store.add_documents([Document("c", metadata={"doc_id": "p"})]) == (
        store.add_documents([Document("d", metadata={"doc_id": "p"})])
    )
    assert [t for _, t, d in _points(store) if d == "p"] == ["d"]


def test_a_parent_id_that_cannot_be_matched_is_refused(tiny_encoder: M3Encoder) -> None:
    store = _store(tiny_encoder, RetrievalMode.DENSE)
    store.parent_id_key = "doc_id"
    with pytest.raises(ValueError, match=r"documents\[1\].*\[1, 2\] under 'doc_id'"):
        store.add_documents(
            [Document("a", metadata={"doc_id": "p"}), Document("b", metadata={"doc_id": [1, 2]})]
        )
    assert _points(store) == []


def test_some_documents_with_ids_the_others_get_child_ids(tiny_encoder: M3Encoder) -> None:
    # langchain-core passes [doc.id for doc in documents] once any is set: None holes included
    store = _store(tiny_encoder, RetrievalMode.HYBRID)
    store.parent_id_key = "doc_id"
    docs = [
        Document("c", metadata={"doc_id": "p"}, id="11111111-1111-1111-1111-111111111111"),
        Document("d", metadata={"doc_id": "p"}),
    ]
    written = store.add_documents(docs)
    assert written[0] == "11111111-1111-1111-1111-111111111111" and written[1] is not None
    again = store.add_documents(docs)
    assert again == written
    assert sorted(t for _, t, d in _points(store) if d == "p") == ["c", "d"]


def test_a_parent_id_key_that_is_not_a_string_is_refused(tiny_encoder: M3Encoder) -> None:
    store = _store(tiny_encoder, RetrievalMode.DENSE)
    with pytest.raises(TypeError, match="parent_id_key must be the metadata key"):
        store.add_documents([Document("a", metadata={"doc_id": "p"})], parent_id_key=5)
    assert _points(store) == []


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_from_documents_takes_the_parent_id_key(
    tiny_encoder: M3Encoder, asynchronous: bool
) -> None:
    # from_texts passes unknown keywords to QdrantClient, which (local mode) ignores them: the
    # key was dropped silently and a re-added parent kept its old children
    children = [Document(t, metadata={"doc_id": "p"}) for t in SAMPLE_TEXTS[0:3]]
    options: dict[str, Any] = {
        "location": ":memory:",
        "collection_name": "children",
        "parent_id_key": "doc_id",
    }
    embedding = M3Embeddings.from_encoder(tiny_encoder)
    if asynchronous:
        store = await M3QdrantVectorStore.afrom_documents(children, embedding, **options)
    else:
        store = M3QdrantVectorStore.from_documents(children, embedding, **options)
    assert isinstance(store, M3QdrantVectorStore) and store.parent_id_key == "doc_id"
    store.add_documents([Document(SAMPLE_TEXTS[3], metadata={"doc_id": "p"})])
    assert [t for _, t, _ in _points(store)] == [SAMPLE_TEXTS[3]]
    with pytest.raises(TypeError, match="parent_id_key must be the metadata key"):
        M3QdrantVectorStore.from_texts(["a"], embedding, location=":memory:", parent_id_key=3)
