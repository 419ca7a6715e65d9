"""The sparse cut of an :class:`~m3kit.store.M3Index`: ``sparse_top_k`` / ``sparse_min_weight``.

:meth:`M3Encoder.encode <m3kit.encoder.M3Encoder.encode>` can keep only a text's ``top_k``
highest sparse weights and drop those at or below ``min_weight``. An index applies the same cut
to what it stores (every chunk's sparse vector, however it was encoded: whole, chunked, late
chunked, reindexed, written by the Ray pipeline or an adapter) and to what it searches with (the
query's sparse vector), through its store (:attr:`M3Store.sparse_cut
<m3kit.store.M3Store.sparse_cut>`). Cutting an uncut vector gives exactly the vector the
encoder's own cut gives.

The collection records the cut (key ``"sparse_cut"`` of its m3kit record), so an index opened
without one uses it (as does a plain :meth:`M3Store.open <m3kit.store.M3Store.open>`), and an
index opened with another one on a collection that holds chunks is refused: its chunks would be
stored, or searched, with two cuts mixed. Unless it is opened with ``reindex=True``: then every
stored document is re-encoded with the new cut (:mod:`m3kit.store.recut`), which the record
says is pending (key ``"sparse_cut_to"``) until it is done; meanwhile the collection is refused
(its chunks hold both cuts) to all but an index opened to finish (or undo) the change. Every
point is stamped with the cut it was cut with (:mod:`m3kit.store.cut_stamps`): a change resumes
with the documents left, and a collection holding chunks of another cut than its recorded one
(a writer that kept the old cut) is refused until ``reindex=True`` re-encodes them.

Example::

    index = M3Index.open(encoder, "./store", sparse_top_k=64)  # recorded with the collection
    index.close()  # an embedded collection is open once per process
    index = M3Index.open(encoder, "./store")  # the recorded cut, top_k=64
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from m3kit.encoder_outputs import sparse_vector
from m3kit.outputs import Head, SparseVector
from m3kit.sparse_options import check_sparse_options

if TYPE_CHECKING:
    from m3kit.store.store import M3Store

__all__ = [
    "PENDING_KEY",
    "RECORD_KEY",
    "SparseCut",
    "calibration_cut_warning",
    "given_sparse_cut",
    "nothing_to_cut",
    "settle_sparse_cut",
    "sparse_cut_of",
    "unfinished_message",
]

logger = logging.getLogger(__name__)

#: Key of the cut in the collection's m3kit record.
RECORD_KEY = "sparse_cut"
#: Key of a cut change under way (:mod:`m3kit.store.recut`): the cut it changes to.
PENDING_KEY = "sparse_cut_to"

_NO_IDS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class SparseCut:
    """Which sparse weights an index keeps, of every stored chunk and every query.

    Attributes:
        top_k: Keep only the ``top_k`` highest weights (``None``: every weight).
        min_weight: Drop weights at or below this value (``0.0``: none).

    Raises:
        ValueError: ``top_k`` is not a positive int, or ``min_weight`` is negative or NaN.
        TypeError: ``min_weight`` is not a number.
    """

    top_k: int | None = None
    min_weight: float = 0.0

    def __post_init__(self) -> None:
        check_sparse_options(self.top_k, self.min_weight)
        if self.min_weight < 0:
            raise ValueError(
                f"sparse_min_weight must be >= 0 (0: keep every weight), got {self.min_weight!r}"
            )
        # numpy numbers (which the check takes) as plain ones: the record is JSON
        if self.top_k is not None:
            object.__setattr__(self, "top_k", int(self.top_k))
        # + 0.0: -0.0 (== 0.0, so taken as the recorded cut) as 0.0, or its points' stamp
        # ('"min_weight":-0.0') would be another cut's, refused at the next open
        object.__setattr__(self, "min_weight", float(self.min_weight) + 0.0)

    @property
    def cuts(self) -> bool:
        """Whether the cut drops anything (``False``: every weight is kept)."""
        return self.top_k is not None or self.min_weight > 0

    def apply(self, vector: SparseVector) -> SparseVector:
        """``vector`` cut (itself when nothing is cut)."""
        if not self.cuts:
            return vector
        return sparse_vector(
            vector.indices, vector.values, _NO_IDS, top_k=self.top_k, min_weight=self.min_weight
        )

    def to_dict(self) -> dict[str, Any]:
        """The record's form: ``{"top_k": ..., "min_weight": ...}``."""
        return {"top_k": self.top_k, "min_weight": self.min_weight}

    def stamp(self) -> str:
        """The compact, stable id every point written with this cut carries (payload
        :data:`~m3kit.store.schema.SPARSE_CUT`): :meth:`to_dict` as sorted, compact JSON.

        >>> SparseCut(64).stamp()
        '{"min_weight":0.0,"top_k":64}'
        """
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_stamp(cls, stamp: Any) -> SparseCut:
        """The cut of a point's :meth:`stamp`.

        Raises:
            ValueError: ``stamp`` is not a cut's stamp (the payload was edited or damaged).
        """
        try:
            record = json.loads(stamp) if isinstance(stamp, str) else None
            return cls.from_record(record)
        except (ValueError, TypeError):
            raise ValueError(
                f"{stamp!r} is not the stamp of a sparse cut (payload key 'sparse_cut' of a "
                'point: {"min_weight":...,"top_k":...}); the point was edited or is damaged'
            ) from None

    def describe(self) -> str:
        """``sparse_top_k=64, sparse_min_weight=0.0`` (``no sparse cut`` when none)."""
        if not self.cuts:
            return "no sparse cut (every weight kept)"
        return f"sparse_top_k={self.top_k}, sparse_min_weight={self.min_weight}"

    def arguments(self) -> str:
        """The ``M3Index.open`` arguments and ``m3kit`` flags that give this cut.

        >>> print(SparseCut(8).arguments())
        sparse_top_k=8, sparse_min_weight=0.0 (--sparse-top-k 8 --sparse-min-weight 0.0)
        >>> print(SparseCut().arguments())
        sparse_min_weight=0 (--sparse-min-weight 0)
        """
        if not self.cuts:
            return "sparse_min_weight=0 (--sparse-min-weight 0)"
        flags = f"--sparse-min-weight {self.min_weight}"
        if self.top_k is not None:
            flags = f"--sparse-top-k {self.top_k} {flags}"
        return f"{self.describe()} ({flags})"

    @classmethod
    def from_record(cls, record: Any) -> SparseCut:
        """The cut of a record entry (``{"top_k": ..., "min_weight": ...}``).

        Raises:
            ValueError: The entry is not such a mapping.
        """
        if not isinstance(record, dict) or set(record) != {"top_k", "min_weight"}:
            raise ValueError(
                f"the collection's recorded {RECORD_KEY!r} is {record!r}, not "
                '{"top_k": ..., "min_weight": ...}: the record was edited or is damaged'
            )
        return cls(record["top_k"], record["min_weight"])


