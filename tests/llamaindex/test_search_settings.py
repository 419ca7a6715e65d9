"""LlamaIndex entry points: a checkpoint's calibrated fusion is the default; settings reach it.

``calibrated_encoder``'s checkpoint carries ``tiny_calibration`` (m3 0.1/0.7/0.2 with 7
candidates; dbsf with 9 without ColBERT), unlike every built-in default, and
``store_queries`` records what each search asked the store for (tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from pydantic import ValidationError

from llamaindex_m3 import M3Embedding, M3Retriever, M3VectorStore
from m3kit import M3Encoder
from m3kit.store import Fusion, FusionCalibration, SearchSettings
from m3kit.testing import SAMPLE_TEXTS

QUERY = SAMPLE_TEXTS[2]
DOCS = [Document(text=t, id_=f"d{i}") for i, t in enumerate(SAMPLE_TEXTS)]
Ranking = tuple[Fusion, tuple[float, ...] | None, bool, int | None]
NO_M3 = "set the m3 weighted sum"


def _ranking(call: dict[str, Any]) -> Ranking:
    """What one ``M3Store.query`` call ranked with (weights ``None``: rank fusion, none)."""
    weights = None if call["weights"] is None else tuple(call["weights"])
    return (Fusion(call["fusion"]), weights, call["rerank"], call["candidates"])


def _expected(s: SearchSettings | None, rerank: bool = True) -> Ranking:
    assert s is not None
    return (s.fusion, s.weights if s.fusion is Fusion.M3 else None, rerank, s.candidates)


@pytest.fixture()
def calibrated_store(calibrated_encoder: M3Encoder) -> Iterator[tuple[M3VectorStore, Any]]:
    embed = M3Embedding.from_encoder(calibrated_encoder)
    store = M3VectorStore(embed)
    index = VectorStoreIndex.from_documents(
        DOCS, storage_context=_storage(store), embed_model=embed
    )
    yield store, index
    store.close()


def _storage(store: M3VectorStore) -> Any:
    from llama_index.core import StorageContext

    return StorageContext.from_defaults(vector_store=store)


def test_retriever_searches_with_the_calibration_unless_told_otherwise(
    calibrated_encoder: M3Encoder,
    tiny_calibration: FusionCalibration,
    store_queries: list[dict[str, Any]],
) -> None:
    with M3Retriever.from_documents(DOCS, calibrated_encoder, similarity_top_k=3) as r:
        assert r.fusion is None and r.index.calibration is not None
        got = r.retrieve(QUERY)
        assert _ranking(store_queries[-1]) == _expected(tiny_calibration.all_heads)
        cal = tiny_calibration.all_heads
        assert cal is not None
        same = r.index.search(
            QUERY, k=3, fusion=cal.fusion, weights=cal.weights, rerank=True, candidates=7
        )
        assert [n.node.node_id for n in got] == [h.id for h in same]
        # settings given win, one at a time (the rest stay calibrated)
        mine = M3Retriever(r.index, fusion="rrf", candidates=11)
        mine.retrieve(QUERY)
        assert _ranking(store_queries[-1]) == (Fusion.RRF, None, True, 11)
        mine = M3Retriever(r.index, weights=[0.5, 0.5, 0.0])
        mine.retrieve(QUERY)
        assert _ranking(store_queries[-1]) == (Fusion.M3, (0.5, 0.5, 0.0), True, 7)
        # rerank=False: the calibration measured without ColBERT
        M3Retriever(r.index, rerank=False).retrieve(QUERY)
        assert _ranking(store_queries[-1]) == _expected(tiny_calibration.dense_sparse, False)


async def test_async_retriever_searches_with_its_settings(
    calibrated_encoder: M3Encoder,
    tiny_calibration: FusionCalibration,
    store_queries: list[dict[str, Any]],
) -> None:
    with M3Retriever.open(calibrated_encoder) as r:
        r.add_documents(DOCS)
        await r.aretrieve(QUERY)
        assert _ranking(store_queries[-1]) == _expected(tiny_calibration.all_heads)
    r = M3Retriever.from_documents(
        DOCS, calibrated_encoder, fusion="dbsf", rerank=True, candidates=3
    )
    with r:
        await r.aretrieve(QUERY)
        assert _ranking(store_queries[-1]) == (Fusion.DBSF, None, True, 3)


def test_retriever_refuses_bad_settings_when_built(
    tiny_encoder: M3Encoder, store_queries: list[dict[str, Any]]
) -> None:
    with M3Retriever.open(tiny_encoder) as r:
        with pytest.raises(ValueError, match=r"\[dense, sparse, colbert\]; got 2"):
            M3Retriever(r.index, weights=[0.5, 0.5])
        with pytest.raises(ValueError, match="candidates must be"):
            M3Retriever(r.index, candidates=0)
        with pytest.raises(ValueError, match="fusion must be one of"):
            M3Retriever(r.index, fusion="sum")
        r.add_documents(DOCS[:3])
        r.retrieve(QUERY)  # no calibration: RRF with ColBERT rerank, as before
        assert _ranking(store_queries[-1]) == (Fusion.RRF, None, True, None)
    with pytest.raises(ValueError, match="not all 0"):
        M3Retriever.open(tiny_encoder, weights=(0, 0, 0))


def test_vector_store_hybrid_searches_with_the_calibration(
    calibrated_store: tuple[M3VectorStore, Any],
    tiny_calibration: FusionCalibration,
    store_queries: list[dict[str, Any]],
) -> None:
    store, index = calibrated_store
    cal = tiny_calibration.all_heads
    assert store.fusion is None and cal is not None
    assert store.search_settings() == SearchSettings(
        fusion=cal.fusion, weights=cal.weights, rerank=True, candidates=7
    )
    hybrid = {"vector_store_query_mode": "hybrid", "similarity_top_k": 3}
    index.as_retriever(**hybrid).retrieve(QUERY)
    assert _ranking(store_queries[-1]) == _expected(cal)
    # one query's vector_store_kwargs win
    kwargs = {"fusion": "rrf", "candidates": 33}
    index.as_retriever(**hybrid, vector_store_kwargs=kwargs).retrieve(QUERY)
    assert _ranking(store_queries[-1]) == (Fusion.RRF, None, True, 33)
    index.as_retriever(**hybrid, vector_store_kwargs={"rerank": False}).retrieve(QUERY)
    assert _ranking(store_queries[-1]) == _expected(tiny_calibration.dense_sparse, False)
    # sparse_top_k: the candidates each retriever fetches (as in LlamaIndex's Qdrant store)
    index.as_retriever(**hybrid, sparse_top_k=25).retrieve(QUERY)
    assert _ranking(store_queries[-1]) == (cal.fusion, cal.weights, True, 25)
    # alpha splits the calibrated weights' vector share against sparse
    q = VectorStoreQuery(
        query_str=QUERY,
        query_embedding=store.client.encoder.encode([QUERY], query=True).dense[0].tolist(),
        similarity_top_k=3,
        mode=VectorStoreQueryMode.HYBRID,
        alpha=0.5,
    )
    store.query(q)
    weights = store_queries[-1]["weights"]
    assert weights == pytest.approx((0.5 * 0.1 / 0.3, 0.5, 0.5 * 0.2 / 0.3))
    # the store's own fields win over the calibration
    mine = M3VectorStore.from_index(store.client, fusion="dbsf", candidates=6)
    no_alpha = dataclasses.replace(q, alpha=None)
    mine.query(no_alpha)
    assert _ranking(store_queries[-1]) == (Fusion.DBSF, None, True, 6)
    # m3's weights as given: the store divides them by the sum of the heads that score
    mine.query(no_alpha, candidates=8, fusion="m3", weights=(1, 0, 1))
    assert _ranking(store_queries[-1]) == (Fusion.M3, (1.0, 0.0, 1.0), True, 8)


async def test_async_vector_store_query_takes_its_settings(
    calibrated_store: tuple[M3VectorStore, Any],
    tiny_calibration: FusionCalibration,
    store_queries: list[dict[str, Any]],
) -> None:
    _, index = calibrated_store
    retriever = index.as_retriever(
        vector_store_query_mode="hybrid", vector_store_kwargs={"candidates": 14}
    )
    await retriever.aretrieve(QUERY)
    cal = tiny_calibration.all_heads
    assert cal is not None
    assert _ranking(store_queries[-1]) == (cal.fusion, cal.weights, True, 14)


def test_vector_store_refuses_bad_settings(
    tiny_embedding: M3Embedding, store_queries: list[dict[str, Any]]
) -> None:
    with pytest.raises(ValidationError, match="candidates must be"):
        M3VectorStore(tiny_embedding, candidates=0)
    with pytest.raises(ValidationError, match=r"\[dense, sparse, colbert\]; got 1"):
        M3VectorStore(tiny_embedding, weights=[1.0])
    with pytest.raises(ValidationError, match="fusion must be one of"):
        M3VectorStore(tiny_embedding, fusion="max")
    with M3VectorStore(tiny_embedding) as store:
        index = VectorStoreIndex.from_documents(
            DOCS[:3], storage_context=_storage(store), embed_model=tiny_embedding
        )
        hybrid = index.as_retriever(vector_store_query_mode="hybrid")
        hybrid.retrieve(QUERY)  # no calibration: RRF with ColBERT rerank, as before
        assert _ranking(store_queries[-1]) == (Fusion.RRF, None, True, None)
        bad = index.as_retriever(
            vector_store_query_mode="hybrid", vector_store_kwargs={"candidates": 0}
        )
        with pytest.raises(ValueError, match="candidates must be"):
            bad.retrieve(QUERY)
        odd = index.as_retriever(vector_store_query_mode="hybrid", vector_store_kwargs={"x": 1})
        with pytest.raises(TypeError, match=r"unsupported arguments: \['x'\]"):
            odd.retrieve(QUERY)


def test_weights_without_the_m3_fusion_are_an_error(
    tiny_embedding: M3Embedding, store_queries: list[dict[str, Any]]
) -> None:
    # weights set the m3 sum: with rrf / dbsf they would play no part, silently
    with M3VectorStore(tiny_embedding) as store:  # no calibration: rrf
        index = VectorStoreIndex.from_documents(
            DOCS[:3], storage_context=_storage(store), embed_model=tiny_embedding
        )
        for mode in ("default", "hybrid"):
            given = {"weights": [1, 0, 0]}
            retriever = index.as_retriever(vector_store_query_mode=mode, vector_store_kwargs=given)
            with pytest.raises(ValueError, match=rf"{NO_M3}.*'rrf' \(the index's default"):
                retriever.retrieve(QUERY)
        with pytest.raises(ValueError, match=rf"{NO_M3}.*'dbsf' \(given\).*fusion='m3'"):
            store.search_settings(fusion="dbsf", weights=[1, 0, 0])
        with pytest.raises(ValueError, match=NO_M3):  # its own: refused when built
            M3VectorStore.from_index(store.client, weights=(1, 0, 1))
        held = M3VectorStore.from_index(store.client, fusion="m3", weights=(1, 0, 1))
        q = VectorStoreQuery(query_str=QUERY, similarity_top_k=2, mode="hybrid")
        for fusion in (None, "dbsf"):  # refused when built, as the store is
            with pytest.raises(ValueError, match=NO_M3):
                M3Retriever(store.client, weights=[1, 0, 0], fusion=fusion)
        assert not store_queries
        held.query(q, fusion="m3")
        assert _ranking(store_queries[-1])[:2] == (Fusion.M3, (1.0, 0.0, 1.0))  # as held
        # the store's weights with its m3 fusion: a query choosing rrf ranks without them
        m3 = M3VectorStore.from_index(store.client, fusion="m3", weights=(0.5, 0.3, 0.2))
        assert m3.query(q, fusion="rrf").ids
        assert _ranking(store_queries[-1])[0] is Fusion.RRF


def test_vector_store_fields_are_checked_when_assigned(tiny_embedding: M3Embedding) -> None:
    with M3VectorStore(tiny_embedding) as store:
        store.fusion = "m3"  # type: ignore[assignment]
        assert store.fusion is Fusion.M3
        with pytest.raises(ValidationError, match="candidates must be an int >= 1"):
            store.candidates = 0
        with pytest.raises(ValidationError, match="weights"):
            store.weights = (1.0, 2.0)  # type: ignore[assignment]
        assert store.candidates is None
        # where the collection is was decided when it was opened: not changed by assigning
        with pytest.raises(ValidationError, match="frozen"):
            store.collection_name = "other"
