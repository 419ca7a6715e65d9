"""``M3QdrantVectorStore`` refuses a default or hybrid query without ``query_embedding``.

Its dense vectors are the nodes' own embeddings, so the dense search needs the query's;
``QdrantVectorStore`` passed ``None`` on to Qdrant, which then returns points unranked (in id
order, every score 1.0): a query given only ``query_str`` got the first stored nodes, silently.
"""

from __future__ import annotations

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from qdrant_client import AsyncQdrantClient, QdrantClient

from llamaindex_m3 import M3Embedding, M3QdrantVectorStore

TEXTS = ["Berlin is the capital of Germany.", "Oxygen has the atomic number 8."]


@pytest.mark.parametrize("mode", ["default", "hybrid"])
async def test_missing_query_embedding_is_refused(tiny_embedding: M3Embedding, mode: str) -> None:
    store = M3QdrantVectorStore(
        "no_embedding",
        client=QdrantClient(":memory:"),
        aclient=AsyncQdrantClient(":memory:"),
        sparse_model=tiny_embedding,
    )
    nodes = [TextNode(text=t) for t in TEXTS]
    for node in nodes:
        node.embedding = tiny_embedding.get_text_embedding(node.text)
    store.add(nodes)
    query = VectorStoreQuery(
        query_str="atomic number", mode=VectorStoreQueryMode(mode), similarity_top_k=2
    )
    expected = f"{mode} mode searches by VectorStoreQuery.query_embedding, which is missing"
    with pytest.raises(ValueError, match=expected):
        store.query(query)
    with pytest.raises(ValueError, match=expected):
        await store.aquery(query)
    sparse = VectorStoreQuery(
        query_str="atomic number", mode=VectorStoreQueryMode.SPARSE, similarity_top_k=2
    )
    assert store.query(sparse).ids  # sparse mode encodes query_str alone
    query.query_embedding = tiny_embedding.get_query_embedding("atomic number")
    assert len(store.query(query).ids or []) == 2
