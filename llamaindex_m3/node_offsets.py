"""Whether a node's ``start_char_idx`` / ``end_char_idx`` still name its text in its document.

m3kit does not store a document's whole text, but when it writes nodes it has read every
stored chunk of the document's version: its text, span and parent. A node naming a stored
chunk whose text or offsets it changed (a node read back and edited) keeps its offsets only
where those chunks hold its text at every character of its span; else it is stored without
them, so no stored offsets name other text (:func:`checked_span`, used by
:func:`llamaindex_m3.node_writes.write_nodes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode, TextNode

from llamaindex_m3.node_versions import parent_hash

__all__ = ["StoredText", "checked_span"]

#: A stored chunk as read: ``(text, start, end, PARENT hash)``.
StoredText = tuple[str, Any, Any, Any]


def checked_span(
    stored: Mapping[int, StoredText], node: BaseNode, chunk_index: int | None
) -> BaseNode:
    """``node``, or a copy of it without ``start_char_idx`` / ``end_char_idx`` where those may
    name other text of its document.

    Args:
        stored: The document version's stored chunks, by ``chunk_index``, as read.
        node: The node to write.
        chunk_index: The stored chunk ``node`` names (``None``: none; the node is returned).

    A node whose text, offsets and parent equal its stored chunk's keeps them. Otherwise it
    keeps its offsets only where the stored chunks of its parent cover the span with its
    text: an edited node's offsets name its old text, and once it is stored without them,
    the same node written again has offsets no chunk confirms either, so it matches its
    stored chunk. The node given is not changed.
    """
    if chunk_index is None or not isinstance(node, TextNode):
        return node
    start, end = node.start_char_idx, node.end_char_idx
    if start is None and end is None:
        return node
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    parent = parent_hash(node.relationships)
    if stored.get(chunk_index) != (text, start, end, parent) and not _confirmed(
        stored, text, start, end, parent
    ):
        return node.model_copy(update={"start_char_idx": None, "end_char_idx": None})
    return node


def _confirmed(
    stored: Mapping[int, StoredText], text: str, start: Any, end: Any, parent: Any
) -> bool:
    """The stored chunks (of ``parent``) hold ``text`` at every character of ``[start, end)``."""
    if not isinstance(start, int) or not isinstance(end, int) or end - start != len(text):
        return False
    covered = [False] * len(text)
    for known, at, to, of in stored.values():
        if of != parent or not isinstance(at, int) or not isinstance(to, int):
            continue
        if to - at != len(known) or to <= start or at >= end:
            continue
        lo, hi = max(at, start), min(to, end)
        if known[lo - at : hi - at] != text[lo - start : hi - start]:
            return False
        covered[lo - start : hi - start] = [True] * (hi - lo)
    return all(covered)
