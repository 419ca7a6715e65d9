"""Documents whose metadata alone changed are updated in place, not encoded again.

A document's version (``doc_hash``) covers its text, metadata and chunking, so a new value of
one metadata key made :meth:`~m3kit.store.M3Index.add_texts` encode the whole document again,
though its vectors depend on the text and chunking only. ``m3kit index`` hit this on every
row below a row inserted into or removed from a jsonl file (each row's ``line`` moves): all
49 rows after the first of 50 were encoded again. Now a document stored whole at one
version, whose stored metadata with the new text and chunking gives that version back, is
given the new metadata and version in place (conditioned on the old version, so a writer
that replaced it meanwhile is never overwritten: that document is left as that writer
stored it). The update is written after the call's encoded documents, and the collection's
record is checked first, as for every write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from m3kit.store.cancelling import holding

if TYPE_CHECKING:
    from m3kit.store.documents import _Doc
    from m3kit.store.index import M3Index
    from m3kit.store.store_reads import StoredVersion

__all__ = [
    "Moves",
    "keeping_stored_extras",
    "metadata_only",
    "unstored",
    "update_in_place",
    "version_hash",
]


def version_hash(text: str, metadata: Any, plain: Any, signature: str) -> str:
    """A document's version: its text, metadata (as given, else ``plain``, its stored JSON
    form, when the keys cannot be sorted) and chunking signature.

    >>> version_hash("t", {"a": 1}, {"a": 1}, "") == version_hash("t", {"a": 1}, {"a": 1}, "")
    True
    """
    try:  # the mapping as given: the hash documents stored before were written with
        blob = json.dumps([text, metadata, signature], sort_keys=True)
    except TypeError:  # mixed int / str keys cannot be sorted: its stored form can
        blob = json.dumps([text, plain, signature], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def with_extra(signature: str, extra: Mapping[str, Any] | None) -> str:
    """The chunking ``signature`` a document's version covers, with what its writer keeps
    with its chunks (``extra``; none: the signature as it is, so the versions of documents
    written without one are unchanged).

    >>> with_extra("sig", None), with_extra("sig", {"b": 1, "a": [2]})
    ('sig', 'sig; extra {"a": [2], "b": 1}')
    """
    if not extra:
        return signature
    return f"{signature}; extra {json.dumps(extra, sort_keys=True)}"


#: ``{doc_id: (stored doc_hash, new doc_hash, new metadata)}`` of documents to update in place.
Moves = dict[str, tuple[str, str, Mapping[str, Any]]]


def unstored(docs: Sequence[_Doc], stored: Mapping[str, StoredVersion]) -> list[_Doc]:
    """``docs`` not stored whole at their version (``stored``: from
    :meth:`~m3kit.store.M3Store.stored_versions`), in order, each taken as
    :func:`keeping_stored_extras` takes it.

    A document given without ``extra`` (a writer that keeps none: LangChain re-adding a
    document another writer stored with one) is stored when its text, metadata and chunking
    with the stored ``extra`` give the stored version: unchanged, it is not rewritten without
    what the other writer kept; edited, it is written with it.
    """
    out = []
    for d in keeping_stored_extras(docs, stored):
        v = stored.get(d.doc_id)
        if v is None or v.doc_hash != d.doc_hash:
            out.append(d)
    return out


def _plain(metadata: Mapping[str, Any]) -> Any:
    from m3kit.store.points import plain_json  # (it imports this module's importers)

    return plain_json(metadata, "metadata")


def keeping_stored_extras(docs: Sequence[_Doc], stored: Mapping[str, StoredVersion]) -> list[_Doc]:
    """``docs``, each that brings no ``extra`` while its stored version has one (a writer that
    keeps none: LangChain replacing the text of a document LlamaIndex stored) given the
    stored one, its version with it: an edit keeps what the other writer kept (a LlamaIndex
    document's hidden keys and templates), and an unchanged document is the stored version."""
    out = []
    for d in docs:
        v = stored.get(d.doc_id)
        if v is not None and d.extra is None and v.extra:
            plain = _plain(d.metadata)
            versioned = with_extra(d.signature, v.extra)
            d = dataclasses.replace(
                d, extra=v.extra, doc_hash=version_hash(d.text, d.metadata, plain, versioned)
            )
        out.append(d)
    return out


def metadata_only(
    index: M3Index, docs: Sequence[_Doc], signature: str, stored: Mapping[str, StoredVersion]
) -> tuple[Moves, list[_Doc]]:
    """Split ``docs`` (not stored at their version) into those whose stored version differs
    in metadata only, to update in place, and the others, to encode (in order). Nothing is
    written; the new metadata is checked (JSON, payload indexes) so that a refusal comes
    before the caller writes anything.

    Args:
        index: The index writing ``docs``.
        docs: Documents :meth:`~m3kit.store.M3Index.pending` found not stored at their
            version.
        signature: The chunking signature their versions were computed with.
        stored: Their stored versions, from the same lookup
            (:meth:`~m3kit.store.M3Store.stored_versions`).

    Raises:
        ValueError: As :meth:`~m3kit.store.M3Store.metadata_operations`.
    """
    if not docs:
        return {}, []
    moves: Moves = {}
    for d in docs:
        old = stored.get(d.doc_id)
        if old is None or old.metadata is None:
            continue
        old_hash, old_meta = old.doc_hash, old.metadata
        # (a document that brings no extra carries the stored one: unstored())
        versioned = with_extra(signature, d.extra)
        # the new text and chunking with the stored metadata give the stored version back:
        # text and chunking are unchanged (so are the vectors); only the metadata differs
        if version_hash(d.text, old_meta, old_meta, versioned) == old_hash:
            moves[d.doc_id] = (old_hash, d.doc_hash, d.metadata)
    index.store.metadata_operations(moves)  # checked now, before anything is written
    return moves, [d for d in docs if d.doc_id not in moves]


def update_in_place(index: M3Index, moves: Moves) -> None:
    """Write ``moves`` (from :func:`metadata_only`), after the caller's encoded writes: a
    document refused there leaves these unwritten too."""
    if not moves:
        return
    with holding(index.store.write_lock):  # an aadd_texts cancelled meanwhile: not written
        index.check_encoder()  # under the lock, as every write of the index
        index.store.set_document_metadata(moves)
