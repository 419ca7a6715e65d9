"""Documents as the store sees them: ids, versions, chunking records and chunk records.

:func:`content_doc_id` is the default id rule of :class:`~m3kit.store.index.M3Index`;
:func:`build_records` turns chunked documents into the :class:`ChunkRecord` rows a store writes
(used by ``M3Index`` and by the Ray pipeline).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from inspect import signature
from typing import TYPE_CHECKING, Any, Protocol

from m3kit.outputs import Chunk, Head
from m3kit.store.metadata_values import iso_values, sorted_json
from m3kit.store.records import ChunkRecord, output_row

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder, Truncation

__all__ = ["TEXT_LENGTH", "build_records", "check_chunker_encoder", "content_doc_id"]

#: Key of a chunked document's stored chunking giving its text's length, recorded when text
#: follows its last chunk (a reindex cannot rebuild such a document from its chunk texts).
TEXT_LENGTH = "text_length"


class _Chunker(Protocol):
    def chunk(self, texts: Sequence[str]) -> list[list[Chunk]]: ...


def _chunk(chunker: _Chunker, texts: Sequence[str], show_progress: bool | None) -> Any:
    """``chunker.chunk(texts)``, with ``show_progress`` when its ``chunk`` takes it (m3kit's
    chunkers do; a user's own chunker written to the plain ``chunk(texts)`` need not)."""
    if show_progress is not None and "show_progress" in signature(chunker.chunk).parameters:
        return chunker.chunk(texts, show_progress=show_progress)  # type: ignore[call-arg]
    return chunker.chunk(texts)


def content_doc_id(text: str, metadata: Mapping[str, Any] | None = None) -> str:
    """The default document id: a hash of the text and the metadata (sha256, 32 hex digits).

    Without metadata (``None`` or empty) it hashes the text alone, as m3kit always did, so
    documents stored without metadata keep their ids. With metadata it hashes the canonical
    JSON ``[text, metadata]`` (keys sorted), so the same text with other metadata is another
    document.

    >>> content_doc_id("hello")
    '2cf24dba5fb0a30e26e83b2ac5b9e29e'
    >>> content_doc_id("hello", {"lang": "en"}) != content_doc_id("hello", {"lang": "de"})
    True
    >>> content_doc_id("hello", {"a": 1, "b": 2}) == content_doc_id("hello", {"b": 2, "a": 1})
    True

    A text without metadata that is exactly such a JSON blob (a record serialised as text) is
    hashed with a tag, so it never shares the id of the text and metadata it spells:

    >>> content_doc_id('["hello",{"a":1}]') != content_doc_id("hello", {"a": 1})
    True

    Raises:
        ValueError: The metadata is not JSON-serialisable.
    """
    if not metadata:
        # a text that is itself the blob of another text with metadata is tagged, so the two
        # documents never share an id (one would silently replace the other)
        blob = _TEXT_TAG + text if _is_metadata_blob(text) else text
    else:
        try:
            blob = _metadata_blob(text, iso_values(metadata))
        except TypeError as exc:
            raise ValueError(f"metadata is not JSON-serialisable: {exc}") from None
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


#: Put before a text without metadata that reads as the blob of a text with metadata.
_TEXT_TAG = "m3kit-text:"


def _metadata_blob(text: str, metadata: Any) -> str:
    """The canonical JSON ``[text, metadata]`` :func:`content_doc_id` hashes (keys sorted;
    mixed int / str keys as their JSON strings, :func:`~m3kit.store.metadata_values.sorted_json`,
    so the ids of metadata ``sort_keys`` takes as given are kept: documents stored under them)."""
    return sorted_json([text, metadata], ensure_ascii=False, separators=(",", ":"))


def _is_metadata_blob(text: str) -> bool:
    """Whether ``text`` is exactly what :func:`_metadata_blob` makes of a text with metadata.

    >>> _is_metadata_blob('["hello",{"a":1}]'), _is_metadata_blob('["hello", {"a": 1}]')
    (True, False)
    """
    if not (text.startswith('["') and text.endswith("}]")):
        return False
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], dict)
        and bool(value[1])
        and _metadata_blob(*value) == text
    )


