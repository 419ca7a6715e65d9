"""LangChain integration of m3kit: BGE-M3 dense and sparse embeddings and a hybrid retriever.

- :class:`M3Embeddings`: dense vectors (``langchain_core`` ``Embeddings``).
- :class:`M3SparseEmbeddings`: learned-sparse vectors for ``langchain_qdrant`` hybrid mode.
- :class:`M3Retriever`: dense + sparse + ColBERT search over an m3kit collection, with
  optional late chunking.
- :class:`M3LateChunkingSplitter`: documents to chunk documents embedded in context (they
  carry their vectors into :class:`M3VectorStore`).
- :class:`M3VectorStore`: a ``VectorStore`` over an m3kit collection (hybrid M3 search).
- :class:`M3QdrantVectorStore`: ``langchain_qdrant.QdrantVectorStore`` that stores late-chunked
  chunks with the vectors they carry.
- :class:`M3Reranker`: a document compressor scoring (query, document) pairs with M3.
"""

from m3kit.errors import require_extra

require_extra(
    "langchain",
    {
        "langchain_core": "langchain-core",
        "langchain_qdrant": "langchain-qdrant",
        "langchain_text_splitters": "langchain-text-splitters",
    },
)

from langchain_m3.embeddings import M3Embeddings
from langchain_m3.qdrant_store import M3QdrantVectorStore
from langchain_m3.reranker import M3Reranker
from langchain_m3.retriever import M3Retriever
from langchain_m3.sparse_embeddings import M3SparseEmbeddings
from langchain_m3.splitter import M3LateChunkingSplitter
from langchain_m3.vectorstore import M3VectorStore

__all__ = [
    "M3Embeddings",
    "M3LateChunkingSplitter",
    "M3QdrantVectorStore",
    "M3Reranker",
    "M3Retriever",
    "M3SparseEmbeddings",
    "M3VectorStore",
]
