"""LlamaIndex ``M3VectorStore`` nodes: found, replaced and deleted by their own ids, read back
as written, written again without duplicates, and writes that would mix versions refused."""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import (
    IndexNode,
    MetadataMode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import ChunkRecord, M3Index, output_row, point_id
from tests.llamaindex.vector_store_docs import TEXTS, _docs, _eq


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
    # the README's way to search them all (the writing index searches its IndexNode alone:
    # LlamaIndex passes node_ids= of the nodes it recorded)
    reader = VectorStoreIndex.from_vector_store(store, embed_model=tiny_embedding)
    found = reader.as_retriever(similarity_top_k=count).retrieve("topic 3")
    assert {n.node.node_id for n in found} == {*(n.node_id for n in nodes), "sum"}


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
