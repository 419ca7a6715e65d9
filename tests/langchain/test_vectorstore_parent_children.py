"""M3VectorStore under ParentDocumentRetriever: re-adding a parent replaces its children.

ParentDocumentRetriever writes a parent's children through ``vectorstore.add_documents``
without ids (each child carries the parent's id under ``id_key``); M3VectorStore gives each
the content id of its text and metadata, so re-adding an unchanged parent rewrote nothing, but
re-adding it with another text stored its new children next to the old ones (stale hits).
With ``parent_id_key`` set, one write carries all the children of each parent it names: they
get ids from the parent id and their place, and the parent's other documents are deleted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from langchain_classic.retrievers import ParentDocumentRetriever
from langchain_classic.storage import InMemoryStore
from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter, TextSplitter
from qdrant_client import models

from langchain_m3 import M3LateChunkingSplitter, M3VectorStore
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

LONG = Document(" ".join(SAMPLE_TEXTS[:6]), metadata={"src": "a"})
CHANGED = Document(" ".join(SAMPLE_TEXTS[2:9]), metadata={"src": "a2"})
SHORT = Document(SAMPLE_TEXTS[0], metadata={"src": "a3"})
OTHER = Document(" ".join(SAMPLE_TEXTS[6:9]), metadata={"src": "b"})


@pytest.fixture(params=["edge", "client"])
def store(request: pytest.FixtureRequest, tiny_encoder: M3Encoder) -> Iterator[M3VectorStore]:
    s = M3VectorStore.open(tiny_encoder, backend=request.param)
    yield s
    s.close()


def _points(store: M3VectorStore) -> list[tuple[str, str, str]]:
    """Every stored point as (document id, text, parent id)."""
    return [
        (h.doc_id, h.text, h.metadata.get("doc_id"))
        for h in store.index.store.get(filter=models.Filter())
    ]


def _children(splitter: TextSplitter, parent: Document) -> Counter[str]:
    return Counter(splitter.split_text(parent.page_content))


@pytest.fixture(params=["late", "recursive"])
def splitter(request: pytest.FixtureRequest, tiny_encoder: M3Encoder) -> TextSplitter:
    if request.param == "late":
        return M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=12)
    return RecursiveCharacterTextSplitter(chunk_size=60, chunk_overlap=0)


def test_re_adding_a_parent_replaces_its_children(
    store: M3VectorStore, splitter: TextSplitter
) -> None:
    store.parent_id_key = "doc_id"
    retriever = ParentDocumentRetriever(
        vectorstore=store, docstore=InMemoryStore(), child_splitter=splitter
    )
    retriever.add_documents([LONG, OTHER], ids=["pa", "pb"])
    first = _points(store)
    others = sorted(p for p in first if p[2] == "pb")
    assert Counter(t for _, t, d in first if d == "pa") == _children(splitter, LONG)

    # unchanged: the same documents, under the same ids
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

    # search sees current documents only, each once
    hits = store.similarity_search(SAMPLE_TEXTS[0], k=1000)
    hit_ids = [h.id for h in hits]
    assert len(set(hit_ids)) == len(hit_ids) == len(now)
    assert set(hit_ids) == {p[0] for p in now}
    assert SHORT in retriever.invoke(SAMPLE_TEXTS[0])


async def test_async_re_add_and_the_per_call_key(
    store: M3VectorStore, splitter: TextSplitter
) -> None:
    # store.parent_id_key unset: the key given to the retriever's add reaches the store
    retriever = ParentDocumentRetriever(
        vectorstore=store, docstore=InMemoryStore(), child_splitter=splitter, id_key="parent"
    )
    await retriever.aadd_documents([LONG], ids=["pa"], parent_id_key="parent")
    await retriever.aadd_documents([CHANGED], ids=["pa"], parent_id_key="parent")
    assert Counter(t for _, t, _ in _points(store)) == _children(splitter, CHANGED)
    # and through add_texts
    store.add_texts(["c"], [{"parent": "pa"}], parent_id_key="parent")
    assert [t for _, t, _ in _points(store)] == ["c"]


def test_without_the_key_a_changed_parent_keeps_its_old_children(
    store: M3VectorStore, splitter: TextSplitter
) -> None:
    # off by default: children of one parent added over several calls all stay
    retriever = ParentDocumentRetriever(
        vectorstore=store, docstore=InMemoryStore(), child_splitter=splitter
    )
    retriever.add_documents([LONG], ids=["pa"])
    retriever.add_documents([SHORT], ids=["pa"])
    assert Counter(t for _, t, _ in _points(store)) == (
        _children(splitter, LONG) + _children(splitter, SHORT)
    )


def test_documents_without_the_key_keep_their_ids(store: M3VectorStore) -> None:
    store.parent_id_key = "doc_id"
    # without the key: the content id, so the same document twice is one
    docs = [Document(SAMPLE_TEXTS[0], metadata={"src": "x"})]
    first = store.add_documents(docs)
    assert store.add_documents(docs) == first and len(_points(store)) == 1
    # explicit ids are kept as given, also for a child
    assert store.add_documents(docs, ids=["seven"]) == ["seven"]
    child = Document("e", id="mine", metadata={"doc_id": "q"})
    assert store.add_documents([child]) == ["mine"]
    # a parent's children ids are the same for the same parent and place
    assert store.add_documents([Document("c", metadata={"doc_id": "p"})]) == (
        store.add_documents([Document("d", metadata={"doc_id": "p"})])
    )
    assert [t for _, t, d in _points(store) if d == "p"] == ["d"]
    assert [(i, t) for i, t, d in _points(store) if d == "q"] == [("mine", "e")]


def test_a_parent_id_that_cannot_be_matched_is_refused(store: M3VectorStore) -> None:
    store.parent_id_key = "doc_id"
    with pytest.raises(ValueError, match=r"documents\[1\].*\[1, 2\] under 'doc_id'"):
        store.add_documents(
            [Document("a", metadata={"doc_id": "p"}), Document("b", metadata={"doc_id": [1, 2]})]
        )
    assert _points(store) == []


def test_a_key_no_filter_can_address_is_refused(store: M3VectorStore) -> None:
    child = Document("a", metadata={"doc_id": "p"})
    with pytest.raises(TypeError, match="parent_id_key must be the metadata key"):
        store.add_documents([child], parent_id_key=5)
    with pytest.raises(ValueError, match="cannot be addressed"):
        store.add_documents([Document("a", metadata={'a"b': "p"})], parent_id_key='a"b')
    assert _points(store) == []


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_from_documents_takes_the_parent_id_key(
    tiny_encoder: M3Encoder, asynchronous: bool
) -> None:
    # as M3QdrantVectorStore.from_documents takes it: it was an "unexpected keyword" here
    children = [Document(t, metadata={"doc_id": "p"}) for t in SAMPLE_TEXTS[0:3]]
    if asynchronous:
        store = await M3VectorStore.afrom_documents(children, tiny_encoder, parent_id_key="doc_id")
    else:
        store = M3VectorStore.from_documents(children, tiny_encoder, parent_id_key="doc_id")
    try:
        assert store.parent_id_key == "doc_id"
        store.add_documents([Document(SAMPLE_TEXTS[3], metadata={"doc_id": "p"})])
        assert [t for _, t, _ in _points(store)] == [SAMPLE_TEXTS[3]]
    finally:
        store.close()
    with pytest.raises(TypeError, match="parent_id_key must be the metadata key"):
        M3VectorStore.from_texts(["a"], tiny_encoder, parent_id_key=3)
