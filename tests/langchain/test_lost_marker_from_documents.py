"""``from_documents`` refuses a splitter chunk whose marker was removed, as ``add_documents``
does: ``M3QdrantVectorStore.from_documents`` went through ``from_texts`` / ``add_texts``, which
see texts and metadata only, so such a chunk was stored encoded on its own text."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.documents import Document

from langchain_m3 import (
    M3Embeddings,
    M3LateChunkingSplitter,
    M3QdrantVectorStore,
    M3SparseEmbeddings,
    M3VectorStore,
)
from langchain_m3.splitter import LATE_CHUNK_KEY
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS


def _unmarked(encoder: M3Encoder) -> list[Document]:
    chunks = M3LateChunkingSplitter.from_encoder(encoder, chunk_size=16).split_documents(
        [Document(page_content=" ".join(SAMPLE_TEXTS))]
    )
    for chunk in chunks:
        del chunk.metadata[LATE_CHUNK_KEY]
    return chunks


def _qdrant_kwargs(encoder: M3Encoder) -> dict[str, object]:
    from langchain_qdrant import RetrievalMode

    return {
        "embedding": M3Embeddings.from_encoder(encoder),
        "sparse_embedding": M3SparseEmbeddings.from_encoder(encoder),
        "retrieval_mode": RetrievalMode.HYBRID,
        "location": ":memory:",
        "collection_name": "lost",
    }


def test_qdrant_store_from_documents_refuses_a_lost_marker(tiny_encoder: M3Encoder) -> None:
    chunks = _unmarked(tiny_encoder)
    with pytest.raises(ValueError, match="no longer has"):
        M3QdrantVectorStore.from_documents(chunks, **_qdrant_kwargs(tiny_encoder))
    with pytest.raises(ValueError, match="no longer has"):
        asyncio.run(M3QdrantVectorStore.afrom_documents(chunks, **_qdrant_kwargs(tiny_encoder)))
    # a new Document of the chunk's text and metadata is a plain text, stored as such
    plain = [Document(page_content=c.page_content, metadata=c.metadata) for c in chunks]
    store = M3QdrantVectorStore.from_documents(plain, **_qdrant_kwargs(tiny_encoder))
    assert store.client.count("lost").count == len(chunks)


def test_m3_vector_store_from_documents_refuses_a_lost_marker(tiny_encoder: M3Encoder) -> None:
    with pytest.raises(ValueError, match="no longer has"):
        M3VectorStore.from_documents(
            _unmarked(tiny_encoder), M3Embeddings.from_encoder(tiny_encoder)
        )
