"""Late-chunked LlamaIndex nodes read back: their vectors, their text check, store records.

What :class:`~llamaindex_m3.node_parser.M3LateChunkingNodeParser` leaves on a node and the
functions that read it (split from :mod:`llamaindex_m3.node_parser`, which re-exports the
public names): :class:`M3TextNode` (ColBERT in memory), :func:`node_vectors` (every head that
survived), :func:`chunk_records` (m3kit store records, versioned per document), and the check
that refuses a node whose text was edited after parsing (:class:`EditedNodeError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, RelatedNodeInfo, TextNode
from typing_extensions import Self

from llamaindex_m3.embedding_origins import embedded_alone
from m3kit.outputs import Chunk, Head, M3Output, SparseVector
from m3kit.store.records import ChunkRecord

__all__ = [
    "ENCODER_SETTINGS",
    "LATE_METADATA_KEY",
    "SPARSE_METADATA_KEY",
    "EditedNodeError",
    "M3TextNode",
    "chunk_records",
    "late_node_chunking",
    "late_record",
    "node_vectors",
    "user_metadata",
]

SPARSE_METADATA_KEY = "m3_sparse"
LATE_METADATA_KEY = "m3_late_chunk"
_INTERNAL_KEYS = (SPARSE_METADATA_KEY, LATE_METADATA_KEY)
#: The encoder settings a late-chunked node records (``encoder_settings``): the loading options
#: in an encoder's identity, named when a store of another setting refuses the node.
ENCODER_SETTINGS = ("max_length", "query_instruction")


class M3TextNode(TextNode):
    """A ``TextNode`` that also holds its chunk's M3 vectors in memory (see :func:`node_vectors`).

    Serialises as a plain ``TextNode`` (the vectors are a private attribute).
    """

    _m3_chunk: Chunk | None = PrivateAttr(default=None)
    #: The parser's record (``metadata["m3_late_chunk"]`` as made): which model made the
    #: vectors, kept for a node whose metadata a transform replaced (:func:`late_record`).
    _m3_record: dict[str, Any] | None = PrivateAttr(default=None)

    def __setattr__(self, name: str, value: Any) -> None:
        """Set an attribute; a changed ``text`` also keeps ``embedding`` and the span that text's.

        ``VectorStoreIndex`` embeds only the nodes without an ``embedding``, so a node whose
        text was edited after parsing would reach any store with its old text's late vector:
        the edit drops it (the index embeds the new text; m3kit's stores refuse the node,
        :class:`EditedNodeError`), and the chunk's own text brings it back. So with
        ``start_char_idx`` / ``end_char_idx``: the new text has no span in the document.
        """
        changed = name == "text" and value != self.__dict__.get("text")
        super().__setattr__(name, value)
        if changed:
            self._follow_text(value, given=())

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; one given another ``text`` (``update``) follows it as an edit does.

        Pydantic sets an update's fields without ``__setattr__``, so a copy of another text
        kept its original's late vector and span (see ``__setattr__``). An ``embedding`` or
        offsets the update gives are kept: a node carrying an embedding is trusted.
        """
        copied = super().model_copy(update=update, deep=deep)
        if update and "text" in update and update["text"] != self.__dict__.get("text"):
            copied._follow_text(update["text"], given=update)
        return copied

    def _follow_text(self, text: Any, *, given: Collection[str]) -> None:
        """Take the chunk's embedding and span when ``text`` is its text, else drop them
        (those named in ``given`` excepted)."""
        chunk = self._m3_chunk
        if chunk is None:
            return
        own = text == chunk.text
        kept = {
            "embedding": chunk.dense.tolist() if own else None,
            "start_char_idx": chunk.start if own else None,
            "end_char_idx": chunk.end if own else None,
        }
        for field, value in kept.items():
            if field not in given:
                setattr(self, field, value)

    def as_related_node_info(self) -> RelatedNodeInfo:
        """A link to this node, without the parser's keys in its copy of the metadata.

        LlamaIndex copies a node's metadata into every link to it (``HierarchicalNodeParser``'s
        ``CHILD`` links from a parent, ``PREVIOUS`` / ``NEXT``): a parent would carry each
        child's sparse vector.
        """
        info = super().as_related_node_info()
        info.metadata = user_metadata(self)
        return info

    @property
    def m3_vectors(self) -> M3Output:
        """All heads of the chunk (one row): ``.dense``, ``.sparse``, ``.colbert``."""
        if self._m3_chunk is None:
            raise ValueError(f"node {self.node_id} carries no M3 vectors")
        return self._m3_chunk.vectors


