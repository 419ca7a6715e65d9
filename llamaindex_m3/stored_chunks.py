"""Stored chunks of the documents LlamaIndex nodes are written to (both write paths).

Shared by :mod:`llamaindex_m3.node_writes` (``M3VectorStore``) and
:mod:`llamaindex_m3.retriever_writes` (``M3Retriever.add_nodes``): the stored chunk a node
names by its id, and the check that a node id names one chunk of one document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.schema import BaseNode

from llamaindex_m3.node_records import StoredChunk
from m3kit.store import M3Index, point_id
from m3kit.store.filters import chunk_ids_filter, documents_filter
from m3kit.store.schema import CHUNK_ID, CHUNK_INDEX, METADATA

__all__ = ["check_ids_elsewhere", "doc_id_of", "named_chunks", "stored_payloads"]

_DOC_BATCH = 256


def doc_id_of(payload: Mapping[str, Any]) -> str:
    """The ``doc_id`` of a stored chunk's payload."""
    return str(payload.get("doc_id"))


def stored_payloads(index: M3Index, doc_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The stored payloads of every chunk of these documents."""
    payloads: list[dict[str, Any]] = []
    for start in range(0, len(doc_ids), _DOC_BATCH):
        found = index.store.points(filter=documents_filter(doc_ids[start : start + _DOC_BATCH]))
        payloads.extend(found.values())
    return payloads


def named_chunks(
    index: M3Index, groups: Mapping[str, Sequence[BaseNode]]
) -> dict[int, StoredChunk]:
    """The stored chunk each node names by its id, by ``id(node)``: the chunk of its document
    its writer gave that id, else the one whose point id it is (nodes naming none are left out).

    Args:
        index: The encoder + store.
        groups: The nodes of each document, by document id.
    """
    ids: dict[str, dict[str, StoredChunk]] = {}
    points: dict[str, dict[str, StoredChunk]] = {}
    for payload in stored_payloads(index, list(groups)):
        doc_id, chunk_index = doc_id_of(payload), int(payload.get(CHUNK_INDEX) or 0)
        chunk = StoredChunk(chunk_index, dict(payload.get(METADATA) or {}))
        points.setdefault(doc_id, {})[point_id(doc_id, chunk_index)] = chunk
        if payload.get(CHUNK_ID) is not None:
            ids.setdefault(doc_id, {}).setdefault(str(payload[CHUNK_ID]), chunk)
    out: dict[int, StoredChunk] = {}
    for doc_id, nodes in groups.items():
        for node in nodes:
            found = ids.get(doc_id, {}).get(node.node_id) or points.get(doc_id, {}).get(
                node.node_id
            )
            if found is not None:
                out[id(node)] = found
    return out


def check_ids_elsewhere(index: M3Index, groups: Mapping[str, Sequence[BaseNode]]) -> None:
    """A node id names one stored chunk: refuse a node whose id a chunk of another document has.

    Args:
        index: The encoder + store.
        groups: The nodes of each document about to be written, by document id.

    Raises:
        ValueError: A node id is stored as a chunk of another document, or given to nodes of
            two documents in this call.
    """
    doc_of: dict[str, str] = {}
    for doc_id, nodes in groups.items():
        for node in nodes:
            if doc_of.setdefault(node.node_id, doc_id) != doc_id:
                raise ValueError(
                    f"node id {node.node_id!r} is given to nodes of documents "
                    f"{doc_of[node.node_id]!r} and {doc_id!r}: a node id names one node"
                )
    ids = list(doc_of)
    for start in range(0, len(ids), _DOC_BATCH):
        batch = ids[start : start + _DOC_BATCH]
        found = index.store.points(filter=chunk_ids_filter(batch))
        for payload in found.values():
            chunk_id, where = payload.get(CHUNK_ID), doc_id_of(payload)
            if chunk_id in doc_of and where != doc_of[str(chunk_id)]:
                raise ValueError(
                    f"node {chunk_id!r} is stored in document {where!r}, and is now given as a "
                    f"node of document {doc_of[str(chunk_id)]!r}: delete it first "
                    "(delete_nodes([node_id])) or give the node a new id"
                )
