"""Node ids as LlamaIndex keeps them: ``add`` returns the nodes' ids, queries report them, and
every distinct node is its own chunk; user metadata keys ``doc_id`` / ``chunk_index`` stay."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.evaluation import RetrieverEvaluator
from llama_index.core.node_parser import HierarchicalNodeParser
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
from llama_index.core.vector_stores.types import VectorStoreQuery

from llamaindex_m3 import M3Embedding, M3Retriever, M3VectorStore
from m3kit.store import point_id

TEXTS = [
    "Oxygen has the atomic number 8.",
    "Berlin is the capital of Germany.",
    "The cat sat on the mat.",
]


@pytest.fixture()
def store(tiny_embedding: M3Embedding) -> Iterator[M3VectorStore]:
    with M3VectorStore(tiny_embedding) as s:
        yield s


def _embedded(nodes: list[TextNode], embed: M3Embedding) -> list[TextNode]:
    for n in nodes:
        n.embedding = embed.get_text_embedding(n.get_content(metadata_mode="embed"))
    return nodes


def _index(store: M3VectorStore, embed: M3Embedding, docs: list[Document], **kw: object) -> Any:
    ctx = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex.from_documents(docs, storage_context=ctx, embed_model=embed, **kw)


def test_add_returns_the_node_ids_and_queries_report_them(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    nodes = _embedded(
        [TextNode(text=t, id_=f"node-{i}") for i, t in enumerate(TEXTS)], tiny_embedding
    )
    assert store.add(nodes) == ["node-0", "node-1", "node-2"]
    q = VectorStoreQuery(query_embedding=nodes[0].embedding, similarity_top_k=3)
    result = store.query(q)
    assert sorted(result.ids or []) == ["node-0", "node-1", "node-2"]
    assert [n.node_id for n in result.nodes or []] == result.ids
    assert [n.node_id for n in store.get_nodes(["node-1"])] == ["node-1"]
    # the point id still finds the chunk, and reports the node's id
    assert [n.node_id for n in store.get_nodes([point_id("node-2", 0)])] == ["node-2"]


def test_store_nodes_override_deletes_and_refreshes(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    """VectorStoreIndex keys its nodes by what add returns: node ids, as its docstore does."""
    docs = [Document(text=t, id_=f"d{i}") for i, t in enumerate(TEXTS)]
    index = _index(store, tiny_embedding, docs, store_nodes_override=True)
    node_id = index.docstore.get_ref_doc_info("d0").node_ids[0]
    assert node_id in index.index_struct.nodes_dict
    index.delete_nodes([node_id], delete_from_docstore=True)
    assert store.client.count() == 2 and store.get_nodes([node_id]) == []
    index.delete_ref_doc("d1", delete_from_docstore=True)
    assert store.client.count() == 1
    changed = [Document(text="The dog sat on the rug.", id_="d2")]
    assert index.refresh_ref_docs(changed) == [True]
    assert [n.get_content() for n in store.get_nodes(filters=None, node_ids=None)] == [
        "The dog sat on the rug."
    ]


def test_retriever_evaluator_finds_the_node_ids(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    nodes = [TextNode(text=t, id_=f"node-{i}") for i, t in enumerate(TEXTS)]
    index = VectorStoreIndex(
        nodes,
        embed_model=tiny_embedding,
        storage_context=StorageContext.from_defaults(vector_store=store),
    )
    ev = RetrieverEvaluator.from_metric_names(
        ["hit_rate"], retriever=index.as_retriever(similarity_top_k=3)
    )
    for i, text in enumerate(TEXTS):
        res = ev.evaluate(query=text, expected_ids=[f"node-{i}"])
        assert res.metric_vals_dict["hit_rate"] == 1.0


def test_m3_retriever_add_nodes_returns_node_ids(tiny_embedding: M3Embedding) -> None:
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    with M3Retriever.open(tiny_embedding, similarity_top_k=3) as r:
        assert r.add_nodes(nodes) == ["n0", "n1", "n2"]
        assert sorted(h.node.node_id for h in r.retrieve(TEXTS[0])) == ["n0", "n1", "n2"]


def test_a_node_id_names_one_chunk(store: M3VectorStore, tiny_embedding: M3Embedding) -> None:
    def node(doc: str) -> TextNode:
        rel = {NodeRelationship.SOURCE: _source(doc)}
        return _embedded([TextNode(text=TEXTS[0], id_="n", relationships=rel)], tiny_embedding)[0]

    store.add([node("a")])
    with pytest.raises(ValueError, match="'n' is stored in document 'a'.*document 'b'"):
        store.add([node("b")])
    with pytest.raises(ValueError, match="given to nodes of documents 'c' and 'd'"):
        store.add([node("c"), node("d")])
    assert store.client.count() == 1


def _source(doc: str) -> RelatedNodeInfo:
    return RelatedNodeInfo(node_id=doc)


def test_equal_nodes_of_one_document_are_distinct_chunks(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    """HierarchicalNodeParser's parent and leaf of a short text: equal text, span, metadata."""
    doc = Document(text="Oxygen has the atomic number 8. It is a gas.", id_="d1")
    parser = HierarchicalNodeParser.from_defaults(chunk_sizes=[512, 128])
    nodes = _embedded(parser.get_nodes_from_documents([doc]), tiny_embedding)
    assert len(nodes) == 2 and nodes[0].text == nodes[1].text
    assert store.add(nodes) == [n.node_id for n in nodes]
    assert store.client.count() == 2
    for n in nodes:
        (got,) = store.get_nodes([n.node_id])
        assert set(got.relationships) == set(n.relationships)
    # re-ingest: a new parse (new ids) of the same text relabels, stores nothing new
    again = _embedded(parser.get_nodes_from_documents([doc]), tiny_embedding)
    assert store.add(again) == [n.node_id for n in again]
    assert store.client.count() == 2
    for n in again:
        (got,) = store.get_nodes([n.node_id])
        assert set(got.relationships) == set(n.relationships)