def sparse_cut_of(top_k: int | None, min_weight: float | None) -> SparseCut | None:
    """The sparse cut ``sparse_top_k`` / ``sparse_min_weight`` give: the one constructor of
    every entry point that takes them (``M3Index.open``, ``calibrate_fusion``,
    ``evaluate_heads``, ``M3FinetuneEngine``, the ``m3kit`` flags).

    Giving either one gives the whole cut: the other one is its default (every weight by
    rank, none dropped by weight).

    >>> sparse_cut_of(None, None) is None
    True
    >>> sparse_cut_of(8, None)
    SparseCut(top_k=8, min_weight=0.0)

    Args:
        top_k: Keep only the ``top_k`` highest weights (``None``: not given).
        min_weight: Drop weights at or below this value (``None``: not given).

    Returns:
        The cut; ``None`` when neither is given (the caller's default applies).

    Raises:
        ValueError: A value :class:`SparseCut` refuses (the messages of
            :func:`~m3kit.sparse_options.check_sparse_options`).
        TypeError: ``min_weight`` is not a number.
    """
    if top_k is None and min_weight is None:
        return None
    return SparseCut(top_k, 0.0 if min_weight is None else min_weight)


def nothing_to_cut(cut: SparseCut, why: str, hint: str = "leave the sparse cut out") -> ValueError:
    """The error refusing ``cut`` where there are no sparse vectors to cut (``why``):
    ``<cut> was given, but <why>: there is nothing to cut; <hint>``."""
    return ValueError(f"{cut.describe()} was given, but {why}: there is nothing to cut; {hint}")


