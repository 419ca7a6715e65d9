"""The documents of one LlamaIndex node write, as stored: what ``write_nodes`` decides from.

:func:`group_nodes` groups a write's nodes by document (refusing nodes of two versions of
one), :func:`read_stored` reads each document's stored chunks into its :class:`WriteDoc`
(the version the write goes to, the chunks of that version by place, identity and id);
:mod:`llamaindex_m3.node_writes` then matches nodes to those chunks and writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.schema import BaseNode

from llamaindex_m3.node_offsets import StoredText
from llamaindex_m3.node_records import StoredChunk
from llamaindex_m3.node_versions import (
    identity_key,
    node_doc_id,
    node_version,
    parent_hash,
    related_ids,
    unversioned_version,
)
from llamaindex_m3.sourceless import has_no_source
from llamaindex_m3.stored_chunks import (
    check_duplicate_ids,
    check_sourceless,
    doc_id_of,
    payloads_by_doc,
    pooled_late,
    stored_payloads,
)
from m3kit.store import M3Index, point_id
from m3kit.store.schema import (
    CHUNK_COUNT,
    CHUNK_ID,
    CHUNK_INDEX,
    DOC_HASH,
    ENCODED_TEXT,
    END,
    EXTRA,
    METADATA,
    PAGE_CONTENT,
    START,
)

__all__ = ["WriteDoc", "group_nodes", "read_stored"]


@dataclass
class WriteDoc:
    """One document of a write: its version, stored chunks of that version, new nodes."""

    version: str | None  # None: unknown until the stored chunks are read (node_version)
    nodes: list[tuple[int, BaseNode]] = field(default_factory=list)
    same: dict[str, list[int]] = field(default_factory=dict)  # identity -> chunk indexes
    key_at: dict[int, str] = field(default_factory=dict)  # chunk_index -> identity
    meta_at: dict[int, dict[str, Any]] = field(default_factory=dict)  # stored metadata
    related_at: dict[int, set[str]] = field(default_factory=dict)  # ids its relations name
    encoded_at: dict[int, str | None] = field(default_factory=dict)  # stored encoded_text
    extra_at: dict[int, Any] = field(default_factory=dict)  # stored node fields (extra)
    text_at: dict[int, StoredText] = field(default_factory=dict)  # chunk_index -> as read
    ids_at: dict[int, str] = field(default_factory=dict)  # chunk_index -> stored chunk_id
    by_id: dict[str, int] = field(default_factory=dict)  # chunk_id -> chunk_index (ids_at's)
    points: dict[str, int] = field(default_factory=dict)  # point id -> chunk_index
    counts: dict[int, int] = field(default_factory=dict)  # chunk_index -> stored chunk_count
    stored_count: int = 0  # the largest chunk_count stored with the version
    next_index: int = 0
    scan: int = 0  # every place below it holds a chunk (place())
    stale: bool = False  # chunks of another version are stored
    adopted: bool = False  # the version is the stored one (the nodes name none)
    changed: list[str] = field(default_factory=list)  # identities of content written anew
    late: set[int] = field(default_factory=set)  # chunk indexes pooled late (pooled_late)

    @property
    def chunk_count(self) -> int:
        """How many chunks the version has: one past its last place, or the count stored
        with it where that is more (a node deleted from its end leaves its place counted)."""
        return max(self.next_index, self.stored_count, 1)

    def place(self) -> int:
        """The chunk index of a new node: the first place of the version with no chunk (a
        deleted node's), else one past its last."""
        while self.scan < self.chunk_count and self.scan in self.key_at:
            self.scan += 1
        at = self.scan if self.scan < self.chunk_count else self.next_index
        self.scan = max(self.scan, at + 1)
        self.next_index = max(self.next_index, at + 1)
        return at

    def index_of(self, node_id: str) -> int | None:
        """The chunk its writer gave the id ``node_id``, or whose point id it is, if any."""
        found = self.by_id.get(node_id)
        return found if found is not None else self.points.get(node_id)

    def set_id(self, chunk_index: int, node_id: str) -> None:
        """The chunk at ``chunk_index`` is now the node ``node_id``'s."""
        old = self.ids_at.get(chunk_index)
        if old is not None and self.by_id.get(old) == chunk_index:
            del self.by_id[old]
        self.ids_at[chunk_index] = node_id
        self.by_id.setdefault(node_id, chunk_index)

    def chunk(self, chunk_index: int | None) -> StoredChunk | None:
        """The stored chunk at ``chunk_index`` (``None``: none)."""
        if chunk_index is None or chunk_index not in self.meta_at:
            return None
        return StoredChunk(chunk_index, self.meta_at[chunk_index])


def group_nodes(nodes: Sequence[BaseNode]) -> dict[str, WriteDoc]:
    grouped: dict[str, list[tuple[int, BaseNode]]] = {}
    for i, node in enumerate(nodes):
        grouped.setdefault(node_doc_id(node), []).append((i, node))
    check_duplicate_ids(nodes)
    docs: dict[str, WriteDoc] = {}
    for doc_id, members in grouped.items():
        check_sourceless(doc_id, [n for _, n in members], None)
        versions = {node_version(n) for _, n in members}
        if len(versions) > 1:
            raise ValueError(
                f"nodes of document {doc_id!r} come from different versions of it (another "
                "source hash, or mixed chunkings); add the nodes of one version. From an "
                "M3HierarchicalNodeParser (or a HierarchicalNodeParser) whose leaf level "
                "late-chunks, store only the leaves (get_leaf_nodes) and keep every level in "
                "a docstore, as AutoMergingRetriever expects"
            )
        docs[doc_id] = WriteDoc(versions.pop(), nodes=members)
    return docs


def read_stored(index: M3Index, docs: dict[str, WriteDoc]) -> None:
    payloads = stored_payloads(index, list(docs))
    stored_of = payloads_by_doc(payloads)
    for doc_id, doc in docs.items():
        mine = stored_of.get(doc_id, [])
        check_sourceless(doc_id, [n for _, n in doc.nodes], mine)
        lone = doc.nodes[0][1]
        if has_no_source(lone):  # its stored chunk (written or read back) keeps its version
            doc.version = next(
                (str(p[DOC_HASH]) for p in mine if _names(lone, p) and p.get(DOC_HASH)),
                doc.version,
            )
        if doc.version is None:  # unknown: the stored version stands
            stored = {str(p[DOC_HASH]) for p in mine if p.get(DOC_HASH)}
            if len(stored) > 1:  # an interrupted write left two: which one is current?
                raise ValueError(
                    f"document {doc_id!r} has chunks of {len(stored)} versions stored (a write "
                    "that did not finish), and these nodes name no version (their source has "
                    "no hash): add the document's nodes with their source document first"
                )
            doc.adopted = bool(stored)
            doc.version = stored.pop() if stored else unversioned_version(doc_id, doc.nodes[0][1])
    for payload in payloads:
        doc = docs[doc_id_of(payload)]
        if payload.get(DOC_HASH) != doc.version:
            doc.stale = True
            continue
        chunk_index = int(payload.get(CHUNK_INDEX) or 0)
        meta = payload.get(METADATA) or {}
        extra = payload.get(EXTRA)
        relationships = extra.get("relationships") if isinstance(extra, dict) else None
        key = identity_key(
            str(payload.get(PAGE_CONTENT, "")),
            payload.get(START),
            payload.get(END),
            meta,
            parent_hash(relationships),
        )
        doc.same.setdefault(key, []).append(chunk_index)
        doc.key_at[chunk_index] = key
        doc.meta_at[chunk_index] = dict(meta)
        doc.related_at[chunk_index] = related_ids(relationships)
        doc.encoded_at[chunk_index] = payload.get(ENCODED_TEXT)
        if pooled_late(payload):
            doc.late.add(chunk_index)
        doc.extra_at[chunk_index] = extra
        doc.text_at[chunk_index] = (
            str(payload.get(PAGE_CONTENT, "")),
            payload.get(START),
            payload.get(END),
            parent_hash(relationships),
        )
        doc.points[point_id(doc_id_of(payload), chunk_index)] = chunk_index
        doc.counts[chunk_index] = int(payload.get(CHUNK_COUNT) or 0)
        doc.stored_count = max(doc.stored_count, doc.counts[chunk_index])
        if payload.get(CHUNK_ID) is not None:
            doc.set_id(chunk_index, str(payload[CHUNK_ID]))
        doc.next_index = max(doc.next_index, chunk_index + 1)
    for doc in docs.values():
        for indexes in doc.same.values():
            indexes.sort()


def _names(node: BaseNode, payload: Mapping[str, Any]) -> bool:
    """``node``'s id is the stored chunk's: its writer's id or its point id."""
    chunk_index = int(payload.get(CHUNK_INDEX) or 0)
    return node.node_id in (payload.get(CHUNK_ID), point_id(doc_id_of(payload), chunk_index))
