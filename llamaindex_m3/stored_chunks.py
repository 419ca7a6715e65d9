"""Stored chunks of the documents LlamaIndex nodes are written to (both write paths).

Shared by :mod:`llamaindex_m3.node_writes` (``M3VectorStore``) and
:mod:`llamaindex_m3.retriever_writes` (``M3Retriever.add_nodes``): the stored chunk a node
names by its id, the check that a node id names one chunk of one document, and the check
that a node without a source (:mod:`llamaindex_m3.sourceless`) is stored alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode, TextNode

from llamaindex_m3.node_records import StoredChunk, embed_text
from llamaindex_m3.sourceless import has_no_source, sourceless_chunk
from m3kit.store import M3Index, point_id
from m3kit.store.filters import chunk_ids_filter, documents_filter
from m3kit.store.metadata_values import sorted_json
from m3kit.store.schema import CHUNK_ID, CHUNK_INDEX, CHUNKING, EXTRA, METADATA

__all__ = [
    "DOC_BATCH",
    "check_duplicate_ids",
    "check_ids_elsewhere",
    "check_sourceless",
    "doc_id_of",
    "late_edit_message",
    "named_chunks",
    "payloads_by_doc",
    "pooled_late",
    "same_text",
    "stored_payloads",
]


def pooled_late(payload: Mapping[str, Any]) -> bool:
    """Whether a stored chunk's vectors were pooled from its whole document (late chunking:
    ``M3LateChunkingNodeParser``, or ``M3Index`` with a ``LateChunker``), not encoded from
    its own text: they do not depend on the node's metadata, and cannot be made again from
    the chunk alone."""
    chunking = payload.get(CHUNKING)
    if not isinstance(chunking, Mapping):
        return False
    kind, signature = chunking.get("kind"), str(chunking.get("signature", ""))
    # M3LateChunkingNodeParser's nodes, and LangChain's M3LateChunkingSplitter chunks
    late_custom = signature.startswith(("M3LateChunkingNodeParser", "langchain_m3.late_chunk("))
    return kind == "late" or (kind == "custom" and late_custom)


def same_text(stored: tuple[str, Any, Any, Any] | None, node: BaseNode) -> bool:
    """Whether ``node`` holds the stored chunk's text at the same span (``stored``: its
    ``(text, start, end, parent)`` as read): an edit of its metadata or fields only."""
    if stored is None or not isinstance(node, TextNode):
        return False
    if node.start_char_idx is None and node.end_char_idx is None:  # built without a span
        return node.text == stored[0]
    return (node.text, node.start_char_idx, node.end_char_idx) == stored[:3]


def late_edit_message(doc_id: str, node: BaseNode) -> str:
    """Why a node without late-chunked vectors may not change the metadata of a late-chunked
    stored chunk whose text it keeps."""
    return (
        f"node {node.node_id!r} changes the metadata of a late-chunked chunk of document "
        f"{doc_id!r} and carries no late-chunked vectors (read back from the store, or rebuilt "
        "from JSON): stored, its unchanged text would be encoded alone, losing its document's "
        "context, silently. Parse the document again with M3LateChunkingNodeParser with the "
        "new metadata, or delete the document first to store plain chunks; nothing was written"
    )


def check_sourceless(
    doc_id: str, nodes: Sequence[BaseNode], payloads: Sequence[Mapping[str, Any]] | None
) -> None:
    """A node without a source is stored under its own id, alone: refuse to mix it with the
    nodes of a document of that id (they would replace each other).

    Args:
        doc_id: The ``doc_id`` the nodes are written under.
        nodes: Those nodes.
        payloads: The stored chunks of ``doc_id`` (``None``: check the nodes alone).

    Raises:
        ValueError: A node without a source and nodes of the document of its id, in this call
            or stored.
    """
    lone = [n for n in nodes if has_no_source(n)]
    if lone and len(lone) < len(nodes):
        raise ValueError(
            f"node {doc_id!r} has no source document, so it is stored under its own id, and "
            f"nodes of document {doc_id!r} are given with it: give the node another id, or a "
            "SOURCE relationship naming its document"
        )
    if payloads is None:
        return
    if lone:  # the node's own chunk (an earlier write of it) may be replaced, no other
        others = [p for p in payloads if p.get(CHUNK_ID) != doc_id]
        if others:
            raise ValueError(
                f"node {doc_id!r} has no source document, so it is stored under its own id, "
                f"but document {doc_id!r} is stored ({len(others)} chunks): give the node "
                "another id, or a SOURCE relationship naming its document"
            )
        return
    ids = {n.node_id for n in nodes}
    for p in payloads:
        if sourceless_chunk(p.get(CHUNK_ID), p.get(EXTRA)) and p.get(CHUNK_ID) not in ids:
            raise ValueError(
                f"node {doc_id!r}, which has no source document, is stored under its own id, "
                f"and nodes of document {doc_id!r} are now given: delete the node first "
                f"(delete_nodes([{doc_id!r}])) or give the document another id"
            )


#: Documents (or ids) per request.
DOC_BATCH = 256


def doc_id_of(payload: Mapping[str, Any]) -> str:
    """The ``doc_id`` of a stored chunk's payload."""
    return str(payload.get("doc_id"))


