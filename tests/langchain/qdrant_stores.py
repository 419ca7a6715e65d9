"""What the Qdrant store tests share: a hybrid LangChain store on a collection of a client,
and an empty ``M3QdrantVectorStore`` on a client of its own in memory."""

from __future__ import annotations

from typing import Any

from langchain_qdrant import QdrantVectorStore, RetrievalMode
from qdrant_client import QdrantClient

from langchain_m3 import M3Embeddings, M3QdrantVectorStore, M3SparseEmbeddings
from m3kit import M3Encoder

#: The vector names of a collection m3kit wrote (``M3Index``, ``M3Retriever``, ``M3VectorStore``).
M3KIT_NAMES = {"vector_name": "dense", "sparse_vector_name": "sparse"}


def hybrid_store(
    client: QdrantClient,
    encoder: M3Encoder,
    collection_name: str = "c",
    *,
    store: type[QdrantVectorStore] = M3QdrantVectorStore,
    sparse: M3SparseEmbeddings | None = None,
    **names: str,
) -> QdrantVectorStore:
    """``store`` (``M3QdrantVectorStore`` unless named) in hybrid mode on ``client``'s
    ``collection_name``, with ``encoder``'s embeddings (``sparse`` for the sparse ones when
    given); ``names`` go to the store (``vector_name``, ``sparse_vector_name``)."""
    return store(
        client=client,
        collection_name=collection_name,
        embedding=M3Embeddings.from_encoder(encoder),
        sparse_embedding=M3SparseEmbeddings.from_encoder(encoder) if sparse is None else sparse,
        retrieval_mode=RetrievalMode.HYBRID,
        **names,
    )


def memory_qdrant_store(
    encoder: M3Encoder,
    collection: str = "c",
    mode: RetrievalMode = RetrievalMode.HYBRID,
    **options: Any,
) -> M3QdrantVectorStore:
    """An empty ``M3QdrantVectorStore`` on a ``:memory:`` client: ``encoder``'s dense and
    sparse embeddings, retrieval ``mode``, collection ``collection`` (created; ``options``:
    more ``construct_instance`` keywords, e.g. ``metadata_payload_key``)."""
    store = M3QdrantVectorStore.construct_instance(
        embedding=M3Embeddings.from_encoder(encoder),
        sparse_embedding=M3SparseEmbeddings.from_encoder(encoder),
        retrieval_mode=mode,
        client_options={"location": ":memory:"},
        collection_name=collection,
        **options,
    )
    assert isinstance(store, M3QdrantVectorStore)
    return store
