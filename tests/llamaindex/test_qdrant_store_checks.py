"""``M3QdrantVectorStore`` refuses what LlamaIndex's ``QdrantVectorStore`` silently ignored or
misread, and filters as ``M3VectorStore`` does.

Found by a review: a misspelt ``qdrant_filter=`` ran the query unfiltered; ``qdrant_filters``
replaced the query's own ``filters`` / ``doc_ids`` / ``node_ids``; ``delete_nodes()`` with no
ids and no filter deleted every node; ``alpha=-1`` and budgets of 0 were used or read as unset;
and ``QdrantVectorStore``'s filter translation gave other nodes than ``M3VectorStore``'s
(``TEXT_MATCH`` on whole tokens ignoring case, ``NE`` / ``NIN`` on list values, a float ``IN``
list a pydantic error).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from llamaindex_m3 import M3Embedding, M3QdrantVectorStore, M3VectorStore

METADATA = [
    {"i": 0, "title": "Hello world", "tags": ["a", "b"], "year": 2020, "file.name": "a.pdf"},
    {"i": 1, "title": "Say hello", "tags": ["c"], "year": 2021, "page label": "3"},
    {"i": 2, "title": "Goodbye", "tags": ["d"]},
    {"i": 3, "title": "Berlin", "tags": [], "year": 2024},
]


def _nodes(embed: M3Embedding) -> list[TextNode]:
    nodes = []
    for meta in METADATA:
        node = TextNode(
            text=f"{meta['title']} number {meta['i']}",
            id_=str(uuid.UUID(int=int(meta["i"]) + 1)),
            metadata=dict(meta),
        )
        node.embedding = embed.get_text_embedding(node.text)
        nodes.append(node)
    return nodes


async def _qdrant(embed: M3Embedding) -> M3QdrantVectorStore:
    """The store over two in-memory clients, each holding the nodes (they share nothing)."""
    store = M3QdrantVectorStore(
        "checks",
        client=QdrantClient(":memory:"),
        aclient=AsyncQdrantClient(":memory:"),
        sparse_model=embed,
    )
    store.add(_nodes(embed))
    await store.async_add(_nodes(embed))
    return store


def _ids(nodes: list[Any]) -> list[int]:
    return sorted(int(n.metadata["i"]) for n in nodes)


def _query(embed: M3Embedding, **fields: Any) -> VectorStoreQuery:
    text = "hello"
    return VectorStoreQuery(
        query_str=text,
        query_embedding=embed.get_query_embedding(text),
        similarity_top_k=4,
        **fields,
    )


def _only(i: int) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="i", match=models.MatchValue(value=i))])


async def test_unknown_query_arguments_are_refused(tiny_embedding: M3Embedding) -> None:
    store = await _qdrant(tiny_embedding)
    query = _query(tiny_embedding)
    with pytest.raises(TypeError, match=r"unsupported arguments \['qdrant_filter'\]"):
        store.query(query, qdrant_filter=_only(2))
    with pytest.raises(TypeError, match=r"unsupported arguments \['qdrant_filter'\]"):
        await store.aquery(query, qdrant_filter=_only(2))
    assert _ids(store.query(query, qdrant_filters=_only(2)).nodes) == [2]


async def test_qdrant_filters_apply_with_the_query_filters(tiny_embedding: M3Embedding) -> None:
    store = await _qdrant(tiny_embedding)
    own = MetadataFilters(filters=[MetadataFilter(key="i", value=0)])
    for fields in ({"filters": own}, {"doc_ids": ["none-of-these"]}):
        query = _query(tiny_embedding, **fields)
        assert store.query(query, qdrant_filters=_only(2)).nodes == []  # both: nothing
        assert (await store.aquery(query, qdrant_filters=_only(2))).nodes == []
    query = _query(tiny_embedding, filters=own)
    assert _ids(store.query(query, qdrant_filters=_only(0)).nodes) == [0]


async def test_write_methods_refuse_unknown_arguments(tiny_embedding: M3Embedding) -> None:
    store = await _qdrant(tiny_embedding)
    node = _nodes(tiny_embedding)[0]
    with pytest.raises(TypeError, match=r"add got unsupported arguments: \['batch'\]"):
        store.add([node], batch=1)
    with pytest.raises(TypeError, match=r"async_add got unsupported arguments"):
        await store.async_add([node], batch=1)
    with pytest.raises(TypeError, match=r"delete got unsupported arguments: \['filters'\]"):
        store.delete("None", filters=MetadataFilters(filters=[]))
    with pytest.raises(TypeError, match=r"delete_nodes got unsupported arguments"):
        store.delete_nodes(node_ids=[node.node_id], wait=True)
    assert len(store.get_nodes()) == len(METADATA)


@pytest.mark.parametrize("filters", [None, MetadataFilters(filters=[])])
async def test_delete_nodes_naming_nothing_is_refused(
    tiny_embedding: M3Embedding, filters: MetadataFilters | None
) -> None:
    store = await _qdrant(tiny_embedding)
    with pytest.raises(ValueError, match="needs node_ids or filters.*call clear"):
        store.delete_nodes(filters=filters)
    with pytest.raises(ValueError, match="needs node_ids or filters.*call clear"):
        await store.adelete_nodes(filters=filters)
    assert len(store.get_nodes()) == len(METADATA)  # nothing deleted
    store.delete_nodes(node_ids=[])  # an empty id list names no node: nothing deleted
    assert len(store.get_nodes()) == len(METADATA)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("alpha", -1.0, r"alpha must be in \[0, 1\], got -1.0"),
        ("alpha", 1.5, r"alpha must be in \[0, 1\], got 1.5"),
        ("sparse_top_k", 0, "sparse_top_k must be an int >= 1"),
        ("hybrid_top_k", 0, "hybrid_top_k must be an int >= 1"),
    ],
)
async def test_query_values_out_of_range_are_refused(
    tiny_embedding: M3Embedding, field: str, value: Any, message: str
) -> None:
    store = await _qdrant(tiny_embedding)
    query = _query(tiny_embedding, mode=VectorStoreQueryMode.HYBRID, **{field: value})
    with pytest.raises(ValueError, match=message):
        store.query(query)
    with pytest.raises(ValueError, match=message):
        await store.aquery(query)


@pytest.mark.parametrize("field", ["doc_ids", "node_ids"])
async def test_a_single_string_id_list_is_refused(tiny_embedding: M3Embedding, field: str) -> None:
    store = await _qdrant(tiny_embedding)
    with pytest.raises(TypeError, match=f"VectorStoreQuery.{field} is a sequence of ids"):
        store.query(_query(tiny_embedding, **{field: "d1"}))


FILTER_CASES = [
    ("title", "ello", "text_match", [0, 1]),  # a substring, not whole tokens
    ("title", "Hello", "text_match", [0]),  # case-sensitive
    ("tags", "b", "!=", [1, 2, 3]),  # no element equals
    ("tags", ["a"], "nin", [1, 2, 3]),
    ("year", 2020, "!=", [1, 2, 3]),  # a node without the key matches
    ("year", [2020.0, 2021.0], "in", [0, 1]),  # floats compare by value
    ("tags", None, "is_empty", [3]),
    ("file.name", "a.pdf", "==", [0]),  # a flat key with a dot
    ("page label", "3", "==", [1]),  # a key with a space
]


@pytest.mark.parametrize(("key", "value", "operator", "expected"), FILTER_CASES)
async def test_filters_mean_what_they_mean_in_m3_vector_store(
    tiny_embedding: M3Embedding, key: str, value: Any, operator: str, expected: list[int]
) -> None:
    filters = MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=operator)])
    qdrant = await _qdrant(tiny_embedding)
    with M3VectorStore(tiny_embedding) as m3:
        m3.add(_nodes(tiny_embedding))
        assert _ids(m3.get_nodes(filters=filters)) == expected
    assert _ids(qdrant.get_nodes(filters=filters)) == expected
    assert _ids(await qdrant.aget_nodes(filters=filters)) == expected
    assert _ids(qdrant.query(_query(tiny_embedding, filters=filters)).nodes) == expected


async def test_text_match_insensitive_is_refused(tiny_embedding: M3Embedding) -> None:
    store = await _qdrant(tiny_embedding)
    filters = MetadataFilters(
        filters=[MetadataFilter(key="title", value="ELL", operator="text_match_insensitive")]
    )
    with pytest.raises(NotImplementedError, match="TEXT_MATCH_INSENSITIVE on 'title'"):
        store.get_nodes(filters=filters)