def late_record(node: BaseNode) -> dict[str, Any] | None:
    """What the parser recorded of a late-chunked node (``metadata["m3_late_chunk"]``), or,
    for a node made in this process whose metadata lost it (a transform that replaced the
    metadata), the record it was made with; ``None`` for any other node."""
    late = node.metadata.get(LATE_METADATA_KEY)
    if isinstance(late, dict):
        return late
    if isinstance(node, M3TextNode) and node._m3_record is not None:
        return node._m3_record
    return None


class EditedNodeError(ValueError):
    """A late-chunked node whose text was changed after parsing: its vectors are not its text's."""


def _text_key(text: str) -> str:
    """What a node records of its chunk's text (``metadata["m3_late_chunk"]["text"]``)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _check_text(node: BaseNode, chunk_text: str | None, late: Any) -> None:
    """Raise :class:`EditedNodeError` when ``node``'s text is not the chunk's it was cut as
    (``chunk_text`` for a live node; else the hash its metadata recorded, when it has one)."""
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    if chunk_text is not None:
        same = text == chunk_text
    elif isinstance(late, dict) and isinstance(late.get("text"), str):
        same = _text_key(text) == late["text"]
    else:  # parsed by an m3kit that did not record it
        return
    if same:
        return
    message = (
        f"node {node.node_id} ({text[:40]!r}) came from M3LateChunkingNodeParser but its "
        "text was changed after parsing, so its late-chunked vectors are not those of its "
        "text; parse the edited document again instead of editing its nodes"
    )
    if chunk_text is None:  # a plain node: also what another parser cuts from a parsed node
        message += (
            ". Or another parser cut it from a late-chunked node (a HierarchicalNodeParser "
            "level after M3LateChunkingNodeParser: LlamaIndex copies the node's embedding "
            "and metadata to its pieces); make M3LateChunkingNodeParser the last (leaf) level"
        )
    raise EditedNodeError(message)


def node_vectors(node: BaseNode) -> M3Output:
    """The M3 vectors an :class:`M3LateChunkingNodeParser` attached to ``node``.

    All heads for a node made in this process; for a node rebuilt from JSON (a docstore, an
    ``IngestionPipeline`` cache), the heads that survive serialisation: dense (``.embedding``)
    and sparse (``metadata["m3_sparse"]``), not ColBERT.

    Raises:
        ValueError: The node did not come from the parser, or its ``embedding`` is one an
            ``M3Embedding`` made from its text alone (a docstore copy or a query result
            inserted again: :func:`embedded_alone_message`).
        EditedNodeError: Its text was changed after parsing (its vectors are another text's).
    """
    late = node.metadata.get(LATE_METADATA_KEY)
    if isinstance(node, M3TextNode) and node._m3_chunk is not None:
        _check_text(node, node._m3_chunk.text, late)
        return node.m3_vectors
    embedding = getattr(node, "embedding", None)
    if not isinstance(late, dict) or embedding is None:
        raise ValueError(
            f"node {node.node_id} did not come from M3LateChunkingNodeParser "
            f"(no {LATE_METADATA_KEY!r} metadata and embedding); it carries no M3 vectors"
        )
    _check_text(node, None, late)
    if dense_is_late(late) and embedded_alone(embedding):
        raise ValueError(embedded_alone_message(node))
    sparse = node.metadata.get(SPARSE_METADATA_KEY)
    heads = {Head.DENSE} | ({Head.SPARSE} if isinstance(sparse, dict) else set())
    return M3Output(
        heads=frozenset(heads),
        token_counts=(int(late["token_end"]) - int(late["token_start"]),),
        _dense=np.asarray([embedding], dtype=np.float32),
        _sparse=(
            SparseVector(
                np.asarray(sparse["indices"], dtype=np.int64),
                np.asarray(sparse["values"], dtype=np.float32),
            ),
        )
        if isinstance(sparse, dict)
        else None,
        _colbert=None,
    )


def dense_is_late(late: Mapping[str, Any]) -> bool:
    """Whether a late-chunked node's dense vector was pooled late (its chunker's signature
    names its late heads; one from before it did pooled every head late). With ``late_heads``
    leaving dense out (``dense_pooling="naive"``), the dense vector is its chunk's alone.

    >>> dense_is_late({"chunker": "LateChunker(..., late_heads=colbert+sparse)"})
    False
    >>> dense_is_late({"chunker": "LateChunker(..., late_heads=colbert+dense+sparse)"})
    True

    The signature ends with ``late_heads``; a custom splitter's settings come before it:

    >>> dense_is_late({"chunker": "LateChunker(splitter=S(tag='late_heads=dense'), ..., "
    ...                "late_heads=colbert+sparse)"})
    False
    """
    found = _LATE_HEADS.findall(str(late.get("chunker", "")))
    return not found or "dense" in found[-1].split("+")


#: The late heads a :attr:`LateChunker.signature <m3kit.late_chunking.LateChunker.signature>`
#: names.
_LATE_HEADS = re.compile(r"late_heads=([a-z+]*)")


def embedded_alone_message(node: BaseNode) -> str:
    """Why a late-chunked node whose embedding an ``M3Embedding`` made from its text alone
    cannot be stored (:func:`~llamaindex_m3.embedding_origins.embedded_alone`)."""
    return (
        f"node {node.node_id} came from M3LateChunkingNodeParser, but its embedding was made "
        "from its text alone (LlamaIndex keeps nodes without their embeddings in its docstore "
        "and in query results, and VectorStoreIndex embeds such a node's text again), while "
        "its sparse vector keeps its document's context. Take the node to write again from "
        "M3QdrantVectorStore.get_nodes(node_ids=[...]), which returns its stored vectors; or "
        "run the parser again on its document; or drop "
        f"metadata[{LATE_METADATA_KEY!r}] and metadata[{SPARSE_METADATA_KEY!r}] to store it "
        "as a plain node"
    )


def user_metadata(node: BaseNode) -> dict[str, Any]:
    """The node's metadata without the parser's own keys (what a store keeps)."""
    return {k: v for k, v in node.metadata.items() if k not in _INTERNAL_KEYS}


def chunk_records(nodes: Sequence[BaseNode]) -> list[ChunkRecord]:
    """m3kit store records for parsed nodes (doc id = the source document's id).

    ``metadata`` is :func:`user_metadata`. Nodes rebuilt from JSON give records without ColBERT
    (see :func:`node_vectors`); a store with a ColBERT head refuses them. Each record carries its
    document's version (``doc_hash``: a hash of the document's text hash, the chunker's
    signature and the encoder) and ``chunk_count``, so ``M3Store.upsert(records,
    replace=True)`` deletes the chunks an older version left (an edited document with fewer
    chunks) and nothing else.

    Raises:
        ValueError: A node did not come from :class:`M3LateChunkingNodeParser`, or came from
            a version of it that did not record ``count`` / ``source`` (parse it again), or
            was cut from a part of its document (another parser's node), whose chunks are
            numbered per part, not per document.
    """
    records = []
    for node in nodes:
        vectors = node_vectors(node)
        late = node.metadata[LATE_METADATA_KEY]
        doc_hash, count = _document_version(node, late)
        doc_id = node.ref_doc_id or node.node_id
        start = getattr(node, "start_char_idx", None)
        end = getattr(node, "end_char_idx", None)
        records.append(
            ChunkRecord(
                doc_id,
                int(late["index"]),
                node.get_content(metadata_mode=MetadataMode.NONE),
                user_metadata(node),
                vectors,
                start,
                end,
                doc_hash=doc_hash,
                chunk_count=count,
                chunking=late_node_chunking(late),
            )
        )
    return records


def late_node_chunking(late: Mapping[str, Any]) -> dict[str, Any]:
    """The chunking recorded for a late-chunked node's record: one a reindex cannot redo.

    Its vectors were pooled from its document's text, which the store does not hold whole; a
    document of one such chunk recording none would be taken for a whole document stored
    before chunkings were recorded and re-encoded on its text alone.
    """
    signature = f"M3LateChunkingNodeParser {late.get('chunker')}"
    return {
        "kind": "custom",
        "signature": signature[:300],
        "why": "late-chunked nodes: their vectors were pooled from their document's text, "
        "which is not stored whole",
    }


def _document_version(node: BaseNode, late: dict[str, Any]) -> tuple[str, int]:
    """``(doc_hash, chunk_count)`` of the document version ``node`` was cut from."""
    cut_from = late.get("cut_from")
    if cut_from is not None and cut_from != node.ref_doc_id:
        raise ValueError(
            f"node {node.node_id} was late-chunked from node {cut_from}, a part of document "
            f"{node.ref_doc_id}, not from the document itself: its chunks are numbered per "
            "part, so the parts' chunks would take each other's places in the store. Give "
            "the parser the documents themselves (splitter= sets its chunk boundaries), or "
            "store a HierarchicalNodeParser's leaves with M3VectorStore or "
            "M3QdrantVectorStore (VectorStoreIndex), which do not place nodes by that number"
        )
    try:
        source, count = str(late["source"]), int(late["count"])
    except KeyError:
        raise ValueError(
            f"node {node.node_id} has no document version in its {LATE_METADATA_KEY!r} "
            "metadata ('source' and 'count'; it was parsed by an older m3kit): parse its "
            "document again, so that storing it can replace the document's older chunks"
        ) from None
    blob = json.dumps([source, late["chunker"], late.get("encoder")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest(), count
