"""Write LlamaIndex nodes into an :class:`~m3kit.store.M3Index` (the ``M3VectorStore`` write path).

The mapping keeps the one collection layout every m3kit reader shares:

- ``doc_id`` is the node's ``ref_doc_id`` (its source document; the node's own id when it has
  none), so ``delete(ref_doc_id)`` removes every node of a document, and a document written
  by ``m3kit index``, ``langchain_m3`` or ``llamaindex_m3.M3Retriever`` under the same id is
  the same document here. A node without a source belongs to no document (its ``ref_doc_id``
  is ``"None"``, as in LlamaIndex's stores): it is stored alone under its own id, and
  ``delete`` and ``doc_ids`` pass it by (:mod:`~llamaindex_m3.sourceless`).
- ``chunk_index`` is the node's position among its document's stored nodes (a new node takes
  the place of a node deleted alone, if any, else the next); the point id is
  ``point_id(doc_id, chunk_index)``. The node's own id is stored as ``chunk_id``, and is the
  id :meth:`~llamaindex_m3.M3VectorStore.add` returns and queries report (a chunk another
  writer stored reports its point id). A node written again under a stored id (or a chunk's
  point id) with other content replaces that chunk in place; a node id stored in another
  document is refused.
- ``doc_hash`` is the document version the nodes were parsed from: the ``SOURCE``
  relationship's hash (LlamaIndex's ``Document.hash``, over text and metadata) and, for
  late-chunked nodes, the chunker's signature. Nodes of a new version replace the document's
  stored chunks (written first, the old ones deleted after, by
  :meth:`~m3kit.store.M3Store.upsert`); nodes of the stored version are added to it, because
  ``VectorStoreIndex`` writes a document's nodes in batches of ``insert_batch_size``. Nodes
  that name no version (read back from a store, or built by hand) are written under the
  stored version; where they change its content (a chunk edited or added), the document takes
  a new version first, so the version its writer stored no longer names it and that writer
  (``m3kit index``, ``langchain_m3``, a LlamaIndex insert of the source) writes it again. After
  each write every stored chunk of the version carries its ``chunk_count`` (the chunks
  written carry it, then the others get it: a write stopped between the two leaves the older
  count on some, which the next write of the document sets). A node deleted alone
  (``delete_nodes``) leaves the count as it was: the version lacks one chunk, so a reader
  such as ``complete_documents`` sees it incomplete, until a node fills its place. A node
  already stored (same text, span, metadata and ``PARENT``: a leaf's span is within its
  parent) is not encoded or written again, so adding the same nodes twice stores nothing
  new; the stored chunk takes the node's id (each parse draws new ones) and its
  relationships, hidden keys and templates
  (:meth:`~m3kit.store.M3Store.set_writer_fields`), so the latest nodes' ids find it and it
  reads back as the latest node. A node whose encoded text changed (a metadata key hidden from
  or shown to the embedding model, another template or ``text_instruction``) is encoded
  again, in place of the stored chunk it matches. A node naming a stored chunk whose text or
  offsets it changed keeps its offsets only where the version's stored chunks hold its text
  there (an edited node's offsets name its old text): else it is stored without them. Distinct
  nodes of equal content (HierarchicalNodeParser's parent and leaf of a short text) are
  distinct chunks: a stored chunk is taken over by one node of a write at most, and never by
  a node it is related to (parent, child, neighbour: the same parse).

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
from typing import Any

from llama_index.core.schema import BaseNode

from llamaindex_m3.node_encoding import encode_nodes
from llamaindex_m3.node_groups import check_node_types, encoded_groups
from llamaindex_m3.node_offsets import checked_span
from llamaindex_m3.node_records import (
    StoredChunk,
    carried_vectors,
    check_late_nodes,
    embed_text,
    is_late,
    lost_vectors_message,
    node_chunk_record,
    node_extra,
    other_encoded_text,
)
from llamaindex_m3.node_versions import (
    node_identity,
    related_ids,
)
from llamaindex_m3.stored_chunks import (
    check_ids_elsewhere,
    late_edit_message,
    same_text,
)
from llamaindex_m3.write_docs import WriteDoc, group_nodes, read_stored
from m3kit.outputs import M3Output
from m3kit.store import ChunkRecord, M3Index, point_id
from m3kit.store.filters import stale_chunks_filter
from m3kit.store.schema import (
    CHUNK_ID,
    EXTRA,
)

__all__ = ["encode_nodes", "write_nodes"]


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
        The id of each node, in input order (the node ids the store reports).

    Raises:
        ValueError: A late-chunked node without the vectors the store needs, or while a
            ``text_instruction`` is set (they would be in another space), nodes of one
            document from different versions of it, metadata that is not JSON, or a node id
            stored in another document, or one node id given to nodes of different content.
        FingerprintMismatchError: The index lost its store to another encoder's index, or
            its encoder changed in memory (:meth:`~m3kit.store.M3Index.check_encoder`).
    """
    check_node_types(nodes)
    index.check_encoder()  # the store checks its holder's encoder, maybe another index's
    check_late_nodes(nodes, index.fingerprint, text_instruction)
    docs = group_nodes(nodes)
    read_stored(index, docs)
    check_ids_elsewhere(index, {d: [n for _, n in doc.nodes] for d, doc in docs.items()})
    heads = index.store.heads
    new: list[tuple[str, int, BaseNode]] = []
    stored_of: dict[int, StoredChunk | None] = {}  # id(node) -> the chunk its id names
    relabel: dict[tuple[str, int], BaseNode] = {}  # (doc id, chunk index) -> node renaming it
    refresh: dict[tuple[str, int], BaseNode] = {}  # ... -> node of its id with other fields
    for doc_id, doc in docs.items():
        claimed: set[int] = set()  # stored chunks a node of this call has matched
        # first the nodes naming a stored chunk (by node id or point id), then the others
        named = {id(n): doc.index_of(n.node_id) for _, n in doc.nodes}
        for _, node in sorted(doc.nodes, key=lambda item: named[id(item[1])] is None):
            at = named[id(node)] if named[id(node)] is not None else doc.index_of(node.node_id)
            stored = doc.chunk(at)
            node = checked_span(doc.text_at, node, None if stored is None else stored.index)
            stored_of[id(node)] = stored
            key = node_identity(node, stored)
            encoded_on = _encoded_text(node, text_instruction)
            if at is not None and doc.key_at.get(at) == key:  # stored unchanged under its id
                claimed.add(at)
                # (a late chunk's vectors were pooled from its document, on no node's text)
                if doc.encoded_at.get(at) != encoded_on and at not in doc.late:  # again
                    new.append((doc_id, at, node))
                    doc.encoded_at[at] = encoded_on
                elif doc.extra_at.get(at) != node_extra(node, stored):  # other node fields
                    refresh[(doc_id, at)] = node
                continue
            if at is None:  # stored unchanged under another node id: the chunk takes this one
                same = _same_chunk(doc, key, node, claimed)
                if same is not None:
                    claimed.add(same)
                    doc.set_id(same, node.node_id)
                    if doc.encoded_at.get(same) != encoded_on and same not in doc.late:
                        new.append((doc_id, same, node))
                        doc.encoded_at[same] = encoded_on
                    else:
                        relabel[(doc_id, same)] = node
                    continue
                at = doc.place()  # a node of its own: a new chunk
            # else a stored node (same node id) or a chunk read back, edited: replaced in
            # place, like an upsert by id, so the old text is not left behind
            if at in doc.late and not is_late(node) and same_text(doc.text_at.get(at), node):
                raise ValueError(late_edit_message(doc_id, node))  # (its metadata, not text)
            claimed.add(at)
            doc.key_at[at] = key
            doc.encoded_at[at] = encoded_on
            doc.changed.append(key)
            if at not in doc.ids_at:
                doc.set_id(at, node.node_id)
            new.append((doc_id, at, node))
    carried: list[tuple[str, int, BaseNode, M3Output]] = []
    todo: list[tuple[str, int, BaseNode]] = []
    for doc_id, chunk_index, node in new:
        vectors = carried_vectors(node, heads, index.fingerprint)
        if vectors is None and is_late(node):
            raise ValueError(lost_vectors_message(node, heads))
        if vectors is None:
            todo.append((doc_id, chunk_index, node))
        else:
            carried.append((doc_id, chunk_index, node, vectors))
    # Encoded and written in groups of whole documents, as M3Index.add_texts writes (every
    # node's vectors, ColBERT's one per token, were held at once: an IngestionPipeline's whole
    # run). Every node is checked first (what needs no encoding); nothing is written before
    # the first group is encoded: an embedding of another model of the same size (nodes of
    # one embed model are refused in the first), or an async_add cancelled while it was
    # encoded, leaves the store as it was; in a later group, the groups before written.
    rewritten: set[tuple[str, int]] = set()
    groups = encoded_groups(index, todo, carried, text_instruction, show_progress)
    for at, (part, encoded, part_carried) in enumerate(groups):
        if at == 0:
            _renew_adopted_versions(index, docs)
        records: list[ChunkRecord] = []
        for doc_id, chunk_index, node, vectors in part_carried:
            stored = stored_of[id(node)]
            records.append(_record(doc_id, chunk_index, node, vectors, docs[doc_id], stored))
        for (doc_id, chunk_index, node), vectors in zip(part, encoded, strict=True):
            stored = stored_of[id(node)]
            text = embed_text(node, text_instruction)
            doc = docs[doc_id]
            records.append(_record(doc_id, chunk_index, node, vectors, doc, stored, text))
        if records:
            index.store.upsert(
                records,
                show_progress=show_progress,
                replace=True,
                text_instruction=text_instruction,
            )
        rewritten.update((r.doc_id, r.chunk_index) for r in records)
    fields: dict[str, dict[str, Any]] = {}
    versions: dict[str, str] = {}
    for where, node in [*relabel.items(), *refresh.items()]:
        if where in rewritten:  # a record of this call wins
            continue
        # the rest only while the chunk holds the version read
        pid = point_id(*where)
        fields[pid] = {EXTRA: node_extra(node, stored_of[id(node)])}
        if where in relabel:
            fields[pid][CHUNK_ID] = node.node_id
        versions[pid] = str(docs[where[0]].version)
    if fields:
        index.store.set_writer_fields(fields, versions=versions)
    _set_chunk_counts(index, docs, rewritten)
    written = {doc_id for doc_id, _ in rewritten}
    for doc_id, doc in docs.items():
        if doc.stale and doc_id not in written:  # every node was stored, an old version too
            assert doc.version is not None  # set by read_stored
            index.store.delete_points(
                filter=stale_chunks_filter(doc_id, doc.version, doc.chunk_count)
            )
    return [node.node_id for node in nodes]


