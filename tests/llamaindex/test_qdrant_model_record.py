"""LlamaIndex ``M3QdrantVectorStore`` records its sparse model and refuses another's.

LlamaIndex's ``QdrantVectorStore`` records nothing of the model: a collection written with
checkpoint A and opened with a fine-tune of it was searched with the new model's sparse
queries against A's sparse vectors, silently.
"""

from __future__ import annotations

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from qdrant_client import QdrantClient

from llamaindex_m3 import M3QdrantVectorStore
from llamaindex_m3.embeddings import M3Embedding
from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.store.stock_record import RECORD_KEY
from m3kit.testing import SAMPLE_TEXTS

DOCS = [Document(text=t, id_=f"d{i}") for i, t in enumerate(SAMPLE_TEXTS[:4])]


def test_a_collection_of_another_sparse_model_is_refused(
    enc_a: M3Encoder, enc_b: M3Encoder
) -> None:
    client = QdrantClient(":memory:")
    embed = M3Embedding.from_encoder(enc_a)
    store = M3QdrantVectorStore("c", client=client, sparse_model=embed)
    VectorStoreIndex.from_documents(
        DOCS, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
    )
    assert set((client.get_collection("c").config.metadata or {})[RECORD_KEY]) == {"sparse"}
    M3QdrantVectorStore("c", client=client, sparse_model=enc_a)  # the same model: accepted
    with pytest.raises(FingerprintMismatchError, match="sparse vectors of another model"):
        M3QdrantVectorStore("c", client=client, sparse_model=enc_b)
    # a store built before another model's store wrote the collection is refused at its add
    fresh = QdrantClient(":memory:")
    early = M3QdrantVectorStore("c", client=fresh, sparse_model=M3Embedding.from_encoder(enc_b))
    late = M3QdrantVectorStore("c", client=fresh, sparse_model=embed)
    VectorStoreIndex.from_documents(
        DOCS[:2], storage_context=StorageContext.from_defaults(vector_store=late), embed_model=embed
    )
    with pytest.raises(FingerprintMismatchError):
        VectorStoreIndex.from_documents(
            DOCS[2:],
            storage_context=StorageContext.from_defaults(vector_store=early),
            embed_model=M3Embedding.from_encoder(enc_b),
        )
    assert fresh.count("c").count == 2
