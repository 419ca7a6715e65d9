"""``M3QdrantVectorStore`` refuses a blank query text in sparse and hybrid mode.

Only ``query_str=None`` was refused: ``""`` (or whitespace) encoded to an empty sparse vector, so
the sparse half of the search quietly returned nothing.
"""

from __future__ import annotations

import re

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from qdrant_client import AsyncQdrantClient, QdrantClient

from llamaindex_m3 import M3Embedding, M3QdrantVectorStore


@pytest.mark.parametrize("text", ["", "   \n", "\ufeff"])
@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
async def test_blank_query_text_is_refused(
    tiny_embedding: M3Embedding, mode: str, text: str
) -> None:
    store = M3QdrantVectorStore(
        "blank",
        client=QdrantClient(":memory:"),
        aclient=AsyncQdrantClient(":memory:"),
        sparse_model=tiny_embedding,
    )
    node = TextNode(text="Berlin is the capital of Germany.")
    node.embedding = tiny_embedding.get_text_embedding(node.text)
    store.add([node])
    query = VectorStoreQuery(
        query_str=text,
        query_embedding=tiny_embedding.get_query_embedding("Berlin"),
        mode=VectorStoreQueryMode(mode),
        similarity_top_k=2,
    )
    expected = f"{mode} mode .*" + re.escape(f"query_str is empty ({text!r})")
    with pytest.raises(ValueError, match=expected):
        store.query(query)
    with pytest.raises(ValueError, match=expected):
        await store.aquery(query)
    default = VectorStoreQuery(
        query_str=text, query_embedding=query.query_embedding, similarity_top_k=2
    )
    assert store.query(default).ids  # default mode searches by the embedding alone
