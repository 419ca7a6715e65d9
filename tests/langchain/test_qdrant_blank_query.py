"""LangChain ``M3QdrantVectorStore`` refuses an empty or whitespace-only query in sparse and
hybrid mode, as LlamaIndex's does: its sparse vector is empty, so sparse mode silently returned
nothing (``[]``) and hybrid mode ranked by the dense half alone. Dense mode is left as
``QdrantVectorStore`` has it.
"""

from __future__ import annotations

import re

import pytest
from langchain_core.documents import Document
from langchain_qdrant import RetrievalMode

from langchain_m3 import M3Embeddings, M3QdrantVectorStore, M3SparseEmbeddings
from m3kit import M3Encoder

DOCS = [
    Document(page_content="Berlin is the capital of Germany."),
    Document(page_content="Paris is the capital of France."),
]


def _store(encoder: M3Encoder, mode: RetrievalMode) -> M3QdrantVectorStore:
    return M3QdrantVectorStore.from_documents(
        DOCS,
        M3Embeddings.from_encoder(encoder),
        sparse_embedding=M3SparseEmbeddings.from_encoder(encoder),
        retrieval_mode=mode,
        location=":memory:",
        collection_name="blank",
    )


@pytest.mark.parametrize("text", ["", "  \n", "\u200b\u200d"])
@pytest.mark.parametrize("mode", [RetrievalMode.SPARSE, RetrievalMode.HYBRID])
async def test_blank_query_is_refused(
    tiny_encoder: M3Encoder, mode: RetrievalMode, text: str
) -> None:
    store = _store(tiny_encoder, mode)
    expected = f"{mode.value} mode .*" + re.escape(f"the query is empty ({text!r})")
    with pytest.raises(ValueError, match=expected):
        store.similarity_search(text, k=2)
    with pytest.raises(ValueError, match="no relevance"):  # refused in these modes first
        store.similarity_search_with_relevance_scores(text, k=2)  # (test_qdrant_relevance.py)
    with pytest.raises(ValueError, match=expected):
        await store.asimilarity_search(text, k=2)
    with pytest.raises(ValueError, match=expected):
        store.as_retriever().invoke(text)
    assert len(store.similarity_search("Berlin", k=2)) == 2


def test_dense_mode_is_left_as_qdrant_has_it(tiny_encoder: M3Encoder) -> None:
    store = _store(tiny_encoder, RetrievalMode.DENSE)
    assert len(store.similarity_search("  ", k=2)) == 2  # no sparse half to lose


@pytest.mark.parametrize("mode", [RetrievalMode.DENSE, RetrievalMode.HYBRID])
def test_a_nan_threshold_or_m3kit_ranking_argument_is_an_error(
    tiny_encoder: M3Encoder, mode: RetrievalMode
) -> None:
    """``score_threshold=nan`` silently kept no hit, and ``fusion=`` / ``candidates=`` (the
    arguments of langchain_m3's own store) failed with qdrant-client's bare
    ``AssertionError: Unknown arguments``, which ``python -O`` drops."""
    store = _store(tiny_encoder, mode)
    with pytest.raises(ValueError, match="score_threshold must be a finite number"):
        store.similarity_search("Berlin", k=2, score_threshold=float("nan"))
    with pytest.raises(ValueError, match=r"\['candidates', 'fusion'\] are m3kit ranking"):
        store.similarity_search("Berlin", k=2, fusion="rrf", candidates=10)
    assert len(store.similarity_search("Berlin", k=2, score_threshold=-1.0)) == 2
