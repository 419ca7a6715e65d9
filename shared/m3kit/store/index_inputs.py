"""What :class:`~m3kit.store.M3Index` checks on the way in: an encoder, and texts to write.

Split from :mod:`m3kit.store.index`: :func:`check_encoder_fits` is the check of
``M3Index(encoder, store)``; :func:`versioned_documents` turns the arguments of
:meth:`~m3kit.store.M3Index.add_texts` into documents with their ids and versions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from m3kit.fingerprint import chunking_signature
from m3kit.outputs import Head
from m3kit.store.documents import _Chunker, _chunking, _Doc, content_doc_id
from m3kit.store.filters import doc_id_text
from m3kit.store.metadata_updates import version_hash, with_extra
from m3kit.store.metadata_values import iso_values
from m3kit.store.points import check_text, plain_json

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder
    from m3kit.store.store import M3Store

__all__ = ["check_encoder_fits", "versioned_documents"]


def check_encoder_fits(encoder: M3Encoder, store: M3Store) -> None:
    """Check that ``encoder`` gives every vector ``store`` holds, at the store's sizes.

    Raises:
        ValueError: The store expects dimensions or heads the encoder does not give.
    """
    if encoder.dense_dim != store.schema.dense_dim:
        raise ValueError(
            f"encoder dense size {encoder.dense_dim} != store's {store.schema.dense_dim}"
        )
    missing = store.heads - encoder.available_heads
    if missing:
        raise ValueError(
            f"the store holds {sorted(h.value for h in missing)} vectors this encoder "
            "cannot produce"
        )
    if Head.COLBERT in store.heads and encoder.colbert_dim != store.schema.colbert_dim:
        raise ValueError(
            f"encoder ColBERT size {encoder.colbert_dim} != store's {store.schema.colbert_dim}"
        )


def versioned_documents(
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any] | None] | None,
    doc_ids: Sequence[str | int] | None,
    chunker: _Chunker | None,
    *,
    first: int = 0,
    extras: Sequence[Mapping[str, Any] | None] | None = None,
) -> tuple[list[str], list[_Doc]]:
    """The document id of each text (input order) and the distinct documents, versioned.

    A document's version (``doc_hash``) covers its text, metadata and ``chunker``'s signature,
    and its ``extras`` entry where one is given (JSON its writer keeps with its chunks,
    :attr:`~m3kit.store.ChunkRecord.extra`); its id is the one given, else
    :func:`~m3kit.store.documents.content_doc_id`. ``first`` is
    the position of ``texts[0]`` in the caller's input (messages name positions in it: the
    Ray pipeline checks its input in groups).

    Raises:
        TypeError: ``texts`` or ``doc_ids`` is a single string, or ``texts`` holds a
            non-string; an id is neither a str nor an int (an int is stored as its digits:
            ``7`` is the id ``"7"``); a metadata is neither a mapping nor ``None``.
        ValueError: Lengths differ, an empty or ``None`` id, an id or text that is not
            UTF-8 text, metadata that is not JSON-serialisable, or an id given twice with
            different content.
    """
    signature = chunking_signature(chunker)
    chunking = _chunking(chunker, signature)
    if isinstance(texts, str):
        raise TypeError("add_texts takes a sequence of texts, not a single string")
    if isinstance(doc_ids, str):  # (its characters were taken for the ids)
        raise TypeError(f"doc_ids is a sequence of ids, not a single string: use [{doc_ids!r}]")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("every text must be a str")
    if metadatas is not None and len(metadatas) != len(texts):
        raise ValueError(f"{len(metadatas)} metadatas for {len(texts)} texts")
    if doc_ids is not None and len(doc_ids) != len(texts):
        raise ValueError(f"{len(doc_ids)} doc_ids for {len(texts)} texts")
    if extras is not None and len(extras) != len(texts):
        raise ValueError(f"{len(extras)} extras for {len(texts)} texts")
    if doc_ids is not None and any(d is None for d in doc_ids):
        i = first + [d is None for d in doc_ids].index(True)
        raise ValueError(
            f"doc_ids[{i}] is None: give every text an id, or no doc_ids (content ids)"
        )
    ids = None
    if doc_ids is not None:
        ids = [doc_id_text(d, f"doc_ids[{first + i}]") for i, d in enumerate(doc_ids)]
    if ids is not None and not all(ids):
        raise ValueError("doc_ids must be non-empty strings")
    for i, doc_id in enumerate(ids or ()):  # Qdrant keeps ids as UTF-8, as it keeps texts
        check_text(doc_id, f"doc_ids[{first + i}] ({doc_id!r})")
    order: list[str] = []
    docs: dict[str, _Doc] = {}
    for i, text in enumerate(texts):
        meta = _metadata(metadatas[i], first + i) if metadatas is not None else {}
        # refused here, before anything is encoded or written, not by Qdrant mid-write
        check_text(text, f"text {first + i}")
        plain = plain_json(meta, f"metadata of text {first + i}")
        doc_id = ids[i] if ids is not None else content_doc_id(text, meta)
        given = extras[i] if extras is not None else None
        # {}: its writer keeps nothing (None: a writer that knows of no extras, see unstored)
        extra = None if given is None else plain_json(dict(given), f"extra of text {first + i}")
        versioned = with_extra(signature, extra)
        version = version_hash(text, meta, plain, versioned)
        doc = _Doc(doc_id, text, meta, version, chunking, extra, signature)
        seen = docs.get(doc_id)
        if seen is not None and seen.doc_hash != doc.doc_hash:
            raise ValueError(f"doc_id {doc_id!r} is given twice with different content")
        docs[doc_id] = doc
        order.append(doc_id)
    return order, list(docs.values())


def _metadata(value: object, position: int) -> dict[str, Any]:
    """The metadata of the text at ``position``: a mapping, or ``None`` for none; dates,
    times and UUIDs in it become the strings qdrant-client stores for them.

    Raises:
        TypeError: Anything else (``0``, ``False``, ``""``, a list of pairs), which was read
            as no metadata (or a ``dict()`` of pairs) and stored without a word.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"metadata of text {position} must be a mapping (or None for none), not "
            f"{type(value).__name__} {value!r:.60}"
        )
    # dates, times and UUIDs as qdrant-client writes them
    return iso_values(value, f"metadata of text {position}")
