"""M3VectorStore inside LlamaIndex: VectorStoreIndex, query engines, modes, filters, updates."""

from __future__ import annotations

import asyncio
import datetime
import doctest
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import (
    IndexNode,
    MetadataMode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from pydantic import ValidationError

import llamaindex_m3.vector_store
from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import ChunkRecord, M3Index, output_row, point_id

TEXTS = [
    "Berlin is the capital of Germany.",
    "Oxygen has the atomic number 8.",
    "The Amazon river flows through Brazil and Peru.",
    "Photosynthesis turns light into chemical energy.",
]
IDS = ["berlin", "oxygen", "amazon", "photo"]
TOPICS = ["geo", "chem", "geo", "bio"]
YEARS = [2020, 2021, 2022, 2023]


def _docs() -> list[Document]:
    return [
        Document(
            text=t,
            id_=i,
            metadata={"topic": p, "year": y},
            excluded_embed_metadata_keys=["topic", "year"],  # embed the text alone
        )
        for t, i, p, y in zip(TEXTS, IDS, TOPICS, YEARS, strict=True)
    ]


@pytest.fixture()
def store(tiny_embedding: M3Embedding) -> Iterator[M3VectorStore]:
    with M3VectorStore(tiny_embedding, collection_name="docs") as s:
        yield s


@pytest.fixture()
def index(store: M3VectorStore, tiny_embedding: M3Embedding) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        _docs(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=tiny_embedding,
    )


def test_from_documents_stores_one_chunk_per_node(
    index: VectorStoreIndex, store: M3VectorStore
) -> None:
    assert store.client.count() == len(TEXTS)
    nodes = store.get_nodes([point_id(i, 0) for i in IDS])
    assert [n.get_content() for n in nodes] == TEXTS
    assert [n.ref_doc_id for n in nodes] == IDS
    assert nodes[0].metadata == {"topic": "geo", "year": 2020, "doc_id": "berlin", "chunk_index": 0}


@pytest.mark.parametrize("mode", ["hybrid", "sparse"])
def test_query_modes_find_the_text(index: VectorStoreIndex, mode: str) -> None:
    retriever = index.as_retriever(vector_store_query_mode=mode, similarity_top_k=2)
    for text, doc_id in zip(TEXTS, IDS, strict=True):
        hits = retriever.retrieve(text)
        assert hits[0].node.ref_doc_id == doc_id and hits[0].node.get_content() == text, mode
        assert len(hits) == 2 and (hits[0].score or 0.0) >= (hits[1].score or 0.0)


def test_default_mode_is_dense_with_the_query_embedding(
    index: VectorStoreIndex, store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    emb = tiny_embedding.get_query_embedding(TEXTS[1])
    got = store.query(VectorStoreQuery(query_embedding=emb, similarity_top_k=4))
    want = store.client.store.query(dense=emb, k=4, rerank=False)
    assert got.ids == [h.chunk_id for h in want] and got.similarities == [h.score for h in want]
    assert [n.node_id for n in got.nodes or []] == got.ids
    # the retriever path computes the same embedding and gets the same ranking
    hits = index.as_retriever(similarity_top_k=4).retrieve(TEXTS[1])
    assert [h.node.node_id for h in hits] == got.ids


def test_hybrid_equals_the_m3_retriever(index: VectorStoreIndex, store: M3VectorStore) -> None:
    """Hybrid mode = dense + sparse, RRF, ColBERT rerank: M3Index.search's plan and scores."""
    for text in TEXTS:
        hits = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=3).retrieve(
            text
        )
        want = store.client.search(text, k=3)
        assert [h.node.node_id for h in hits] == [h.chunk_id for h in want]
        assert [h.score for h in hits] == pytest.approx([h.score for h in want], abs=1e-6)


def test_query_engine_answers(store: M3VectorStore, tiny_embedding: M3Embedding) -> None:
    VectorStoreIndex.from_documents(
        _docs(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=tiny_embedding,
    )
    index = VectorStoreIndex.from_vector_store(store, embed_model=tiny_embedding)
    engine = index.as_query_engine(
        llm=MockLLM(max_tokens=5), vector_store_query_mode="hybrid", similarity_top_k=1
    )
    response = engine.query(TEXTS[2])
    assert str(response).strip() == "text text text text text"
    assert [n.node.get_content() for n in response.source_nodes] == [TEXTS[2]]


def test_insert_delete_ref_doc_and_edits(
    index: VectorStoreIndex, store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    index.insert(_docs()[0])  # the same document again: nothing new
    assert store.client.count() == 4
    index.insert(Document(text="Munich is in Bavaria. It has a big beer festival.", id_="munich"))
    assert store.client.count() == 5
    edited = Document(text="Berlin has been the capital since 1990.", id_="berlin")
    index.insert(edited)  # a new version replaces the stored one
    (node,) = store.get_nodes(filters=_eq("doc_id", "berlin"))
    assert node.get_content() == edited.text and store.client.count() == 5
    index.delete_ref_doc("berlin")
    index.delete_ref_doc("munich")
    assert store.client.count() == 3
    assert {n.node.ref_doc_id for n in index.as_retriever(similarity_top_k=5).retrieve("x")} == {
        "oxygen",
        "amazon",
        "photo",
    }


def _eq(key: str, value: Any) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value)])


