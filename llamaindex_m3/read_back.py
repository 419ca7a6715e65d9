"""Embeddings of nodes read back from a store that no longer fit the nodes' text.

``M3VectorStore.get_nodes`` returns each node with its stored dense vector as ``embedding``
(as LlamaIndex's Qdrant store does). A node read back, edited (its text, or what the
embedding model sees of it) and written again in place of its stored chunk still carries the
vector of the old text: the writers drop such an embedding and encode the node afresh. A node
of other content whose ``embedding`` is not the stored chunk's (embedded again by
LlamaIndex's embed model, or copied from elsewhere) keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from llama_index.core.schema import BaseNode

from llamaindex_m3.late_nodes import LATE_METADATA_KEY
from m3kit.store import Hit, M3Index

__all__ = ["late_chunked", "stale_embeddings"]

#: How far (per component) a node's ``embedding`` may be from its chunk's stored dense vector
#: and still be that vector read back (float32 through Python floats is exact; this allows
#: for a round trip through JSON).
READ_BACK_ATOL = 1e-6


def stale_embeddings(index: M3Index, rewritten: Sequence[tuple[BaseNode, str]]) -> set[int]:
    """Which nodes (by ``id(node)``) carry the stored dense vector of the chunk they replace.

    Args:
        index: The encoder + store.
        rewritten: Nodes that are encoded again in place of a stored chunk, each with that
            chunk's point id. Nodes without an ``embedding`` are passed by (one read in all,
            for those with one).
    """
    carrying = [(node, pid) for node, pid in rewritten if node.embedding is not None]
    if not carrying:
        return set()
    stored = {h.id: h.dense for h in index.store.get([pid for _, pid in carrying], dense=True)}
    out: set[int] = set()
    for node, pid in carrying:
        dense = stored.get(pid)
        given = np.asarray(node.embedding, dtype=np.float64)
        if dense is None or given.shape != (len(dense),):
            continue
        if np.allclose(given, dense, rtol=0.0, atol=READ_BACK_ATOL):
            out.add(id(node))
    return out


def late_chunked(hit: Hit) -> bool:
    """A chunk stored from an ``M3LateChunkingNodeParser`` node (its vectors pooled in its
    document's context): the node hid the parser's marker key from the embedding model.

    Chunks other writers late-chunked (``m3kit index``, ``langchain_m3``) are not told apart.
    """
    hidden = hit.extra.get("excluded_embed_metadata_keys")
    return isinstance(hidden, list) and LATE_METADATA_KEY in hidden