def _renew_adopted_versions(index: M3Index, docs: dict[str, WriteDoc]) -> None:
    """Give a new version to each document whose stored version these nodes changed.

    Nodes that name no version (read back from the store, or built by hand) are written
    under the stored one. Where they change its content (a chunk edited in place, a chunk
    added), that version no longer names what its writer stored: ``m3kit index``,
    ``langchain_m3`` or ``M3Index.add_texts`` writing that document again, or LlamaIndex
    inserting the source document again, would find it stored and skip it, leaving the
    edited chunks in place. The stored chunks take the new version first, then the nodes are
    written under it (a write stopped between the two leaves the old content under a version
    no writer has, which the next write of the document replaces).
    """
    for doc_id, doc in docs.items():
        if not doc.adopted or not doc.changed:
            continue
        assert doc.version is not None  # set by read_stored
        blob = json.dumps(["llamaindex", ["changed", doc.version, sorted(doc.changed)]])
        renewed = hashlib.sha256(blob.encode()).hexdigest()
        index.store.set_version(doc_id, doc.version, renewed)
        doc.version = renewed


def _set_chunk_counts(
    index: M3Index, docs: dict[str, WriteDoc], rewritten: set[tuple[str, int]]
) -> None:
    """Give the stored chunks of each document's version that this write did not rewrite
    the version's chunk count, where they hold another (see the module doc).

    After the write, as the chunks it stored carry the count: a write stopped before this
    leaves the version's chunks stored, some with an older count, which the next write of the
    document sets (it reads them).
    """
    for doc_id, doc in docs.items():
        count = doc.chunk_count
        if any(n != count for at, n in doc.counts.items() if (doc_id, at) not in rewritten):
            assert doc.version is not None  # set by read_stored
            index.store.set_chunk_count(doc_id, doc.version, count)


