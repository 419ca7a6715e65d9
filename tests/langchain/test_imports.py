"""Lock the public names of langchain_m3 (like LangChain partner packages' test_imports)."""

import langchain_m3

EXPECTED_ALL = [
    "M3Embeddings",
    "M3LateChunkingSplitter",
    "M3QdrantVectorStore",
    "M3Reranker",
    "M3Retriever",
    "M3SparseEmbeddings",
    "M3VectorStore",
]


def test_all_imports() -> None:
    assert sorted(langchain_m3.__all__) == sorted(EXPECTED_ALL)
    for name in EXPECTED_ALL:
        assert getattr(langchain_m3, name).__name__ == name
