"""Refusing to go on when another object or process changed the collection under a store.

A collection records its encoder and sparse cut (:mod:`m3kit.store.collection_record`,
:mod:`m3kit.store.sparse_cut`), checked when an index or store opens it. Another store object
on the same collection (another process on the same server or folder, or an ``M3Store``
opened again) may re-encode it with another encoder or change its cut afterwards, while this
one still holds the encoder and cut it opened with. Then:

- every write (:meth:`M3Store.upsert <m3kit.store.M3Store.upsert>`) re-reads the record first
  (:func:`check_record`: one metadata read per call, a file read or one request) and is
  refused, nothing written, when the record no longer names this store's encoder (or a
  reindex to another encoder is under way) or its sparse cut (or a change of it is);
- a search reads the record only once the last read is
  :data:`~m3kit.store.stock_record.RECHECK_SECONDS` old (a request per search would cost too
  much; a change whose chunks rank no hit, a reindex part-way, is seen then); every search
  checks the stamps of its hits (payload ``encoder_id`` and ``sparse_cut``, fetched with every
  hit anyway), before a ``score_threshold`` drops any: they must be this store's encoder and
  cut (:func:`check_hits`); a hit stamped otherwise means the collection changed, and the
  search raises instead of returning results ranked across two encoders or cuts. Unstamped
  points (written before m3kit stamped them) count as this store's.

Either way the error names what changed and says to open the collection again. A change this
store object makes itself (an index opened on it with ``reindex=True``) updates its own
encoder and cut, and its writes meanwhile are not checked (:func:`own_change`): the reindex
reads and writes the record itself. The check and the write are two requests, so a change
landing between them is still possible; the reindex's final checks and the next open see what
such a write stored (:mod:`m3kit.store.cut_stamps`, :mod:`m3kit.store.encoder_stamps`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from m3kit.errors import FingerprintMismatchError
from m3kit.store.schema import ENCODER_ID, SPARSE_CUT
from m3kit.store.sparse_cut import PENDING_KEY, RECORD_KEY, SparseCut, unfinished_message

if TYPE_CHECKING:
    from m3kit.fingerprint import EncoderFingerprint
    from m3kit.store.store import M3Store

__all__ = ["check_hits", "check_record", "check_write", "own_change"]

_AGAIN = (
    "Open the collection again (M3Index.open / M3Store.open) to use it as it is now; this "
    "object cannot be brought up to date"
)


@contextlib.contextmanager
def own_change(store: M3Store) -> Iterator[None]:
    """Inside: ``store`` is being settled or re-encoded by an index opening on it, whose
    writes are not checked against the record (it keeps the record itself)."""
    store._own_change += 1
    try:
        yield
    finally:
        store._own_change -= 1


def check_record(store: M3Store, outcome: str = "nothing was written") -> None:
    """Refuse to go on when the collection's record no longer matches ``store``'s encoder
    (:attr:`M3Store.writer_id`; none for a plain store: not checked) and sparse cut.

    Args:
        store: The store about to write (or whose search found a foreign stamp).
        outcome: What was not done, for the message (``"nothing was written"``).

    Raises:
        FingerprintMismatchError: The record names another encoder, or a reindex to another
            encoder is under way.
        ValueError: The record names another sparse cut, or a change to another cut is under
            way.
    """
    _check(store, outcome)


def check_write(store: M3Store, text_instruction: str | None = None) -> None:
    """:func:`check_record` before a write, and the writer's document prefix against the one
    the collection records (recorded if it records none: :mod:`m3kit.store.doc_prefix`),
    with the same read of the record.

    Raises:
        FingerprintMismatchError: As :func:`check_record`.
        ValueError: As :func:`check_record`; or the collection records another document
            prefix (``text_instruction``) than ``text_instruction`` (``None``: none).
    """
    from m3kit.store.collection_record import write_pending_record
    from m3kit.store.doc_prefix import settle_prefix

    meta = _check(store, "nothing was written")
    if meta is not None:  # (a reindex writes what each chunk's writer encoded, prefix kept)
        settle_prefix(store, meta, text_instruction)
        write_pending_record(store)  # (it reads the record settle_prefix may have written)


def _check(store: M3Store, outcome: str) -> Mapping[str, Any] | None:
    """:func:`check_record`'s checks on one read of the record, returned (``None``: not read,
    ``store``'s own change is under way)."""
    if store._own_change:
        return None
    meta = store.collection_metadata()
    _check_encoder(store, meta, outcome)
    _check_cut(store, meta, outcome)
    return meta


