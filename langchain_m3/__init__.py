"""LangChain integration of m3kit: BGE-M3 dense and sparse embeddings and a hybrid retriever."""

from langchain_m3.embeddings import M3Embeddings
from langchain_m3.sparse_embeddings import M3SparseEmbeddings

__all__ = [
    "M3Embeddings",
    "M3SparseEmbeddings",
]
