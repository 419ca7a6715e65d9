"""Late chunks of another model loaded from the store model's own folder are refused.

Both LangChain stores took a late chunk as theirs when its splitter's encoder was loaded from
the same checkpoint folder with the same sizes: a fine-tune saved over that folder, or weights
changed in memory, stored chunk vectors of another model (cosine -0.12 to the store's own)
beside the store's. The model's fingerprint decides now; folder, precision, ``max_length``
and the query instruction do not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from langchain_core.documents import Document
from langchain_qdrant import RetrievalMode

from langchain_m3 import (
    M3Embeddings,
    M3LateChunkingSplitter,
    M3QdrantVectorStore,
    M3SparseEmbeddings,
    M3VectorStore,
)
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

TEXT = " ".join(SAMPLE_TEXTS[:3])


def _chunks(encoder: M3Encoder) -> list[Document]:
    splitter = M3LateChunkingSplitter.from_encoder(encoder, chunk_size=12)
    return splitter.split_documents([Document(TEXT)])


def _into_m3_vector_store(encoder: M3Encoder, chunks: list[Document]) -> int:
    with M3VectorStore.open(encoder) as store:
        store.add_documents(chunks)
        return store.index.count()


def _into_qdrant_store(encoder: M3Encoder, chunks: list[Document]) -> int:
    store = M3QdrantVectorStore.from_documents(
        [Document("Oxygen is a chemical element.")],
        embedding=M3Embeddings.from_encoder(encoder),
        sparse_embedding=M3SparseEmbeddings.from_encoder(encoder),
        retrieval_mode=RetrievalMode.HYBRID,
        location=":memory:",
        collection_name="c",
    )
    store.add_documents(chunks)
    return int(store.client.count("c").count) - 1


STORES = [_into_m3_vector_store, _into_qdrant_store]


@pytest.mark.parametrize("into", STORES)
def test_chunks_of_changed_weights_from_the_same_folder_are_refused(
    tiny_m3_path: Path, into: Callable[[M3Encoder, list[Document]], int]
) -> None:
    store_model = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    tuned = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with torch.no_grad():  # one training step's worth of change, same folder and sizes
        for p in tuned.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    with pytest.raises(ValueError, match="late-chunked by another model"):
        into(store_model, _chunks(tuned))


@pytest.mark.parametrize("into", STORES)
def test_chunks_of_the_same_weights_at_another_length_are_kept(
    tiny_m3_path: Path, into: Callable[[M3Encoder, list[Document]], int]
) -> None:
    store_model = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    splitter_model = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=64)
    chunks = _chunks(splitter_model)
    assert into(store_model, chunks) == len(chunks)
