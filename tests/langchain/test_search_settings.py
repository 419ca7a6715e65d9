"""LangChain entry points: a checkpoint's calibrated fusion is the default; settings reach it.

``calibrated_encoder``'s checkpoint carries ``tiny_calibration`` (m3 0.1/0.7/0.2 with 7
candidates; dbsf with 9 without ColBERT), unlike every built-in default, and
``store_queries`` records what each search asked the store for (tests/conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from langchain_m3 import M3Retriever, M3VectorStore
from langchain_m3.vectorstore import ScoreScale
from m3kit import M3Encoder
from m3kit.store import Fusion, FusionCalibration, M3Index, SearchSettings
from m3kit.testing import SAMPLE_TEXTS

QUERY = SAMPLE_TEXTS[2]
Ranking = tuple[Fusion, tuple[float, ...] | None, bool, int | None]
NO_M3 = "set the m3 weighted sum"


def _ranking(call: dict[str, Any]) -> Ranking:
    """What one ``M3Store.query`` call ranked with (weights ``None``: rank fusion, none)."""
    weights = None if call["weights"] is None else tuple(call["weights"])
    return (Fusion(call["fusion"]), weights, call["rerank"], call["candidates"])


def _expected(s: SearchSettings, rerank: bool = True) -> Ranking:
    return (s.fusion, s.weights if s.fusion is Fusion.M3 else None, rerank, s.candidates)


def test_retriever_searches_with_the_calibration_unless_told_otherwise(
    calibrated_encoder: M3Encoder,
    tiny_calibration: FusionCalibration,
    store_queries: list[dict[str, Any]],
) -> None:
    cal_all, cal_ds = tiny_calibration.all_heads, tiny_calibration.dense_sparse
    assert cal_all is not None and cal_ds is not None
    r = M3Retriever.from_texts(SAMPLE_TEXTS, calibrated_encoder, k=3)
    assert r.index.calibration is not None
    got = r.invoke(QUERY)
    assert _ranking(store_queries[-1]) == _expected(cal_all)
    # the same hits as the index searched with the calibrated settings spelled out
    same = r.index.search(QUERY, k=3, **_kwargs(cal_all))
    assert [(d.id, d.metadata["chunk_index"]) for d in got] == [
        (h.doc_id, h.chunk_index) for h in same
    ]
    # a call's settings win, one at a time (the rest stay calibrated)
    r.invoke(QUERY, fusion="rrf", candidates=11)
    assert _ranking(store_queries[-1]) == (Fusion.RRF, None, True, 11)
    r.invoke(QUERY, weights=[1, 0, 0])
    assert _ranking(store_queries[-1]) == (Fusion.M3, (1.0, 0.0, 0.0), True, 7)
    # rerank=False: the calibration measured without ColBERT
    r.invoke(QUERY, rerank=False)
    assert _ranking(store_queries[-1]) == _expected(cal_ds, rerank=False)
    # fields win over the calibration, and a call over the fields
    mine = M3Retriever(index=r.index, fusion="dbsf", candidates=21)
    mine.invoke(QUERY)
    assert _ranking(store_queries[-1]) == (Fusion.DBSF, None, True, 21)
    mine.invoke(QUERY, candidates=4, fusion="m3", weights=(0.5, 0.5, 0))
    assert _ranking(store_queries[-1]) == (Fusion.M3, (0.5, 0.5, 0.0), True, 4)
    r.index.close()


async def test_async_retriever_searches_with_the_calibration(
    calibrated_encoder: M3Encoder,
    tiny_calibration: FusionCalibration,
    store_queries: list[dict[str, Any]],
) -> None:
    assert tiny_calibration.all_heads is not None
    with M3Index.open(calibrated_encoder, ":memory:") as index:
        r = M3Retriever(index=index, k=2)
        r.add_texts(SAMPLE_TEXTS)
        await r.ainvoke(QUERY)
        assert _ranking(store_queries[-1]) == _expected(tiny_calibration.all_heads)
        await r.ainvoke(QUERY, candidates=30, weights=(0.2, 0.2, 0.6))
        assert _ranking(store_queries[-1]) == (Fusion.M3, (0.2, 0.2, 0.6), True, 30)


def test_retriever_without_calibration_keeps_rrf(
    tiny_encoder: M3Encoder, store_queries: list[dict[str, Any]]
) -> None:
    r = M3Retriever.from_texts(SAMPLE_TEXTS, tiny_encoder, candidates=12)
    assert r.fusion is None and r.index.calibration is None
    r.invoke(QUERY)
    assert _ranking(store_queries[-1]) == (Fusion.RRF, None, True, 12)
    r.index.close()


def test_retriever_refuses_bad_settings_when_built(tiny_encoder: M3Encoder) -> None:
    with M3Index.open(tiny_encoder, ":memory:") as index:
        with pytest.raises(ValidationError, match=r"\[dense, sparse, colbert\]; got 2"):
            M3Retriever(index=index, weights=[0.5, 0.5])
        with pytest.raises(ValidationError, match="not all 0"):
            M3Retriever(index=index, weights=[0, 0, 0])
        with pytest.raises(ValidationError, match="candidates must be"):
            M3Retriever(index=index, candidates=0)
        with pytest.raises(ValidationError, match="fusion must be one of"):
            M3Retriever(index=index, fusion="sum")
        r = M3Retriever(index=index, fusion="m3", weights=[1, 2, 3])
        assert r.weights == (1.0, 2.0, 3.0)
        r.add_texts(SAMPLE_TEXTS[:3])
        with pytest.raises(ValueError, match="candidates must be"):
            r.invoke(QUERY, candidates=0)
        with pytest.raises(TypeError, match=r"unknown search argument\(s\) \['alpha'\]"):
            r.invoke(QUERY, alpha=0.5)
    with pytest.raises(ValueError, match="candidates must be"):
        M3Retriever.from_texts(SAMPLE_TEXTS, tiny_encoder, candidates=-1)


def test_vector_store_searches_with_the_calibration_unless_told_otherwise(
    calibrated_encoder: M3Encoder,
    tiny_calibration: FusionCalibration,
    store_queries: list[dict[str, Any]],
) -> None:
    cal_all, cal_ds = tiny_calibration.all_heads, tiny_calibration.dense_sparse
    assert cal_all is not None and cal_ds is not None
    with M3VectorStore.from_texts(SAMPLE_TEXTS, calibrated_encoder) as store:
        assert store.fusion is None
        assert store.search_settings() == cal_all
        got = store.similarity_search_with_score(QUERY, k=3)
        assert _ranking(store_queries[-1]) == _expected(cal_all)
        same = store.index.search(QUERY, k=3, **_kwargs(cal_all))
        assert [(d.id, s) for d, s in got] == [(h.doc_id, h.score) for h in same]
        store.similarity_search(QUERY, k=2, weights=[0, 1, 0], candidates=40)
        assert _ranking(store_queries[-1]) == (Fusion.M3, (0.0, 1.0, 0.0), True, 40)
        store.similarity_search(QUERY, rerank=False)
        assert _ranking(store_queries[-1]) == _expected(cal_ds, rerank=False)
        # the calibrated fusion is M3's weighted sum: relevance scores work by default
        assert store.score_scale() is ScoreScale.WEIGHTED
        assert store.score_scale(rerank=False) is ScoreScale.RANK  # calibrated dbsf
        assert store.similarity_search_with_relevance_scores(QUERY, k=2)
        # as_retriever: the store's defaults, then search_kwargs
        store.as_retriever().invoke(QUERY)
        assert _ranking(store_queries[-1]) == _expected(cal_all)
        kwargs = {"k": 2, "fusion": "rrf", "candidates": 13}
        store.as_retriever(search_kwargs=kwargs).invoke(QUERY)
        assert _ranking(store_queries[-1]) == (Fusion.RRF, None, True, 13)
        store.as_m3_retriever().invoke(QUERY)
        assert _ranking(store_queries[-1]) == _expected(cal_all)
        # an explicit store default wins over the calibration
        mine = M3VectorStore(store.index, fusion="dbsf", candidates=5)
        mine.similarity_search(QUERY)
        assert _ranking(store_queries[-1]) == (Fusion.DBSF, None, True, 5)
        mine.as_m3_retriever().invoke(QUERY)
        assert _ranking(store_queries[-1]) == (Fusion.DBSF, None, True, 5)


async def test_async_vector_store_searches_with_its_settings(
    calibrated_encoder: M3Encoder,
    tiny_calibration: FusionCalibration,
    store_queries: list[dict[str, Any]],
) -> None:
    assert tiny_calibration.all_heads is not None
    store = M3VectorStore.from_texts(
        SAMPLE_TEXTS, calibrated_encoder, fusion="m3", weights=(0.6, 0.2, 0.2), candidates=8
    )
    with store:
        await store.asimilarity_search(QUERY, k=2)
        assert _ranking(store_queries[-1]) == (Fusion.M3, (0.6, 0.2, 0.2), True, 8)
        await store.asimilarity_search_with_score(QUERY, k=2, candidates=3)
        assert _ranking(store_queries[-1]) == (Fusion.M3, (0.6, 0.2, 0.2), True, 3)
        await store.as_retriever(search_kwargs={"candidates": 17}).ainvoke(QUERY)
        assert _ranking(store_queries[-1]) == (Fusion.M3, (0.6, 0.2, 0.2), True, 17)
        # a call's own fusion ranks without the store's m3 weights (not an error)
        await store.asimilarity_search(QUERY, k=2, fusion="rrf")
        assert _ranking(store_queries[-1]) == (Fusion.RRF, None, True, 8)


def test_vector_store_refuses_bad_settings_when_built(tiny_encoder: M3Encoder) -> None:
    with M3VectorStore.from_texts(SAMPLE_TEXTS[:3], tiny_encoder) as store:
        assert store.search_settings() == SearchSettings()  # no calibration: RRF
        with pytest.raises(ValueError, match=r"\[dense, sparse, colbert\]; got 1"):
            M3VectorStore(store.index, weights=[1.0])
        with pytest.raises(ValueError, match="candidates must be"):
            M3VectorStore(store.index, candidates=True)
        with pytest.raises(ValueError, match="candidates must be"):
            store.as_retriever(search_kwargs={"candidates": 0})
        with pytest.raises(ValueError, match="not all 0"):
            store.as_retriever(search_kwargs={"weights": [0, 0, 0]})
        with pytest.raises(ValueError, match="fusion must be one of"):
            store.similarity_search(QUERY, fusion="best")
    with pytest.raises(ValueError, match="candidates must be"):
        M3VectorStore.from_texts(SAMPLE_TEXTS[:3], tiny_encoder, candidates=0)


def test_weights_without_the_m3_fusion_are_an_error(
    tiny_encoder: M3Encoder, store_queries: list[dict[str, Any]]
) -> None:
    # weights set the m3 sum: with rrf / dbsf they would play no part, silently
    with M3VectorStore.from_texts(SAMPLE_TEXTS[:3], tiny_encoder) as store:  # built-in: rrf
        with pytest.raises(ValueError, match=rf"{NO_M3}.*'rrf' \(the index's default, built-in"):
            store.similarity_search(QUERY, weights=[1, 0, 0])
        with pytest.raises(ValueError, match=rf"{NO_M3}.*'dbsf' \(given\).*fusion='m3'"):
            store.similarity_search(QUERY, weights=[1, 0, 0], fusion="dbsf")
        with pytest.raises(ValueError, match=NO_M3):  # refused where it is given
            store.as_retriever(search_kwargs={"weights": [1, 0, 0], "fusion": "rrf"})
        with pytest.raises(ValueError, match=NO_M3):
            M3Retriever(index=store.index).invoke(QUERY, weights=[1, 0, 0])
        assert not store_queries
        held = M3VectorStore(store.index, fusion="m3", weights=[1, 0, 0])
        held.weights, held.fusion = (1, 0, 0), None  # made invalid after it was built
        assert "invalid" in repr(held)  # shown, not raised
    # the object's own weights with its own fusion (given, or the index's default rrf): every
    # search not choosing a fusion would raise, so they are refused when the object is built
    rrf = rf"{NO_M3}.*'rrf' \(given\).*fusion='m3'"
    built_in = rf"{NO_M3}.*'rrf' \(the index's default, built-in"
    with M3Index.open(tiny_encoder, ":memory:") as index:
        index.add_texts(SAMPLE_TEXTS[:3])
        with pytest.raises(ValueError, match=rrf):
            M3Retriever(index=index, weights=[1, 0, 0], fusion="rrf")
        with pytest.raises(ValueError, match=built_in):
            M3Retriever(index=index, weights=(0.5, 0.2, 0.3))
        with pytest.raises(ValueError, match=rf"{NO_M3}.*'dbsf' \(given\)"):
            M3VectorStore(index, weights=[1, 0, 0], fusion="dbsf")
        with pytest.raises(ValueError, match=built_in):
            M3VectorStore(index, weights=[1, 0, 0])
        with pytest.raises(ValueError, match=built_in):
            M3VectorStore(index).as_m3_retriever(weights=[1, 0, 0])
        assert not store_queries
        assert index.count() == 3  # still open: refusing a wrapper closes nothing
    with pytest.raises(ValueError, match=built_in):
        M3Retriever.from_texts(SAMPLE_TEXTS[:3], tiny_encoder, weights=[1, 0, 0])
    with pytest.raises(ValueError, match=rrf):
        M3VectorStore.from_texts(SAMPLE_TEXTS[:3], tiny_encoder, fusion="rrf", weights=[1, 0, 0])
    with M3VectorStore.from_texts(SAMPLE_TEXTS[:3], tiny_encoder) as store:
        # the object's weights with its m3 fusion: a call choosing another fusion (or a
        # rerank its default ranks without m3) ranks without them, no error
        m3 = M3VectorStore(store.index, fusion="m3", weights=[0.5, 0.3, 0.2])
        assert [d.id for d in m3.similarity_search(QUERY, k=2, fusion="dbsf")]
        assert _ranking(store_queries[-1])[0] is Fusion.DBSF
        assert m3.as_retriever(search_kwargs={"fusion": "rrf", "k": 2}).invoke(QUERY)
        assert _ranking(store_queries[-1])[0] is Fusion.RRF
        on_m3 = M3Retriever(index=store.index, fusion="m3", weights=[0.5, 0.3, 0.2])
        assert on_m3.invoke(QUERY, fusion="rrf")
        assert _ranking(store_queries[-1])[0] is Fusion.RRF
        assert m3.similarity_search(QUERY, k=2)
        assert _ranking(store_queries[-1])[:2] == (Fusion.M3, (0.5, 0.3, 0.2))
        # a retriever of that store choosing its own rank fusion ranks without them too
        assert m3.as_m3_retriever(fusion="rrf").invoke(QUERY)
        assert _ranking(store_queries[-1])[:2] == (Fusion.RRF, None)
        assert m3.as_m3_retriever(k=2).invoke(QUERY)
        assert _ranking(store_queries[-1])[:2] == (Fusion.M3, (0.5, 0.3, 0.2))
    # defaults given at open are not an error: rrf simply uses none of their weights
    default = SearchSettings(fusion="rrf", weights=(1, 0, 0))
    with M3Index.open(tiny_encoder, ":memory:", search=default) as index:
        index.add_texts(SAMPLE_TEXTS[:3])
        M3Retriever(index=index).invoke(QUERY)
        assert _ranking(store_queries[-1]) == (Fusion.RRF, None, True, None)


def _kwargs(s: SearchSettings) -> dict[str, Any]:
    return {
        "fusion": s.fusion,
        "weights": s.weights,
        "rerank": s.rerank,
        "candidates": s.candidates,
    }