def _chunking(chunker: object | None, signature: str) -> dict[str, Any]:
    """How a chunker cuts documents, as stored with each point (what ``reindex`` redoes)."""
    if chunker is None:
        return {"kind": "whole"}
    from m3kit.late_chunking import LateChunker

    if isinstance(chunker, LateChunker):
        return {
            "kind": "late",
            "window": chunker.window,
            "overlap": chunker.overlap,
            "dense_pooling": chunker.dense_pooling.value,
            "placement": chunker.placement.value,
            "late_heads": sorted(h.value for h in chunker.late_heads),
        }
    kind = type(chunker)
    if (kind.__module__, kind.__qualname__) == ("m3kit.chunking", "NaiveChunker"):
        return {"kind": "naive"}
    return {"kind": "custom", "signature": signature[:300]}


@dataclass(frozen=True)
class _Doc:
    doc_id: str
    text: str
    metadata: Mapping[str, Any]
    doc_hash: str
    chunking: Mapping[str, Any]
    extra: Mapping[str, Any] | None = None  # what its writer keeps with its chunks
    signature: str = ""  # its chunker's (what its version covers, with text and metadata)


def build_records(
    encoder: M3Encoder,
    heads: frozenset[Head],
    docs: Sequence[_Doc],
    chunker: _Chunker | None,
    show_progress: bool | None,
    truncation: Truncation | str = "warn",
) -> tuple[list[ChunkRecord], list[str]]:
    """Encode documents into chunk records (and the ids of documents with no chunk).

    The one place records are built: :meth:`M3Index.add_texts` and the Ray pipeline's
    actors call it.
    """
    texts = [d.text for d in docs]
    records: list[ChunkRecord] = []
    empty: list[str] = []
    if chunker is None:
        from m3kit.chunking import document_token_ids  # late: imports the encoder (torch)

        ids = document_token_ids(encoder, texts, [d.doc_id for d in docs], truncation=truncation)
        out = encoder.encode_tokenized(ids, heads=sorted(heads), show_progress=show_progress)
        for i, d in enumerate(docs):
            records.append(
                ChunkRecord(
                    d.doc_id,
                    0,
                    d.text,
                    d.metadata,
                    output_row(out, i),
                    0,
                    len(d.text),
                    d.doc_hash,
                    1,
                    d.chunking,
                    extra=d.extra,
                )
            )
        return records, empty
    check_chunker_encoder(encoder, chunker)
    per_doc = _chunk(chunker, texts, show_progress)
    if len(per_doc) != len(docs):
        raise ValueError(f"the chunker returned {len(per_doc)} chunk lists for {len(docs)} texts")
    for d, chunks in zip(docs, per_doc, strict=True):
        if not chunks:
            empty.append(d.doc_id)
        chunking = d.chunking
        if chunks and chunks[-1].end != len(d.text):
            # text after the last chunk (a splitter that strips whitespace): its tokens are in
            # the last chunk's vectors but in no chunk's text, so a reindex, which rebuilds
            # the document from its chunk texts, must not redo it (see DocPlan.problem)
            chunking = {**chunking, TEXT_LENGTH: len(d.text)}
        for c in chunks:
            missing = heads - c.vectors.heads
            if missing:
                raise ValueError(
                    f"the chunker gave chunks without {sorted(h.value for h in missing)} "
                    "vectors; build it on an encoder with every head the store holds"
                )
            records.append(
                ChunkRecord(
                    d.doc_id,
                    c.index,
                    c.text,
                    d.metadata,
                    c.vectors,
                    c.start,
                    c.end,
                    d.doc_hash,
                    len(chunks),
                    chunking,
                    extra=d.extra,
                )
            )
    return records, empty


def check_chunker_encoder(encoder: Any, chunker: Any) -> None:
    """A chunker that encodes (``LateChunker``) must use the index's model.

    Its vectors are stored as they come; from another model they would sit in the collection
    under this encoder's fingerprint, and every search would compare them with query vectors
    of another space.

    Raises:
        ValueError: The chunker's encoder is another model (weights, tokenizer, pooling...).
    """
    other = getattr(chunker, "encoder", None)
    if other is None or other is encoder:
        return
    from m3kit.fingerprint import encoder_fingerprint  # late: imports torch

    mine, theirs = encoder_fingerprint(encoder), encoder_fingerprint(other)
    if not mine.same_encoder(theirs):
        fields = ", ".join(f for f, _, _ in mine.differences(theirs))
        raise ValueError(
            f"the chunker encodes with another model than the index's (differs in {fields}); "
            "build it on the index's encoder, e.g. LateChunker(index.encoder)"
        )
