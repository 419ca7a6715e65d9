"""LlamaIndex integration of m3kit: BGE-M3 embeddings, late chunking, retriever, vector store,
fine-tuning."""

from m3kit.errors import require_extra

require_extra(
    "llamaindex",
    {
        "llama_index.core": "llama-index-core",
        "llama_index.vector_stores.qdrant": "llama-index-vector-stores-qdrant",
    },
)

from llamaindex_m3.embeddings import M3Embedding, M3SparseEmbedding, QdrantSparseFn, m3_sparse_fns
from llamaindex_m3.filters import to_store_filter
from llamaindex_m3.finetune import M3FinetuneEngine
from llamaindex_m3.hierarchical import M3HierarchicalNodeParser
from llamaindex_m3.node_parser import M3LateChunkingNodeParser
from llamaindex_m3.postprocessor import M3Reranker
from llamaindex_m3.qdrant_store import M3QdrantVectorStore
from llamaindex_m3.retriever import M3Retriever
from llamaindex_m3.vector_store import M3VectorStore

__all__ = [
    "M3Embedding",
    "M3FinetuneEngine",
    "M3HierarchicalNodeParser",
    "M3LateChunkingNodeParser",
    "M3QdrantVectorStore",
    "M3Reranker",
    "M3Retriever",
    "M3SparseEmbedding",
    "M3VectorStore",
    "QdrantSparseFn",
    "m3_sparse_fns",
    "to_store_filter",
]
