"""Enums and frozen records of the store layer: what goes in (chunks) and comes out (hits)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from m3kit.outputs import Head, M3Output

__all__ = ["NODES_KIND", "Backend", "ChunkRecord", "Fusion", "Hit", "output_row"]

#: The ``chunking`` kind of chunks each encoded alone from their own text (``encoded_text``, else
#: ``text``): framework nodes (a LlamaIndex node parser's), which may overlap or leave gaps.
NODES_KIND = "nodes"


class Fusion(str, enum.Enum):
    """How the dense and sparse candidate lists are combined.

    ``RRF`` and ``DBSF`` are Qdrant's own fusions (reciprocal rank fusion with k=60 and
    distribution-based score fusion). ``M3`` is FlagEmbedding's weighted sum
    ``w_d * dense + w_s * sparse + w_c * colbert`` computed exactly on every candidate.
    """

    RRF = "rrf"
    DBSF = "dbsf"
    M3 = "m3"


class Backend(str, enum.Enum):
    """Which Qdrant engine holds the collection.

    ``EDGE`` is qdrant-edge-py, Qdrant's embedded Rust engine (in-process, a folder on disk or
    a temporary one). ``CLIENT`` is qdrant-client's ``QdrantClient``: ``":memory:"`` or a path
    (its pure-Python local mode) or a server URL.
    """

    EDGE = "edge"
    CLIENT = "client"


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk to store: its text, metadata and one-row vectors.

    Attributes:
        doc_id: Id of the document the chunk belongs to.
        chunk_index: Position of the chunk in its document (0-based).
        text: The chunk's text (stored as ``page_content``).
        metadata: JSON-serialisable metadata (stored under ``metadata``).
        vectors: The chunk's vectors, a one-row :class:`~m3kit.outputs.M3Output`.
        start: Start character offset in the document, if known.
        end: End character offset, if known.
        doc_hash: Hash of the document version the chunk came from; default: a hash of the
            document's records in the same :meth:`M3Store.upsert` call.
        chunk_count: Number of chunks of that document version; default: the number of
            records of the document in the same upsert call.
        chunking: How the document was chunked, stored so ``reindex`` can redo it with
            another encoder: ``{"kind": "whole"}``, ``{"kind": "naive"}``, ``{"kind":
            "late", "window": ..., "overlap": ..., "dense_pooling": ...}``, ``{"kind":
            "nodes"}`` (:data:`NODES_KIND`: each chunk encoded alone from its own
            ``encoded_text`` or ``text``, at stored positions that may overlap or leave gaps;
            what the LlamaIndex writers record for nodes they encode) or ``{"kind": "custom",
            "signature": ..., "why": ...}`` (a chunking reindex cannot redo, ``why``
            optional: named in its refusal); ``None``: unknown (several such chunks cannot be
            reindexed).
        chunk_id: The writer's own id of the chunk (a LlamaIndex node id), stored so the
            chunk can be found, replaced and deleted by it as well as by its point id.
        extra: JSON a writer keeps with the chunk to rebuild its own object when reading it
            back (a LlamaIndex node's relationships, excluded metadata keys, templates);
            returned as :attr:`Hit.extra`.
        encoded_text: The text the vectors were encoded from, when the writer encoded other
            text than ``text`` (a framework node's text with its metadata lines and an
            instruction before it); ``None``: ``text`` itself. Stored (under
            ``encoded_text``) so that ``reindex`` encodes what the writer encoded; only a
            whole document (one chunk) or ``"nodes"`` chunks can have it reindexed.
    """

    doc_id: str
    chunk_index: int
    text: str
    metadata: Mapping[str, Any]
    vectors: M3Output
    start: int | None = None
    end: int | None = None
    doc_hash: str | None = None
    chunk_count: int | None = None
    chunking: Mapping[str, Any] | None = None
    chunk_id: str | None = None
    extra: Mapping[str, Any] | None = None
    encoded_text: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.doc_id, str) or not self.doc_id:
            raise ValueError(f"ChunkRecord.doc_id must be a non-empty string, got {self.doc_id!r}")
        if self.chunk_index < 0:
            raise ValueError(f"ChunkRecord.chunk_index must be >= 0, got {self.chunk_index}")
        if len(self.vectors) != 1:
            raise ValueError(
                f"ChunkRecord.vectors must hold exactly one row, got {len(self.vectors)}"
            )
        if self.chunk_count is not None and not 0 <= self.chunk_index < self.chunk_count:
            raise ValueError(
                f"chunk_index {self.chunk_index} is outside chunk_count {self.chunk_count}"
            )


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: The point id (uuid5 of doc_id and chunk_index).
        score: The score of the last stage (fused score, ColBERT MaxSim or M3 weighted sum).
        text: The chunk's text.
        doc_id: Id of its document (a point another program wrote, without m3kit's
            ``doc_id`` and ``doc_hash``: its point id, and only its ``page_content`` and
            ``metadata`` are read).
        chunk_index: Position of the chunk in its document.
        metadata: The chunk's metadata.
        start: Start character offset of the chunk in its document, if stored.
        end: End character offset (exclusive), if stored.
        chunk_count: Number of chunks of its document, if stored (1: a whole document).
        extra: What its writer kept with it (:attr:`ChunkRecord.extra`; empty if nothing).
        chunk_id: Its writer's own id of the chunk (:attr:`ChunkRecord.chunk_id`, a LlamaIndex
            node id), if it gave one.
    """

    id: str
    score: float
    text: str
    doc_id: str
    chunk_index: int
    metadata: dict[str, Any] = field(default_factory=dict)
    start: int | None = None
    end: int | None = None
    chunk_count: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    chunk_id: str | None = None


def output_row(out: M3Output, i: int) -> M3Output:
    """Row ``i`` of a batch result as a one-row :class:`M3Output` (what a ChunkRecord holds)."""
    if not 0 <= i < len(out):
        raise IndexError(f"row {i} of a batch of {len(out)}")
    heads = out.heads
    return M3Output(
        heads=heads,
        token_counts=(out.token_counts[i],),
        _dense=out.dense[i : i + 1] if Head.DENSE in heads else None,
        _sparse=(out.sparse[i],) if Head.SPARSE in heads else None,
        _colbert=(out.colbert[i],) if Head.COLBERT in heads else None,
    )
