"""Lock the public names of llamaindex_m3: adding or removing one is a deliberate change."""

from __future__ import annotations

import subprocess
import sys

import llamaindex_m3

EXPECTED_ALL = [
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


def test_all_imports() -> None:
    assert sorted(llamaindex_m3.__all__) == sorted(EXPECTED_ALL)
    for name in EXPECTED_ALL:
        assert getattr(llamaindex_m3, name).__name__ == name


def test_no_finetuning_package_needed() -> None:
    code = (
        "import sys, llamaindex_m3\n"
        "bad = [m for m in sys.modules if m.startswith(\n"
        "    ('llama_index.finetuning', 'langchain', 'sentence_transformers'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
