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
<m3kit.store.sparse_cut.settle_sparse_cut>`); running it again redoes every document. The
stored points do not say which cut wrote them, so documents another writer (another process
with the old cut) writes during the change are found by their versions and redone by a later
pass; a writer that goes on writing with the old cut after the change is not seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from m3kit.store.reindex import DocPlan, check_plans, doc_plans, reencode, stored_versions
from m3kit.store.reindex_fit import Chunkers, check_fit
from m3kit.store.sparse_cut import PENDING_KEY, RECORD_KEY, SparseCut

if TYPE_CHECKING:
    from m3kit.store.index import M3Index
    from m3kit.store.store import M3Store

__all__ = ["recut_collection"]

logger = logging.getLogger(__name__)


def recut_collection(
    index: M3Index, target: SparseCut, *, show_progress: bool | None = None
) -> int:
    """Re-encode every stored document of ``index`` with the sparse cut ``target``, then
    record it.

    Checked first (nothing written when refused): every document can be rebuilt from its
    stored chunks and fits the encoder (as for the encoder reindex). Then the change is
    recorded as pending, the store cuts with ``target``, and the documents are re-encoded in
    groups of :attr:`M3Index.write_group`. Later passes redo the documents another writer
    (another process, still cutting the old way) wrote meanwhile; once a pass finds none the
    pending change is recorded as the collection's cut.

    Returns:
        The number of documents re-encoded.

    Raises:
        ValueError: Stored documents reindex cannot rebuild, or chunks that do not fit the
            encoder (nothing written on a first run).
        RuntimeError: Other writers changed documents during every pass (the change stays
            pending).
    """
    store = index.store
    chunkers: Chunkers = {}
    written: dict[str, list[tuple[int, Any]]] = {}  # each document's versions as re-encoded
    total = 0
    for attempt in range(_PASSES):
        # held until the store cuts with ``target``: a write of this store meanwhile (another
        # index sharing it) is either among the documents planned or cut with ``target``
        with index._write_lock:
            todo = _changed(store, written)
            if not todo and attempt > 0:
                break
            plans = doc_plans(store, todo)
            todo = [d for d in todo if d in plans]
            if attempt == 0:
                _start(index, target, [plans[d] for d in todo], plans, chunkers)
            else:
                check_plans(plans, _RECUT_ADVICE)
                check_fit(index, [plans[d] for d in todo], chunkers, started=True)
        logger.info(
            "re-encoding %d document(s) of %r with %s%s",
            len(todo),
            store.collection,
            target.describe(),
            "" if attempt == 0 else " (written by another writer during the change)",
        )
        total += reencode(index, todo, plans, chunkers, show_progress)
        written.update({d: plans[d].versions() for d in todo})
    else:
        left = _changed(store, written)
        if left:
            raise RuntimeError(
                f"collection {store.collection!r}: {len(left)} document(s) were written by "
                f"another writer during each of {_PASSES} passes of the change to "
                f"{target.describe()}; stop the writers that use the old cut and run it again "
                "(the change stays pending until then)"
            )
    meta = {k: v for k, v in store.collection_metadata().items() if k != PENDING_KEY}
    store.set_collection_metadata({**meta, RECORD_KEY: target.to_dict()})
    logger.info("collection %r: recorded %s", store.collection, target.describe())
    return total


#: What to do about documents the change cannot rebuild (a cut change).
_RECUT_ADVICE = (
    "Open the collection with its recorded cut (without reindex), delete them "
    "(M3Index.delete), change the cut, then add them again; or index into a new collection"
)

#: Passes of :func:`recut_collection` (the first does the work; later ones redo documents
#: other writers wrote meanwhile).
_PASSES = 3


def _changed(store: M3Store, written: Mapping[str, list[tuple[int, Any]]]) -> list[str]:
    """The stored documents not as this change re-encoded them (all of them at first)."""
    found = stored_versions(store, None)
    return sorted(d for d, v in found.items() if written.get(d) != v)


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
    check_plans(plans, _RECUT_ADVICE)
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
