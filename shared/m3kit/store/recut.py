"""Changing a collection's sparse cut: every stored document re-encoded with the new cut.

``M3Index.open(encoder, ..., sparse_top_k=..., sparse_min_weight=..., reindex=True)`` (``m3kit
index --reindex --sparse-top-k ...``) on a collection whose chunks were stored with another cut
(:mod:`m3kit.store.sparse_cut`). A stored vector keeps only the weights its cut kept, so a
looser cut needs the model: every document is re-encoded from its stored text exactly as the
encoder reindex (:mod:`m3kit.store.reindex`) re-encodes it, whole or chunked as it was, and
written in place with the new cut; documents whose chunking cannot be redone are refused before
anything is written. The record says the change is pending (``sparse_cut_to``) from its first
write until its last, and the collection is refused meanwhile (:func:`settle_sparse_cut
<m3kit.store.sparse_cut.settle_sparse_cut>`); running it again redoes every document.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from m3kit.store.reindex import _check_plans, _plans, _reencode
from m3kit.store.reindex_fit import Chunkers, check_fit
from m3kit.store.schema import DOC_ID
from m3kit.store.sparse_cut import PENDING_KEY, RECORD_KEY, SparseCut

if TYPE_CHECKING:
    from m3kit.store.index import M3Index

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
    groups of :attr:`M3Index.write_group`; once all are written the pending change is
    recorded as the collection's cut.

    Returns:
        The number of documents re-encoded.

    Raises:
        ValueError: Stored documents reindex cannot rebuild, or chunks that do not fit the
            encoder (nothing written).
    """
    store = index.store
    chunkers: Chunkers = {}
    # held until the store cuts with ``target``: a write of this store meanwhile (another
    # index sharing it) is either among the documents planned or cut with ``target``
    with index._write_lock:
        meta = store.collection_metadata()
        pending = SparseCut.from_record(meta[PENDING_KEY]) if PENDING_KEY in meta else None
        todo = sorted({str(h.payload.get(DOC_ID)) for h in store._backend.scroll(None, [DOC_ID])})
        plans = _plans(store, todo)
        todo = [d for d in todo if d in plans]
        _check_plans(plans)
        check_fit(index, [plans[d] for d in todo], chunkers, started=pending is not None)
        if pending is not None and pending != target:
            logger.warning(
                "collection %r: an unfinished sparse cut change to %s is replaced by one to %s",
                store.collection,
                pending.describe(),
                target.describe(),
            )
        store.set_collection_metadata({**meta, PENDING_KEY: target.to_dict()})
        store.sparse_cut = target
    logger.info(
        "re-encoding %d document(s) of %r with %s", len(todo), store.collection, target.describe()
    )
    done = _reencode(index, todo, plans, chunkers, show_progress)
    meta = {k: v for k, v in store.collection_metadata().items() if k != PENDING_KEY}
    store.set_collection_metadata({**meta, RECORD_KEY: target.to_dict()})
    logger.info("collection %r: recorded %s", store.collection, target.describe())
    return done