def _check_encoder(store: M3Store, meta: Mapping[str, Any], outcome: str) -> None:
    from m3kit.store.collection_record import _read, unfinished_reindex_message

    mine = store.writer_id
    if mine is None:  # a plain store: its vectors' encoder is its caller's
        return
    stored, pending = _read(store, meta)
    if pending is not None and not _names_writer(pending, store):
        unfinished = unfinished_reindex_message(store.collection, stored or pending, pending)
        raise FingerprintMismatchError(
            "since this store was opened, another index or process started re-encoding the "
            f"collection: {unfinished}. This store's encoder is {store.writer_name} (identity "
            f"{mine}); {outcome}. {_AGAIN}"
        )
    if pending is None and stored is not None and not _names_writer(stored, store):
        raise FingerprintMismatchError(
            f"collection {store.collection!r} was re-encoded by another index or process since "
            f"this store was opened: it now records {stored.describe()} (identity "
            f"{stored.identity}), not this store's encoder, {store.writer_name} (identity "
            f"{mine}), so this store's vectors would be stored or compared as another "
            f"encoder's; {outcome}. {_AGAIN}: with the encoder it records, or with this one "
            "and reindex=True (m3kit index --reindex) to re-encode it back"
        )


def _names_writer(recorded: EncoderFingerprint, store: M3Store) -> bool:
    """Whether ``recorded`` names the encoder ``store`` writes as: its identity is the
    writer's, or the record lacks ``architecture`` (an m3kit from before it was part of the
    identity wrote it, over this m3kit's record of the same encoder, when its precision or
    model path differed) and names the writer's identity without it."""
    if recorded.made(store.writer_id or ""):
        return True
    return recorded.architecture is None and recorded.identity in store.writer_ids


def _check_cut(store: M3Store, meta: Mapping[str, Any], outcome: str) -> None:
    if not store.schema.sparse:
        return
    mine = store.sparse_cut or SparseCut()
    recorded = SparseCut.from_record(meta[RECORD_KEY]) if RECORD_KEY in meta else SparseCut()
    if PENDING_KEY in meta:
        pending = SparseCut.from_record(meta[PENDING_KEY])
        if pending != mine:
            raise ValueError(
                "since this store was opened, another index or process started changing the "
                f"sparse cut: {unfinished_message(store.collection, recorded, pending)}. This "
                f"store cuts with {mine.describe()}; {outcome}. {_AGAIN}"
            )
    elif recorded != mine:
        raise ValueError(
            f"collection {store.collection!r} now records {recorded.describe()}: its sparse "
            "cut was changed by another index or process since this store was opened, and "
            f"this store cuts with {mine.describe()}, so chunks and queries would be cut two "
            f"ways; {outcome}. {_AGAIN}: without a cut, the recorded one is used"
        )


def check_hits(store: M3Store, payloads: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a search whose hits are stamped with another encoder or sparse cut than
    ``store``'s: the collection changed under it (no record is read unless one is).

    Raises:
        FingerprintMismatchError: A hit of another encoder (the record says whether the
            collection was re-encoded, or a writer of another encoder wrote it).
        ValueError: A hit of another sparse cut (likewise), or of either while an index
            opening on ``store`` re-encodes the collection.
    """
    ids = store.writer_ids
    cut = (store.sparse_cut or SparseCut()).stamp() if store.schema.sparse else None
    strangers = {p.get(ENCODER_ID) for p in payloads if ids} - {None} - ids
    miscut = {p.get(SPARSE_CUT) for p in payloads if cut is not None} - {None, cut}
    if not strangers and not miscut:
        return
    if store._own_change:
        raise ValueError(
            f"collection {store.collection!r} is being re-encoded through this store (an index "
            "opening on it with reindex=True), so it holds chunks of two encoders or sparse "
            "cuts until that is done; no result was returned. Search again once the index is "
            "opened"
        )
    # re-encoded or recut since the open (raised here), or else a late writer's chunks
    check_record(store, "no result was returned")
    if strangers:
        raise FingerprintMismatchError(
            f"a search of collection {store.collection!r} found chunks stamped with another "
            f"encoder (identity {sorted(map(str, strangers))[0]!r}) than this store's, "
            f"{store.writer_name} (identity {store.writer_id}), which the collection records: "
            "a writer that kept another encoder wrote them (another process, or an index "
            "opened before a reindex), so the search would rank two encoders' vectors; no "
            "result was returned. Stop that writer, then open the collection with its "
            "recorded encoder and reindex=True (m3kit index --reindex): the chunks of other "
            "encoders are re-encoded"
        )
    from m3kit.store.cut_stamps import miscut_count, miscut_message

    recorded = store.sparse_cut or SparseCut()
    raise ValueError(
        "a search found chunks cut with another sparse cut than this store's; no result was "
        f"returned: {miscut_message(store, recorded, max(miscut_count(store, recorded), 1))}"
    )
