"""Dates, times and UUIDs in node metadata are stored as LlamaIndex's own vector stores store
them (``node_to_metadata_dict``: pydantic's JSON strings), not refused as "not JSON"."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.utils import node_to_metadata_dict

from llamaindex_m3 import M3Embedding, M3LateChunkingNodeParser, M3VectorStore

_META: dict[str, Any] = {
    "created": datetime.datetime(2026, 12, 5, 9, 30, tzinfo=datetime.timezone.utc),
    "day": datetime.date(2026, 12, 5),
    "runs": [uuid.UUID(int=7)],
    "n": 3,
}


def _native(metadata: dict[str, Any]) -> dict[str, Any]:
    """What LlamaIndex's own stores write for the metadata."""
    stored = node_to_metadata_dict(TextNode(text="x", metadata=metadata))
    return {k: stored[k] for k in metadata}


def test_nodes_with_dates_are_stored_as_llamaindex_stores_them(store: M3VectorStore) -> None:
    node = TextNode(text="Stamped text.", id_="n", metadata=dict(_META))
    store.add([node])
    (back,) = store.get_nodes(["n"])
    assert {k: back.metadata[k] for k in _META} == _native(_META)
    count = store.client.count()
    store.add([node])  # the same node again: nothing changes
    assert store.client.count() == count


def test_documents_with_dates_through_an_index_and_the_late_chunking_parser(
    tiny_encoder: Any, tiny_embedding: M3Embedding
) -> None:
    with M3VectorStore(tiny_embedding) as store:
        index = VectorStoreIndex.from_documents(
            [Document(text="Rivers flow to the sea. Bread is baked.", metadata=dict(_META))],
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=tiny_embedding,
            transformations=[M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=8)],
        )
        hits = index.as_retriever(similarity_top_k=2).retrieve("rivers")
        assert hits and all({k: h.node.metadata[k] for k in _META} == _native(_META) for h in hits)


def test_the_parsers_chunk_records_recipe_stores_them(
    tiny_encoder: Any, tiny_embedding: M3Embedding
) -> None:
    """``M3Store.upsert(chunk_records(nodes))`` (the parser's documented recipe) refused them."""
    from llamaindex_m3.node_parser import chunk_records

    doc = Document(text="Rivers flow to the sea. Bread is baked.", id_="d", metadata=dict(_META))
    nodes = M3LateChunkingNodeParser.from_encoder(tiny_encoder, chunk_size=8)([doc])
    with M3VectorStore(tiny_embedding) as store:
        store.client.store.upsert(chunk_records(nodes), replace=True)
        back = store.get_nodes()
        assert len(back) == len(nodes)
        assert all({k: n.metadata[k] for k in _META} == _native(_META) for n in back)