def test_filters(index: VectorStoreIndex) -> None:
    def ids(filters: MetadataFilters, mode: str = "hybrid") -> set[str]:
        retriever = index.as_retriever(
            vector_store_query_mode=mode, similarity_top_k=4, filters=filters
        )
        return {h.node.ref_doc_id or "" for h in retriever.retrieve(TEXTS[0])}

    assert ids(_eq("topic", "geo")) == {"berlin", "amazon"}
    assert ids(_eq("topic", "geo"), "default") == {"berlin", "amazon"}
    later = MetadataFilters(
        filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.GT)]
    )
    assert ids(later, "sparse") <= {"amazon", "photo"}
    either = MetadataFilters(
        filters=[
            MetadataFilter(key="topic", value="bio"),
            MetadataFilter(key="year", value=2020, operator=FilterOperator.LTE),
        ],
        condition=FilterCondition.OR,
    )
    assert ids(either) == {"photo", "berlin"}


def test_doc_ids_and_node_ids_restrict_the_query(index: VectorStoreIndex) -> None:
    store = index.vector_store
    q = VectorStoreQuery(
        query_str=TEXTS[0], mode=VectorStoreQueryMode.SPARSE, similarity_top_k=4, doc_ids=["photo"]
    )
    assert [n.ref_doc_id for n in store.query(q).nodes or []] == ["photo"]
    q.doc_ids, q.node_ids = None, [point_id("oxygen", 0), point_id("amazon", 0)]
    assert {n.ref_doc_id for n in store.query(q).nodes or []} <= {"oxygen", "amazon"}


def test_get_delete_nodes_and_clear(index: VectorStoreIndex, store: M3VectorStore) -> None:
    geo = store.get_nodes(filters=_eq("topic", "geo"))
    assert sorted(n.ref_doc_id or "" for n in geo) == ["amazon", "berlin"]
    store.delete_nodes([geo[0].node_id])
    assert store.client.count() == 3
    store.delete_nodes(filters=_eq("topic", "chem"))
    assert store.get_nodes(filters=_eq("topic", "chem")) == []
    index.delete_nodes([point_id("photo", 0)])  # through the index
    assert store.client.count() == 1
    store.clear()
    assert store.client.count() == 0
    with pytest.raises(ValueError, match=r"delete_nodes needs node_ids or filters.*clear\(\)"):
        store.delete_nodes()
    assert store.get_nodes(["my-node"]) == []  # no node has that id


