"""llama_index#16587: a collection written by langchain-qdrant in hybrid mode, searched by
LlamaIndex's QdrantVectorStore in hybrid mode (dense + M3 sparse from one checkpoint).

It works once both sides agree on three names: the dense vector (langchain ``vector_name`` =
LlamaIndex ``dense_vector_name``), the sparse vector (``sparse_vector_name`` on both) and the
text payload key (langchain ``content_payload_key``, default ``page_content`` = LlamaIndex
``text_key``). LangChain's metadata stays nested under ``metadata``, so LlamaIndex filters name
``metadata.<key>``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_qdrant import QdrantVectorStore as LangChainQdrant
from langchain_qdrant import RetrievalMode
from llama_index.core import VectorStoreIndex
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
from llama_index.vector_stores.qdrant import QdrantVectorStore

from langchain_m3 import M3Embeddings, M3SparseEmbeddings
from llamaindex_m3 import M3Embedding, m3_sparse_fns
from m3kit import M3Encoder

TEXTS = [
    "Berlin is the capital of Germany.",
    "Oxygen has the atomic number 8.",
    "The Amazon river flows through Brazil and Peru.",
    "Photosynthesis turns light into chemical energy.",
]
TOPICS = ["geo", "chem", "geo", "bio"]


@pytest.fixture()
def llama_index_on_langchain_collection(tiny_encoder: M3Encoder) -> VectorStoreIndex:
    written = LangChainQdrant.from_texts(
        TEXTS,
        metadatas=[{"topic": t} for t in TOPICS],
        embedding=M3Embeddings.from_encoder(tiny_encoder),
        sparse_embedding=M3SparseEmbeddings.from_encoder(tiny_encoder),
        retrieval_mode=RetrievalMode.HYBRID,
        location=":memory:",
        collection_name="from_langchain",
        vector_name="dense",
        sparse_vector_name="sparse",
    )
    embed = M3Embedding.from_encoder(tiny_encoder)
    doc_fn, query_fn = m3_sparse_fns(embed)
    store = QdrantVectorStore(
        client=written.client,  # the same Qdrant: ":memory:" is private to one client
        collection_name="from_langchain",
        enable_hybrid=True,
        sparse_doc_fn=doc_fn,
        sparse_query_fn=query_fn,
        dense_vector_name="dense",
        sparse_vector_name="sparse",
        text_key="page_content",
    )
    return VectorStoreIndex.from_vector_store(store, embed_model=embed)


@pytest.mark.parametrize("mode", ["hybrid", "sparse", "default"])
def test_llamaindex_searches_langchain_hybrid_collection(
    llama_index_on_langchain_collection: VectorStoreIndex, mode: str
) -> None:
    retriever = llama_index_on_langchain_collection.as_retriever(
        vector_store_query_mode=mode, similarity_top_k=2
    )
    for text, topic in zip(TEXTS, TOPICS, strict=True):
        top = retriever.retrieve(text)[0]
        assert top.node.get_content() == text, mode
        assert top.node.metadata["metadata"] == {"topic": topic}  # LangChain's nesting


def test_filters_name_the_nested_key(llama_index_on_langchain_collection: VectorStoreIndex) -> None:
    retriever = llama_index_on_langchain_collection.as_retriever(
        vector_store_query_mode="hybrid",
        similarity_top_k=4,
        filters=MetadataFilters(filters=[MetadataFilter(key="metadata.topic", value="geo")]),
    )
    got = {h.node.get_content() for h in retriever.retrieve(TEXTS[1])}
    assert got == {TEXTS[0], TEXTS[2]}


def test_llamaindex_qdrant_store_reads_an_m3kit_collection(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """The same recipe reads what M3Index / M3Retriever wrote (qdrant-client backend)."""
    from qdrant_client import QdrantClient

    from m3kit.store import M3Index

    with M3Index.open(tiny_encoder, tmp_path, collection="m3", backend="client") as index:
        index.add_texts(TEXTS, [{"topic": t} for t in TOPICS])
    client = QdrantClient(path=str(tmp_path))  # the index is closed: its folder lock is free
    try:
        embed = M3Embedding.from_encoder(tiny_encoder)
        doc_fn, query_fn = m3_sparse_fns(embed)
        store = QdrantVectorStore(
            client=client,
            collection_name="m3",
            enable_hybrid=True,
            sparse_doc_fn=doc_fn,
            sparse_query_fn=query_fn,
            dense_vector_name="dense",
            sparse_vector_name="sparse",
            text_key="page_content",
        )
        retriever = VectorStoreIndex.from_vector_store(store, embed_model=embed).as_retriever(
            vector_store_query_mode="hybrid", similarity_top_k=2
        )
        for text in TEXTS:
            assert retriever.retrieve(text)[0].node.get_content() == text
    finally:
        client.close()
