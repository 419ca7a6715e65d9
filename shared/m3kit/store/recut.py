"""Changing a collection's sparse cut: every stored document re-encoded with the new cut.

``M3Index.open(encoder, ..., sparse_top_k=..., sparse_min_weight=..., reindex=True)`` (``m3kit
index --reindex --sparse-top-k ...``) on a collection whose chunks were stored with another cut
(:mod:`m3kit.store.sparse_cut`). A stored vector keeps only the weights its cut kept, so a
looser cut needs the model: every document is re-encoded from its stored text exactly as the
encoder reindex (:mod:`m3kit.store.reindex`) re-encodes it, whole, chunked as it was or node
by node (:mod:`m3kit.store.reindex_nodes`), and
written in place with the new cut; documents whose chunking cannot be redone are refused before
anything is written. The record says the change is pending (``sparse_cut_to``) from its first
write until its last, and the collection is refused meanwhile (:func:`settle_sparse_cut
<m3kit.store.sparse_cut.settle_sparse_cut>`).

Every point carries the stamp of the cut it was cut with (:mod:`m3kit.store.cut_stamps`), so
only documents with a point not stamped with the target cut are re-encoded: running a change
again after it was cut short resumes with the documents left. Another writer still on the old
cut (another process) is refused as it writes once the change is recorded as pending
(:mod:`m3kit.store.record_check`); documents one whose check raced the start of the change
writes carry the old stamp and are redone by a later pass, and one whose check raced its end
is seen by the change's final check, or else when the collection is next opened: it is refused
until ``reindex=True`` with the recorded cut re-encodes those documents.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qdrant_client import models

from m3kit.store.cut_stamps import check_cut_stamps, not_cut_with, other_cuts
from m3kit.store.reindex import DocPlan, check_plans, doc_plans, reencode
from m3kit.store.reindex_fit import Chunkers, check_fit
from m3kit.store.schema import DOC_ID
from m3kit.store.sparse_cut import PENDING_KEY, RECORD_KEY, SparseCut

if TYPE_CHECKING:
    from m3kit.store.index import M3Index
    from m3kit.store.store import M3Store

__all__ = ["recut_collection"]

logger = logging.getLogger(__name__)


def recut_collection(
    index: M3Index, target: SparseCut, *, show_progress: bool | None = None
) -> int:
    """Re-encode every stored document of ``index`` not cut with the sparse cut ``target``,
    then record it.

    The documents to do are those with a point not stamped with ``target``
    (:mod:`m3kit.store.cut_stamps`; an unstamped point counts as the recorded cut): all of
    them for a new cut, those left for a change cut short, and for the recorded cut itself
    those another writer stored with another cut. Checked first (nothing written when
    refused): every document can be rebuilt from its stored chunks and fits the encoder (as
    for the encoder reindex). Then the change is recorded as pending, the store cuts with
    ``target``, and the documents are re-encoded in groups of :attr:`M3Index.write_group`
    (a document another writer changed since it was planned is left as written, by the
    versions check of :func:`~m3kit.store.reindex.reencode`). Later passes redo the
    documents another writer (another process, still cutting the old way) wrote meanwhile;
    once a pass finds none, the pending change is recorded as the collection's cut, and the
    collection is checked once more for points of another cut.

    Returns:
        The number of documents re-encoded.

    Raises:
        ValueError: Stored documents reindex cannot rebuild, or chunks that do not fit the
            encoder (nothing written on a first run); or chunks of another cut were written
            after the last pass (the cut is recorded; ``reindex=True`` again redoes them).
        RuntimeError: Other writers wrote documents with another cut during every pass (the
            change stays pending).
    """
    store = index.store
    meta = store.collection_metadata()
    recorded = SparseCut.from_record(meta[RECORD_KEY]) if RECORD_KEY in meta else SparseCut()
    stale = not_cut_with(target, recorded)
    chunkers: Chunkers = {}
    total = 0
    for attempt in range(_PASSES):
        # held until the store cuts with ``target``: a write of this store meanwhile (another
        # index sharing it) is either among the documents planned or cut with ``target``
        with index._write_lock:
            todo = _stale_documents(store, stale)
            if not todo and attempt > 0:
                break
            plans = doc_plans(store, todo)
            todo = [d for d in todo if d in plans]
            if attempt == 0:
                _start(index, target, [plans[d] for d in todo], plans, chunkers)
            else:
                check_plans(plans, store, _RECUT_ADVICE)
                check_fit(index, [plans[d] for d in todo], chunkers, started=True)
        logger.info(
            "re-encoding %d document(s) of %r with %s%s",
            len(todo),
            store.collection,
            target.describe(),
            "" if attempt == 0 else " (written by another writer during the change)",
        )
        total += reencode(index, todo, plans, chunkers, show_progress)
    else:
        left = _stale_documents(store, stale)
        if left:
            raise RuntimeError(
                f"collection {store.collection!r}: {len(left)} document(s) were written by "
                f"another writer during each of {_PASSES} passes of the change to "
                f"{target.describe()}; stop the writers that use the old cut and run it again "
                "(the change stays pending until then)"
            )
    with index._write_lock:
        meta = {k: v for k, v in store.collection_metadata().items() if k != PENDING_KEY}
        store.set_collection_metadata({**meta, RECORD_KEY: target.to_dict()})
    logger.info("collection %r: recorded %s", store.collection, target.describe())
    # a writer of another cut since the last pass (another process): refused as at open
    check_cut_stamps(store, target)
    return total


#: What to do about documents the change cannot rebuild (a cut change).
_RECUT_ADVICE = (
    "Open the collection with its recorded cut (without reindex), delete them "
    "(M3Index.delete), change the cut, then add them again; or index into a new collection"
)


def _advice(store: M3Store, target: SparseCut, meta: Mapping[str, Any]) -> str:
    """What to do about documents a change to ``target`` cannot rebuild: for a repair of
    chunks another writer stored with another cut (``target`` is the recorded cut), opening
    the collection without reindex is refused, so the way out is a change to their cut."""
    recorded = SparseCut.from_record(meta[RECORD_KEY]) if RECORD_KEY in meta else SparseCut()
    if PENDING_KEY in meta or target != recorded:
        return _RECUT_ADVICE
    theirs = [c for c in other_cuts(store, recorded) if isinstance(c, SparseCut)]
    if len(theirs) != 1:
        return _RECUT_ADVICE
    return (
        f"They were stored with {theirs[0].describe()} after the collection's cut was "
        f"changed to {recorded.describe()}, so it cannot be opened without reindex until "
        "they are re-encoded. To keep them, change the collection to their cut: "
        f"M3Index.open(encoder, ..., {theirs[0].arguments()}, reindex=True) re-encodes "
        "the other documents with it (then delete them, change the cut and add them again, "
        "if the recorded cut is wanted); or index into a new collection"
    )


#: Passes of :func:`recut_collection` (the first does the work; later ones redo documents
#: other writers wrote meanwhile).
_PASSES = 3


def _stale_documents(store: M3Store, stale: models.Filter) -> list[str]:
    """The stored documents with a point matching ``stale`` (not cut with the target)."""
    return sorted({str(h.payload.get(DOC_ID)) for h in store._backend.scroll(stale, [DOC_ID])})


def _start(
    index: M3Index,
    target: SparseCut,
    todo: Sequence[DocPlan],
    plans: Mapping[str, DocPlan],
    chunkers: Chunkers,
) -> None:
    """Check every document, then record the change as pending and cut with ``target``."""
    store = index.store
    meta = store.collection_metadata()
    pending = SparseCut.from_record(meta[PENDING_KEY]) if PENDING_KEY in meta else None
    check_plans(plans, store, _advice(store, target, meta))
    check_fit(index, todo, chunkers, started=pending is not None)
    if pending is not None and pending != target:
        logger.warning(
            "collection %r: an unfinished sparse cut change to %s is replaced by one to %s",
            store.collection,
            pending.describe(),
            target.describe(),
        )
    store.set_collection_metadata({**meta, PENDING_KEY: target.to_dict()})
    store.sparse_cut = target
