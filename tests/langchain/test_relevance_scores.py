"""M3VectorStore relevance scores: in [0, 1], in the order of the results, distinct where the
final scores are (LangChain's ``similarity_search_with_relevance_scores`` and
``as_retriever(search_type="similarity_score_threshold")``)."""

from __future__ import annotations

import warnings

import pytest
from langchain_core.documents import Document

from langchain_m3 import M3VectorStore
from langchain_m3.vectorstore import ScoreScale
from m3kit import M3Encoder
from m3kit.testing import SAMPLE_TEXTS

DOCS = [Document(text, id=f"d{i}") for i, text in enumerate(SAMPLE_TEXTS)]
QUERY = SAMPLE_TEXTS[3]


def _similarity(score: float) -> float:
    """The documented relevance of a cosine / MaxSim (langchain-qdrant's for cosine)."""
    return (1.0 + score) / 2.0


def _weighted(score: float) -> float:
    """The documented relevance of M3's weighted sum with a sparse term (unbounded above)."""
    return (1.0 + score) / 2.0 if score <= 0 else 1.0 - 0.5 / (1.0 + score)


def _relevance(store: M3VectorStore, **kwargs: object) -> list[tuple[str | None, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # LangChain warns when a relevance leaves [0, 1]
        got = store.similarity_search_with_relevance_scores(QUERY, **kwargs)  # type: ignore[arg-type]
    return [(d.id, s) for d, s in got]


@pytest.mark.parametrize("rerank", [True, False])
def test_m3_relevance_scores_follow_the_results(tiny_encoder: M3Encoder, rerank: bool) -> None:
    k = len(DOCS)
    with M3VectorStore.from_documents(DOCS, tiny_encoder, fusion="m3", rerank=rerank) as store:
        assert store.score_scale() is ScoreScale.WEIGHTED
        assert store.score_scale(weights=[0.5, 0, 0.5]) is ScoreScale.SIMILARITY  # no sparse
        scored = [(d.id, s) for d, s in store.similarity_search_with_score(QUERY, k=k)]
        raw = [s for _, s in scored]
        assert raw[2] > 1.0  # the sparse term is unbounded: several hits score above 1
        relevant = _relevance(store, k=k)
        assert [i for i, _ in relevant] == [i for i, _ in scored]
        rel = [s for _, s in relevant]
        assert all(0.0 <= r <= 1.0 for r in rel)
        # one relevance per distinct final score (they clipped to 1.0, all tied), in order
        assert len(set(rel)) == len(set(raw)) and rel == sorted(rel, reverse=True)
        assert rel == pytest.approx([_weighted(s) for s in raw], rel=1e-12)
        assert store._select_relevance_score_fn()(raw[0]) == rel[0]
        # a threshold between the 2nd and 3rd hit keeps the best two
        cut = (rel[1] + rel[2]) / 2
        retriever = store.as_retriever(
            search_type="similarity_score_threshold", search_kwargs={"k": k, "score_threshold": cut}
        )
        assert [d.id for d in retriever.invoke(QUERY)] == [i for i, _ in scored[:2]]


def test_dense_relevance_scores_stay_distinct_below_zero(minilm_encoder: M3Encoder) -> None:
    k = len(DOCS)
    with M3VectorStore.from_documents(DOCS, minilm_encoder) as store:
        for fusion in (None, "m3"):  # m3 over the dense head alone scores the cosine too
            assert store.score_scale(fusion=fusion) is ScoreScale.SIMILARITY
            raw = [s for _, s in store.similarity_search_with_score(QUERY, k=k, fusion=fusion)]
            assert sum(s < 0 for s in raw) >= 3  # unrelated texts: negative cosines
            rel = [s for _, s in _relevance(store, k=k, fusion=fusion)]
            assert all(0.0 <= r <= 1.0 for r in rel)
            assert len(set(rel)) == len(set(raw))  # the negative ones all clipped to 0.0
            assert rel == pytest.approx([_similarity(s) for s in raw], rel=1e-12)
            assert rel[0] == pytest.approx(1.0, abs=1e-6)  # the query's own text
