"""A late-chunked node an ``M3QdrantVectorStore`` query returns, inserted again, keeps its vector.

``QdrantVectorStore``'s queries returned nodes without ``embedding``; ``VectorStoreIndex``
embedded such a node's text alone when it was inserted again (after a metadata edit), while its
sparse vector kept its document's context. Queries now return late-chunked nodes with their
stored dense vector, on a real ``QdrantVectorStore`` over qdrant-client ``:memory:``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from qdrant_client import AsyncQdrantClient, QdrantClient

from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3QdrantVectorStore
from m3kit import M3Encoder
from tests.llamaindex.test_late_sparse_qdrant import LONG

DOCS = LONG  # two documents of 12 paragraphs each


def _dense(client: QdrantClient, collection: str) -> dict[str, np.ndarray]:
    points, _ = client.scroll(collection, limit=1000, with_vectors=True)
    return {str(p.id): np.asarray(p.vector["text-dense"]) for p in points}  # type: ignore[index]


def _indexed(encoder: M3Encoder) -> tuple[VectorStoreIndex, QdrantClient, M3Embedding, dict]:
    embed = M3Embedding.from_encoder(encoder)
    nodes = M3LateChunkingNodeParser.from_encoder(encoder, chunk_size=48).get_nodes_from_documents(
        DOCS
    )
    client = QdrantClient(":memory:")
    store = M3QdrantVectorStore("late", client=client, sparse_model=embed)
    index = VectorStoreIndex(
        nodes, embed_model=embed, storage_context=StorageContext.from_defaults(vector_store=store)
    )
    return index, client, embed, _dense(client, "late")


@pytest.mark.parametrize("mode", ["default", "hybrid"])
def test_a_queried_late_node_inserted_again_keeps_its_late_vector(
    tiny_encoder: M3Encoder, mode: str
) -> None:
    index, client, embed, before = _indexed(tiny_encoder)
    hits = index.as_retriever(similarity_top_k=3, vector_store_query_mode=mode).retrieve(
        "volcanoes number 3"
    )
    node = hits[0].node
    assert node.embedding is not None, "a queried late-chunked node carries its stored vector"
    alone = np.asarray(embed.get_text_embedding(node.get_content()))
    assert not np.allclose(alone, before[node.node_id], atol=1e-3), "late != text alone here"

    node.metadata["reviewed"] = True
    index.insert_nodes([node])

    after = _dense(client, "late")
    assert set(after) == set(before)
    np.testing.assert_allclose(after[node.node_id], before[node.node_id], atol=1e-6)
    stored = client.retrieve("late", [node.node_id])[0].payload
    assert stored is not None and '"reviewed": true' in stored["_node_content"]


async def test_an_async_query_returns_late_nodes_with_their_vectors(
    tiny_encoder: M3Encoder,
) -> None:
    embed = M3Embedding.from_encoder(tiny_encoder)
    nodes = M3LateChunkingNodeParser.from_encoder(
        tiny_encoder, chunk_size=48
    ).get_nodes_from_documents(DOCS)
    aclient = AsyncQdrantClient(":memory:")
    store = M3QdrantVectorStore("late", aclient=aclient, sparse_model=embed)
    await store.async_add(embed(nodes))
    query = VectorStoreQuery(
        query_embedding=embed.get_query_embedding("honeybees"),
        query_str="honeybees",
        similarity_top_k=2,
        mode=VectorStoreQueryMode.HYBRID,
    )
    result = await store.aquery(query)
    by_id = {node.node_id: node.embedding for node in nodes}
    assert result.nodes
    for node in result.nodes:
        assert node.embedding is not None
        np.testing.assert_allclose(node.embedding, by_id[node.node_id], atol=1e-6)


def test_a_late_node_deleted_since_the_query_is_named(
    tiny_encoder: M3Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    index, client, embed, _ = _indexed(tiny_encoder)
    store = index.vector_store
    query = VectorStoreQuery(
        query_embedding=embed.get_query_embedding("volcanoes"), similarity_top_k=2
    )
    gone = store.query(query).nodes[0].node_id  # type: ignore[index]
    real_retrieve = client.retrieve

    def deleted_meanwhile(**kwargs: Any) -> list:
        client.delete(kwargs["collection_name"], [gone])
        return real_retrieve(**kwargs)

    client.retrieve = deleted_meanwhile  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="llamaindex_m3._qdrant_late_embeddings"):
        result = store.query(query)
    missing = [node for node in result.nodes or [] if node.embedding is None]
    assert [node.node_id for node in missing] == [gone]
    assert gone in caplog.text and "its text alone" in caplog.text
