"""Nodes stock LlamaIndex wrote into an m3kit collection read back with their text and metadata.

``llama_index.vector_stores.qdrant.QdrantVectorStore`` keeps a node's text and metadata inside
the JSON at ``_node_content`` (its metadata keys also at the top), not at m3kit's
``page_content`` / ``metadata``: m3kit's searches and reads returned such a node with an empty
text and no metadata, silently (:mod:`m3kit.store.foreign_payload`).
"""

from __future__ import annotations

from pathlib import Path

from llama_index.core.schema import MetadataMode, TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from langchain_m3 import M3VectorStore as LangChainStore
from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import M3Index
from m3kit.store.foreign_points import foreign_points
from m3kit.testing import SAMPLE_TEXTS

TEXT = "Oxygen is a chemical element with symbol O and atomic number 8."
NODE_ID = "5b0c8d0e-7d6f-4c1e-9a53-0c6b7f1e2a11"


def _stock_node(index: M3Index, enc: M3Encoder) -> None:
    client: QdrantClient = index.store._backend._client  # type: ignore[attr-defined]
    node = TextNode(
        id_=NODE_ID,
        text=TEXT,
        metadata={"source": "stock", "page": 3},
        embedding=enc.encode([TEXT], heads=["dense"]).dense[0].tolist(),
    )
    QdrantVectorStore("c", client=client, dense_vector_name="dense").add([node])


def test_a_stock_llamaindex_node_reads_with_its_text_and_metadata(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    with M3Index.open(enc_a, tmp_path, collection="c", backend="client") as index:
        index.add_texts(list(SAMPLE_TEXTS[:4]), doc_ids=["a", "b", "c", "d"])
        _stock_node(index, enc_a)
        hits = [h for h in index.search(TEXT, k=8, rerank=False) if h.id == NODE_ID]
        assert hits and hits[0].text == TEXT  # before: ""
        assert hits[0].metadata == {"source": "stock", "page": 3}  # before: {}
        # LangChain's store reads it by the id its search gives it
        (doc,) = LangChainStore(index).get_by_ids([hits[0].doc_id])
        assert (doc.page_content, doc.metadata["source"]) == (TEXT, "stock")
        # and LlamaIndex's own query returns the node as it was written
        store = M3VectorStore.from_index(index)
        embedding = enc_a.encode([TEXT], heads=["dense"]).dense[0].tolist()
        found = store.query(
            VectorStoreQuery(query_str=TEXT, query_embedding=embedding, similarity_top_k=8)
        )
        nodes = [n for n in found.nodes or [] if n.node_id == NODE_ID]
        assert nodes and nodes[0].get_content() == TEXT
        assert nodes[0].metadata["page"] == 3


def test_a_stock_llamaindex_node_added_again_as_read_replaces_it(
    enc_a: M3Encoder, tmp_path: Path
) -> None:
    """``store.add(store.get_nodes([id]))`` moves a stock node onto m3kit's layout (every
    vector, so ColBERT-reranked searches find it); before, it was stored beside the stock
    point: the node twice in a query, and ``get_nodes`` returned two."""
    with M3Index.open(enc_a, tmp_path, collection="c", backend="client") as index:
        index.add_texts(list(SAMPLE_TEXTS[:4]), doc_ids=["a", "b", "c", "d"])
        _stock_node(index, enc_a)
        store = M3VectorStore.from_index(index)
        nodes = store.get_nodes([NODE_ID])
        embed = M3Embedding.from_encoder(enc_a)
        for node in nodes:
            node.embedding = embed.get_text_embedding(node.get_content(MetadataMode.EMBED))
        assert store.add(nodes) == [NODE_ID]
        assert index.count() == 5 and not foreign_points(index.store)
        (again,) = store.get_nodes([NODE_ID])
        assert (again.get_content(), again.metadata["page"]) == (TEXT, 3)
        assert [h.text for h in index.search(TEXT, k=5)].count(TEXT) == 1  # ColBERT too
