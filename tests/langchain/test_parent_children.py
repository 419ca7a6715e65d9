"""Both LangChain stores under ParentDocumentRetriever: re-adding a parent replaces its children.

ParentDocumentRetriever writes a parent's children through ``vectorstore.add_documents``
without ids (each child carries the parent's id under ``id_key``). ``M3QdrantVectorStore``
(langchain-qdrant) gave each a random uuid, so re-adding a parent under its id stored its
children again next to the old (duplicated, and stale when the parent's text changed);
``M3VectorStore`` gave each the content id of its text and metadata, so re-adding an
unchanged parent rewrote nothing, but re-adding it with another text stored its new children
next to the old ones (stale hits). With ``parent_id_key`` set, one write carries all the
children of each parent it names: they get ids from the parent id and their place, and the
parent's other entries are deleted.

The ``store`` fixture is ``M3VectorStore`` on each engine (``"edge"``, ``"client"``) and
``M3QdrantVectorStore`` in hybrid mode; the re-add test also runs the qdrant store's dense and
sparse modes. Tests of one store's own ids name it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_classic.retrievers import ParentDocumentRetriever
from langchain_classic.storage import InMemoryStore
from langchain_core.documents import Document
from langchain_qdrant import RetrievalMode
from langchain_text_splitters import RecursiveCharacterTextSplitter, TextSplitter
from qdrant_client import models

from langchain_m3 import (
    M3Embeddings,
    M3LateChunkingSplitter,
    M3QdrantVectorStore,
    M3SparseEmbeddings,
    M3VectorStore,
)
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS
from tests.langchain.qdrant_stores import memory_qdrant_store

Store = M3VectorStore | M3QdrantVectorStore

LONG = Document(" ".join(SAMPLE_TEXTS[:6]), metadata={"src": "a"})
CHANGED = Document(" ".join(SAMPLE_TEXTS[2:9]), metadata={"src": "a2"})
SHORT = Document(SAMPLE_TEXTS[0], metadata={"src": "a3"})
OTHER = Document(" ".join(SAMPLE_TEXTS[6:9]), metadata={"src": "b"})

M3_KINDS = ["edge", "client"]  # M3VectorStore's backends
QDRANT_MODES = {
    "qdrant-hybrid": RetrievalMode.HYBRID,
    "qdrant-dense": RetrievalMode.DENSE,
    "qdrant-sparse": RetrievalMode.SPARSE,
}
KINDS = [*M3_KINDS, "qdrant-hybrid"]
ALL_KINDS = [*M3_KINDS, *QDRANT_MODES]


def _close(store: Store) -> None:
    if isinstance(store, M3VectorStore):
        store.close()
    else:
        store.client.close()


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tiny_encoder: M3Encoder) -> Iterator[Store]:
    kind = request.param
    s: Store
    if kind in QDRANT_MODES:
        s = memory_qdrant_store(tiny_encoder, "children", QDRANT_MODES[kind])
    else:
        s = M3VectorStore.open(tiny_encoder, backend=kind)
    yield s
    _close(s)


def _points(store: Store) -> list[tuple[str, str, str]]:
    """Every stored entry as (document id or point id, text, parent id)."""
    if isinstance(store, M3VectorStore):
        return [
            (h.doc_id, h.text, h.metadata.get("doc_id"))
            for h in store.index.store.get(filter=models.Filter())
        ]
    points, _ = store.client.scroll(store.collection_name, limit=10_000)
    out = []
    for p in points:
        assert p.payload is not None
        out.append((str(p.id), p.payload["page_content"], p.payload["metadata"].get("doc_id")))
    return out


def _hit_id(store: Store, hit: Document) -> str:
    """The id ``_points`` shows for a search hit."""
    return str(hit.id if isinstance(store, M3VectorStore) else hit.metadata["_id"])


def _children(splitter: TextSplitter, parent: Document) -> Counter[str]:
    return Counter(splitter.split_text(parent.page_content))


@pytest.fixture(params=["late", "recursive"])
def splitter(request: pytest.FixtureRequest, tiny_encoder: M3Encoder) -> TextSplitter:
    if request.param == "late":
        return M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=12)
    return RecursiveCharacterTextSplitter(chunk_size=60, chunk_overlap=0)


@pytest.mark.parametrize("store", ALL_KINDS, indirect=True)
def test_re_adding_a_parent_replaces_its_children(store: Store, splitter: TextSplitter) -> None:
    store.parent_id_key = "doc_id"
    retriever = ParentDocumentRetriever(
        vectorstore=store, docstore=InMemoryStore(), child_splitter=splitter
    )
    retriever.add_documents([LONG, OTHER], ids=["pa", "pb"])
    first = _points(store)
    others = sorted(p for p in first if p[2] == "pb")
    assert Counter(t for _, t, d in first if d == "pa") == _children(splitter, LONG)

    # unchanged: the same entries, under the same ids
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

    # search sees current entries only, each once (sparse mode: those sharing a query token;
    # otherwise all of them)
    hits = store.similarity_search(SAMPLE_TEXTS[0], k=1000)
    hit_ids = [_hit_id(store, h) for h in hits]
    assert len(set(hit_ids)) == len(hit_ids) and set(hit_ids) <= {p[0] for p in now}
    sparse_only = getattr(store, "retrieval_mode", None) is RetrievalMode.SPARSE
    if not sparse_only:
        assert len(hits) == len(now)
    assert SHORT in retriever.invoke(SAMPLE_TEXTS[0])


async def test_async_re_add_and_the_per_call_key(store: Store, splitter: TextSplitter) -> None:
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
    store: Store, splitter: TextSplitter
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


def test_a_parent_s_children_get_the_same_ids_for_the_same_parent_and_place(
    store: Store,
) -> None:
    store.parent_id_key = "doc_id"
    assert store.add_documents([Document("c", metadata={"doc_id": "p"})]) == (
        store.add_documents([Document("d", metadata={"doc_id": "p"})])
    )
    assert [t for _, t, d in _points(store) if d == "p"] == ["d"]


def test_some_documents_with_ids_the_others_get_child_ids(store: Store) -> None:
    # langchain-core passes [doc.id for doc in documents] once any is set: None holes included
    store.parent_id_key = "doc_id"
    docs = [
        Document("c", metadata={"doc_id": "p"}, id="11111111-1111-1111-1111-111111111111"),
        Document("d", metadata={"doc_id": "p"}),
    ]
    written = store.add_documents(docs)
    assert written[0] == "11111111-1111-1111-1111-111111111111" and written[1] is not None
    again = store.add_documents(docs)
    assert again == written
    assert sorted((i, t) for i, t, d in _points(store) if d == "p") == [
        (str(written[0]), "c"),
        (str(written[1]), "d"),
    ]


@pytest.mark.parametrize("store", ["qdrant-hybrid"], indirect=True)
def test_qdrant_documents_without_the_key_keep_langchain_qdrant_ids(store: Store) -> None:
    store.parent_id_key = "doc_id"
    # without the key: a random id each, so the same text twice is two points
    docs = [Document(SAMPLE_TEXTS[0], metadata={"src": "x"})]
    first = store.add_documents(docs)
    second = store.add_documents(docs)
    assert first != second and len(_points(store)) == 2
    # explicit ids are kept as given
    assert store.add_documents(docs, ids=[7]) == [7]


@pytest.mark.parametrize("store", M3_KINDS, indirect=True)
def test_m3_documents_without_the_key_keep_their_content_ids(store: Store) -> None:
    store.parent_id_key = "doc_id"
    # without the key: the content id, so the same document twice is one
    docs = [Document(SAMPLE_TEXTS[0], metadata={"src": "x"})]
    first = store.add_documents(docs)
    assert store.add_documents(docs) == first and len(_points(store)) == 1
    # explicit ids are kept as given, also for a child
    assert store.add_documents(docs, ids=["seven"]) == ["seven"]
    child = Document("e", id="mine", metadata={"doc_id": "q"})
    assert store.add_documents([child]) == ["mine"]
    assert [(i, t) for i, t, d in _points(store) if d == "q"] == [("mine", "e")]


def test_a_parent_id_that_cannot_be_matched_is_refused(store: Store) -> None:
    store.parent_id_key = "doc_id"
    with pytest.raises(ValueError, match=r"documents\[1\].*\[1, 2\] under 'doc_id'"):
        store.add_documents(
            [Document("a", metadata={"doc_id": "p"}), Document("b", metadata={"doc_id": [1, 2]})]
        )
    assert _points(store) == []


def test_a_key_no_filter_can_address_is_refused(store: Store) -> None:
    child = Document("a", metadata={"doc_id": "p"})
    with pytest.raises(TypeError, match="parent_id_key must be the metadata key"):
        store.add_documents([child], parent_id_key=5)
    with pytest.raises(ValueError, match="cannot be addressed"):
        store.add_documents([Document("a", metadata={'a"b': "p"})], parent_id_key='a"b')
    assert _points(store) == []


def _from_arguments(kind: str, encoder: M3Encoder) -> tuple[Any, Any, dict[str, Any]]:
    """The class, embedding argument and store options ``from_documents`` takes."""
    if kind == "qdrant":
        options = {"location": ":memory:", "collection_name": "children"}
        return M3QdrantVectorStore, M3Embeddings.from_encoder(encoder), options
    return M3VectorStore, encoder, {}


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize("kind", ["m3", "qdrant"])
async def test_from_documents_takes_the_parent_id_key(
    tiny_encoder: M3Encoder, kind: str, asynchronous: bool
) -> None:
    # M3QdrantVectorStore.from_texts passed unknown keywords to QdrantClient, which (local
    # mode) ignores them: the key was dropped silently and a re-added parent kept its old
    # children; M3VectorStore refused it as an "unexpected keyword"
    children = [Document(t, metadata={"doc_id": "p"}) for t in SAMPLE_TEXTS[0:3]]
    cls, embedding, options = _from_arguments(kind, tiny_encoder)
    if asynchronous:
        store = await cls.afrom_documents(children, embedding, parent_id_key="doc_id", **options)
    else:
        store = cls.from_documents(children, embedding, parent_id_key="doc_id", **options)
    try:
        assert isinstance(store, cls) and store.parent_id_key == "doc_id"
        store.add_documents([Document(SAMPLE_TEXTS[3], metadata={"doc_id": "p"})])
        assert [t for _, t, _ in _points(store)] == [SAMPLE_TEXTS[3]]
    finally:
        _close(store)
    with pytest.raises(TypeError, match="parent_id_key must be the metadata key"):
        cls.from_texts(["a"], embedding, parent_id_key=3, **options)


@pytest.mark.parametrize("kind", M3_KINDS)
def test_two_threads_re_adding_one_parent_leave_one_whole_set_of_children(
    tiny_encoder: M3Encoder, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write deletes the parent's children it did not write: two writes of one parent
    interleaved (B writes, A writes, then B deletes what is not B's) deleted a child of A's
    set, leaving A's set less a child. A write and its deletes are now one step."""
    store = M3VectorStore.from_documents([], tiny_encoder, backend=kind, parent_id_key="p")
    index = store.index
    sets = _two_writes_of_one_parent(store, index.store, "delete_points", monkeypatch)
    assert sorted(h.text for h in index.search("child", k=10)) in sets
    store.close()


