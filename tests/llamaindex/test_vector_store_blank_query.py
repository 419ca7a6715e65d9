"""``M3VectorStore`` refuses a whitespace-only query text wherever it encodes the text.

Only ``None`` and ``""`` were refused: ``"   "`` encoded to an empty sparse vector (and a
meaningless dense / ColBERT one), so the sparse half of a hybrid search quietly returned
nothing. ``M3QdrantVectorStore`` refuses it (``test_qdrant_empty_query.py``).
"""

from __future__ import annotations

import re

import pytest
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

from llamaindex_m3 import M3Embedding, M3VectorStore


@pytest.mark.parametrize("text", ["   ", " \n\t", "\u200b"])
@pytest.mark.parametrize(
    ("mode", "embedded", "kwargs"),
    [
        ("sparse", False, {}),
        ("hybrid", False, {}),
        ("hybrid", True, {}),  # the sparse vector is encoded from the text all the same
        ("default", False, {}),  # no query_embedding: the dense vector is encoded from it
        ("default", True, {"rerank": True}),  # ColBERT reranks with the text's vectors
    ],
)
async def test_whitespace_query_text_is_refused(
    tiny_embedding: M3Embedding,
    capitals_store: M3VectorStore,
    mode: str,
    embedded: bool,
    kwargs: dict[str, bool],
    text: str,
) -> None:
    embedding = tiny_embedding.get_query_embedding("Berlin") if embedded else None
    query = VectorStoreQuery(
        query_str=text,
        query_embedding=embedding,
        mode=VectorStoreQueryMode(mode),
        similarity_top_k=2,
    )
    expected = f"{mode} mode .*" + re.escape(f"query_str is empty ({text!r})")
    with pytest.raises(ValueError, match=expected):
        capitals_store.query(query, **kwargs)
    with pytest.raises(ValueError, match=expected):
        await capitals_store.aquery(query, **kwargs)


async def test_whitespace_text_with_an_embedding_in_default_mode(
    tiny_embedding: M3Embedding, capitals_store: M3VectorStore
) -> None:
    """Default mode without rerank searches by the ``query_embedding`` alone: the text is not
    used, so a blank one is not refused."""
    query = VectorStoreQuery(
        query_str="   ",
        query_embedding=tiny_embedding.get_query_embedding("Berlin"),
        similarity_top_k=2,
    )
    assert len(capitals_store.query(query).ids or []) == 2
    assert len((await capitals_store.aquery(query)).ids or []) == 2
