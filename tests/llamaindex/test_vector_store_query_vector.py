"""``M3VectorStore`` refuses a ``query_embedding`` with no direction, as ``M3Retriever`` does.

A zero vector (or one holding NaN / inf) went to Qdrant as it was: in default mode every node
came back with score 0 in no meaningful order (zeros) or nothing came back at all (NaN), and in
hybrid mode the dense half silently dropped out, the sparse candidates alone reported as a
hybrid ranking. ``M3Retriever`` refused such a ``QueryBundle.embedding`` already.
"""

from __future__ import annotations

import math

import pytest
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from llamaindex_m3 import M3Embedding, M3VectorStore


@pytest.mark.parametrize("fill", [0.0, math.nan, math.inf])
@pytest.mark.parametrize("mode", ["default", "hybrid"])
async def test_directionless_query_refused(
    tiny_embedding: M3Embedding, capitals_store: M3VectorStore, mode: str, fill: float
) -> None:
    size = len(tiny_embedding.get_query_embedding("Berlin"))
    query = VectorStoreQuery(
        query_str="capital",
        query_embedding=[fill] * size,
        mode=VectorStoreQueryMode(mode),
        similarity_top_k=2,
    )
    expected = "VectorStoreQuery.query_embedding is all zeros \\(or not finite\\)"
    with pytest.raises(ValueError, match=expected):
        capitals_store.query(query)
    with pytest.raises(ValueError, match=expected):
        await capitals_store.aquery(query)


def test_query_embedding_of_another_size_names_the_field(
    tiny_embedding: M3Embedding, capitals_store: M3VectorStore
) -> None:
    size = len(tiny_embedding.get_query_embedding("Berlin"))
    query = VectorStoreQuery(query_str="capital", query_embedding=[0.1] * (size + 3))
    with pytest.raises(ValueError) as err:
        capitals_store.query(query)
    assert f"VectorStoreQuery.query_embedding has {size + 3} dimensions" in str(err.value)
    assert f"have {size}" in str(err.value)


def test_a_scaled_query_embedding_ranks_as_the_unit_one(
    tiny_embedding: M3Embedding, capitals_store: M3VectorStore
) -> None:
    """The check normalises the vector: a scaled query embedding scores as the unit one."""
    unit = tiny_embedding.get_query_embedding("capital of Germany")
    results = [
        capitals_store.query(
            VectorStoreQuery(
                query_str="capital of Germany",
                query_embedding=[scale * x for x in unit],
                mode=VectorStoreQueryMode.HYBRID,
                similarity_top_k=2,
            ),
            fusion="m3",
        )
        for scale in (1.0, 7.5)
    ]
    assert results[0].ids == results[1].ids
    assert results[0].similarities == pytest.approx(results[1].similarities, rel=1e-5)
