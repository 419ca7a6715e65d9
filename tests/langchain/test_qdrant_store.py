"""M3QdrantVectorStore: langchain_qdrant's store, with late-chunked chunks keeping their vectors.

The stock ``QdrantVectorStore`` re-encodes every chunk from its text alone (its embeddings see
texts only), silently storing context-free vectors under a late-chunking marker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore, RetrievalMode

from langchain_m3 import (
    M3Embeddings,
    M3LateChunkingSplitter,
    M3QdrantVectorStore,
    M3SparseEmbeddings,
)
from langchain_m3.splitter import LATE_CHUNK_KEY, late_chunk_vectors
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

TEXT = " ".join(SAMPLE_TEXTS[:4])


@pytest.fixture(scope="module")
def chunks(tiny_encoder: M3Encoder) -> list[Document]:
    splitter = M3LateChunkingSplitter.from_encoder(tiny_encoder, chunk_size=12)
    return splitter.split_documents([Document(TEXT, metadata={"source": "s"})])


def _store(
    cls: type[QdrantVectorStore],
    encoder: M3Encoder,
    docs: list[Document],
    mode: RetrievalMode = RetrievalMode.HYBRID,
    **sparse_options: object,
) -> QdrantVectorStore:
    return cls.from_documents(
        docs,
        embedding=M3Embeddings.from_encoder(encoder),
        sparse_embedding=M3SparseEmbeddings.from_encoder(encoder, **sparse_options),
        retrieval_mode=mode,
        location=":memory:",
        collection_name="c",
        ids=[f"00000000-0000-0000-0000-{i:012d}" for i in range(len(docs))],
    )


def _stored(store: QdrantVectorStore, n: int) -> list[dict[str, object]]:
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(n)]
    points = store.client.retrieve(store.collection_name, ids, with_vectors=True)
    by_id = {str(p.id): p.vector for p in points}
    return [by_id[i] for i in ids]  # type: ignore[misc]


def test_late_chunks_are_stored_with_the_vectors_they_carry(
    tiny_encoder: M3Encoder, chunks: list[Document]
) -> None:
    assert len(chunks) > 2
    plain = Document("Oxygen is a chemical element.", metadata={"topic": "chem"})
    docs = [*chunks, plain]
    ours = _stored(_store(M3QdrantVectorStore, tiny_encoder, docs), len(docs))
    stock = _stored(_store(QdrantVectorStore, tiny_encoder, docs), len(docs))
    for doc, mine, theirs in zip(chunks, ours, stock, strict=False):
        carried = late_chunk_vectors(doc).vectors
        np.testing.assert_allclose(mine[""], carried.dense[0], atol=1e-6)  # type: ignore[index]
        sparse = mine["langchain-sparse"]  # type: ignore[index]
        assert sparse.indices == carried.sparse[0].indices.tolist()
        np.testing.assert_allclose(sparse.values, carried.sparse[0].values, atol=1e-6)
        # what the stock store keeps instead: the chunk encoded alone
        assert not np.allclose(theirs[""], carried.dense[0], atol=1e-3)  # type: ignore[index]
    # a plain document is encoded as the stock store encodes it
    np.testing.assert_allclose(ours[-1][""], stock[-1][""], atol=1e-6)  # type: ignore[index]


def test_the_sparse_cut_of_the_embeddings_applies_to_carried_vectors(
    tiny_encoder: M3Encoder, chunks: list[Document]
) -> None:
    vectors = _stored(
        _store(M3QdrantVectorStore, tiny_encoder, chunks, sparse_top_k=3), len(chunks)
    )
    for doc, vector in zip(chunks, vectors, strict=True):
        sparse = late_chunk_vectors(doc).vectors.sparse[0]
        kept = vector["langchain-sparse"]  # type: ignore[index]
        assert len(kept.indices) == min(3, len(sparse.indices))
        top = sorted(zip(sparse.values, sparse.indices, strict=True), reverse=True)[:3]
        assert sorted(kept.indices) == sorted(int(i) for _, i in top)


def test_dense_mode_and_search(tiny_encoder: M3Encoder, chunks: list[Document]) -> None:
    store = _store(M3QdrantVectorStore, tiny_encoder, chunks, RetrievalMode.DENSE)
    (vector,) = _stored(store, 1)
    dense = vector[""] if isinstance(vector, dict) else vector  # one unnamed vector, read back
    np.testing.assert_allclose(dense, late_chunk_vectors(chunks[0]).vectors.dense[0], atol=1e-6)
    hits = store.similarity_search(chunks[1].page_content, k=len(chunks))
    assert sorted(h.page_content for h in hits) == sorted(c.page_content for c in chunks)


def test_chunks_it_cannot_store_as_they_are_raise(
    tiny_encoder: M3Encoder, minilm_encoder: M3Encoder, chunks: list[Document]
) -> None:
    lost = Document(chunks[0].page_content, metadata={**chunks[0].metadata})
    lost.metadata[LATE_CHUNK_KEY] = {**lost.metadata[LATE_CHUNK_KEY], "carry": "gone"}
    with pytest.raises(ValueError, match="no longer carries its vectors"):
        _store(M3QdrantVectorStore, tiny_encoder, [lost])
    edited = chunks[0].model_copy(update={"page_content": "edited text"})
    with pytest.raises(ValueError, match="page_content was changed"):
        _store(M3QdrantVectorStore, tiny_encoder, [edited])
    with pytest.raises(ValueError, match=r"documents\[0\] was late-chunked by another model"):
        M3QdrantVectorStore.from_documents(
            chunks,
            embedding=M3Embeddings.from_encoder(minilm_encoder),
            location=":memory:",
            collection_name="other",
        )


def test_the_same_model_from_another_folder_is_the_same_model(
    tiny_m3_path: Path, tmp_path: Path, chunks: list[Document]
) -> None:
    """The splitter keys carried vectors by the model's fingerprint; a store whose encoder
    loads the same checkpoint copied elsewhere takes them."""
    copy = M3Encoder.from_pretrained(shutil.copytree(tiny_m3_path, tmp_path / "copy"))
    store = _store(M3QdrantVectorStore, copy, chunks)
    np.testing.assert_allclose(
        _stored(store, 1)[0][""],  # type: ignore[index]
        late_chunk_vectors(chunks[0]).vectors.dense[0],
        atol=1e-6,
    )


def test_dense_and_sparse_embeddings_loaded_apart_are_one_model(
    tiny_m3_path: Path, chunks: list[Document]
) -> None:
    """``M3Embeddings(model_name_or_path=p)`` and ``M3SparseEmbeddings(model_name_or_path=p)``
    load two encoder objects of one checkpoint: the usual hybrid setup, not two models."""
    store = M3QdrantVectorStore.from_documents(
        chunks,
        embedding=M3Embeddings(model_name_or_path=str(tiny_m3_path)),
        sparse_embedding=M3SparseEmbeddings(model_name_or_path=str(tiny_m3_path)),
        retrieval_mode=RetrievalMode.HYBRID,
        location=":memory:",
        collection_name="two_loads",
    )
    assert store.client.count("two_loads").count == len(chunks)
