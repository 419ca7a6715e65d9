"""The document prefix a collection's vectors were encoded with (LlamaIndex's ``text_instruction``).

An ``llamaindex_m3.M3Embedding`` can prepend a ``text_instruction`` to every document it
encodes (never to queries), and the LlamaIndex stores encode their documents after it. The
other writers (``langchain_m3``, ``llamaindex_m3.M3Retriever``, ``m3kit index``,
:meth:`M3Index.add_texts <m3kit.store.M3Index.add_texts>`) never prefix. A collection holding
both prefixed and bare document vectors is searched with queries compared against vectors of
two kinds: rankings silently wrong. So the collection records its document prefix (key
:data:`RECORD_KEY` of its m3kit record; ``""``: none, which ``None`` also means), and a write
with another prefix is refused (``ValueError`` naming both and the way out), nothing written
(a collection emptied by ``clear()`` or deletes forgets its prefix: the next write by an
encoder's store records its own, as a sparse cut is taken):
:meth:`M3Store.upsert <m3kit.store.M3Store.upsert>` takes the writer's prefix and checks it
against the record it reads before every write (:mod:`m3kit.store.record_check`).

A collection without the key (new, or written by an m3kit from before it was recorded) is
recorded at its next write: with no prefix when that is provably what wrote it (no chunk
stored with an ``encoded_text``, and every chunk stamped with its sparse cut, so written or
re-encoded by an m3kit that stores one: a writer that prefixes stores the text it encoded,
prefix included, with every chunk it encodes), else with that write's prefix (the first
writer's prefix is adopted; if another one wrote the collection, write it again). Chunks
none of which has an ``encoded_text`` and some no stamp (an m3kit from before it stored that
text or another program wrote them, or the collection has no sparse vectors to stamp) cannot
tell whether they were prefixed: a write with a prefix is refused, nothing recorded, until
:func:`record_prefix` records the one the collection was written with (a write without one
records none: nothing tells otherwise). A plain :class:`~m3kit.store.M3Store` (no
encoder) is checked against a recorded prefix but records none. Reads are not checked: a
query is encoded alike whatever the documents' prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qdrant_client import models

from m3kit.store.schema import ENCODED_TEXT, SPARSE_CUT

if TYPE_CHECKING:
    from m3kit.store.store import M3Store

__all__ = [
    "RECORD_KEY",
    "check_prefix",
    "check_stored_prefix",
    "describe_prefix",
    "encoded_filter",
    "prefix_mismatch",
    "prefix_to_record",
    "record_prefix",
    "settle_prefix",
    "unstamped_filter",
]

logger = logging.getLogger(__name__)

#: Key of the document prefix in a collection's m3kit record (and in a stock-layout record).
RECORD_KEY = "text_instruction"


def describe_prefix(prefix: str | None) -> str:
    """``"no document prefix"`` or ``"the document prefix 'passage: '"``."""
    return f"the document prefix {prefix!r}" if prefix else "no document prefix"


def prefix_mismatch(collection: str, recorded: str | None, given: str | None) -> str:
    """Why a write with the prefix ``given`` into a collection of ``recorded`` is refused."""
    way = (
        f"text_instruction={recorded!r} on the LlamaIndex M3Embedding / store"
        if recorded
        else "text_instruction=None on the LlamaIndex M3Embedding / store"
    )
    also = (
        " (langchain_m3, M3Retriever and m3kit index never prefix: write this collection "
        "through a LlamaIndex store with its prefix)"
        if recorded
        else ""
    )
    return (
        f"collection {collection!r} holds document vectors encoded with "
        f"{describe_prefix(recorded)}; this writer encodes documents with "
        f"{describe_prefix(given)}: the collection would hold prefixed and bare document "
        f"vectors, and queries would rank both kinds together; nothing was written. Write it "
        f"with {way}{also}, or write the documents again with this prefix into a new collection"
    )


def check_prefix(collection: str, meta: Mapping[str, Any], given: str | None) -> None:
    """Refuse ``given`` when the record ``meta`` names another document prefix (a record
    without one: not checked).

    Raises:
        ValueError: Another prefix is recorded (names both).
    """
    if _differs(meta, given):
        raise ValueError(prefix_mismatch(collection, str(meta[RECORD_KEY]), given))


def _differs(meta: Mapping[str, Any], given: str | None) -> bool:
    """Whether the record ``meta`` names another document prefix than ``given``."""
    recorded = meta.get(RECORD_KEY)
    return recorded is not None and str(recorded) != (given or "")


def check_stored_prefix(store: M3Store, given: str | None) -> None:
    """Refuse a writer of the document prefix ``given`` up front (before its first write)
    when the collection records another and holds chunks (an emptied one takes the next
    write's prefix: :func:`settle_prefix`).

    Raises:
        ValueError: Another prefix is recorded and chunks are stored (names both).
    """
    meta = store.collection_metadata()
    if _differs(meta, given) and store.count() > 0:
        check_prefix(store.collection, meta, given)


def encoded_filter() -> models.Filter:
    """The chunks stored with an ``encoded_text`` (a writer that prefixes stores one)."""
    return models.Filter(
        must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=ENCODED_TEXT))]
    )


def unstamped_filter() -> models.Filter:
    """The chunks without a sparse-cut stamp (an m3kit from before it stored ``encoded_text``
    may have written them; every chunk of a collection without sparse vectors)."""
    return models.Filter(
        must=[models.IsEmptyCondition(is_empty=models.PayloadField(key=SPARSE_CUT))]
    )


def prefix_to_record(
    collection: str, chunks: int, encoded: int, unstamped: int, given: str | None
) -> str:
    """The document prefix to record for a collection whose record names none (see the module
    doc), holding ``chunks`` chunks, ``encoded`` of them matching :func:`encoded_filter` and
    ``unstamped`` :func:`unstamped_filter`, before a write with the prefix ``given``: none
    when no writer can have prefixed them, else ``given`` (the first writer's, adopted:
    logged when the collection holds chunks).

    Raises:
        ValueError: ``given`` is a prefix, and the chunks cannot tell whether they were
            prefixed (none has an ``encoded_text``, some no stamp): :func:`record_prefix`.
    """
    prefix = given or ""
    if chunks and not encoded:
        if not unstamped:
            return ""  # every chunk was encoded on its stored text: no writer prefixed it
        if prefix:
            raise ValueError(
                f"collection {collection!r} has no record of the document prefix its vectors "
                "were encoded with, and its chunks cannot tell it: none stores the text it "
                "was encoded on, as a writer that prefixes now does, but an m3kit from before "
                "that, or another program, may have written them, with a text_instruction or "
                f"without; this writer encodes documents with {describe_prefix(prefix)}, and "
                "recording it on a guess could leave prefixed and bare document vectors side "
                "by side; nothing was written. Record the prefix the collection was written "
                "with once, then write again: m3kit.store.doc_prefix.record_prefix(store, "
                f"{prefix!r}) (or record_prefix(store, None): written without one) on its "
                "M3Store (M3Index.open(encoder, ...).store, a LlamaIndex M3VectorStore's "
                ".client.store)"
            )
    if chunks:
        logger.info(
            "collection %r has no record of its document prefix: recording %s, this "
            "writer's; if another prefix wrote it, write it again",
            collection,
            describe_prefix(prefix),
        )
    return prefix


def record_prefix(store: M3Store, prefix: str | None) -> None:
    """Record that the collection's document vectors were encoded with ``prefix`` (``None`` or
    ``""``: none), where its record names none: its chunks cannot tell (see the module doc),
    and a write with a prefix is refused until it is recorded.

    Raises:
        ValueError: The collection records another prefix (names both).
    """
    now = store.collection_metadata()
    check_prefix(store.collection, now, prefix)
    if RECORD_KEY not in now:
        store.set_collection_metadata({**now, RECORD_KEY: prefix or ""})


def settle_prefix(store: M3Store, meta: Mapping[str, Any], given: str | None) -> None:
    """Check ``given`` against the collection's record ``meta`` (read before this write), and
    record a prefix where the record has none (see the module doc); a plain
    :class:`~m3kit.store.M3Store` (no encoder: its caller made the vectors) records none.

    Raises:
        ValueError: The collection records, or provably holds, another prefix; or its
            chunks cannot tell it and ``given`` is a prefix (:func:`prefix_to_record`).
    """
    if _differs(meta, given) and store.writer_id is not None and store.count() == 0:
        # emptied (clear(), every document deleted): this write is its first, as for a
        # sparse cut, and records this writer's prefix (a plain store records none: it is
        # still refused, or its vectors would go unrecorded)
        logger.info(
            "collection %r holds no chunk: recording %s (%s was recorded)",
            store.collection,
            describe_prefix(given),
            describe_prefix(str(meta[RECORD_KEY])),
        )
        store.set_collection_metadata({**store.collection_metadata(), RECORD_KEY: given or ""})
        return
    check_prefix(store.collection, meta, given)
    if RECORD_KEY in meta or store.writer_id is None:  # a plain store's vectors: its caller's
        return
    chunks = store.count()
    encoded = store.count(encoded_filter()) if chunks else 0
    unstamped = store.count(unstamped_filter()) if chunks and not encoded else 0
    prefix = prefix_to_record(store.collection, chunks, encoded, unstamped, given)
    now = store.collection_metadata()  # (read again: what changed since is kept)
    if RECORD_KEY not in now:
        store.set_collection_metadata({**now, RECORD_KEY: prefix})
    check_prefix(store.collection, {RECORD_KEY: now.get(RECORD_KEY, prefix)}, given)
