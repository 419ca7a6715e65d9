"""M3Embeddings + M3SparseEmbeddings inside langchain_qdrant.QdrantVectorStore (hybrid mode)."""

from __future__ import annotations

from pathlib import Path

from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore, RetrievalMode

from langchain_m3 import M3Embeddings, M3SparseEmbeddings
from m3kit import M3Encoder
from tests.langchain.qdrant_stores import M3KIT_NAMES, hybrid_store

DOCS = [
    Document("Berlin is the capital of Germany.", metadata={"topic": "geo"}),
    Document("Oxygen is a chemical element with symbol O.", metadata={"topic": "chem"}),
    Document("A prime number has no divisors but one and itself.", metadata={"topic": "math"}),
    Document("The Amazon rainforest covers much of South America.", metadata={"topic": "geo"}),
]


def _store(encoder: M3Encoder, mode: RetrievalMode) -> QdrantVectorStore:
    return QdrantVectorStore.from_documents(
        DOCS,
        embedding=M3Embeddings.from_encoder(encoder),
        sparse_embedding=M3SparseEmbeddings.from_encoder(encoder),
        retrieval_mode=mode,
        location=":memory:",
        collection_name=f"hybrid_{mode.value}",
    )


def test_hybrid_store_indexes_and_returns_documents(tiny_encoder: M3Encoder) -> None:
    store = _store(tiny_encoder, RetrievalMode.HYBRID)
    info = store.client.get_collection(store.collection_name)
    assert info.points_count == len(DOCS)
    assert store.sparse_vector_name in (info.config.params.sparse_vectors or {})
    hits = store.similarity_search_with_score(DOCS[1].page_content, k=len(DOCS))
    assert sorted(d.page_content for d, _ in hits) == sorted(d.page_content for d in DOCS)
    # the exact text matches its own sparse terms and dense vector: fused rank 1
    assert hits[0][0].page_content == DOCS[1].page_content
    assert hits[0][0].metadata["topic"] == "chem"


def test_sparse_only_store_finds_lexical_match(tiny_encoder: M3Encoder) -> None:
    store = _store(tiny_encoder, RetrievalMode.SPARSE)
    for doc in DOCS:
        assert store.similarity_search(doc.page_content, k=1)[0].page_content == doc.page_content


async def test_hybrid_store_async(tiny_encoder: M3Encoder) -> None:
    store = _store(tiny_encoder, RetrievalMode.HYBRID)
    hits = await store.asimilarity_search(DOCS[2].page_content, k=2)
    assert hits[0].page_content == DOCS[2].page_content


def test_langchain_qdrant_reads_an_m3kit_collection(
    tiny_encoder: M3Encoder, tmp_path: Path
) -> None:
    """Same payload keys: QdrantVectorStore can search what M3Retriever stored (client backend)."""
    from qdrant_client import QdrantClient

    from langchain_m3 import M3Retriever

    folder = tmp_path / "db"
    writer = M3Retriever.from_documents(
        DOCS, tiny_encoder, location=folder, backend="client", collection="shared"
    )
    writer.index.close()
    client = QdrantClient(path=str(folder))
    store = hybrid_store(client, tiny_encoder, "shared", store=QdrantVectorStore, **M3KIT_NAMES)
    hit = store.similarity_search(DOCS[3].page_content, k=1)[0]
    assert hit.page_content == DOCS[3].page_content
    assert hit.metadata["topic"] == "geo"
    client.close()