def test_nodes_are_found_replaced_and_deleted_by_their_own_ids(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    # LlamaIndex code holds node ids; they used to match nothing (point ids are uuid5 of the
    # document and position), so get_nodes / delete_nodes / node_ids silently did nothing
    def node(i: int, text: str) -> TextNode:
        source = RelatedNodeInfo(node_id=f"doc-{i}", hash="h")
        return TextNode(text=text, id_=f"node-{i}", relationships={NodeRelationship.SOURCE: source})

    index = VectorStoreIndex(
        [node(i, t) for i, t in enumerate(TEXTS)],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=tiny_embedding,
    )
    got = store.get_nodes(["node-2", "missing", "node-0"])
    assert [n.get_content() for n in got] == [TEXTS[2], TEXTS[0]]
    assert store.get_nodes([got[0].node_id]) == got[:1]  # the point id still works
    q = VectorStoreQuery(query_str=TEXTS[1], mode=VectorStoreQueryMode.SPARSE, node_ids=["node-3"])
    assert [n.get_content() for n in store.query(q).nodes or []] == [TEXTS[3]]
    # same id, same document version, edited text: replaced, as an upsert by id
    store.add([node(0, "Berlin has about 3.7 million inhabitants.")])
    assert store.client.count() == len(TEXTS)
    assert store.get_nodes(["node-0"])[0].get_content().startswith("Berlin has about")
    # read back by its own id, edited, written again: still found (and deleted) by that id
    (back,) = store.get_nodes(["node-2"])
    back.set_content("The Amazon is the largest river by discharge.")
    store.add([back])
    assert store.get_nodes(["node-2"])[0].get_content().startswith("The Amazon is the largest")
    index.delete_nodes(["node-1"])  # through the index, with the node's own id
    assert store.get_nodes(["node-1"]) == [] and store.client.count() == len(TEXTS) - 1


def test_documents_split_across_add_batches(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    """VectorStoreIndex writes in batches of insert_batch_size; a document may straddle two."""
    long_text = " ".join(f"Sentence number {i} talks about topic {i % 5}." for i in range(24))
    docs = [Document(text=long_text, id_="long"), _docs()[1]]
    splitter = SentenceSplitter(chunk_size=40, chunk_overlap=0)
    storage = StorageContext.from_defaults(vector_store=store)
    kwargs: dict[str, Any] = {"embed_model": tiny_embedding, "transformations": [splitter]}
    VectorStoreIndex.from_documents(docs, storage_context=storage, insert_batch_size=3, **kwargs)
    n_nodes = len(splitter.get_nodes_from_documents(docs))
    assert n_nodes > 4 and store.client.count() == n_nodes
    stored = store.get_nodes(filters=_eq("doc_id", "long"))
    assert sorted(n.metadata["chunk_index"] for n in stored) == list(range(n_nodes - 1))
    # split and indexed again (new random node ids): nothing added
    nodes = splitter.get_nodes_from_documents(docs)
    again = VectorStoreIndex(
        nodes, storage_context=storage, insert_batch_size=5, embed_model=tiny_embedding
    )
    assert store.client.count() == n_nodes
    # ... but the stored chunks take the new nodes' ids and links: the ids LlamaIndex now
    # holds find and delete them (they used to match nothing, so delete_nodes did nothing)
    new_ids = [n.node_id for n in nodes]
    found = store.get_nodes(new_ids)
    assert len(found) == n_nodes
    links = {n.next_node.node_id for n in found if n.next_node is not None}
    assert links and links <= set(new_ids)  # relationships name the new nodes too
    again.delete_nodes([new_ids[0]])
    assert store.client.count() == n_nodes - 1


def test_renaming_a_stored_node_never_takes_another_chunks_id(store: M3VectorStore) -> None:
    def node(node_id: str, text: str, hashed: bool = True) -> TextNode:
        source = RelatedNodeInfo(node_id="doc", hash="h" if hashed else None)
        return TextNode(text=text, id_=node_id, relationships={NodeRelationship.SOURCE: source})

    store.add([node("n0", "Oxygen is a gas."), node("n1", "Iron is a metal.")])
    # n1 arriving with n0's text: chunk 0 must not take the id n1 (chunk 1 holds it), or
    # delete_nodes(["n1"]) would delete both
    store.add([node("n1", "Oxygen is a gas.")])
    store.delete_nodes(["n1"])
    assert [n.get_content() for n in store.get_nodes(filters=_eq("doc_id", "doc"))] == [
        "Oxygen is a gas."
    ]
    # a fresh node with chunk 0's text and a read-back node editing chunk 0, in one call: the
    # edit keeps the chunk and its stored id; the fresh node, another node, is stored too
    (back,) = store.get_nodes(["n0"])
    back.set_content("Oxygen is a reactive gas.")
    store.add([node("p0", "Oxygen is a gas.", hashed=False), back])
    (hit,) = store.get_nodes(["n0"])
    (other,) = store.get_nodes(["p0"])
    assert hit.get_content() == "Oxygen is a reactive gas." and hit.metadata["chunk_index"] == 0
    assert other.get_content() == "Oxygen is a gas." and store.client.count() == 2


def test_nodes_read_back_and_written_again(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    # get_nodes -> (edit) -> add: the read-back node names its document without a hash; it
    # used to count as a new version, and the write deleted the document's other chunks
    text = " ".join(f"Sentence number {i} talks about topic {i % 5}." for i in range(18))
    doc = Document(text=text, id_="long", metadata={"topic": "t"})
    splitter = SentenceSplitter(chunk_size=40, chunk_overlap=0)
    storage = StorageContext.from_defaults(vector_store=store)
    VectorStoreIndex.from_documents(
        [doc], storage_context=storage, embed_model=tiny_embedding, transformations=[splitter]
    )
    count = store.client.count()
    assert count >= 3
    first = store.get_nodes([point_id("long", 1)])[0]
    assert first.metadata["chunk_index"] == 1
    assert isinstance(first, TextNode) and first.start_char_idx is not None
    assert text[first.start_char_idx : first.end_char_idx] == first.text  # offsets kept
    assert store.add([first]) == [first.node_id]  # the id it was written under
    assert store.client.count() == count, "re-adding a read-back node changed the store"
    again = store.get_nodes([first.node_id])[0]
    assert again.metadata == first.metadata  # placement keys not stored as user metadata
    # edited and written again: replaced in place, the old text is gone
    first.set_content("An edited sentence about rivers.")
    assert store.add([first]) == [first.node_id]
    assert store.client.count() == count
    stored = {n.text for n in store.get_nodes(filters=_eq("doc_id", "long"))}
    assert "An edited sentence about rivers." in stored and again.text not in stored
    # a new version of the document (the source's hash) still replaces every chunk
    VectorStoreIndex.from_documents(
        [Document(text="A short new version.", id_="long")],
        storage_context=storage,
        embed_model=tiny_embedding,
    )
    assert [n.text for n in store.get_nodes(filters=_eq("doc_id", "long"))] == [
        "A short new version."
    ]


def test_nodes_come_back_as_written(store: M3VectorStore, tiny_embedding: M3Embedding) -> None:
    # read back as bare TextNodes they used to lose their neighbours, show the LLM metadata
    # the user hid from it, and an IndexNode lost its index_id (recursive retrieval)
    text = " ".join(f"Sentence number {i} talks about topic {i % 5}." for i in range(18))
    doc = Document(
        text=text,
        id_="long",
        metadata={"file_path": "/data/long.txt", "topic": "t"},
        excluded_llm_metadata_keys=["file_path"],
    )
    nodes = SentenceSplitter(chunk_size=40, chunk_overlap=0).get_nodes_from_documents([doc])
    summary = IndexNode(text="A summary of the long document.", index_id="sub_index", id_="sum")
    VectorStoreIndex(
        [*nodes, summary],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=tiny_embedding,
    )
    got = store.get_nodes([n.node_id for n in nodes])
    assert [n.get_content() for n in got] == [n.get_content() for n in nodes]
    assert got[1].relationships[NodeRelationship.PREVIOUS].node_id == nodes[0].node_id
    assert got[1].relationships[NodeRelationship.NEXT].node_id == nodes[2].node_id
    assert store.get_nodes([got[1].next_node.node_id]) == [got[2]]  # a neighbour by its id
    llm_text = got[0].get_content(metadata_mode=MetadataMode.LLM)
    assert "topic: t" in llm_text and "/data/long.txt" not in llm_text
    assert got[0].ref_doc_id == "long"
    (back,) = store.get_nodes(["sum"])
    assert isinstance(back, IndexNode) and back.index_id == "sub_index"
    count = store.client.count()
    store.add(got)  # written again unchanged: nothing changes
    assert store.client.count() == count and store.get_nodes([nodes[0].node_id]) == got[:1]


def test_relationship_metadata_and_index_node_objects_are_stored(store: M3VectorStore) -> None:
    # relationships carry the source document's metadata (a date here), and an IndexNode may
    # hold a live object: neither is JSON, neither may stop the node being stored
    source = RelatedNodeInfo(node_id="d", hash="h", metadata={"when": datetime.date(2024, 1, 1)})
    plain = TextNode(text=TEXTS[0], id_="t", relationships={NodeRelationship.SOURCE: source})
    holder = IndexNode(text=TEXTS[1], id_="i", index_id="sub", obj=object())
    store.add([plain, holder])
    got = store.get_nodes(["t", "i"])
    assert got[0].relationships[NodeRelationship.SOURCE].metadata == {"when": "2024-01-01"}
    assert isinstance(got[1], IndexNode) and got[1].index_id == "sub" and got[1].obj is None


def test_read_back_node_of_a_half_written_document_is_refused(store: M3VectorStore) -> None:
    # two versions stored (a write that did not finish): a node naming no version cannot
    # tell which is current, and taking the wrong one would delete the other's chunks
    rows = store.client.encoder.encode(TEXTS[:2])
    for i in (0, 1):  # one write per version, neither replacing
        row = output_row(rows, i)
        record = ChunkRecord("d", i, TEXTS[i], {}, row, doc_hash=f"v{i}", chunk_count=2)
        store.client.store.upsert([record])
    (node,) = store.get_nodes([point_id("d", 0)])
    node.set_content("edited")
    with pytest.raises(ValueError, match="2 versions stored"):
        store.add([node])
    assert store.client.count() == 2


def test_concurrent_replacing_writes_keep_one_version(
    tiny_encoder: M3Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a replacing write is "write the new chunks, then delete the other versions'": two of them
    # interleaved (an M3Index and a vector store sharing it, each under its own lock) deleted
    # each other's chunks and the document was gone. One lock per store orders them now.
    index = M3Index.open(tiny_encoder)
    store = M3VectorStore.from_index(index)
    backend = index.store._backend
    real, calls = backend.upsert, []
    first_written = threading.Event()

    def slow_upsert(points):  # type: ignore[no-untyped-def]
        real(points)
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            first_written.set()
            time.sleep(0.5)  # the other writer's moment to interleave

    monkeypatch.setattr(backend, "upsert", slow_upsert)
    node = TextNode(
        text="the version written through LlamaIndex",
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="d", hash="h2")},
    )
    a = threading.Thread(target=index.add_texts, args=(["the first version"], None, ["d"]))
    b = threading.Thread(target=store.add, args=([node],))
    a.start()
    assert first_written.wait(30)
    b.start()
    a.join(30)
    b.join(30)
    assert index.count() == 1
    assert [n.text for n in store.get_nodes(filters=_eq("doc_id", "d"))] == [node.text]
    index.close()


def test_nodes_without_source_and_async(store: M3VectorStore) -> None:
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS[:2])]
    ids = asyncio.run(store.async_add(nodes))
    assert ids == ["n0", "n1"]
    assert store.add(nodes) == ids and store.client.count() == 2  # idempotent
    q = VectorStoreQuery(query_str=TEXTS[1], mode=VectorStoreQueryMode.SPARSE)
    result = asyncio.run(store.aquery(q))
    # no source: no document (LlamaIndex's stores record ref_doc_id "None"), so adelete
    # passes it by (tests/llamaindex/test_sourceless_nodes.py); adelete_nodes takes it
    assert result.ids == [ids[1]] and result.nodes and result.nodes[0].ref_doc_id is None
    asyncio.run(store.adelete("n0"))
    assert store.client.count() == 2
    asyncio.run(store.adelete_nodes(["n0"]))
    assert asyncio.run(store.aget_nodes(ids)) and store.client.count() == 1


