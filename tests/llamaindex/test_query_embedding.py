"""A query's precomputed dense embedding (``QueryBundle.embedding``, ``query_embedding``).

LlamaIndex's ``VectorIndexRetriever`` searches with a query bundle's ``embedding`` when it has
one instead of embedding the query again; the m3kit retriever and store must do the same for
the dense head (the sparse and ColBERT vectors still come from the query text).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document
from llama_index.core.schema import QueryBundle, TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery
from qdrant_client import QdrantClient

from llamaindex_m3 import M3Embedding, M3QdrantVectorStore, M3Retriever, M3VectorStore
from m3kit import M3Encoder

TEXTS = ["Berlin is the capital of Germany.", "Oxygen has the atomic number 8."]


@pytest.fixture()
def retriever(tiny_encoder: M3Encoder) -> Iterator[M3Retriever]:
    docs = [Document(text=t, id_=f"d{i}") for i, t in enumerate(TEXTS)]
    with M3Retriever.from_documents(docs, tiny_encoder, similarity_top_k=2) as r:
        yield r


def _unit(vector: list[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_retriever_searches_with_the_bundles_embedding(
    retriever: M3Retriever, tiny_embedding: M3Embedding, store_queries: list[dict[str, Any]]
) -> None:
    """The bundle's embedding is the dense query (it was ignored: the text was embedded)."""
    given = tiny_embedding.get_query_embedding(TEXTS[1])
    retriever.retrieve(QueryBundle(TEXTS[0], embedding=given))
    (sent,) = store_queries
    np.testing.assert_allclose(sent["dense"], _unit(given), atol=1e-6)
    own = tiny_embedding.get_query_embedding(TEXTS[0])
    assert not np.allclose(sent["dense"], _unit(own), atol=1e-3)  # not the text's
    assert sent["sparse"] is not None  # the text still gives the sparse query


def test_retriever_with_embedding_and_custom_strs(
    retriever: M3Retriever, tiny_embedding: M3Embedding, store_queries: list[dict[str, Any]]
) -> None:
    """HyDE strings give the sparse query, the given embedding the dense one."""
    given = tiny_embedding.get_query_embedding(TEXTS[0])
    bundle = QueryBundle("q", custom_embedding_strs=TEXTS, embedding=given)
    retriever.retrieve(bundle)
    (sent,) = store_queries
    np.testing.assert_allclose(sent["dense"], _unit(given), atol=1e-6)


def test_retriever_refuses_an_embedding_of_another_size(retriever: M3Retriever) -> None:
    with pytest.raises(ValueError, match=r"QueryBundle.embedding has 3 dimensions.*have 32"):
        retriever.retrieve(QueryBundle(TEXTS[0], embedding=[0.1, 0.2, 0.3]))


def test_retriever_refuses_a_zero_embedding(retriever: M3Retriever) -> None:
    with pytest.raises(ValueError, match=r"QueryBundle.embedding is all zeros"):
        retriever.retrieve(QueryBundle(TEXTS[0], embedding=[0.0] * 32))


@pytest.mark.parametrize("mode", ["default", "hybrid"])
def test_vector_store_searches_with_the_query_embedding(
    tiny_embedding: M3Embedding, store_queries: list[dict[str, Any]], mode: str
) -> None:
    """``VectorStoreQuery.query_embedding`` is the dense query in default and hybrid mode."""
    with M3VectorStore(tiny_embedding) as store:
        store.add(
            [
                TextNode(text=t, id_=f"n{i}", embedding=tiny_embedding.get_text_embedding(t))
                for i, t in enumerate(TEXTS)
            ]
        )
        given = tiny_embedding.get_query_embedding(TEXTS[1])
        store.query(
            VectorStoreQuery(query_embedding=given, query_str=TEXTS[0], mode=mode)  # type: ignore[arg-type]
        )
    (sent,) = store_queries
    np.testing.assert_allclose(_unit(sent["dense"]), _unit(given), atol=1e-6)


def test_dense_only_collection_uses_the_embedding_alone(
    minilm_encoder: M3Encoder, store_queries: list[dict[str, Any]]
) -> None:
    """A dense-only model: the bundle's embedding is the whole query (nothing is encoded)."""
    docs = [Document(text=t, id_=f"d{i}") for i, t in enumerate(TEXTS)]
    embed = M3Embedding.from_encoder(minilm_encoder)
    with M3Retriever.from_documents(docs, minilm_encoder, similarity_top_k=2) as r:
        given = embed.get_query_embedding(TEXTS[1])
        hits = r.retrieve(QueryBundle(TEXTS[0], embedding=given))
    assert hits[0].node.get_content() == TEXTS[1]
    (sent,) = store_queries
    assert sent["sparse"] is None and sent["colbert"] is None
    np.testing.assert_allclose(sent["dense"], _unit(given), atol=1e-6)


@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
def test_m3_qdrant_store_refuses_a_sparse_query_without_text(
    tiny_encoder: M3Encoder, mode: str
) -> None:
    """Without ``query_str`` LlamaIndex's store silently ran a dense-only search instead."""
    embed = M3Embedding.from_encoder(tiny_encoder)
    store = M3QdrantVectorStore("no_text", client=QdrantClient(":memory:"), sparse_model=embed)
    store.add([TextNode(text=t, embedding=embed.get_text_embedding(t)) for t in TEXTS])
    query = VectorStoreQuery(
        query_embedding=embed.get_query_embedding(TEXTS[0]),
        mode=mode,  # type: ignore[arg-type]
    )
    with pytest.raises(ValueError, match=f"{mode} mode.*query_str"):
        store.query(query)
    with pytest.raises(ValueError, match=f"{mode} mode.*query_str"):
        asyncio.run(store.aquery(query))
