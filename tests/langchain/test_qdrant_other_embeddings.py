"""M3QdrantVectorStore and embeddings that are not m3kit's on one collection.

The store recorded and checked only m3kit's embeddings: a collection written with another
program's sparse model (FastEmbed's BM25) and reopened with M3's sparse embeddings, or
written with M3 and reopened with another dense model of the same size, took the write
without a word and searched one model's queries against the other's vectors.
"""

from __future__ import annotations

import logging

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_qdrant import QdrantVectorStore, RetrievalMode, SparseEmbeddings, SparseVector
from qdrant_client import QdrantClient

from langchain_m3 import M3Embeddings, M3QdrantVectorStore, M3SparseEmbeddings
from m3kit import M3Encoder
from m3kit.errors import FingerprintMismatchError
from m3kit.store.stock_record import RECORD_KEY
from m3kit.testing import SAMPLE_TEXTS

DOCS = [Document(t, metadata={"i": i}) for i, t in enumerate(SAMPLE_TEXTS[:4])]


class WordCounts(SparseEmbeddings):
    """Another program's sparse model (as FastEmbed's BM25): word counts by hashed id."""

    def _vector(self, text: str) -> SparseVector:
        counts: dict[int, float] = {}
        for word in text.lower().split():
            key = sum(map(ord, word)) % 50_000
            counts[key] = counts.get(key, 0.0) + 1.0
        return SparseVector(indices=list(counts), values=list(counts.values()))

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> SparseVector:
        return self._vector(text)


def _hybrid(client: QdrantClient, dense: object, sparse: object) -> M3QdrantVectorStore:
    return M3QdrantVectorStore(
        client=client,
        collection_name="c",
        embedding=dense,  # type: ignore[arg-type]
        sparse_embedding=sparse,  # type: ignore[arg-type]
        retrieval_mode=RetrievalMode.HYBRID,
    )


def _written(dense: object, sparse: object) -> QdrantClient:
    """The client of a hybrid collection ``c`` in memory, written with these embeddings."""
    store = M3QdrantVectorStore.from_documents(
        DOCS[:2],
        embedding=dense,  # type: ignore[arg-type]
        sparse_embedding=sparse,  # type: ignore[arg-type]
        retrieval_mode=RetrievalMode.HYBRID,
        location=":memory:",
        collection_name="c",
    )
    return store.client


def _record(client: QdrantClient) -> dict[str, str]:
    return dict((client.get_collection("c").config.metadata or {})[RECORD_KEY])


def test_m3_sparse_on_another_programs_sparse_vectors_is_refused(enc_a: M3Encoder) -> None:
    dense = M3Embeddings.from_encoder(enc_a)
    client = _written(dense, WordCounts())
    assert (
        _record(client)["sparse"].startswith("other:") and "WordCounts" in _record(client)["sparse"]
    )
    with pytest.raises(FingerprintMismatchError, match="sparse vectors of another model"):
        _hybrid(client, dense, M3SparseEmbeddings.from_encoder(enc_a))
    _hybrid(client, dense, WordCounts()).add_documents(DOCS[2:3])  # the same program's: taken
    assert client.count("c").count == 3
    client.close()


def test_another_programs_embeddings_on_m3_vectors_are_refused(enc_a: M3Encoder) -> None:
    dense = M3Embeddings.from_encoder(enc_a)
    client = _written(dense, M3SparseEmbeddings.from_encoder(enc_a))
    with pytest.raises(FingerprintMismatchError, match="sparse vectors of another model"):
        _hybrid(client, dense, WordCounts())
    size = enc_a.dense_dim
    with pytest.raises(FingerprintMismatchError, match="dense vectors of another model"):
        _hybrid(
            client, DeterministicFakeEmbedding(size=size), M3SparseEmbeddings.from_encoder(enc_a)
        )
    assert client.count("c").count == 2
    client.close()


def test_a_vector_the_record_is_silent_on_is_recorded_with_a_warning(
    enc_a: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    """A record naming the dense model only (written before other programs' embeddings were
    recorded): the sparse vectors' model cannot be told, which the first write now says."""
    dense = M3Embeddings.from_encoder(enc_a)
    stock = QdrantVectorStore.from_documents(
        DOCS[:2],
        embedding=dense,
        sparse_embedding=WordCounts(),
        retrieval_mode=RetrievalMode.HYBRID,
        location=":memory:",
        collection_name="c",
    )
    client = stock.client
    M3QdrantVectorStore(
        client=client, collection_name="c", embedding=dense, retrieval_mode=RetrievalMode.DENSE
    ).add_documents(DOCS[2:3])
    assert set(_record(client)) == {"dense", "text_instruction"}
    with caplog.at_level(logging.WARNING, logger="m3kit.store.stock_record"):
        _hybrid(client, dense, M3SparseEmbeddings.from_encoder(enc_a)).add_documents(DOCS[3:])
    assert "no record of the model that wrote its sparse vectors" in caplog.text
    client.close()


def test_embeddings_a_mode_leaves_unused_are_not_recorded(
    enc_a: M3Encoder, enc_b: M3Encoder
) -> None:
    """Sparse mode writes no dense vector: the dense embeddings given are not its record's."""
    store = M3QdrantVectorStore.from_documents(
        DOCS[:2],
        embedding=M3Embeddings.from_encoder(enc_b),
        sparse_embedding=M3SparseEmbeddings.from_encoder(enc_a),
        retrieval_mode=RetrievalMode.SPARSE,
        location=":memory:",
        collection_name="c",
    )
    assert "dense" not in _record(store.client)
    store.client.close()


class Logged(Embeddings):
    """A user's wrapper (as LangChain's HyDE embedder): delegates to the embeddings it holds."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner = inner

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


def test_m3_embeddings_inside_a_wrapper_are_m3s(enc_a: M3Encoder, enc_b: M3Encoder) -> None:
    """Read as another program's (its class), a wrapper of M3's embeddings was refused on the
    collection its M3 model wrote, and the bare model on one the wrapper wrote."""
    dense = M3Embeddings.from_encoder(enc_a)
    for first, then in ((dense, Logged(dense)), (Logged(dense), dense)):
        store = M3QdrantVectorStore.from_documents(
            DOCS[:2], embedding=first, location=":memory:", collection_name="c"
        )
        assert _record(store.client)["dense"].startswith("m3kit-dense:")
        again = M3QdrantVectorStore(client=store.client, collection_name="c", embedding=then)
        assert len(again.similarity_search(SAMPLE_TEXTS[1], k=2)) == 2
        with pytest.raises(FingerprintMismatchError, match="dense vectors of another model"):
            other = Logged(M3Embeddings.from_encoder(enc_b))  # another M3 model, wrapped
            M3QdrantVectorStore(client=store.client, collection_name="c", embedding=other)
        with pytest.raises(FingerprintMismatchError, match="dense vectors of another model"):
            fake = Logged(DeterministicFakeEmbedding(size=enc_a.dense_dim))  # not M3 at all
            M3QdrantVectorStore(client=store.client, collection_name="c", embedding=fake)
        store.client.close()
