"""Nodes without a source document (no ``SOURCE`` relationship) belong to no document.

LlamaIndex's stores record such a node's ``ref_doc_id`` as ``"None"`` (``SimpleVectorStore``,
and ``node_to_metadata_dict`` for Qdrant, Chroma, Pinecone...): ``delete(ref_doc_id)``, a
query's ``doc_ids`` and filters on ``doc_id`` / ``ref_doc_id`` / ``document_id`` see that
value, never the node's own id, and it reads back with ``ref_doc_id`` ``None``. M3VectorStore
stores it under its own id (the layout needs a ``doc_id``), which used to make it a document of
that id: ``delete("a")`` deleted the node ``a``, and a node and a document of one id overwrote
each other. A ``Document`` stored whole (an ingestion without a splitter) stays its own
document, as ``IngestionPipeline``'s upserts delete it by its id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from llama_index.core import Document
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    SimpleVectorStore,
)
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from qdrant_client import models

from llamaindex_m3 import M3Embedding, M3Retriever, M3VectorStore


@pytest.fixture()
def store(tiny_embedding: M3Embedding) -> Iterator[M3VectorStore]:
    with M3VectorStore(tiny_embedding) as s:
        yield s


def _of(doc_id: str, text: str, node_id: str) -> TextNode:
    source = RelatedNodeInfo(node_id=doc_id, hash=f"hash-{doc_id}")
    return TextNode(text=text, id_=node_id, relationships={NodeRelationship.SOURCE: source})


def _ids(store: M3VectorStore) -> list[str]:
    return sorted(n.node_id for n in store.get_nodes())


def test_delete_by_ref_doc_id_keeps_nodes_without_a_source(
    store: M3VectorStore, tiny_embedding: M3Embedding
) -> None:
    lone = TextNode(text="A note of its own.", id_="a", embedding=[1.0, 0.0])
    simple = SimpleVectorStore()  # what LlamaIndex's own store does with it
    simple.add([lone])
    simple.delete("a")
    assert simple.get("a") == [1.0, 0.0]

    lone.embedding = None
    store.add([lone, _of("b", "First part of b.", "b1"), _of("b", "Second part of b.", "b2")])
    store.delete("a")  # no document "a": nothing goes
    asyncio.run(store.adelete("a"))
    M3Retriever(store.client).delete(["a"])
    assert _ids(store) == ["a", "b1", "b2"]
    store.delete("b")  # a document's nodes all go
    assert _ids(store) == ["a"]
    store.delete_nodes(["a"])  # a node is deleted by its id
    assert _ids(store) == []

    # a Document stored whole is its own document: an IngestionPipeline without a splitter
    # deletes a document left out of its input by its id
    store.add([lone])
    pipeline = IngestionPipeline(
        transformations=[tiny_embedding],
        vector_store=store,
        docstore=SimpleDocumentStore(),
        docstore_strategy=DocstoreStrategy.UPSERTS_AND_DELETE,
    )
    pipeline.run(documents=[Document(text="One.", id_="d1"), Document(text="Two.", id_="d2")])
    pipeline.run(documents=[Document(text="One.", id_="d1")])  # store.delete("d2")
    assert _ids(store) == ["a", "d1"]


def test_query_doc_ids_skip_nodes_without_a_source(store: M3VectorStore) -> None:
    store.add([TextNode(text="Oxygen has the atomic number 8.", id_="a")])
    store.add([_of("b", "Oxygen is a gas.", "b1"), Document(text="Oxygen burns.", id_="d")])
    q = VectorStoreQuery(
        query_str="oxygen", mode=VectorStoreQueryMode.SPARSE, similarity_top_k=5, doc_ids=["a"]
    )
    assert store.query(q).ids == []
    q.doc_ids = ["a", "b", "d"]
    assert sorted(store.query(q).ids or []) == ["b1", "d"]


def test_document_keys_read_none_for_nodes_without_a_source(store: M3VectorStore) -> None:
    nodes = [
        TextNode(text="A note of its own.", id_="a"),
        _of("b", "First part of b.", "b1"),
        _of("b", "Second part of b.", "b2"),
    ]
    simple = SimpleVectorStore()
    simple.add([n.model_copy(update={"embedding": [1.0, 0.0]}) for n in nodes])
    store.add(nodes)
    cases = [
        MetadataFilter(key="ref_doc_id", value="a"),
        MetadataFilter(key="ref_doc_id", value="None"),
        MetadataFilter(key="doc_id", value="b", operator=FilterOperator.NE),
        MetadataFilter(key="document_id", value=["None", "x"], operator=FilterOperator.IN),
        MetadataFilter(key="doc_id", value=["a", "b"], operator=FilterOperator.NIN),
    ]
    for case in cases:
        filters = MetadataFilters(filters=[case])
        q = VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=10, filters=filters)
        expected = sorted(simple.query(q).ids or [])
        assert sorted(n.node_id for n in store.get_nodes(filters=filters)) == expected, case
    store.delete_nodes(filters=MetadataFilters(filters=[cases[0]]))  # ref_doc_id == "a"
    q = VectorStoreQuery(
        query_str="note", mode=VectorStoreQueryMode.SPARSE, similarity_top_k=5, doc_ids=["None"]
    )
    assert store.query(q).ids == ["a"]
    store.delete("None")
    assert _ids(store) == ["b1", "b2"]


def test_nodes_without_a_source_read_back_without_one(
    store: M3VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add([TextNode(text="A note of its own.", id_="a", metadata={"k": 1})])
    (back,) = store.get_nodes(["a"])
    assert back.ref_doc_id is None and NodeRelationship.SOURCE not in back.relationships
    assert back.metadata == {"chunk_index": 0, "k": 1}  # placement added; no document

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged node must not be encoded again")

    monkeypatch.setattr(store.client.encoder, "encode", no_encoding)
    store.add([back])  # written again unchanged: nothing to do, no placement key stored
    monkeypatch.undo()
    (hit,) = store.client.store.get(None, filter=models.Filter())
    assert hit.metadata == {"k": 1} and store.client.count() == 1
    back.set_content("An edited note.")
    store.add([back])  # edited: replaced in place, still without a source
    (again,) = store.get_nodes(["a"])
    assert again.get_content() == "An edited note." and again.ref_doc_id is None
    (hit,) = store.client.store.get(None, filter=models.Filter())
    assert hit.metadata == {"k": 1} and hit.doc_id == "a"


def test_a_node_and_a_document_of_one_id_are_refused(store: M3VectorStore) -> None:
    retriever = M3Retriever(store.client)
    for add in (store.add, retriever.add_nodes):
        store.clear()
        add([_of("x", "First part of x.", "x1"), _of("x", "Second part of x.", "x2")])
        with pytest.raises(ValueError, match="no source document"):
            add([TextNode(text="A note named x.", id_="x")])
        assert _ids(store) == ["x1", "x2"]
        store.clear()
        add([TextNode(text="A note named x.", id_="x")])
        with pytest.raises(ValueError, match="no source document"):
            add([_of("x", "First part of x.", "x1")])
        assert _ids(store) == ["x"]
        with pytest.raises(ValueError, match="no source document"):
            add([TextNode(text="Another note named y.", id_="y"), _of("y", "Part of y.", "y1")])
        assert _ids(store) == ["x"]