def test_qdrant_two_threads_re_adding_one_parent_leave_one_whole_set_of_children(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for ``M3VectorStore`` above: ``M3QdrantVectorStore`` upserted a parent's children,
    then deleted its other points; B wrote, A wrote, then B deleted what was not B's (A's third
    child), leaving A's set less a child. A write and its deletes are now one step."""
    store = memory_qdrant_store(tiny_encoder, "children")
    store.parent_id_key = "p"
    sets = _two_writes_of_one_parent(store, store.client, "delete", monkeypatch)
    assert sorted(text for _, text, _ in _points(store)) in sets
    _close(store)


def test_from_existing_collection_takes_the_parent_id_key(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """langchain-qdrant's ``from_existing_collection`` passes unknown keywords to
    ``QdrantClient``, which (local mode) ignores them: the key was dropped silently, and a
    re-added parent kept its old children next to its new ones."""
    options: dict[str, Any] = {
        "embedding": M3Embeddings.from_encoder(tiny_encoder),
        "sparse_embedding": M3SparseEmbeddings.from_encoder(tiny_encoder),
        "retrieval_mode": RetrievalMode.HYBRID,
        "collection_name": "children",
        "path": str(tmp_path),
    }
    old = [Document(t, metadata={"doc_id": "p"}) for t in SAMPLE_TEXTS[0:3]]
    written = M3QdrantVectorStore.from_documents(old, parent_id_key="doc_id", **options)
    _close(written)
    with pytest.raises(TypeError, match="parent_id_key must be the metadata key"):
        M3QdrantVectorStore.from_existing_collection(parent_id_key=3, **options)
    store = M3QdrantVectorStore.from_existing_collection(parent_id_key="doc_id", **options)
    try:
        assert isinstance(store, M3QdrantVectorStore) and store.parent_id_key == "doc_id"
        store.add_documents([Document(SAMPLE_TEXTS[3], metadata={"doc_id": "p"})])
        assert [t for _, t, _ in _points(store)] == [SAMPLE_TEXTS[3]]
    finally:
        _close(store)


def _two_writes_of_one_parent(
    store: Any, deleter: Any, name: str, monkeypatch: pytest.MonkeyPatch
) -> list[list[str]]:
    """Thread B adds 2 children of parent ``P`` to ``store`` and, at its delete of P's other
    children (``deleter.<name>``), waits for the main thread's add of 3 (or 1 s, if that add
    waits for B); returns the two whole sets, one of which must be what is stored."""
    a_set = [Document(f"A's child {i}", metadata={"p": "P"}) for i in range(3)]
    b_set = [Document(f"B's child {i}", metadata={"p": "P"}) for i in range(2)]
    b_wrote, a_wrote = threading.Event(), threading.Event()
    real_delete = getattr(deleter, name)

    def delete(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "B":
            b_wrote.set()
            a_wrote.wait(1)  # B deletes after A's write (or after 1 s, if A waits for B)
        else:
            a_wrote.set()
        return real_delete(*args, **kwargs)

    monkeypatch.setattr(deleter, name, delete)
    b = threading.Thread(target=store.add_documents, args=(b_set,), name="B")
    b.start()
    assert b_wrote.wait(30)
    store.add_documents(a_set)
    b.join(10)
    return [[d.page_content for d in a_set], [d.page_content for d in b_set]]


def _children_of(parent: str, version: str, count: int) -> list[Document]:
    return [Document(f"{version} {parent} child {i}", metadata={"p": parent}) for i in range(count)]


def _stored_sets(store: Store) -> dict[str, list[str]]:
    """The stored children's texts of each parent, sorted."""
    out: dict[str, list[str]] = {}
    for _, text, _ in _points(store):
        out.setdefault(text.split()[1], []).append(text)
    return {parent: sorted(texts) for parent, texts in out.items()}


def _texts(docs: list[Document]) -> list[str]:
    return sorted(d.page_content for d in docs)


def _meeting_encodes(encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the first encode of each of two threads wait (10 s at most) until the other's
    has begun: encodes that take turns break the barrier, and the writes raise."""
    meet = threading.Barrier(2, timeout=10)
    waited: set[int] = set()
    real = encoder.encode_tokenized

    def encode(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            meet.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder, "encode_tokenized", encode)


def _in_threads(*writes: tuple[Store, list[Document]]) -> None:
    """Run each ``store.add_documents(documents)`` in a thread of its own, all at once;
    re-raise the first error, and fail if one is still running after 60 s."""
    errors: list[BaseException] = []

    def write(store: Store, documents: list[Document]) -> None:
        try:
            store.add_documents(documents, parent_id_key="p")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=w) for w in writes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a write still waits: a deadlock"
    if errors:
        raise errors[0]


def test_writes_of_two_parents_encode_at_once(
    store: Store, tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write replacing a parent's children held one store-wide lock (M3VectorStore: the
    store's write lock; M3QdrantVectorStore: one per client) through its encoding too, so two
    threads writing two different parents encoded one after the other. Only writes of one
    parent take turns now; each parent ends with its new children alone."""
    store.add_documents(
        _children_of("P", "old", 3) + _children_of("Q", "old", 3), parent_id_key="p"
    )
    p_new, q_new = _children_of("P", "new", 2), _children_of("Q", "new", 2)
    _meeting_encodes(tiny_encoder, monkeypatch)
    _in_threads((store, p_new), (store, q_new))
    assert _stored_sets(store) == {"P": _texts(p_new), "Q": _texts(q_new)}


async def test_async_writes_of_two_parents_encode_at_once(
    store: Store, tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``aadd_documents`` writes in a worker thread through ``add_documents``'s path: two
    parents' writes encode at once there too."""
    p_new, q_new = _children_of("P", "new", 2), _children_of("Q", "new", 3)
    _meeting_encodes(tiny_encoder, monkeypatch)
    await asyncio.gather(
        store.aadd_documents(p_new, parent_id_key="p"),
        store.aadd_documents(q_new, parent_id_key="p"),
    )
    assert _stored_sets(store) == {"P": _texts(p_new), "Q": _texts(q_new)}


def test_writes_sharing_parents_in_either_order_each_leave_one_whole_set(store: Store) -> None:
    """Two writes naming the same two parents in opposite orders, plus one of a third parent,
    all at once: none waits forever on the other, and each parent holds exactly one writer's
    whole set of children (never a mix, a duplicate or an old child)."""
    store.add_documents(
        _children_of("P", "old", 4) + _children_of("Q", "old", 4), parent_id_key="p"
    )
    first = _children_of("Q", "one", 3) + _children_of("P", "one", 2)
    second = _children_of("P", "two", 1) + _children_of("Q", "two", 2)
    third = _children_of("R", "three", 2)
    for _ in range(3):
        _in_threads((store, first), (store, second), (store, third))
        stored = _stored_sets(store)
        assert stored["P"] in (_texts(first[3:]), _texts(second[:1]))
        assert stored["Q"] in (_texts(first[:3]), _texts(second[1:]))
        assert stored["R"] == _texts(third)
        assert sorted(stored) == ["P", "Q", "R"]


@pytest.mark.parametrize("key", [None, "doc_id"])
def test_ids_of_another_length_are_refused_before_writing(store: Store, key: str | None) -> None:
    """``M3QdrantVectorStore`` zipped the texts with fewer ids: without a parent id key the
    texts past the last id were dropped silently, with one it raised zip's own message."""
    children = [Document(t, metadata={"doc_id": "p"}) for t in SAMPLE_TEXTS[:3]]
    one_id = ["11111111-1111-1111-1111-111111111111"]
    with pytest.raises(ValueError, match=r"^3 (documents|texts) but 1 ids"):
        store.add_documents(children, ids=one_id, parent_id_key=key)
    with pytest.raises(ValueError, match=r"^3 (documents|texts) but 1 ids"):
        store.add_texts(SAMPLE_TEXTS[:3], ids=one_id, parent_id_key=key)
    assert _points(store) == []
