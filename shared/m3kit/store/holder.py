"""Which index a shared :class:`~m3kit.store.M3Store` writes and searches as.

Several :class:`~m3kit.store.M3Index` objects may share one store object (the LangChain and
LlamaIndex adapters do). The store stamps every point it writes with one encoder identity
(:attr:`M3Store.writer_id`) and runs one check before each write and search
(:attr:`M3Store.encoder_check`): those of the index opened on it last, its *holder*
(:func:`take_store`). Indexes of the same encoder identity share the slot and all keep
working. An index opened with another encoder takes the store over for good: it only opens
when it may make the collection its own (an empty collection is recorded for it; a written one
is re-encoded with ``reindex=True``), so every index that held the store before refuses to
write or search from then on (:func:`check_held`), even once the new holder is closed or
dropped, and must be opened again.

Why the writer slot and not the collection's record (what
:mod:`m3kit.store.collection_record` keeps): the slot is checked in memory on every call
(reading the record would cost a file read or a server request per search), and within one
store object it is never stale. It changes only when an index is opened on the store, and
such an open that fails gives the slot back (:func:`give_back`) only after reading the
record: when the failed open left the collection as the previous holder's encoder recorded it
the previous holder goes on; when it changed the collection (a reindex that stopped
part-way leaves vectors of both encoders) nothing writes or searches through the store until
an index opened on it finishes the reindex. Another store object (another process, or
``M3Store.open`` again) re-encoding the collection is not seen by the slot: the store's writes
re-read the collection's record and its searches check their hits' stamps
(:mod:`m3kit.store.record_check`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from m3kit.errors import FingerprintMismatchError
from m3kit.store.sparse_cut import SparseCut

if TYPE_CHECKING:
    from m3kit.fingerprint import EncoderFingerprint
    from m3kit.store.store import M3Store

__all__ = ["Held", "check_held", "give_back", "take_store"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Held:
    """A store's writer slot as it was before an index took it (what :func:`give_back` puts
    back)."""

    writer_id: str | None
    writer_name: str | None
    writer_ids: frozenset[str]
    encoder_check: Callable[[], None] | None
    sparse_cut: SparseCut | None


def take_store(store: M3Store, fingerprint: EncoderFingerprint, check: Callable[[], None]) -> Held:
    """Make ``store`` write and search as ``fingerprint``'s encoder, checked by ``check``.

    Taken under the store's write lock, so a write of the previous holder (which checks that
    it holds the store under that lock: :meth:`M3Index.write_records`) lands before or is
    refused after, never stamped with the new identity.

    Returns:
        The slot as it was (for :func:`give_back` when the open fails).
    """
    with store.write_lock:
        held = Held(
            store.writer_id,
            store.writer_name,
            store.writer_ids,
            store.encoder_check,
            store.sparse_cut,
        )
        store.writer_id = fingerprint.identity
        store.writer_name = fingerprint.describe()
        store.writer_ids = frozenset({fingerprint.identity, fingerprint.legacy_identity})
        store.encoder_check = _weakly(check)
    return held


def _weakly(check: Callable[[], None]) -> Callable[[], None]:
    """``check``, holding its object weakly when it is a bound method (an index's
    ``check_encoder``): the store held its index, which holds the store, so an index dropped
    without ``close()`` kept its folder locked (and a ``:memory:`` shard's threads and temp
    folder) until a cyclic garbage collection ran. A check whose index is gone does nothing:
    no index is left to search or write with its encoder."""
    if not inspect.ismethod(check):
        return check
    ref = weakref.WeakMethod(check)

    def weak_check() -> None:
        bound = ref()
        if bound is not None:
            bound()

    return weak_check


def give_back(store: M3Store, held: Held, fingerprint: EncoderFingerprint) -> None:
    """After a failed open by ``fingerprint``'s encoder: give the slot back, if it is safe.

    It is when no index held the store, or when the collection still records the previous
    holder's encoder with no reindex pending (the open was refused before it wrote). Else
    (a reindex stopped part-way, or the record cannot be read) the previous holder stays
    refused, and every write and search through the store raises until an index opened on it
    finishes the reindex. The sparse cut is put back as the collection records it (the
    previous one, unless the open recorded a new one before it failed: a cut change that
    failed its final check), so that a store shared with another index cuts as its chunks.
    """
    with store.write_lock:
        store.sparse_cut = _recorded_cut(store, held.sparse_cut)
        if held.writer_id is None or _records(store, held.writer_id):
            store.writer_id, store.writer_name = held.writer_id, held.writer_name
            store.writer_ids = held.writer_ids
            store.encoder_check = held.encoder_check
            return
        message = (
            f"collection {store.collection!r} was left part-way through a reindex to "
            f"{fingerprint.describe()} (identity {fingerprint.identity}) by an index whose "
            "open failed: it may hold vectors of more than one encoder (or sparse cut), so "
            "nothing is written or searched through this store until a reindex finishes. Open "
            "a new index on the store with reindex=True: M3Index(encoder, store, reindex=True)"
        )
        store.writer_name = f"{fingerprint.describe()}, whose open failed part-way"
        store.encoder_check = functools.partial(_refuse, message)


def check_held(store: M3Store, fingerprint: EncoderFingerprint) -> None:
    """Check that ``store`` still writes and searches as ``fingerprint``'s encoder.

    Raises:
        FingerprintMismatchError: Another index, with another encoder, took the store over
            since (names both encoders and their identities).
    """
    held = store.writer_id
    if held == fingerprint.identity:
        return
    raise FingerprintMismatchError(
        f"this index's store was taken over: another index was opened on the same M3Store "
        f"(collection {store.collection!r}) with another encoder, "
        f"{store.writer_name or 'none'} (identity {held}), and the store now writes and "
        f"searches as that encoder. This index's encoder, {fingerprint.describe()} (identity "
        f"{fingerprint.identity}), would store or compare its vectors as that encoder's; "
        "nothing was written or searched. To keep using the collection, open a new index on "
        "the store with the encoder it records (M3Index(encoder, store)); to use this encoder, "
        "open a new index with it and reindex=True (re-encodes the stored documents), or use "
        "another collection"
    )


def _records(store: M3Store, identity: str) -> bool:
    """Whether the collection records the encoder of ``identity``, with no reindex (of its
    encoder or of its sparse cut) pending."""
    from m3kit.store.collection_record import _read
    from m3kit.store.sparse_cut import PENDING_KEY

    try:
        stored, pending = _read(store)
        recut = PENDING_KEY in store.collection_metadata()
    except Exception:  # unknown: not given back (the caller's own error is being raised)
        logger.exception("could not read collection %r's record", store.collection)
        return False
    return pending is None and not recut and stored is not None and stored.made(identity)


def _recorded_cut(store: M3Store, held: SparseCut | None) -> SparseCut | None:
    """The sparse cut the collection records, with no change of it pending; else ``held``."""
    from m3kit.store.sparse_cut import PENDING_KEY, RECORD_KEY

    try:
        meta = store.collection_metadata()
        if RECORD_KEY not in meta or PENDING_KEY in meta:
            return held
        return SparseCut.from_record(meta[RECORD_KEY])
    except Exception:  # unknown: the previous cut (the caller's own error is being raised)
        logger.exception("could not read collection %r's sparse cut", store.collection)
        return held


def _refuse(message: str) -> None:
    raise FingerprintMismatchError(message)