def test_mixed_versions_of_one_document_are_refused(store: M3VectorStore) -> None:
    def node(text: str, doc_hash: str) -> TextNode:
        rel = RelatedNodeInfo(node_id="doc", hash=doc_hash)
        return TextNode(text=text, relationships={NodeRelationship.SOURCE: rel})

    with pytest.raises(ValueError, match="different versions"):
        store.add([node("a", "v1"), node("b", "v2")])


def test_alpha_weighs_dense_against_sparse(
    index: VectorStoreIndex, tiny_embedding: M3Embedding
) -> None:
    store = index.vector_store
    with pytest.raises(ValueError, match="fusion='m3'"):
        index.as_retriever(vector_store_query_mode="hybrid", alpha=0.5).retrieve(TEXTS[0])
    m3 = M3VectorStore.from_index(store.client, fusion="m3")
    emb = tiny_embedding.get_query_embedding(TEXTS[1])
    q = VectorStoreQuery(
        query_embedding=emb, query_str=TEXTS[1], mode=VectorStoreQueryMode.HYBRID, alpha=0.0
    )
    sparse_only = m3.query(q)
    plain = m3.client.store.query(
        sparse=m3.client.encoder.encode([TEXTS[1]], heads=["sparse"], query=True).sparse[0], k=1
    )
    assert sparse_only.ids and sparse_only.ids[0] == plain[0].chunk_id
    assert sparse_only.similarities and sparse_only.similarities[0] == pytest.approx(
        plain[0].score, rel=1e-5
    )
    q.alpha = 1.5
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        m3.query(q)


