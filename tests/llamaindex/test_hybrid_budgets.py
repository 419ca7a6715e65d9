"""Hybrid-mode budgets: ``similarity_top_k``, ``sparse_top_k`` and ``hybrid_top_k``.

LlamaIndex's ``QdrantVectorStore`` fetches ``similarity_top_k`` dense candidates and
``sparse_top_k`` (else ``similarity_top_k``) sparse ones, and returns ``hybrid_top_k`` (else
``similarity_top_k``) fused nodes. :class:`M3QdrantVectorStore` is that store, so it sends
those limits to Qdrant as they are. :class:`M3VectorStore` returns the same number of nodes,
but fetches one candidate budget per retriever (``candidates``: ``sparse_top_k`` when set,
else the store's / index's ``max(4 * k, 50)``; at least the number returned), as its
``query`` documents.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from qdrant_client import QdrantClient

from llamaindex_m3 import M3Embedding, M3QdrantVectorStore, M3VectorStore
from m3kit import M3Encoder
from m3kit.store.query import QueryOptions

TEXTS = [f"Document number {i} is about topic {i % 5} and word w{i}." for i in range(30)]


def _nodes(embed: M3Embedding) -> list[TextNode]:
    vectors = embed.get_text_embedding_batch(TEXTS)
    return [TextNode(text=t, embedding=v) for t, v in zip(TEXTS, vectors, strict=True)]


def _query(embed: M3Embedding, **budgets: Any) -> VectorStoreQuery:
    return VectorStoreQuery(
        query_embedding=embed.get_query_embedding("topic 3 word w8"),
        query_str="topic 3 word w8",
        mode=VectorStoreQueryMode.HYBRID,
        **budgets,
    )


CASES = [  # budgets, then (dense limit, sparse limit, nodes returned) as LlamaIndex's store
    ({"similarity_top_k": 3, "sparse_top_k": 7, "hybrid_top_k": 5}, (3, 7, 5)),
    ({"similarity_top_k": 4, "sparse_top_k": 9}, (4, 9, 4)),
    ({"similarity_top_k": 6, "hybrid_top_k": 2}, (6, 6, 2)),
]


@pytest.mark.parametrize(("budgets", "expected"), CASES)
def test_m3_qdrant_store_sends_each_budget(
    tiny_encoder: M3Encoder, budgets: dict[str, int], expected: tuple[int, int, int]
) -> None:
    embed = M3Embedding.from_encoder(tiny_encoder)
    client = QdrantClient(":memory:")
    store = M3QdrantVectorStore("budgets", client=client, sparse_model=embed)
    store.add(_nodes(embed))
    sent: list[list[Any]] = []
    batch = client.query_batch_points

    def spy(collection_name: str, requests: list[Any], **kwargs: Any) -> Any:
        sent.append(requests)
        return batch(collection_name, requests, **kwargs)

    client.query_batch_points = spy  # type: ignore[method-assign]
    result = store.query(_query(embed, **budgets))
    (requests,) = sent
    dense, sparse = requests
    assert (dense.using, sparse.using) == (store.dense_vector_name, store.sparse_vector_name)
    assert (dense.limit, sparse.limit, len(result.nodes)) == expected


@pytest.mark.parametrize(("budgets", "expected"), CASES)
def test_m3_vector_store_budgets(
    tiny_embedding: M3Embedding,
    monkeypatch: pytest.MonkeyPatch,
    budgets: dict[str, int],
    expected: tuple[int, int, int],
) -> None:
    """Same number of nodes; one candidate budget per retriever: ``sparse_top_k`` (at least
    the nodes returned), else the index's ``max(4 * k, 50)``."""
    _, _, returned = expected
    fetched: list[int] = []
    per_retriever = QueryOptions.per_retriever

    def spy(self: QueryOptions, k: int, candidates: int | None = None) -> int:
        fetched.append(per_retriever(self, k, candidates))
        return fetched[-1]

    monkeypatch.setattr(QueryOptions, "per_retriever", spy)
    with M3VectorStore(tiny_embedding) as store:
        store.add(_nodes(tiny_embedding))
        result = store.query(_query(tiny_embedding, **budgets))
    assert len(result.nodes) == returned
    sparse_top_k = budgets.get("sparse_top_k")
    assert fetched[-1] == (max(returned, sparse_top_k) if sparse_top_k else max(4 * returned, 50))


@pytest.mark.parametrize(
    ("mode", "budgets", "field"),
    [
        (VectorStoreQueryMode.SPARSE, {"sparse_top_k": 0}, "sparse_top_k"),
        (VectorStoreQueryMode.HYBRID, {"hybrid_top_k": 0}, "hybrid_top_k"),
        (VectorStoreQueryMode.HYBRID, {"sparse_top_k": -5}, "sparse_top_k"),
    ],
)
def test_a_zero_or_negative_budget_is_an_error_naming_it(
    tiny_embedding: M3Embedding, mode: VectorStoreQueryMode, budgets: dict[str, int], field: str
) -> None:
    """A 0 was read as unset (``similarity_top_k`` results came back), and a negative one
    failed as "candidates must be ...", naming no field of the query."""
    with M3VectorStore(tiny_embedding) as store:
        store.add(_nodes(tiny_embedding))
        query = _query(tiny_embedding, similarity_top_k=3, **budgets)
        query.mode = mode
        with pytest.raises(ValueError, match=rf"VectorStoreQuery\.{field} must be an int >= 1"):
            store.query(query)


@pytest.mark.parametrize(
    ("budgets", "fetched"),
    [
        ({"similarity_top_k": 120, "hybrid_top_k": 5}, 120),  # above the rule: the floor
        ({"similarity_top_k": 120, "sparse_top_k": 80, "hybrid_top_k": 5}, 120),
        ({"similarity_top_k": 8, "sparse_top_k": 80, "hybrid_top_k": 5}, 80),
        ({"similarity_top_k": 8, "hybrid_top_k": 5}, 50),  # below the rule: the rule
        ({"similarity_top_k": 120, "hybrid_top_k": 5, "candidates": 30}, 30),  # per query wins
    ],
)
def test_similarity_top_k_above_hybrid_top_k_is_a_floor_on_the_candidates(
    tiny_embedding: M3Embedding,
    monkeypatch: pytest.MonkeyPatch,
    budgets: dict[str, int],
    fetched: int,
) -> None:
    """LlamaIndex's store fetches ``similarity_top_k`` dense candidates when ``hybrid_top_k``
    sets the results; ``M3VectorStore`` never read it there (120 fetched 50)."""
    seen: list[int] = []
    per_retriever = QueryOptions.per_retriever

    def spy(self: QueryOptions, k: int, candidates: int | None = None) -> int:
        seen.append(per_retriever(self, k, candidates))
        return seen[-1]

    monkeypatch.setattr(QueryOptions, "per_retriever", spy)
    given = dict(budgets)
    candidates = given.pop("candidates", None)
    kwargs = {} if candidates is None else {"candidates": candidates}
    with M3VectorStore(tiny_embedding) as store:
        store.add(_nodes(tiny_embedding))
        result = store.query(_query(tiny_embedding, **given), **kwargs)
    assert len(result.nodes) == 5
    assert seen[-1] == fetched
