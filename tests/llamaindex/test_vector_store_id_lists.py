"""``VectorStoreQuery.doc_ids`` / ``node_ids`` of an ``M3VectorStore`` query: a single string
is refused, not read as its characters; an empty list restricts nothing (the
``VectorStoreIndex.as_retriever`` convention for a store that keeps the text)."""

from __future__ import annotations

import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.vector_stores.types import VectorStoreQuery

from llamaindex_m3 import M3Embedding, M3VectorStore
from m3kit.store import point_id
from tests.llamaindex.vector_store_docs import IDS, TEXTS, _docs


@pytest.fixture()
def index(store: M3VectorStore, tiny_embedding: M3Embedding) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        _docs(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=tiny_embedding,
    )


def _query(embed: M3Embedding, **ids: object) -> VectorStoreQuery:
    return VectorStoreQuery(
        query_str=TEXTS[0],
        query_embedding=embed.get_query_embedding(TEXTS[0]),
        similarity_top_k=len(IDS),
        **ids,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("name", "value"), [("doc_ids", "photo"), ("node_ids", point_id("photo", 0))]
)
def test_a_single_string_is_refused(
    index: VectorStoreIndex, tiny_embedding: M3Embedding, name: str, value: str
) -> None:
    with pytest.raises(TypeError, match=rf"VectorStoreQuery.{name} is a sequence of ids"):
        index.vector_store.query(_query(tiny_embedding, **{name: value}))
    listed = index.vector_store.query(_query(tiny_embedding, **{name: [value]}))
    assert [n.ref_doc_id for n in listed.nodes or []] == ["photo"]


@pytest.mark.parametrize("name", ["doc_ids", "node_ids"])
def test_an_empty_list_restricts_nothing(
    index: VectorStoreIndex, tiny_embedding: M3Embedding, name: str
) -> None:
    everything = index.vector_store.query(_query(tiny_embedding))
    assert len(everything.ids or []) == len(IDS)
    assert index.vector_store.query(_query(tiny_embedding, **{name: []})).ids == everything.ids
