"""Which sparse cut each stored point was cut with, and the points cut otherwise.

Every point a collection with sparse vectors stores carries the stamp of the sparse cut its
sparse vector was cut with (payload :data:`~m3kit.store.schema.SPARSE_CUT`,
:meth:`SparseCut.stamp <m3kit.store.sparse_cut.SparseCut.stamp>`); points written before m3kit
stamped them have none and count as cut with the collection's recorded cut. So:

- a cut change (:mod:`m3kit.store.recut`) re-encodes only the documents with a point not
  stamped with its target cut: one cut short resumes where it stopped;
- a collection that holds points stamped with another cut than its recorded one (a writer
  that went on with the old cut after a change: another process, or a store object opened
  before it) is refused when a store or index opens it (:func:`check_cut_stamps`), until an
  index opened with ``reindex=True`` re-encodes them with the recorded cut, or their
  documents are deleted (``M3Store.delete_documents_unopened``, :mod:`m3kit.store.unopened`).

The check is one count request at open, on the ``sparse_cut`` payload index every collection
has (:data:`~m3kit.store.payload_indexes.BUILT_IN_INDEXES`). A store opened before a change is
refused as it writes (each write re-reads the record) and as it searches (a hit of another cut:
:mod:`m3kit.store.record_check`); what a write whose check raced the change stored is seen here,
at the next open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_client import models

from m3kit.outputs import Head
from m3kit.store.schema import DOC_ID, SPARSE_CUT
from m3kit.store.sparse_cut import SparseCut
from m3kit.store.unopened import delete_way_out

if TYPE_CHECKING:
    from m3kit.store.store import M3Store

__all__ = ["check_cut_stamps", "miscut_count", "miscut_documents", "not_cut_with", "other_cuts"]

#: Stamps named in a refusal (the points' other cuts), at most.
_NAMED = 5


def not_cut_with(target: SparseCut, recorded: SparseCut) -> models.Filter:
    """The points not cut with ``target``: stamped with another cut, or unstamped (written
    before points were stamped, so cut with ``recorded``) when ``recorded`` is not ``target``."""
    must_not: list[models.Condition] = [
        models.FieldCondition(key=SPARSE_CUT, match=models.MatchValue(value=target.stamp()))
    ]
    if target == recorded:
        must_not.append(models.IsEmptyCondition(is_empty=models.PayloadField(key=SPARSE_CUT)))
    return models.Filter(must_not=must_not)


def miscut_count(store: M3Store, recorded: SparseCut) -> int:
    """How many of ``store``'s points are cut with another cut than ``recorded`` (0 for a
    collection without sparse vectors)."""
    if Head.SPARSE not in store.heads:
        return 0
    return store.count(not_cut_with(recorded, recorded))


def check_cut_stamps(store: M3Store, recorded: SparseCut) -> None:
    """Refuse a collection holding points cut with another cut than its ``recorded`` one.

    Raises:
        ValueError: Such points are stored; names how many, their cuts, the recorded cut and
            how to re-encode them.
    """
    count = miscut_count(store, recorded)
    if count:
        raise ValueError(miscut_message(store, recorded, count))


def miscut_message(store: M3Store, recorded: SparseCut, count: int) -> str:
    """Why a collection with ``count`` points cut otherwise than ``recorded`` is refused."""
    cuts = [
        c.describe() if isinstance(c, SparseCut) else f"an unreadable stamp {c!r}"
        for c in other_cuts(store, recorded)
    ]
    return (
        f"collection {store.collection!r} records {recorded.describe()}, but holds {count} "
        f"chunk(s) stored with {' / '.join(cuts)}: a writer went on with another cut "
        "after the cut was changed (another process, or a store opened before the change), "
        "so searches would mix cuts. Stop that writer, then re-encode those chunks with the "
        f"recorded cut: M3Index.open(encoder, ..., {recorded.arguments()}, reindex=True) "
        "(m3kit index --reindex; the recorded cut is used when none is given); only the "
        "documents with such chunks are re-encoded. "
        f"{delete_way_out(store, miscut_documents(store, recorded))}"
    )


def miscut_documents(store: M3Store, recorded: SparseCut) -> list[str]:
    """The documents (sorted) with a point cut with another cut than ``recorded``."""
    found = {
        str(h.payload.get(DOC_ID))
        for h in store._backend.scroll(not_cut_with(recorded, recorded), [DOC_ID])
    }
    return sorted(found)


def other_cuts(store: M3Store, recorded: SparseCut) -> list[SparseCut | str]:
    """The cuts (at most a few, sorted) of ``store``'s points cut otherwise than ``recorded``;
    a stamp that is no cut's is given as it is."""
    found: set[str] = set()
    for hit in store._backend.scroll(not_cut_with(recorded, recorded), [SPARSE_CUT]):
        found.add(str(hit.payload.get(SPARSE_CUT)))
        if len(found) > _NAMED:
            break
    cuts: list[SparseCut | str] = []
    for stamp in sorted(found)[:_NAMED]:
        try:
            cuts.append(SparseCut.from_stamp(stamp))
        except ValueError:
            cuts.append(stamp)
    return cuts
