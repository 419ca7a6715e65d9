"""Reindexing documents stored as framework nodes, each chunk encoded alone.

Split from :mod:`m3kit.store.reindex`. A document whose chunks record the chunking
``{"kind": "nodes"}`` (:data:`~m3kit.store.records.NODES_KIND`: what the LlamaIndex writers
record for the nodes they encode) is rebuilt chunk by chunk: each chunk is encoded alone again
from the text its writer encoded (``encoded_text``, else its stored text), as that writer
encodes a node, and keeps everything else it stores (text, metadata, positions, which may
overlap or leave gaps, version, and ``encoded_text``; ``chunk_id`` and ``extra`` are kept by
the caller). A chunk longer than the encoder's window is cut with a warning naming it, as the
writer cuts a node.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from m3kit.store.records import NODES_KIND, ChunkRecord, output_row
from m3kit.store.schema import (
    CHUNK_COUNT,
    CHUNK_INDEX,
    CHUNKING,
    DOC_HASH,
    ENCODED_TEXT,
    END,
    EXTRA,
    METADATA,
    PAGE_CONTENT,
    START,
)

if TYPE_CHECKING:
    from m3kit.store.index import M3Index
    from m3kit.store.reindex import DocPlan

__all__ = ["LATE_NODE", "encode_nodes", "has_nodes", "is_late_node", "nodes_problem"]

logger = logging.getLogger("m3kit.store.collection_record")  # the reindex's logger


def _kind(chunk: dict[str, Any]) -> Any:
    chunking = chunk.get(CHUNKING)
    return chunking.get("kind") if isinstance(chunking, dict) else None


#: The metadata key of a node from LlamaIndex's ``M3LateChunkingNodeParser``, which it hides
#: from the embedding model (listed in the ``excluded_embed_metadata_keys`` a LlamaIndex writer
#: keeps in ``extra``).
_LATE_NODE_KEY = "m3_late_chunk"

#: Why a document stored as one late-chunked LlamaIndex node is refused.
LATE_NODE = (
    "one late-chunked node (LlamaIndex M3LateChunkingNodeParser) with no recorded chunking: "
    "its vectors were pooled from its document's text, which is not stored whole, so encoding "
    "its text alone would give other vectors"
)


def is_late_node(chunk: dict[str, Any]) -> bool:
    """Whether a stored chunk is a late-chunked LlamaIndex node (its writer's ``extra`` says).

    Such a chunk records no chunking; alone in its document it looks like a whole document
    stored before chunkings were recorded, but re-encoding its text would not redo its vectors.
    """
    extra = chunk.get(EXTRA)
    hidden = extra.get("excluded_embed_metadata_keys") if isinstance(extra, dict) else None
    return isinstance(hidden, list) and _LATE_NODE_KEY in hidden


def has_nodes(plan: DocPlan) -> bool:
    """Whether any of the document's chunks records the ``"nodes"`` chunking."""
    return any(_kind(c) == NODES_KIND for c in plan.chunks)


def nodes_problem(plan: DocPlan) -> str | None:
    """Why a document with ``"nodes"`` chunks cannot be rebuilt chunk by chunk, if it cannot.

    Every chunk must record that chunking (nodes encoded alone, not mixed with chunks made
    another way) and one version of the document (a write cut short leaves two).
    """
    others = sorted({str(_kind(c) or "none recorded") for c in plan.chunks} - {NODES_KIND})
    if others:
        return (
            f"chunks recorded as nodes encoded alone mixed with chunks of other chunkings "
            f"({', '.join(others)})"
        )
    if len({c.get(DOC_HASH) for c in plan.chunks}) > 1:
        return "nodes of several versions of it (a write cut short)"
    return None


def encode_nodes(index: M3Index, plans: Sequence[DocPlan]) -> list[ChunkRecord]:
    """New records of ``"nodes"`` documents: each chunk encoded alone, the rest as stored.

    A chunk is encoded from its ``encoded_text`` (else its stored text) for every head the
    store holds, exactly as ``encoder.encode`` encodes it for the writer. Its records keep its
    stored text, metadata, positions, chunking, ``encoded_text`` and document version; the
    chunk count is the document's largest stored one, which is the count its writer set on
    every chunk (``M3VectorStore`` sets it on a document's earlier chunks after adding more
    of its nodes). Chunks of one document can hold several counts where a write stopped
    before setting it, or in stores written before it was set: the largest is the count of
    the nodes added, and one upsert writes one count for all. A node deleted alone leaves
    its place counted (the document is incomplete until it is added again), so the count is
    never lowered to the chunks stored.
    """
    chunks = [(p, c) for p in plans for c in p.chunks]
    texts = [_encoded_text(c) for _, c in chunks]
    tokens = index.encoder.tokenize(texts)  # cut to the window with a warning, as add cuts
    for (p, c), t in zip(chunks, tokens, strict=True):
        if t.truncated:
            logger.warning(
                "reindex: chunk %d of document %r is longer than the model's max_length=%d "
                "tokens and is truncated, as adding the node truncates it",
                _index(c),
                p.doc_id,
                index.encoder.max_length,
            )
    out = index.encoder.encode_tokenized(
        [t.input_ids for t in tokens], heads=sorted(index.store.heads), show_progress=False
    )
    counts = {
        p.doc_id: max(max(int(c.get(CHUNK_COUNT) or 0), _index(c) + 1) for c in p.chunks)
        for p in plans
    }
    return [
        ChunkRecord(
            doc_id=p.doc_id,
            chunk_index=_index(c),
            text=str(c.get(PAGE_CONTENT, "")),
            metadata=dict(c.get(METADATA) or {}),
            vectors=output_row(out, row),
            start=c.get(START),
            end=c.get(END),
            doc_hash=None if c.get(DOC_HASH) is None else str(c[DOC_HASH]),
            chunk_count=counts[p.doc_id],
            chunking=dict(c[CHUNKING]),
            encoded_text=None if c.get(ENCODED_TEXT) is None else str(c[ENCODED_TEXT]),
        )
        for row, (p, c) in enumerate(chunks)
    ]


def _index(chunk: dict[str, Any]) -> int:
    return int(chunk.get(CHUNK_INDEX) or 0)


def _encoded_text(chunk: dict[str, Any]) -> str:
    encoded = chunk.get(ENCODED_TEXT)
    return str(chunk.get(PAGE_CONTENT, "") if encoded is None else encoded)
