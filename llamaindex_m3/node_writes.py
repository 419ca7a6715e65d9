"""Write LlamaIndex nodes into an :class:`~m3kit.store.M3Index` (the ``M3VectorStore`` write path).

The mapping keeps the one collection layout every m3kit reader shares:

- ``doc_id`` is the node's ``ref_doc_id`` (its source document; the node's own id when it has
  none), so ``delete(ref_doc_id)`` removes every node of a document, and a document written
  by ``m3kit index``, ``langchain_m3`` or ``llamaindex_m3.M3Retriever`` under the same id is
  the same document here.
- ``chunk_index`` is the node's position among its document's stored nodes; the point id, and
  the node id the store reports, is ``point_id(doc_id, chunk_index)``. The node's own id is
  stored as ``chunk_id``: a node written again under a stored id (or a chunk read back, see
  :func:`~llamaindex_m3.node_records.read_back_index`) with other content replaces that
  chunk in place.
- ``doc_hash`` is the document version the nodes were parsed from: the ``SOURCE``
  relationship's hash (LlamaIndex's ``Document.hash``, over text and metadata) and, for
  late-chunked nodes, the chunker's signature. Nodes of a new version replace the document's
  stored chunks (written first, the old ones deleted after, by
  :meth:`~m3kit.store.M3Store.upsert`); nodes of the stored version are added to it, because
  ``VectorStoreIndex`` writes a document's nodes in batches of ``insert_batch_size``. A node
  already stored (same text, span and metadata) is not encoded or written again, so adding the
  same nodes twice stores nothing new; when it comes under a new node id (each parse draws new
  ones), the stored chunk takes that id and the node's relationships
  (:meth:`~m3kit.store.M3Store.set_writer_fields`), so the latest nodes' ids find it.

Vectors: a late-chunked node (``M3LateChunkingNodeParser``) is stored with the vectors it
carries and never re-encoded alone; other nodes keep ``node.embedding`` as their dense vector
(what LlamaIndex's embed model made) and get the store's other heads from one encoder pass
over the text the embed model saw (``MetadataMode.EMBED``, with the embedding's
``text_instruction``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from llama_index.core.schema import BaseNode, MetadataMode, TextNode

from llamaindex_m3.node_parser import LATE_METADATA_KEY
from llamaindex_m3.node_records import (
    carried_vectors,
    is_late,
    lost_vectors_message,
    node_extra,
    node_metadata,
    read_back_index,
)
from m3kit.outputs import Head, M3Output
from m3kit.store import ChunkRecord, M3Index, output_row, point_id
from m3kit.store.filters import documents_filter, stale_chunks_filter
from m3kit.store.schema import (
    CHUNK_ID,
    CHUNK_INDEX,
    DOC_HASH,
    END,
    EXTRA,
    METADATA,
    PAGE_CONTENT,
    START,
)

__all__ = ["node_doc_id", "node_version", "write_nodes"]

_DOC_BATCH = 256


def node_doc_id(node: BaseNode) -> str:
    """The stored ``doc_id`` of a node: its source document, else the node itself."""
    return node.ref_doc_id or node.node_id


def _identity(text: str, start: Any, end: Any, metadata: Any) -> str:
    return json.dumps([text, start, end, metadata], sort_keys=True)


def _node_identity(node: BaseNode) -> str:
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    span = (node.start_char_idx, node.end_char_idx) if isinstance(node, TextNode) else (None, None)
    return _identity(text, *span, node_metadata(node))


def _how(node: BaseNode) -> Any:
    late = node.metadata.get(LATE_METADATA_KEY)
    return late.get("chunker") if isinstance(late, dict) else ("late" if is_late(node) else "text")


def node_version(node: BaseNode) -> str | None:
    """The ``doc_hash`` of the document version ``node`` was parsed from (see the module doc).

    ``None`` when the node names its source document without the source's hash (a node read
    back from a store, or built by hand): the version is unknown, so the stored one stands and
    the node is added to it; it never replaces the document's other chunks.
    """
    source = node.source_node
    if source is None:  # the node is a document of its own: its content is its version
        basis: list[Any] = ["node", _node_identity(node)]
    elif not source.hash:
        return None
    else:
        basis = ["source", source.hash]
    blob = json.dumps(["llamaindex", basis, _how(node)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _unversioned(doc_id: str, node: BaseNode) -> str:
    """The version of a document first stored from nodes of unknown version."""
    blob = json.dumps(["llamaindex", ["unversioned", doc_id], _how(node)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class _Doc:
    """One document of a write: its version, stored chunks of that version, new nodes."""

    version: str | None  # None: unknown until the stored chunks are read (node_version)
    nodes: list[tuple[int, BaseNode]] = field(default_factory=list)
    stored: dict[str, int] = field(default_factory=dict)  # identity -> chunk_index
    ids_at: dict[int, str] = field(default_factory=dict)  # chunk_index -> stored chunk_id
    next_index: int = 0
    stale: bool = False  # chunks of another version are stored

    def index_of(self, node_id: str) -> int | None:
        """The stored chunk its writer gave the id ``node_id``, if any."""
        return next((i for i, stored in self.ids_at.items() if stored == node_id), None)


def _group(nodes: Sequence[BaseNode]) -> dict[str, _Doc]:
    docs: dict[str, _Doc] = {}
    for i, node in enumerate(nodes):
        if not isinstance(node, BaseNode):
            raise TypeError(f"nodes[{i}] is {type(node).__name__}, not a LlamaIndex node")
        doc_id, version = node_doc_id(node), node_version(node)
        doc = docs.setdefault(doc_id, _Doc(version))
        if doc.version != version:
            raise ValueError(
                f"nodes of document {doc_id!r} come from different versions of it (another "
                "source hash, or mixed chunkings); add the nodes of one version"
            )
        doc.nodes.append((i, node))
    return docs


def _read_stored(index: M3Index, docs: dict[str, _Doc]) -> None:
    ids = list(docs)
    payloads: list[dict[str, Any]] = []
    for start in range(0, len(ids), _DOC_BATCH):
        found = index.store.points(filter=documents_filter(ids[start : start + _DOC_BATCH]))
        payloads.extend(found.values())
    for doc_id, doc in docs.items():
        if doc.version is None:  # unknown: the stored version stands
            stored = {
                str(p[DOC_HASH])
                for p in payloads
                if str(p.get("doc_id")) == doc_id and p.get(DOC_HASH)
            }
            if len(stored) > 1:  # an interrupted write left two: which one is current?
                raise ValueError(
                    f"document {doc_id!r} has chunks of {len(stored)} versions stored (a write "
                    "that did not finish), and these nodes name no version (their source has "
                    "no hash): add the document's nodes with their source document first"
                )
            doc.version = stored.pop() if stored else _unversioned(doc_id, doc.nodes[0][1])
    for payload in payloads:
        doc = docs[str(payload.get("doc_id"))]
        if payload.get(DOC_HASH) != doc.version:
            doc.stale = True
            continue
        chunk_index = int(payload.get(CHUNK_INDEX) or 0)
        key = _identity(
            str(payload.get(PAGE_CONTENT, "")),
            payload.get(START),
            payload.get(END),
            payload.get(METADATA) or {},
        )
        doc.stored[key] = chunk_index
        if payload.get(CHUNK_ID) is not None:
            doc.ids_at[chunk_index] = str(payload[CHUNK_ID])
        doc.next_index = max(doc.next_index, chunk_index + 1)


#: A node's own ``embedding`` must be this close (cosine) to the store's dense vector of the
#: node's text: the same model in another precision or batch stays above 0.99, another model
#: of the same size falls far below.
SAME_MODEL_COSINE = 0.9


def _vectors(
    index: M3Index, todo: list[BaseNode], text_instruction: str | None, show: bool | None
) -> list[M3Output]:
    """One-row outputs for nodes that carry no late-chunked vectors (see the module doc).

    Every node's text is encoded once for every head the store holds; a node's own
    ``embedding`` (what the VectorStoreIndex's embed model made) is kept as its dense vector
    after checking it against the store's (:data:`SAME_MODEL_COSINE`).

    Raises:
        ValueError: A node's ``embedding`` was made by another model.
    """
    if not todo:
        return []
    heads = index.store.heads
    texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in todo]
    if text_instruction:
        texts = [text_instruction + t for t in texts]
    encoded = index.encoder.encode(texts, heads=sorted(heads), show_progress=show)
    out: list[M3Output] = []
    for row, node in enumerate(todo):
        part = output_row(encoded, row)
        dense = part.dense
        if node.embedding is not None:
            dense = np.asarray([node.embedding], dtype=np.float32)
            _check_same_model(node, dense[0], part.dense[0])
        out.append(
            M3Output(
                heads=heads,
                token_counts=part.token_counts,
                _dense=dense,
                _sparse=part.sparse if Head.SPARSE in heads else None,
                _colbert=part.colbert if Head.COLBERT in heads else None,
            )
        )
    return out


def _check_same_model(node: BaseNode, given: np.ndarray, ours: np.ndarray) -> None:
    if given.shape != ours.shape:
        raise ValueError(
            f"node {node.node_id!r} has a {given.shape[0]}-dimensional embedding, but this "
            f"store's model gives {ours.shape[0]}: it was embedded by another model. Give "
            "VectorStoreIndex the store's model (M3Embedding) as embed_model"
        )
    norm = float(np.linalg.norm(given) * np.linalg.norm(ours))
    cosine = float(given @ ours) / norm if norm > 0 else 0.0
    if cosine < SAME_MODEL_COSINE:
        raise ValueError(
            f"node {node.node_id!r} has an embedding at cosine {cosine:.3f} to this store's "
            "dense vector of the same text: it was embedded by another model (or with another "
            "text instruction), and its sparse / ColBERT vectors would come from this one. Give "
            "VectorStoreIndex the store's model (M3Embedding) as embed_model"
        )


def write_nodes(
    index: M3Index,
    nodes: Sequence[BaseNode],
    *,
    text_instruction: str | None = None,
    show_progress: bool | None = None,
) -> list[str]:
    """Store nodes as chunks of their documents (see the module doc for the mapping).

    Args:
        index: The encoder + store.
        nodes: LlamaIndex nodes (metadata must be JSON-serialisable).
        text_instruction: Prefix for the texts encoded here (the embed model's, if any).
        show_progress: tqdm bars.

    Returns:
        The point id of each node, in input order (the node ids the store reports).

    Raises:
        ValueError: A late-chunked node without the vectors the store needs, nodes of one
            document from different versions of it, or metadata that is not JSON.
    """
    docs = _group(nodes)
    _read_stored(index, docs)
    heads = index.store.heads
    ids = [""] * len(nodes)
    new: list[tuple[str, int, BaseNode]] = []
    relabel: dict[tuple[str, int], BaseNode] = {}  # (doc id, chunk index) -> node renaming it
    for doc_id, doc in docs.items():
        for i, node in doc.nodes:
            key = _node_identity(node)
            kept = doc.stored.get(key)
            if (
                kept is not None
                and read_back_index(node) is None
                and doc.ids_at.get(kept) != node.node_id
                and doc.index_of(node.node_id) is None  # the id names no other stored chunk
            ):  # stored unchanged, under another node id: the chunk takes the new one
                relabel[(doc_id, kept)] = node
            if key not in doc.stored:
                at = doc.index_of(node.node_id)
                if at is None:
                    at = read_back_index(node)
                if at is not None and at in doc.stored.values():
                    # a stored node (same node id) or a chunk read back, edited: replaced in
                    # place, like an upsert by id, so the old text is not left behind
                    doc.stored = {k: v for k, v in doc.stored.items() if v != at}
                    doc.stored[key] = at
                else:
                    doc.stored[key] = doc.next_index
                    doc.next_index += 1
                new.append((doc_id, doc.stored[key], node))
            ids[i] = point_id(doc_id, doc.stored[key])
    records: list[ChunkRecord] = []
    todo: list[tuple[str, int, BaseNode]] = []
    for doc_id, chunk_index, node in new:
        carried = carried_vectors(node, heads, index.fingerprint.identity)
        if carried is None and is_late(node):
            raise ValueError(lost_vectors_message(node, heads))
        if carried is None:
            todo.append((doc_id, chunk_index, node))
        else:
            records.append(_record(doc_id, chunk_index, node, carried, docs[doc_id]))
    encoded = _vectors(index, [n for _, _, n in todo], text_instruction, show_progress)
    for (doc_id, chunk_index, node), vectors in zip(todo, encoded, strict=True):
        records.append(_record(doc_id, chunk_index, node, vectors, docs[doc_id]))
    if records:
        index.store.upsert(records, show_progress=show_progress, replace=True)
    rewritten = {(r.doc_id, r.chunk_index) for r in records}
    renames = [(where, node) for where, node in relabel.items() if where not in rewritten]
    if renames:  # a record of this call wins; the rest only while it holds the version read
        fields = {point_id(*w): {CHUNK_ID: n.node_id, EXTRA: node_extra(n)} for w, n in renames}
        versions = {point_id(*w): str(docs[w[0]].version) for w, _ in renames}
        index.store.set_writer_fields(fields, versions=versions)
    written = {r.doc_id for r in records}
    for doc_id, doc in docs.items():
        if doc.stale and doc_id not in written:  # every node was stored, an old version too
            assert doc.version is not None  # set by _read_stored
            index.store.delete_points(
                filter=stale_chunks_filter(doc_id, doc.version, doc.next_index)
            )
    return ids


def _record(
    doc_id: str, chunk_index: int, node: BaseNode, vectors: M3Output, doc: _Doc
) -> ChunkRecord:
    span = (node.start_char_idx, node.end_char_idx) if isinstance(node, TextNode) else (None, None)
    assert doc.version is not None  # set by _read_stored
    return ChunkRecord(
        doc_id=doc_id,
        chunk_index=chunk_index,
        text=node.get_content(metadata_mode=MetadataMode.NONE),
        metadata=node_metadata(node),
        vectors=vectors,
        start=span[0],
        end=span[1],
        doc_hash=doc.version,
        chunk_count=doc.next_index,
        # a chunk read back (its id is the point id) keeps the id its writer gave it
        chunk_id=doc.ids_at.get(chunk_index, node.node_id)
        if read_back_index(node) is not None
        else node.node_id,
        extra=node_extra(node),
    )