def given_sparse_cut(
    store: M3Store, top_k: int | None, min_weight: float | None
) -> SparseCut | None:
    """The sparse cut given to ``M3Index`` (``None``: none given, the recorded one is used).

    Raises:
        ValueError: A bad value, or a cut for a collection that stores no sparse vectors.
    """
    cut = sparse_cut_of(top_k, min_weight)
    if cut is not None and Head.SPARSE not in store.heads:
        raise nothing_to_cut(
            cut, f"collection {store.collection!r} stores no sparse vectors (a dense-only model)"
        )
    return cut


def settle_sparse_cut(
    store: M3Store, given: SparseCut | None, *, reindex: bool = False
) -> SparseCut | None:
    """Settle the cut an index on ``store`` uses, recorded with the collection; sets
    :attr:`M3Store.sparse_cut <m3kit.store.M3Store.sparse_cut>`.

    - Not given (``None``): the recorded cut; none when the collection records none.
    - Given, on an empty collection: recorded (replacing any recorded one).
    - Given, on a collection that holds chunks: it must be the recorded one (a collection
      that records none holds uncut vectors: only "no cut" matches), unless ``reindex``:
      then it is returned, for :func:`~m3kit.store.recut.recut_collection` to re-encode the
      chunks with it (meanwhile the store keeps the recorded cut).
    - A cut change left unfinished (the record's :data:`PENDING_KEY`): refused, unless
      ``reindex``: then the given cut, or else the pending one, is returned (and set).
    - Chunks stamped with another cut than the recorded one (a writer that kept the old cut
      after a change, :mod:`m3kit.store.cut_stamps`): refused, unless ``reindex``: then the
      given cut, or else the recorded one, is returned (a recut to the recorded cut redoes
      just those chunks' documents).

    Returns:
        The cut to re-encode the collection's chunks with (``None``: no change to make).

    Raises:
        ValueError: The given cut differs from the one the collection's chunks were stored
            with, a cut change is unfinished, or chunks are stamped with another cut than the
            recorded one, and ``reindex`` is false.
    """
    meta = store.collection_metadata()
    recorded = SparseCut.from_record(meta[RECORD_KEY]) if RECORD_KEY in meta else None
    if recorded is None and not meta:  # a record lost (a copy made without the metadata)
        recorded = adopt_stamped_cut(store, meta)
        meta = store.collection_metadata() if recorded is not None else meta
    stored = recorded or SparseCut()
    if PENDING_KEY in meta:
        pending = SparseCut.from_record(meta[PENDING_KEY])
        if not reindex:
            raise ValueError(unfinished_message(store.collection, stored, pending))
        store.sparse_cut = given or pending
        return store.sparse_cut
    from m3kit.store.cut_stamps import miscut_count, miscut_message

    miscut = miscut_count(store, stored)
    if miscut and not reindex:
        raise ValueError(miscut_message(store, stored, miscut))
    if miscut:  # re-encoded with the given cut, or else the recorded one
        store.sparse_cut = stored
        return given or stored
    if given is None:
        cut = stored
    elif given == stored or store.count() == 0:
        cut = given
    elif reindex:
        store.sparse_cut = stored  # until the change: what the chunks are stored with
        return given
    else:
        raise ValueError(
            f"collection {store.collection!r} holds chunks stored with "
            f"{stored.describe()}; this index was opened with {given.describe()}: its "
            "chunks and queries would be cut two ways. Open it with the recorded cut (or "
            "without one: the recorded one is used; m3kit: leave out --sparse-top-k / "
            "--sparse-min-weight); to change the cut, open it with the new one and "
            "reindex=True (m3kit index --reindex): every stored document is re-encoded "
            "with it"
        )
    # no write for an index that gives none, nor for one that gives the cut the chunks are
    # stored with ("no cut" is also a record without the key): a search-only opener writes
    # nothing (an empty collection records the cut given, as a new one does)
    same = recorded is None and cut == SparseCut() and store.count() > 0
    if given is not None and recorded != cut and not same:
        logger.info("collection %r: recording %s", store.collection, cut.describe())
        store.set_collection_metadata({**meta, RECORD_KEY: cut.to_dict()})
    store.sparse_cut = cut
    return None


