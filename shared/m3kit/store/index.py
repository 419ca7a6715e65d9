"""``M3Index``: an encoder plus an :class:`M3Store` (texts in, hits out), updated incrementally.

Documents get deterministic ids; re-adding an unchanged document costs one payload lookup and
no encoding; a changed document is re-encoded, its new chunks written, then its stale chunks
deleted (so it is never absent, and a run that stopped half-way is repaired by the next one).

The id rule: a document's id is the ``doc_id`` given for it; without one, it is
:func:`content_doc_id` of its text *and* metadata. So re-adding a document under the same
given id replaces the stored version (an edit), while a document without an id whose text or
metadata changed is a *new* document (the old one stays until deleted); two documents with
the same text and different metadata are always two documents.

The collection records the encoder that wrote it (:mod:`m3kit.store.collection_record`):
opening it with another encoder raises :class:`~m3kit.errors.FingerprintMismatchError` unless
``reindex=True``.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, NoReturn

from m3kit.errors import EncoderChangedError
from m3kit.fingerprint import EncoderFingerprint, encoder_fingerprint, fingerprint_change
from m3kit.outputs import Head
from m3kit.store.cluster import ClusterSettings
from m3kit.store.collection_record import check_collection
from m3kit.store.connection import ConnectionSettings
from m3kit.store.documents import _Chunker, _Doc, build_records, content_doc_id
from m3kit.store.foreign_points import warn_foreign_points
from m3kit.store.holder import check_held, give_back, take_store
from m3kit.store.index_inputs import check_encoder_fits
from m3kit.store.index_search import IndexSearch
from m3kit.store.index_writes import IndexWrites
from m3kit.store.record_check import own_change
from m3kit.store.records import Backend, ChunkRecord
from m3kit.store.schema import PayloadIndexType
from m3kit.store.search_overrides import SearchOverrides
from m3kit.store.search_settings import SearchSettings
from m3kit.store.sparse_cut import (
    SparseCut,
    calibration_cut_warning,
    given_sparse_cut,
    settle_sparse_cut,
)
from m3kit.store.store import M3Store

if TYPE_CHECKING:
    from m3kit.encoder import M3Encoder, Truncation

__all__ = ["M3Index", "build_records", "content_doc_id"]

logger = logging.getLogger(__name__)


class M3Index(IndexWrites, IndexSearch):
    """Encoder + store: what the LangChain / LlamaIndex adapters and the CLI use.

    Thread-safe: searches and adds may run from several threads at once. A search running
    while a document is replaced by a version of fewer chunks may find the new chunks and the
    old version's last ones, not yet deleted (the new chunks are written first, so the
    document is never missing); once ``add_texts`` returns, searches find the new version only.

    Attributes:
        write_group: Documents encoded and written per step of :meth:`add_texts`.
        reencoded: Stored documents the opening re-encoded (``reindex=True``: those another
            encoder wrote, or those cut with another sparse cut); 0 when none was.
    """

    write_group: int = 64
    reencoded: int = 0
    #: Log the search defaults and a calibration that does not fit (off for an index that
    #: only rehearses another's writes: LangChain's ``force_recreate``).
    _announces: ClassVar[bool] = True

    def __init__(
        self,
        encoder: M3Encoder,
        store: M3Store,
        *,
        reindex: bool = False,
        show_progress: bool | None = None,
        search: SearchSettings | SearchOverrides | None = None,
        sparse_top_k: int | None = None,
        sparse_min_weight: float | None = None,
    ) -> None:
        """Pair an encoder with an opened store whose vectors it can produce.

        Checks the encoder against the one the collection records (and records it in a new
        collection); see :mod:`m3kit.store.collection_record`.

        Args:
            encoder: The encoder.
            store: The opened store.
            reindex: When the collection was written by another encoder (or a reindex was
                interrupted): re-encode every stored document with this encoder, in place,
                from the stored texts (resumable; point count unchanged). When a sparse cut is
                given that differs from the one the collection's chunks were stored with (or
                a cut change was interrupted): re-encode every stored document with it, and
                record it (:mod:`m3kit.store.recut`).
            show_progress: tqdm bar for a reindex (default: on for more than one group).
            search: Default ranking of :meth:`search` (what a call leaves out); default: the
                checkpoint's calibration (``m3kit_search.json`` measured on this encoder, see
                :mod:`m3kit.store.fusion_calibration`) when it has one, else FlagEmbedding's
                published weights for a BGE-M3-shaped model, else RRF with ColBERT rerank. A
                :class:`~m3kit.store.SearchSettings` replaces that default whole (its fields
                left out are its own defaults: RRF); a
                :class:`~m3kit.store.SearchOverrides` changes only the settings it names
                (``SearchOverrides(candidates=200)`` keeps a calibrated fusion).
            sparse_top_k: Keep the ``sparse_top_k`` highest sparse weights of every chunk
                stored and query searched; default: the collection's recorded cut, if any
                (:mod:`m3kit.store.sparse_cut`; giving either setting sets the whole cut).
            sparse_min_weight: Drop sparse weights at or below this value (likewise).

        Raises:
            ValueError: The store expects dimensions or heads the encoder does not give; a
                bad sparse cut, one given for a collection without sparse vectors, or one
                other than the cut the collection's chunks were stored with (or a cut change
                left unfinished) and ``reindex`` is false.
            FingerprintMismatchError: The collection was written by another encoder, or
                holds chunks another encoder wrote, and ``reindex`` is false.
        """
        check_encoder_fits(encoder, store)
        given_cut = given_sparse_cut(store, sparse_top_k, sparse_min_weight)
        self.encoder = encoder
        self.store = store
        self._write_lock = store.write_lock  # one per store: see M3Store.write_lock
        #: What identifies the encoder (recorded in the collection, checked on open).
        self.fingerprint: EncoderFingerprint = encoder_fingerprint(encoder)
        self._settle_search_defaults(search)
        # another index may share the store: a refused pairing leaves it writing (and
        # checking, and cutting) as that index, not as this encoder (m3kit.store.holder)
        held = take_store(store, self.fingerprint, self.check_encoder)
        try:  # (its own writes meanwhile are not checked against the record it changes)
            with own_change(store):
                recut_to = settle_sparse_cut(store, given_cut, reindex=reindex)
                self.reencoded = check_collection(
                    self, reindex=reindex, show_progress=show_progress
                )
                if recut_to is not None:  # after an encoder reindex: it writes the recorded cut
                    from m3kit.store.recut import recut_collection

                    self.reencoded += recut_collection(self, recut_to, show_progress=show_progress)
        except BaseException:
            give_back(store, held, self.fingerprint)
            raise
        warn_foreign_points(store)  # another program's points: said, not skipped in silence
        if self.search_source == "calibrated" and self.calibration is not None:
            warning = calibration_cut_warning(
                self.calibration.sparse_cut, self.sparse_cut, store.heads
            )
            if warning and self._announces:
                logger.warning("collection %r: %s", store.collection, warning)

    @classmethod
    def open(
        cls,
        encoder: M3Encoder,
        location: str | os.PathLike[str] | None = None,
        *,
        collection: str = "m3kit",
        url: str | None = None,
        api_key: str | None = None,
        backend: Backend | str | None = None,
        create: bool = True,
        reindex: bool = False,
        show_progress: bool | None = None,
        payload_indexes: Mapping[str, PayloadIndexType | str] | None = None,
        cluster: ClusterSettings | None = None,
        connection: ConnectionSettings | None = None,
        search: SearchSettings | SearchOverrides | None = None,
        sparse_top_k: int | None = None,
        sparse_min_weight: float | None = None,
    ) -> M3Index:
        """Open (or create) a collection shaped for ``encoder`` and pair them.

        Args:
            encoder: The encoder; its dense size, heads and ColBERT size fix the schema.
            location: ``None`` / ``":memory:"`` or a folder (see :meth:`M3Store.open`).
            collection: Collection name.
            url: Qdrant server URL.
            api_key: Server API key (default: ``QDRANT_API_KEY``).
            backend: ``"edge"`` or ``"client"`` (default: client with a URL, else the
                embedded default).
            create: Create the collection if it does not exist (else raise
                :class:`~m3kit.errors.CollectionNotFoundError`).
            reindex: Re-encode the stored documents when the collection was written by
                another encoder, or with a new sparse cut (see :meth:`__init__`).
            show_progress: tqdm bar for a reindex.
            payload_indexes: ``{metadata key: PayloadIndexType}`` to index for fast filtered
                search (see :meth:`M3Store.open`).
            cluster: Qdrant server only: shards, replication, on-disk storage, quantisation
                and parallel write batches (:class:`~m3kit.store.cluster.ClusterSettings`).
            connection: Qdrant server only: request timeout and the server's request size
                limit (:class:`~m3kit.store.connection.ConnectionSettings`).
            search: Default ranking of :meth:`search` (see :meth:`__init__`).
            sparse_top_k: Sparse cut (see :meth:`__init__`).
            sparse_min_weight: Sparse cut (see :meth:`__init__`).

        Raises:
            SchemaMismatchError: The collection exists with other vectors.
            FingerprintMismatchError: The collection was written by another encoder (same
                sizes), or holds chunks another encoder wrote (a late writer of the old
                encoder after a reindex: :mod:`m3kit.store.encoder_stamps`), and ``reindex``
                is false; the message says what differs.
            StoreConnectionError: The server cannot be reached or refuses the request.
        """
        heads = encoder.available_heads
        store = M3Store._open_unsettled(  # the cut is settled by __init__ (it may reindex)
            location,
            collection=collection,
            dense_dim=encoder.dense_dim,
            colbert_dim=encoder.colbert_dim if Head.COLBERT in heads else None,
            sparse=Head.SPARSE in heads,
            url=url,
            api_key=api_key,
            backend=backend,
            create=create,
            payload_indexes=payload_indexes,
            cluster=cluster,
            connection=connection,
        )
        try:
            return cls(
                encoder,
                store,
                reindex=reindex,
                show_progress=show_progress,
                search=search,
                sparse_top_k=sparse_top_k,
                sparse_min_weight=sparse_min_weight,
            )
        except BaseException:
            store.close()
            raise

    def __getstate__(self) -> NoReturn:
        """Refuse pickling (and ``copy.copy``): the index holds an open collection and a
        loaded model, whose locks and handles a copy cannot take; it failed with
        ``cannot pickle '_thread.lock' object``, naming neither (nor any class holding it:
        LangChain's retrievers and stores, LlamaIndex's retriever).

        Raises:
            pickle.PicklingError: Says what to do instead.
        """
        raise pickle.PicklingError(self._copy_refusal("pickle or copy"))

    def __deepcopy__(self, memo: dict[int, object] | None = None) -> NoReturn:
        """Refuse a deep copy (see :meth:`__getstate__`).

        Raises:
            TypeError: Says what to do instead.
        """
        raise TypeError(self._copy_refusal("deep-copy"))

    def _copy_refusal(self, how: str) -> str:
        return (
            f"cannot {how} an M3Index (or an object holding one: a retriever or vector "
            "store): it holds an open Qdrant collection and a loaded model; share the object "
            "within the process, and in another process open the collection again "
            "(M3Index.open, or the class's own open / from_existing_index)"
        )

    def __repr__(self) -> str:
        return f"M3Index(store={self.store!r})"

    @property
    def sparse_cut(self) -> SparseCut:
        """The sparse cut of every chunk stored and query searched: the store's, so also
        the one another index sharing the store changed it to (:mod:`m3kit.store.recut`)."""
        return self.store.sparse_cut or SparseCut()

    def check_encoder(self) -> None:
        """Check that the encoder is still the one this index was opened with, and that the
        store still writes and searches as it.

        Run before every write and search (the store's too: :attr:`M3Store.encoder_check`).
        Cheap: :func:`~m3kit.fingerprint.encoder_fingerprint` re-reads no weight unless the
        encoder changed, and the store is checked in memory.

        Several indexes may share one store: those of one encoder identity all keep working,
        but one opened on it with another encoder (re-encoding the collection, or recording
        itself in an empty one) takes the store over for good, and this index then refuses
        every write and search, even once that index is closed or dropped: the collection
        holds the other encoder's vectors. The check is of the store's writer slot, not of
        the collection's record (a request per call); see :mod:`m3kit.store.holder`. Another
        store object (another process) re-encoding the collection is seen by the store's
        writes and searches (:mod:`m3kit.store.record_check`).

        Raises:
            FingerprintMismatchError: Another index with another encoder took the store over
                since this one was opened (names both encoders): open a new index on it.
            EncoderChangedError: The encoder changed in memory since the index was opened
                (its model trained in place or given other weights, or a setting such as
                ``max_length`` reassigned): its vectors would be written or compared under the
                identity of the encoder it was. Names what changed.
        """
        check_held(self.store, self.fingerprint)
        now = encoder_fingerprint(self.encoder)
        if now.identity == self.fingerprint.identity:
            return
        what = fingerprint_change(self.encoder) or "it changed"
        differs = ", ".join(
            f"{f} {_short(a)} -> {_short(b)}" for f, a, b in self.fingerprint.differences(now)
        )
        raise EncoderChangedError(
            f"this index's encoder changed in memory since the index was opened: {what}. "
            f"It is no longer the encoder the collection records ({differs}), so its vectors "
            "would be stored or searched as that encoder's; nothing was written or searched. "
            "To keep using the collection, use the encoder it records (load it again with "
            "M3Encoder.from_pretrained, or undo the change); to use the changed encoder, "
            "open the index again with it: M3Index.open(encoder, ..., reindex=True) "
            "re-encodes the stored documents with it (or use another collection)"
        )

    # -- writing (pending, write_records, add_texts, aadd_texts, delete: IndexWrites) -------
    def _records(
        self,
        docs: Sequence[_Doc],
        chunker: _Chunker | None,
        show_progress: bool | None,
        truncation: Truncation | str = "warn",
    ) -> tuple[list[ChunkRecord], list[str]]:
        return build_records(
            self.encoder, self.store.heads, docs, chunker, show_progress, truncation
        )

    def count(self) -> int:
        """Number of stored chunks."""
        return self.store.count()

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> M3Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:39]}…"