def _encoded_text(node: BaseNode, text_instruction: str | None) -> str | None:
    """The ``encoded_text`` a node is stored with (:func:`_record`): the text it is encoded on
    where that is not its bare text; ``None`` for a late-chunked node (its vectors are carried)."""
    if is_late(node):
        return None
    return other_encoded_text(node, embed_text(node, text_instruction))


def _same_chunk(doc: WriteDoc, key: str, node: BaseNode, claimed: set[int]) -> int | None:
    """A stored chunk of this content that ``node`` (an id no chunk has) is a new parse of.

    Not one another node of this call matched, nor one related to ``node`` (a parent, child
    or neighbour of it, of the same parse: HierarchicalNodeParser's parent and leaf of a
    short text are equal), which is a distinct node of the same content.
    """
    mine = related_ids(node.relationships)
    for at in doc.same.get(key, []):
        if at in claimed:
            continue
        if doc.ids_at.get(at) in mine or node.node_id in doc.related_at.get(at, set()):
            continue
        return at
    return None


def _record(
    doc_id: str,
    chunk_index: int,
    node: BaseNode,
    vectors: M3Output,
    doc: WriteDoc,
    stored: StoredChunk | None,
    encoded: str | None = None,
) -> ChunkRecord:
    """A node as its chunk record (:func:`~llamaindex_m3.node_records.node_chunk_record`) under
    its document's version and chunk count; ``encoded``: the text its vectors were encoded on
    (:func:`~llamaindex_m3.node_records.embed_text`; ``None``: a late-chunked node)."""
    assert doc.version is not None  # set by read_stored
    return node_chunk_record(
        doc_id,
        chunk_index,
        node,
        vectors,
        doc_hash=doc.version,
        chunk_count=doc.chunk_count,
        # a chunk read back by its point id keeps the id its writer gave it
        chunk_id=doc.ids_at.get(chunk_index, node.node_id)
        if node.node_id == point_id(doc_id, chunk_index)
        else node.node_id,
        stored=stored,
        encoded=encoded,
    )