def adopt_stamped_cut(store: M3Store, meta: dict[str, Any]) -> SparseCut | None:
    """The cut every point of a collection without any m3kit record is stamped with (a copy
    made without the collection's metadata: qdrant-client scroll + upsert, a shard folder
    without its ``m3kit_collection.json``), recorded with a warning, as a record-less
    collection's encoder is adopted (:func:`~m3kit.store.collection_record.check_collection`);
    ``None`` when its points are uncut, unstamped or cut several ways (checked as before).
    Without it every open was refused as "a writer went on with another cut", and the way out
    it led with re-encoded the copy without its cut."""
    from m3kit.store.cut_stamps import not_cut_with, other_cuts

    if Head.SPARSE not in store.heads or not store.count():
        return None
    cuts = other_cuts(store, SparseCut())
    cut = cuts[0] if len(cuts) == 1 else None
    if not isinstance(cut, SparseCut):
        return None
    if store.count(not_cut_with(cut, cut)):  # some points cut otherwise, or unstamped
        return None
    logger.warning(
        "collection %r has no m3kit record (copied without its metadata?), and every point "
        "is stamped with %s: recording that cut",
        store.collection,
        cut.describe(),
    )
    store.set_collection_metadata({**meta, RECORD_KEY: cut.to_dict()})
    return cut


def unfinished_message(collection: str, stored: SparseCut, pending: SparseCut) -> str:
    """Why a collection part-way through a cut change is refused, and how to finish it."""
    return (
        f"collection {collection!r} is part-way through a change of its sparse cut from "
        f"{stored.describe()} to {pending.describe()}, unfinished (interrupted): its chunks "
        "are stored with both cuts, so it cannot be used until the change is done. Finish "
        f"it: open it with M3Index.open(encoder, ..., {pending.arguments()}, reindex=True) "
        "(m3kit index --reindex with those flags; left out, the pending cut is finished); or "
        f"go back: the same with {stored.arguments()}"
    )


def calibration_cut_warning(
    calibrated: SparseCut, cut: SparseCut, heads: frozenset[Head]
) -> str | None:
    """Why a search calibration measured with sparse cut ``calibrated``
    (:attr:`FusionCalibration.sparse_cut <m3kit.store.FusionCalibration.sparse_cut>`) may not
    fit a collection with ``cut`` holding ``heads`` (``None``: it does, or the collection has
    no sparse vectors).

    >>> calibration_cut_warning(SparseCut(), SparseCut(), frozenset(Head)) is None
    True
    >>> print(calibration_cut_warning(SparseCut(), SparseCut(8), frozenset(Head))[:70])
    the search calibration was measured with no sparse cut (every weight k
    """
    if Head.SPARSE not in heads or cut == calibrated:
        return None
    return (
        f"the search calibration was measured with {calibrated.describe()}, this collection "
        f"has {cut.describe()}: its sparse scores differ from those the calibrated fusion was "
        "fitted to; calibrate again with this cut (m3kit calibrate --sparse-top-k / "
        "--sparse-min-weight) or give the search settings"
    )
