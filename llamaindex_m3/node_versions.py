"""The versions and identities of LlamaIndex nodes, as :mod:`llamaindex_m3.node_writes` stores them.

A node's ``doc_id`` (:func:`node_doc_id`), the version of the document it was parsed from
(:func:`node_version`: the ``SOURCE`` relationship's hash, the source's typed metadata and how
the node was encoded), and the identity that tells a stored chunk it already holds (text,
span, metadata and ``PARENT``: :func:`node_identity`). See :mod:`llamaindex_m3.node_writes`
for how a write uses them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode, NodeRelationship, TextNode

from llamaindex_m3.late_nodes import late_record
from llamaindex_m3.node_records import StoredChunk, is_late, node_metadata
from m3kit.store.metadata_values import sorted_json

__all__ = [
    "how_encoded",
    "identity_key",
    "node_doc_id",
    "node_identity",
    "node_version",
    "parent_hash",
    "related_ids",
    "unversioned_version",
]


def node_doc_id(node: BaseNode) -> str:
    """The stored ``doc_id`` of a node: its source document, else the node itself."""
    return node.ref_doc_id or node.node_id


def identity_key(text: str, start: Any, end: Any, metadata: Any, parent: Any = None) -> str:
    where: list[Any] = [text, start, end, metadata]
    if parent is not None:  # offsets within a parent: the parent's content places them
        where.append(parent)
    return sorted_json(where)


def parent_hash(relationships: Any) -> Any:
    """The hash of the ``PARENT`` a node's relationships (or a stored chunk's JSON of them)
    name, ``None`` without one. A ``HierarchicalNodeParser`` leaf's offsets are within its
    parent, so equal leaves (text and offsets) of different parents are told apart by it."""
    rel = (relationships or {}).get(NodeRelationship.PARENT)
    if rel is None:
        rel = (relationships or {}).get(NodeRelationship.PARENT.value)
    if isinstance(rel, dict):
        return rel.get("hash")
    return getattr(rel, "hash", None)


def node_identity(node: BaseNode, stored: StoredChunk | None = None) -> str:
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    span = (node.start_char_idx, node.end_char_idx) if isinstance(node, TextNode) else (None, None)
    return identity_key(text, *span, node_metadata(node, stored), parent_hash(node.relationships))


def related_ids(relationships: Any) -> set[str]:
    """The node ids named by relationships (a node's, or the JSON of a stored chunk's)."""
    out: set[str] = set()
    for rel in (relationships or {}).values():
        for info in rel if isinstance(rel, list) else [rel]:
            node_id = info.get("node_id") if isinstance(info, dict) else info.node_id
            if node_id is not None:
                out.add(str(node_id))
    return out


def how_encoded(node: BaseNode) -> Any:
    late = late_record(node)
    return late.get("chunker") if late is not None else ("late" if is_late(node) else "text")


def node_version(node: BaseNode) -> str | None:
    """The ``doc_hash`` of the document version ``node`` was parsed from (see the module doc).

    ``None`` when the node names its source document without the source's hash (a node read
    back from a store, or built by hand): the version is unknown, so the node is added to the
    stored one (renewed where the node changes it); it never replaces the document's other
    chunks.
    """
    source = node.source_node
    if source is None:  # no source (a node alone, a Document whole): its content is its version
        basis: list[Any] = ["node", node_identity(node)]
    elif not source.hash:
        return None
    else:
        basis = ["source", source.hash]
        typed = _typed_metadata(source.metadata)
        if typed is not None:
            basis.append(typed)
    blob = json.dumps(["llamaindex", basis, how_encoded(node)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _typed_metadata(metadata: Mapping[str, Any] | None) -> str | None:
    """The source document's metadata as typed JSON, where its hash does not tell it apart.

    LlamaIndex's ``Document.hash`` reads each metadata value as ``str(value)``: ``2024`` and
    ``"2024"``, ``None`` and ``"None"``, ``["a"]`` and ``"['a']"`` hash alike, so a document
    whose metadata changed only in type kept its version and its new nodes were added beside
    the stored ones. ``None`` when every value is a string (the hash reads those exactly: the
    versions of such documents are as before).
    """
    if not metadata or all(isinstance(v, str) for v in metadata.values()):
        return None
    items = sorted(((str(k), v) for k, v in metadata.items()), key=lambda item: item[0])
    try:
        return json.dumps(items, sort_keys=True, default=repr)
    except (TypeError, ValueError):  # keys JSON cannot sort (1 and "a" in a nested mapping)
        return repr(items)


def unversioned_version(doc_id: str, node: BaseNode) -> str:
    """The version of a document first stored from nodes of unknown version."""
    blob = json.dumps(["llamaindex", ["unversioned", doc_id], how_encoded(node)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
