"""LangChain ``M3QdrantVectorStore`` refuses relevance scores in hybrid and sparse mode.

langchain-qdrant 1.1.0 maps every score with the relevance function of the collection's
distance (cosine: ``(s + 1) / 2``), also in hybrid mode, where a score is an RRF fusion score
(a rank, no similarity), and in sparse mode, where it is a dot product with no fixed scale.
``similarity_search_with_relevance_scores`` and the ``similarity_score_threshold`` retriever
filtered on that number silently (a hybrid hit ranked 3rd and 4th by the two halves, RRF
0.45, passed a 0.5 threshold at "relevance" 0.725). ``M3VectorStore`` refuses rank fusion the
same way. The threshold retriever is refused where it is built too. Dense mode keeps
langchain-qdrant's relevance.
"""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_qdrant import RetrievalMode

from langchain_m3 import M3Embeddings, M3QdrantVectorStore, M3SparseEmbeddings
from m3kit import M3Encoder

DOCS = [
    Document("Berlin is the capital of Germany."),
    Document("Oxygen is a chemical element with symbol O."),
    Document("A prime number has no divisors but one and itself."),
    Document("The Amazon rainforest covers much of South America."),
]
QUERY = DOCS[1].page_content


def _store(encoder: M3Encoder, mode: RetrievalMode) -> M3QdrantVectorStore:
    return M3QdrantVectorStore.from_documents(
        DOCS,
        embedding=M3Embeddings.from_encoder(encoder),
        sparse_embedding=M3SparseEmbeddings.from_encoder(encoder),
        retrieval_mode=mode,
        location=":memory:",
        collection_name=f"rel_{mode.value}",
    )


def _refused(mode: RetrievalMode) -> str:
    return rf"RetrievalMode\.{mode.name}.*no relevance.*similarity_search_with_score"


@pytest.mark.parametrize("mode", [RetrievalMode.HYBRID, RetrievalMode.SPARSE])
async def test_relevance_scores_are_refused_in_hybrid_and_sparse_mode(
    tiny_encoder: M3Encoder, mode: RetrievalMode
) -> None:
    store = _store(tiny_encoder, mode)
    with pytest.raises(ValueError, match=_refused(mode)):
        store.similarity_search_with_relevance_scores(QUERY, k=4)
    with pytest.raises(ValueError, match=_refused(mode)):
        await store.asimilarity_search_with_relevance_scores(QUERY, k=4)
    # the raw scores the message points to are still there, best first
    raw = store.similarity_search_with_score(QUERY, k=4)
    assert raw[0][0].page_content == QUERY
    assert [s for _, s in raw] == sorted((s for _, s in raw), reverse=True)


async def test_dense_mode_keeps_langchain_qdrants_relevance(tiny_encoder: M3Encoder) -> None:
    store = _store(tiny_encoder, RetrievalMode.DENSE)
    raw = store.similarity_search_with_score(QUERY, k=4)
    cosine = [(d.page_content, (s + 1.0) / 2.0) for d, s in raw]  # a cosine collection
    for rel in (
        store.similarity_search_with_relevance_scores(QUERY, k=4),
        await store.asimilarity_search_with_relevance_scores(QUERY, k=4),
    ):
        assert [d.page_content for d, _ in rel] == [text for text, _ in cosine]
        assert [s for _, s in rel] == pytest.approx([r for _, r in cosine])
    cut = cosine[1][1]  # keeps the hits at or above the second one's relevance
    kept = [text for text, r in cosine if r >= cut]
    retriever = store.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"k": 4, "score_threshold": cut},
    )
    assert [d.page_content for d in retriever.invoke(QUERY)] == kept
    assert [d.page_content for d in await retriever.ainvoke(QUERY)] == kept


async def test_the_mode_is_checked_when_searching(tiny_encoder: M3Encoder) -> None:
    """``retrieval_mode`` is a plain attribute: the check follows it after construction."""
    store = _store(tiny_encoder, RetrievalMode.HYBRID)  # both vectors stored: any mode works
    store.retrieval_mode = RetrievalMode.DENSE
    retriever = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.5}
    )
    raw = store.similarity_search_with_score(QUERY, k=2)
    rel = store.similarity_search_with_relevance_scores(QUERY, k=2)
    assert [s for _, s in rel] == pytest.approx([(s + 1.0) / 2.0 for _, s in raw])
    assert retriever.invoke(QUERY)  # tiny model: every cosine is near 1
    for mode in (RetrievalMode.SPARSE, RetrievalMode.HYBRID):
        store.retrieval_mode = mode
        with pytest.raises(ValueError, match=_refused(mode)):
            store.similarity_search_with_relevance_scores(QUERY, k=2)
        with pytest.raises(ValueError, match=_refused(mode)):
            retriever.invoke(QUERY)  # made before the mode changed
        with pytest.raises(ValueError, match=_refused(mode)):
            await retriever.ainvoke(QUERY)


@pytest.mark.parametrize("mode", [RetrievalMode.HYBRID, RetrievalMode.SPARSE])
def test_threshold_retriever_is_refused_when_made(
    tiny_encoder: M3Encoder, mode: RetrievalMode
) -> None:
    """``as_retriever(search_type="similarity_score_threshold")`` in hybrid or sparse mode
    fails where it is built (it was built, and failed at its first ``invoke``); the other
    search types stay, as does the threshold retriever in dense mode (above)."""
    store = _store(tiny_encoder, mode)
    with pytest.raises(ValueError, match=_refused(mode)):
        store.as_retriever(
            search_type="similarity_score_threshold",
            search_kwargs={"k": 4, "score_threshold": 0.5},
        )
    retriever = store.as_retriever(search_kwargs={"k": 2})
    assert retriever.invoke(QUERY)[0].page_content == QUERY
