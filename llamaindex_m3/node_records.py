"""LlamaIndex documents and nodes as m3kit chunk records (the writes of ``M3Retriever``).

Shared with :mod:`llamaindex_m3.node_writes` (the vector store's writes): which nodes carry
late-chunked vectors, the metadata stored for a node, a document version of a node group, and
the chunk record of a node (:func:`node_chunk_record`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from llama_index.core.schema import BaseNode, Document, IndexNode, MetadataMode, TextNode

from llamaindex_m3.late_nodes import (
    ENCODER_SETTINGS,
    LATE_METADATA_KEY,
    EditedNodeError,
    M3TextNode,
    late_node_chunking,
    late_record,
    node_vectors,
    user_metadata,
)
from llamaindex_m3.node_classes import CLASS_FIELDS, class_fields
from m3kit.outputs import Head, M3Output
from m3kit.store import ChunkRecord
from m3kit.store.index import content_doc_id
from m3kit.store.metadata_values import iso_values, sorted_json
from m3kit.store.points import plain_json
from m3kit.store.records import NODES_KIND

if TYPE_CHECKING:
    from m3kit.fingerprint import EncoderFingerprint

__all__ = [
    "CHUNK_INDEX_KEY",
    "DOC_ID_KEY",
    "ENCODED_TEXT",
    "NODE_FIELDS",
    "PLACEMENT_KEYS",
    "StoredChunk",
    "carried_vectors",
    "check_late_encoder",
    "check_late_nodes",
    "document_settings",
    "embed_text",
    "is_late",
    "lost_vectors_message",
    "node_chunk_record",
    "node_extra",
    "node_metadata",
    "node_record",
    "nodes_hash",
    "other_encoded_text",
    "read_back_index",
    "reader_keys",
    "unpack_documents",
]

#: Metadata keys of a node read back from a store: its document and position there.
DOC_ID_KEY = "doc_id"
CHUNK_INDEX_KEY = "chunk_index"
PLACEMENT_KEYS = (DOC_ID_KEY, CHUNK_INDEX_KEY)


def unpack_documents(
    documents: Sequence[Document],
) -> tuple[list[str], list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """Texts, metadata, ids (a random LlamaIndex id becomes the content id) and the settings
    the nodes read back keep (:func:`document_settings`) of documents."""
    if isinstance(documents, BaseNode):  # (a pydantic model iterates as its field pairs)
        raise TypeError("documents is a list of Documents; wrap a single one as [document]")
    texts, metadatas, doc_ids, extras = [], [], [], []
    for i, doc in enumerate(documents):
        if not isinstance(doc, BaseNode):
            raise TypeError(f"documents[{i}] is {type(doc).__name__}, not a Document")
        text = doc.get_content(metadata_mode=MetadataMode.NONE)
        texts.append(text)
        # as node_metadata stores them
        metadatas.append(iso_values(doc.metadata, f"metadata of documents[{i}]"))
        given = "id_" in doc.model_fields_set  # else LlamaIndex drew a random uuid4
        doc_ids.append(doc.doc_id if given else content_doc_id(text, metadatas[-1]))
        extras.append(document_settings(doc) or {})  # {}: none (no settings kept before)
    return texts, metadatas, doc_ids, extras


#: A document's settings its chunks' nodes inherit, as a node parser gives them to its nodes.
DOCUMENT_SETTINGS = (
    "excluded_embed_metadata_keys",
    "excluded_llm_metadata_keys",
    "metadata_template",
    "metadata_separator",
    "text_template",
)


def document_settings(doc: BaseNode) -> dict[str, Any] | None:
    """The :data:`DOCUMENT_SETTINGS` of a document that differ from a node's defaults (a
    ``SimpleDirectoryReader`` hides its file's size and dates from the LLM), kept with its
    chunks so that the nodes read back show the LLM what a node parser's nodes would show;
    ``None`` when every one is the default (documents stored before keep their versions).

    >>> document_settings(Document(text="t", excluded_llm_metadata_keys=["size"]))
    {'excluded_llm_metadata_keys': ['size']}
    >>> document_settings(Document(text="t")) is None
    True
    """
    fields = type(doc).model_fields
    changed = {
        name: getattr(doc, name)
        for name in DOCUMENT_SETTINGS
        if name in fields
        and getattr(doc, name) != fields[name].get_default(call_default_factory=True)
    }
    return {k: list(v) if isinstance(v, list) else v for k, v in changed.items()} or None


def carried_vectors(
    node: BaseNode,
    heads: frozenset[Head],
    encoder: EncoderFingerprint,
    *,
    holder: str = "store",
    text_instruction: str | None = None,
) -> M3Output | None:
    """The late-chunked vectors a node carries, when they cover every head the store holds.

    Args:
        node: The node.
        heads: The heads the store holds.
        encoder: The store's encoder fingerprint (nodes stamped with its identity, or the one
            an earlier m3kit gave it, carry its vectors).
        holder: What takes the node, for the error (``"store"``, ``"embedding model"``).
        text_instruction: The holder's document prefix (a late-chunked node is refused).

    Raises:
        ValueError: The node was late-chunked by another model than the store's, or the
            holder has a ``text_instruction``, or its text was changed after parsing
            (:class:`~llamaindex_m3.node_parser.EditedNodeError`).
    """
    if not is_late(node):
        return None
    check_late_encoder(node, encoder, holder=holder, text_instruction=text_instruction)
    try:
        vectors = node_vectors(node)
    except EditedNodeError:
        raise
    except ValueError:  # marked late-chunked but its embedding was dropped
        return None
    return vectors if heads <= vectors.heads else None


def check_late_encoder(
    node: BaseNode,
    encoder: EncoderFingerprint,
    *,
    holder: str,
    text_instruction: str | None = None,
) -> None:
    """Raise when ``node``'s late-chunked vectors are not in the space of ``encoder``'s.

    A node stamped with the encoder's identity, or the one an earlier m3kit gave it, passes;
    so does one that names no encoder (parsed before m3kit stamped it).

    Args:
        node: A late-chunked node.
        encoder: The fingerprint of the model taking the node.
        holder: What takes the node, for the error (``"store"``, ``"embedding model"``).
        text_instruction: The prefix the holder encodes documents after: late-chunked
            vectors are computed on the bare document, so a node is refused when one is set.

    Raises:
        ValueError: Another model (or one loaded with another ``max_length`` /
            ``query_instruction``: names them) made the node's vectors, or the holder
            prefixes documents with ``text_instruction`` (names the node).
    """
    late = late_record(node) or {}
    if text_instruction:
        raise ValueError(
            f"node {node.node_id} came from M3LateChunkingNodeParser, whose vectors are "
            f"computed on the document without a prefix, but this {holder} encodes documents "
            f"after text_instruction {text_instruction!r}: storing both would hold documents "
            f"in two spaces. Use an M3Embedding without it (text_instruction=None) for "
            "late-chunked nodes, or split with a parser that does not late-chunk"
        )
    made_by = late.get("encoder")
    if made_by is None or encoder.made(str(made_by)):  # older nodes do not say
        return
    settings = late.get("encoder_settings")
    settings = settings if isinstance(settings, dict) else {}
    recorded = {name: settings[name] for name in ENCODER_SETTINGS if name in settings}
    differ = [
        f"{name} {value!r} (the {holder}'s model: {getattr(encoder, name)!r})"
        for name, value in recorded.items()
        if value != getattr(encoder, name)
    ]
    # the settings alone are to blame only when the holder's model with the node's settings
    # is the encoder that made it (else the weights, tokenizer or pooling differ too)
    if differ and replace(encoder, **recorded).made(str(made_by)):
        raise ValueError(
            f"node {node.node_id} was late-chunked with other encoder settings than this "
            f"{holder}'s: {', '.join(differ)}. They make another encoder, so its vectors do "
            f"not compare with the {holder}'s. Load the parser with the settings of the "
            f"{holder}'s M3Embedding: M3LateChunkingNodeParser(max_length=..., "
            "query_instruction=...), or M3LateChunkingNodeParser.from_encoder(embed.encoder)"
        )
    also = f"; its settings differ too: {', '.join(differ)}" if differ else ""
    raise ValueError(
        f"node {node.node_id} was late-chunked by another model than this {holder}'s "
        f"(encoder identity {made_by} vs {encoder.identity}{also}): its vectors live in "
        f"another space. Parse with M3LateChunkingNodeParser on the {holder}'s model"
    )


def check_late_nodes(
    nodes: Sequence[BaseNode], encoder: EncoderFingerprint, text_instruction: str | None
) -> None:
    """:func:`check_late_encoder` on every late-chunked node of a store's write.

    Raises:
        ValueError: As :func:`check_late_encoder` (the holder is the store).
    """
    for node in nodes:
        if is_late(node):
            check_late_encoder(node, encoder, holder="store", text_instruction=text_instruction)


def is_late(node: BaseNode) -> bool:
    """Made by ``M3LateChunkingNodeParser`` (live, or rebuilt from JSON: its marker survives)."""
    return isinstance(node, M3TextNode) or LATE_METADATA_KEY in node.metadata


def lost_vectors_message(node: BaseNode, heads: frozenset[Head]) -> str:
    """Why a late-chunked node cannot be stored: what it carries, what the store needs."""
    need = ", ".join(sorted(h.value for h in heads))
    try:
        have = ", ".join(sorted(h.value for h in node_vectors(node).heads))
    except ValueError:
        have = "nothing (no embedding)"
    if isinstance(node, M3TextNode) and node._m3_chunk is not None:
        return (
            f"node {node.node_id} carries late-chunked vectors for {have}, but the store needs "
            f"{need}; parse with a model that has those heads, or use a store made for it"
        )
    return (
        f"node {node.node_id} came from M3LateChunkingNodeParser but was rebuilt from JSON (a "
        "docstore or an IngestionPipeline cache), which keeps only dense and sparse vectors: "
        f"it has {have}, the store needs {need}. Run the parser again on its document (e.g. "
        "IngestionPipeline(..., disable_cache=True): cache=None still caches), or drop "
        f"metadata[{LATE_METADATA_KEY!r}] to have the node encoded on its own text (naive "
        "chunking)"
    )


#: What :func:`nodes_hash` versions for a node encoded here (not late-chunked): the text the
#: embedding model sees. Versions made before it (which encoded the node's bare text) differ,
#: so such documents are encoded once more rather than skipped as unchanged.
ENCODED_TEXT = "embed"


def embed_text(node: BaseNode, text_instruction: str | None = None) -> str:
    """The text a node not late-chunked is encoded on: what the embedding model sees.

    Its ``MetadataMode.EMBED`` content (its text with the metadata not hidden from the
    embedding model), after ``text_instruction`` when one is given.
    """
    text = node.get_content(metadata_mode=MetadataMode.EMBED)
    return text_instruction + text if text_instruction else text


def other_encoded_text(node: BaseNode, encoded: str | None) -> str | None:
    """``encoded`` (the text a node was encoded on) when it is not the node's stored text.

    Stored as the chunk's ``encoded_text``, so a reindex with another model encodes it again.
    """
    return None if encoded is None or encoded == node.get_content(MetadataMode.NONE) else encoded


def nodes_hash(
    group: Sequence[tuple[int, BaseNode]],
    stored: Mapping[int, StoredChunk | None] | None = None,
) -> str:
    """Version of a document's nodes: texts, offsets, metadata and what is encoded.

    A node encoded here contributes the text the embedding model sees
    (``MetadataMode.EMBED``, :data:`ENCODED_TEXT`), so a change to it (a metadata key no
    longer hidden from the embedding) is a new version; a late-chunked node, how it was
    late-chunked. ``stored``: the chunk each node (by ``id(node)``) names, as for
    :func:`node_metadata`.
    """
    h = hashlib.sha256()
    for _, node in group:
        chunk = (stored or {}).get(id(node))
        late = is_late(node)
        blob = [
            node.get_content(metadata_mode=MetadataMode.NONE),
            node.start_char_idx if isinstance(node, TextNode) else None,
            node.end_char_idx if isinstance(node, TextNode) else None,
            node_metadata(node, chunk),
            "late" if late else "text",
            node.metadata.get(LATE_METADATA_KEY, {}).get("chunker"),  # how it was late-chunked
        ]
        if not late:
            blob.append([ENCODED_TEXT, node.get_content(metadata_mode=MetadataMode.EMBED)])
        h.update(sorted_json(blob).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class StoredChunk:
    """A stored chunk a node names by its id (the id its writer gave it, or its point id)."""

    #: Its ``chunk_index`` in its document.
    index: int
    #: Its stored metadata.
    metadata: Mapping[str, Any]


def node_metadata(node: BaseNode, stored: StoredChunk | None = None) -> dict[str, Any]:
    """The metadata stored for a node (JSON-serialisable, without the parser's sparse copy;
    dates, times and UUIDs as their strings, :func:`~m3kit.store.metadata_values.iso_values`).

    A node read back from a store (``hit_to_node``) carries its placement under
    :data:`DOC_ID_KEY` / :data:`CHUNK_INDEX_KEY` where its metadata had no such key; written
    again, those keys are left out (:func:`reader_keys`), so they never become user metadata,
    while a user's own key of that name is kept.

    Args:
        node: The node.
        stored: The stored chunk the node names by its id, if any (found in the store).
    """
    # dates, times and UUIDs become the strings LlamaIndex's stores write (pydantic JSON)
    plain_json(node.metadata, f"metadata of node {node.node_id!r}")
    # the parser's sparse copy is already in the sparse vector; not stored twice
    meta = iso_values(user_metadata(node))
    for key in reader_keys(node, stored):
        meta.pop(key, None)
    return meta


def reader_keys(node: BaseNode, stored: StoredChunk | None) -> set[str]:
    """The placement keys a reader (``hit_to_node``) added to a node's metadata.

    Only a node that names a stored chunk by its id (``stored``, found in the store) was read
    back; a reader adds ``doc_id`` / ``chunk_index`` only where that chunk's stored metadata
    has no key of that name, with the chunk's placement as value, hidden from the embedding
    model and the LLM. A key is the reader's when all of that holds; any other key (a new
    node's own ``chunk_index``, hidden or not) is the user's and is stored.
    """
    if stored is None:
        return set()
    placement = {DOC_ID_KEY: node.ref_doc_id or node.node_id, CHUNK_INDEX_KEY: stored.index}
    keys: set[str] = set()
    for key, value in placement.items():
        if (
            key in node.metadata
            and key not in stored.metadata
            and key in node.excluded_embed_metadata_keys
            and key in node.excluded_llm_metadata_keys
            and node.metadata[key] == value
            and not isinstance(node.metadata[key], bool)
        ):
            keys.add(key)
    return keys


#: What a stored node keeps beside its text, metadata and offsets (``ChunkRecord.extra``), so
#: reading it back gives the node LlamaIndex wrote: its class, relationships (previous / next
#: for ``PrevNextNodePostprocessor``), the metadata keys hidden from the embedding model and
#: the LLM, its templates, and its class's own fields (an ``IndexNode``'s ``index_id``, an
#: ``ImageNode``'s image, a ``Node``'s media resources:
#: :data:`~llamaindex_m3.node_classes.CLASS_FIELDS`).
NODE_FIELDS = (
    "class_name",
    "relationships",
    "excluded_embed_metadata_keys",
    "excluded_llm_metadata_keys",
    "metadata_template",
    "metadata_separator",
    "text_template",
    "mimetype",
    *CLASS_FIELDS,
)


def node_extra(node: BaseNode, stored: StoredChunk | None = None) -> dict[str, Any]:
    """The :data:`NODE_FIELDS` of a node, as JSON.

    Values JSON cannot hold (a date in the source document's metadata, which relationships
    carry) are written as LlamaIndex's JSON mode writes them, else as ``str``; an
    ``IndexNode``'s live ``obj`` is not kept. The placement keys a reader added
    (:func:`reader_keys`; ``stored`` as there) are not kept in the lists of hidden keys.
    """
    if isinstance(node, IndexNode):
        node = node.model_copy(update={"obj": None})
    data = node.model_dump(mode="json", fallback=str)
    data["class_name"] = node.class_name()
    added = reader_keys(node, stored)
    for name in ("excluded_embed_metadata_keys", "excluded_llm_metadata_keys"):
        if added and isinstance(data.get(name), list):
            data[name] = [k for k in data[name] if k not in added]
    return {**{k: data[k] for k in NODE_FIELDS if k in data}, **class_fields(data)}


def read_back_index(node: BaseNode, stored: StoredChunk | None) -> int | None:
    """The stored chunk a node was read back from (``hit_to_node``), else ``None``.

    Such a node names the chunk by its id (``stored``) and carries placement keys the reader
    added (:func:`reader_keys`).
    """
    if stored is not None and reader_keys(node, stored):
        return stored.index
    return None


def node_chunk_record(
    doc_id: str,
    chunk_index: int,
    node: BaseNode,
    vectors: M3Output,
    *,
    doc_hash: str,
    chunk_count: int,
    chunk_id: str,
    stored: StoredChunk | None = None,
    encoded: str | None = None,
) -> ChunkRecord:
    """A node as its chunk record: the one place both write paths build it.

    ``M3Retriever`` (:func:`node_record`) and ``M3VectorStore``
    (:mod:`llamaindex_m3.node_writes`) differ only in the document version, chunk count and
    chunk id they store, given here.

    Args:
        doc_id: The node's document.
        chunk_index: Its position among its document's chunks.
        node: The node (its bare text, span, metadata and node fields are stored).
        vectors: Its vectors (one row).
        doc_hash: The version of its document.
        chunk_count: How many chunks its document has.
        chunk_id: The id stored for the chunk.
        stored: The stored chunk the node names by its id, if any (:func:`node_metadata`).
        encoded: The text its vectors were encoded on (:func:`embed_text`; ``None`` for a
            late-chunked node, whose vectors were pooled from its document).

    A node encoded here (not late-chunked) is recorded as chunked ``{"kind": "nodes"}``
    (:data:`~m3kit.store.records.NODES_KIND`): a reindex encodes it alone again, from
    ``encoded_text`` (else its text). A late-chunked node records a custom chunking naming
    the parser (:func:`~llamaindex_m3.late_nodes.late_node_chunking`): its vectors were pooled
    from its document, whose text is not stored whole, so a reindex refuses its document.
    """
    return ChunkRecord(
        doc_id=doc_id,
        chunk_index=chunk_index,
        text=node.get_content(metadata_mode=MetadataMode.NONE),
        metadata=node_metadata(node, stored),
        vectors=vectors,
        start=node.start_char_idx if isinstance(node, TextNode) else None,
        end=node.end_char_idx if isinstance(node, TextNode) else None,
        doc_hash=doc_hash,
        chunk_count=chunk_count,
        chunk_id=chunk_id,
        extra=node_extra(node, stored),
        encoded_text=other_encoded_text(node, encoded),
        chunking=late_node_chunking(late_record(node) or {})
        if is_late(node)
        else {"kind": NODES_KIND},
    )


def node_record(
    doc_id: str,
    chunk_index: int,
    node: BaseNode,
    vectors: M3Output,
    versions: Mapping[str, str],
    group: Sequence[tuple[int, BaseNode]],
    stored: StoredChunk | None = None,
    encoded: str | None = None,
) -> ChunkRecord:
    """One node of a document's node ``group`` as a chunk record with its vectors.

    The version is ``versions[doc_id]``, the chunk count the group's size, the chunk id the
    node's id; ``stored`` and ``encoded`` as in :func:`node_chunk_record`.
    """
    return node_chunk_record(
        doc_id,
        chunk_index,
        node,
        vectors,
        doc_hash=versions[doc_id],
        chunk_count=len(group),
        chunk_id=node.node_id,
        stored=stored,
        encoded=encoded,
    )