def payloads_by_doc(payloads: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Stored payloads grouped by their ``doc_id``."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for payload in payloads:
        out.setdefault(doc_id_of(payload), []).append(payload)
    return out


def stored_payloads(index: M3Index, doc_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The stored payloads of every chunk of these documents."""
    payloads: list[dict[str, Any]] = []
    for start in range(0, len(doc_ids), DOC_BATCH):
        found = index.store.points(filter=documents_filter(doc_ids[start : start + DOC_BATCH]))
        payloads.extend(found.values())
    return payloads


def named_chunks(
    index: M3Index,
    groups: Mapping[str, Sequence[BaseNode]],
    payloads: Sequence[Mapping[str, Any]] | None = None,
) -> dict[int, StoredChunk]:
    """The stored chunk each node names by its id, by ``id(node)``: the chunk of its document
    its writer gave that id, else the one whose point id it is (nodes naming none are left out).

    Args:
        index: The encoder + store.
        groups: The nodes of each document, by document id.
        payloads: The stored chunks of these documents (``None``: read here).
    """
    ids: dict[str, dict[str, StoredChunk]] = {}
    points: dict[str, dict[str, StoredChunk]] = {}
    if payloads is None:
        payloads = stored_payloads(index, list(groups))
    for payload in payloads:
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
    for start in range(0, len(ids), DOC_BATCH):
        batch = ids[start : start + DOC_BATCH]
        found = index.store.points(filter=chunk_ids_filter(batch))
        for payload in found.values():
            chunk_id, where = payload.get(CHUNK_ID), doc_id_of(payload)
            if chunk_id in doc_of and where != doc_of[str(chunk_id)]:
                raise ValueError(
                    f"node {chunk_id!r} is stored in document {where!r}, and is now given as a "
                    f"node of document {doc_of[str(chunk_id)]!r}: delete it first "
                    "(delete_nodes([node_id])) or give the node a new id"
                )


def _content(node: BaseNode) -> str:
    """What the nodes of one id in one document must agree on in one write: text, span,
    metadata and the text its vectors are encoded on."""
    span = (node.start_char_idx, node.end_char_idx) if isinstance(node, TextNode) else None
    what = [
        node.get_content(metadata_mode=MetadataMode.NONE),
        span,
        node.metadata,
        embed_text(node),
    ]
    return sorted_json(what, default=str)


def check_duplicate_ids(nodes: Sequence[BaseNode]) -> None:
    """Refuse one node id given to nodes of different content in one write (before encoding).

    Copies of one node (same id, document, text, span, metadata and encoded text) are one
    node, stored once. One id in two documents is :func:`check_ids_elsewhere`'s to refuse.

    Raises:
        ValueError: Names the duplicated node ids and their positions in ``nodes``.
    """
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    clashes: dict[tuple[str, str], list[int]] = {}
    for i, node in enumerate(nodes):
        what, key = _content(node), (node.ref_doc_id or node.node_id, node.node_id)
        first = seen.setdefault(key, (i, what))
        if first[1] != what:
            clashes.setdefault(key, [first[0]]).append(i)
    if clashes:
        named = "; ".join(f"{key[1]!r} at nodes{at}" for key, at in list(clashes.items())[:5])
        raise ValueError(
            f"{len(clashes)} node id(s) given to nodes of different content in one add: "
            f"{named}. A node id names one stored node: give each node its own id (e.g. "
            "drop id_ to have one drawn), or add only the latest version of the node"
        )