def test_equal_nodes_across_insert_batches(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    """The leaf comes in a later batch than its equal parent: it is not taken for a new parse."""
    doc = Document(text="Oxygen has the atomic number 8. It is a gas.", id_="d1")
    nodes = HierarchicalNodeParser.from_defaults(chunk_sizes=[512, 128]).get_nodes_from_documents(
        [doc]
    )
    VectorStoreIndex(
        nodes,
        embed_model=tiny_embedding,
        storage_context=StorageContext.from_defaults(vector_store=store),
        insert_batch_size=1,
    )
    assert store.client.count() == 2
    assert [len(store.get_nodes([n.node_id])) for n in nodes] == [1, 1]


def test_user_doc_id_and_chunk_index_keys_are_kept(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    docs = [
        Document(text=TEXTS[0], id_="file-a", metadata={"doc_id": "paper-7", "chunk_index": 99}),
        Document(text=TEXTS[1], id_="file-b", metadata={"topic": "geo"}),
    ]
    index = _index(store, tiny_embedding, docs)
    by_text = {
        h.node.get_content(): h.node for h in index.as_retriever(similarity_top_k=2).retrieve("x")
    }
    mine, plain = by_text[TEXTS[0]], by_text[TEXTS[1]]
    assert mine.metadata == {"doc_id": "paper-7", "chunk_index": 99}
    assert mine.ref_doc_id == "file-a"
    assert plain.metadata == {"topic": "geo", "doc_id": "file-b", "chunk_index": 0}

    def texts(key: str, value: object, op: str = "==") -> list[str]:
        f = MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])
        return sorted(n.get_content() for n in store.get_nodes(filters=f))

    # doc_id, ref_doc_id and document_id name the node's document, as in LlamaIndex's own
    # stores (which write all three over the user's keys); chunk_index is the value shown
    for key in ("doc_id", "ref_doc_id", "document_id"):
        assert texts(key, "file-a") == [TEXTS[0]], key
        assert texts(key, "paper-7") == [], key
        assert texts(key, "file-a", "!=") == [TEXTS[1]], key
    assert texts("chunk_index", 99) == [TEXTS[0]]
    assert texts("chunk_index", 0) == [TEXTS[1]]
    assert texts("doc_id", "file-b") == [TEXTS[1]]
    assert texts("chunk_index", 99, "!=") == [TEXTS[1]]
    # a read-back node, edited and written again, keeps the user's values (and gains none)
    for node in (mine, plain):
        node.set_content(node.get_content() + " Edited.")
        assert store.add([node]) == [node.node_id]
    assert store.client.count() == 2
    hits = store.client.store.get([point_id(d, 0) for d in ("file-a", "file-b")])
    stored = {h.doc_id: h.metadata for h in hits}
    assert stored == {
        "file-a": {"doc_id": "paper-7", "chunk_index": 99},
        "file-b": {"topic": "geo"},
    }
    (again,) = store.get_nodes([mine.node_id])
    assert again.get_content() == TEXTS[0] + " Edited."
    assert "doc_id" not in again.excluded_embed_metadata_keys  # the user's key is embedded
