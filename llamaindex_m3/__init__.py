"""LlamaIndex integration of m3kit: BGE-M3 dense and sparse embeddings for LlamaIndex."""

from llamaindex_m3.embeddings import M3Embedding, M3SparseEmbedding, QdrantSparseFn, m3_sparse_fns

__all__ = [
    "M3Embedding",
    "M3SparseEmbedding",
    "QdrantSparseFn",
    "m3_sparse_fns",
]
