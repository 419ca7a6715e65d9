"""LangChain ``M3Retriever`` and ``M3VectorStore`` refuse an empty or whitespace-only query.

It was encoded like any text: its sparse vector is empty (BGE-M3 weighs no token of it), so the
sparse half of the hybrid search silently found nothing, and the dense one ranked the chunks by
a query that says nothing. LlamaIndex's stores refuse it the same way
(``tests/llamaindex/test_vector_store_blank_query.py``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from langchain_core.documents import Document

from langchain_m3 import M3Retriever, M3VectorStore
from m3kit import M3Encoder

DOCS = [
    Document(page_content="Berlin is the capital of Germany."),
    Document(page_content="Paris is the capital of France."),
]


@pytest.fixture(scope="module")
def retriever(tiny_encoder: M3Encoder) -> M3Retriever:
    return M3Retriever.from_documents(DOCS, tiny_encoder)


def _calls(retriever: M3Retriever) -> dict[str, Callable[[str], Any]]:
    store = M3VectorStore(retriever.index)
    return {
        "invoke": retriever.invoke,
        "similarity_search": store.similarity_search,
        "similarity_search_with_score": store.similarity_search_with_score,
        "similarity_search_with_relevance_scores": (
            lambda q: store.similarity_search_with_relevance_scores(q, fusion="m3")
        ),
        "as_retriever": store.as_retriever().invoke,
    }


def _acalls(retriever: M3Retriever) -> dict[str, Callable[[str], Awaitable[Any]]]:
    store = M3VectorStore(retriever.index)
    return {
        "ainvoke": retriever.ainvoke,
        "asimilarity_search": store.asimilarity_search,
        "asimilarity_search_with_score": store.asimilarity_search_with_score,
    }


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\u200b", "\ufeff"])
async def test_blank_query_is_refused(retriever: M3Retriever, text: str) -> None:
    expected = re.escape(f"the query is empty ({text!r})")
    for name, call in _calls(retriever).items():
        with pytest.raises(ValueError, match=expected):
            call(text)
            pytest.fail(f"{name} took a blank query")
    for name, acall in _acalls(retriever).items():
        with pytest.raises(ValueError, match=expected):
            await acall(text)
            pytest.fail(f"{name} took a blank query")


def test_a_query_with_text_still_searches(retriever: M3Retriever) -> None:
    assert len(retriever.invoke(" Berlin ")) == 2
    assert len(M3VectorStore(retriever.index).similarity_search("Berlin", k=2)) == 2
