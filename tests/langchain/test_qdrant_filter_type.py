"""``M3QdrantVectorStore`` refuses a ``filter=`` that is not a ``qdrant_client.models.Filter``,
naming it, in every search (a ``{key: value}`` mapping, ``M3VectorStore``'s form, failed deep in
langchain-qdrant: ``AttributeError: 'dict' object has no attribute 'must'``, or a pydantic
error about ``Prefetch`` in hybrid mode)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain_qdrant import RetrievalMode
from qdrant_client import models

from langchain_m3 import M3Embeddings, M3QdrantVectorStore, M3SparseEmbeddings
from m3kit import M3Encoder

# (store, filter, the query's dense vector) -> results
SEARCHES: dict[str, Callable[[M3QdrantVectorStore, Any, list[float]], Any]] = {
    "similarity_search": lambda s, f, v: s.similarity_search("a b", k=2, filter=f),
    "positional": lambda s, f, v: s.similarity_search_with_score("a b", 2, f),
    "by_vector": lambda s, f, v: s.similarity_search_by_vector(v, k=2, filter=f),
    "mmr": lambda s, f, v: s.max_marginal_relevance_search("a b", k=2, filter=f),
}
DENSE, HYBRID = RetrievalMode.DENSE, RetrievalMode.HYBRID
# langchain-qdrant's MMR runs in dense mode only
CASES = [(m, s) for m in (DENSE, HYBRID) for s in sorted(SEARCHES) if (m, s) != (HYBRID, "mmr")]


@pytest.mark.parametrize(("mode", "search"), CASES)
def test_a_mapping_filter_is_refused_by_name(
    tiny_encoder: M3Encoder, mode: RetrievalMode, search: str
) -> None:
    embedding = M3Embeddings.from_encoder(tiny_encoder)
    store = M3QdrantVectorStore.from_texts(
        ["a b", "c d"],
        embedding=embedding,
        sparse_embedding=M3SparseEmbeddings.from_encoder(tiny_encoder),
        retrieval_mode=mode,
        location=":memory:",
        collection_name="filters",
        metadatas=[{"g": 0}, {"g": 1}],
    )
    run, vector = SEARCHES[search], embedding.embed_query("a b")
    with pytest.raises(TypeError, match="filter= is a qdrant_client.models.Filter.*not dict"):
        run(store, {"g": 0}, vector)
    by_g = models.Filter(
        must=[models.FieldCondition(key="metadata.g", match=models.MatchValue(value=0))]
    )
    found = run(store, by_g, vector)
    docs = [d[0] if isinstance(d, tuple) else d for d in found]
    assert [d.metadata["g"] for d in docs] == [0]