def test_errors_name_the_problem(
    store: M3VectorStore, tiny_encoder: M3Encoder, minilm_encoder: M3Encoder
) -> None:
    with pytest.raises(NotImplementedError, match="'mmr' is not supported"):
        store.query(VectorStoreQuery(query_str="x", mode=VectorStoreQueryMode.MMR))
    with pytest.raises(ValueError, match="query_str is missing"):
        store.query(VectorStoreQuery(query_embedding=[0.0] * 32, mode=VectorStoreQueryMode.HYBRID))
    with pytest.raises(TypeError, match="unsupported arguments"):
        store.query(VectorStoreQuery(query_str="x"), mode="hybrid")
    with pytest.raises(ValidationError, match="extra"):
        M3VectorStore(tiny_encoder, collection="oops")
    with pytest.raises(ValueError, match="a model .* or an opened index"):
        M3VectorStore()
    with pytest.raises(ValueError, match="do not also give"):
        M3VectorStore(index=store.client, location="./x")
    with M3VectorStore(minilm_encoder, collection_name="dense_only") as dense_only:
        with pytest.raises(ValueError, match="hybrid mode needs sparse vectors"):
            dense_only.query(VectorStoreQuery(query_str="x", mode=VectorStoreQueryMode.HYBRID))
        with pytest.raises(ValueError, match="rerank=True needs ColBERT"):
            M3VectorStore.from_index(dense_only.client, rerank=True)


def test_docstring_example() -> None:
    result = doctest.testmod(llamaindex_m3.vector_store, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
