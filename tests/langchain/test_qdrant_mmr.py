"""M3QdrantVectorStore MMR follows LangChain's ``lambda_mult``: 1 = relevance only, 0 = most
diverse (langchain-qdrant 1.1.0 passes it to Qdrant's ``diversity`` as is, the reverse:
langchain-ai/langchain#39052)."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_qdrant import RetrievalMode

from langchain_m3 import M3Embeddings, M3QdrantVectorStore
from m3kit import M3Encoder

# three near-copies of one text, and two other texts: a diverse top 2 skips the second copy
TEXTS = [
    "The river floods the valley every spring.",
    "The river floods the valley every spring!",
    "The river floods the valley each spring.",
    "Bees make honey from the nectar of flowers.",
    "The train to the coast leaves at noon.",
]
QUERY = "When does the river flood the valley?"


@pytest.fixture
def store(tiny_encoder: M3Encoder) -> M3QdrantVectorStore:
    return M3QdrantVectorStore.from_documents(
        [Document(t, id=f"00000000-0000-0000-0000-{i:012d}") for i, t in enumerate(TEXTS)],
        embedding=M3Embeddings.from_encoder(tiny_encoder),
        retrieval_mode=RetrievalMode.DENSE,
        location=":memory:",
        collection_name="mmr",
    )


def test_lambda_mult_one_is_plain_similarity(store: M3QdrantVectorStore) -> None:
    plain = [d.page_content for d in store.similarity_search(QUERY, k=3)]
    mmr = store.max_marginal_relevance_search(QUERY, k=3, fetch_k=5, lambda_mult=1.0)
    assert [d.page_content for d in mmr] == plain


def test_lambda_mult_zero_is_diverse(store: M3QdrantVectorStore) -> None:
    relevant = [d.page_content for d in store.similarity_search(QUERY, k=2)]
    assert all("river" in t for t in relevant)  # plain top 2: two copies of one text
    diverse = store.max_marginal_relevance_search(QUERY, k=2, fetch_k=5, lambda_mult=0.0)
    assert sum("river" in d.page_content for d in diverse) == 1


async def test_async_and_retriever_follow_the_same_rule(store: M3QdrantVectorStore) -> None:
    plain = [d.page_content for d in store.similarity_search(QUERY, k=3)]
    mmr = await store.amax_marginal_relevance_search(QUERY, k=3, fetch_k=5, lambda_mult=1.0)
    assert [d.page_content for d in mmr] == plain
    retriever = store.as_retriever(
        search_type="mmr", search_kwargs={"k": 3, "fetch_k": 5, "lambda_mult": 1.0}
    )
    assert [d.page_content for d in retriever.invoke(QUERY)] == plain


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_lambda_mult_outside_zero_to_one_is_refused(store: M3QdrantVectorStore, bad: float) -> None:
    with pytest.raises(ValueError, match="lambda_mult"):
        store.max_marginal_relevance_search(QUERY, k=2, lambda_mult=bad)
