"""LangChain integration of m3kit: BGE-M3 dense and sparse embeddings and a hybrid retriever.

- :class:`M3Embeddings`: dense vectors (``langchain_core`` ``Embeddings``).
- :class:`M3SparseEmbeddings`: learned-sparse vectors for ``langchain_qdrant`` hybrid mode.
- :class:`M3Retriever`: dense + sparse + ColBERT search over an m3kit collection, with
  optional late chunking.
"""

from langchain_m3.embeddings import M3Embeddings
from langchain_m3.retriever import M3Retriever
from langchain_m3.sparse_embeddings import M3SparseEmbeddings

__all__ = [
    "M3Embeddings",
    "M3Retriever",
    "M3SparseEmbeddings",
]
