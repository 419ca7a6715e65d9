"""``M3Store``: one Qdrant collection of M3 chunks (vectors in, hits out)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qdrant_client import models

from m3kit.store.cancelling import holding
from m3kit.store.cluster import ClusterSettings
from m3kit.store.connection import ConnectionSettings
from m3kit.store.filters import (
    FilterLike,
    distinct_doc_ids,
    matches_everything,
    points_filter,
)
from m3kit.store.foreign_points import foreign_or_documents
from m3kit.store.group_journal import finish_groups, replacing_groups
from m3kit.store.opening import DEFAULT_BACKEND
from m3kit.store.plan import StorageBackend
from m3kit.store.points import plain_json
from m3kit.store.query import QueryOptions
from m3kit.store.records import Backend
from m3kit.store.schema import (
    CHUNK_ID,
    DOC_HASH,
    EXTRA,
    CollectionSchema,
)
from m3kit.store.sparse_cut import SparseCut
from m3kit.store.stock_record import Recheck
from m3kit.store.store_opening import StoreOpening
from m3kit.store.store_reads import _DOC_BATCH, StoreReads
from m3kit.store.store_search import StoreSearch
from m3kit.store.store_writes import StoreWrites
from m3kit.store.unopened import StoreUnopened

if TYPE_CHECKING:
    from m3kit.fingerprint import EncoderFingerprint

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BACKEND", "M3Store"]


class M3Store(StoreOpening, StoreWrites, StoreSearch, StoreReads, StoreUnopened):
    """One Qdrant collection in the m3kit layout, on the embedded engine or qdrant-client.

    Open it with :meth:`open`. Thread-safe: queries and writes may come from several threads.
    A collection that no open settles (documents a reindex cannot rebuild, written
    with two sparse cuts) is left by deleting them without opening it:
    :meth:`delete_documents_unopened` (:mod:`m3kit.store.unopened`).
    """

    def __init__(self, backend: StorageBackend, schema: CollectionSchema, *, kind: Backend) -> None:
        """Wrap an opened backend whose collection already has ``schema`` (use :meth:`open`)."""
        self._backend = backend
        self.schema = schema
        self.backend = kind
        self.query_options = QueryOptions()
        #: Stored with every point written (``encoder_id``): set by :class:`M3Index` to its
        #: encoder's fingerprint identity.
        self.writer_id: str | None = None
        #: What encoder ``writer_id`` is, for messages (:mod:`m3kit.store.holder`).
        self.writer_name: str | None = None
        #: The stamps (payload ``encoder_id``) of points that encoder wrote: ``writer_id``
        #: and the one an older m3kit gave it; a search hit stamped otherwise is refused
        #: (:mod:`m3kit.store.record_check`). Empty: not checked (a plain store).
        self.writer_ids: frozenset[str] = frozenset()
        #: Called before every :meth:`upsert` and :meth:`query`: set by :class:`M3Index` to
        #: its check that the encoder is still the one whose identity it writes and searches
        #: with (:meth:`M3Index.check_encoder`).
        self.encoder_check: Callable[[], None] | None = None
        #: The sparse weights kept of every chunk written and every query searched: the cut
        #: the collection records (set by :meth:`open`), or the one given to :class:`M3Index`
        #: (:mod:`m3kit.store.sparse_cut`); ``None``: every one.
        self.sparse_cut: SparseCut | None = None
        #: Server write settings (batch size, requests in flight); set by :meth:`open`.
        self.cluster: ClusterSettings | None = None
        #: Server request settings (timeout, request size limit) it was opened with; set by
        #: :meth:`open` (``None``: the defaults, or no server).
        self.connection: ConnectionSettings | None = None
        #: Held by every write, and by writers that read the stored chunks before writing
        #: (:class:`M3Index`, the adapters): a replacing write (new chunks, then the old
        #: version's deleted) never interleaves with another one. Re-entrant.
        self.write_lock = threading.RLock()
        #: The group journals of :meth:`replacing_groups` blocks under way (skipped by
        #: :meth:`finish_groups`).
        self._groups_in_progress: set[Path] = set()
        #: > 0 while an index opening on this store settles or re-encodes the collection: its
        #: writes are not checked against the record (:func:`~m3kit.store.record_check.own_change`).
        self._own_change = 0
        #: When a search next reads the collection's record again (searches check the stamps
        #: of their hits; this bounds how long a change that ranks no hit goes unseen:
        #: :meth:`~m3kit.store.store_search.StoreSearch._recheck_record`).
        self._record_recheck = Recheck()
        #: The encoder record an index opened on this store will write with its first write:
        #: the same encoder as recorded, with another precision or model path (or a record
        #: from an older m3kit gaining ``architecture``). Not written on open: a search-only
        #: process (another machine's model folder, a read-only API key) changes nothing.
        self.record_at_write: EncoderFingerprint | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"M3Store(backend={self.backend.value}, collection={self._backend.collection!r}, "
            f"where={self._backend.where!r}, schema=[{self.schema.describe()}])"
        )

    @property
    def collection(self) -> str:
        return self._backend.collection

    @property
    def location(self) -> str | None:
        """The folder the collection was opened in (``None``: in memory, or on a server)."""
        return self._backend.location

    @property
    def url(self) -> str | None:
        """The server URL the collection was opened at (``None``: in this process)."""
        return self._backend.url

    # -- writes (upsert: StoreWrites) ------------------------------------------------
    def set_writer_fields(
        self,
        updates: Mapping[str, Mapping[str, Any]],
        *,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        """Give stored chunks their writer's new ``chunk_id`` / ``extra``; nothing else changes.

        For a writer that stores a chunk again unchanged under a new id of its own (a
        LlamaIndex node parsed again): the text, vectors and version stay, so nothing is
        encoded or rewritten, but lookups by the new id (:meth:`find`) find the chunk. A point
        that is gone is skipped, as is one whose stored ``doc_hash`` is no longer the one
        given in ``versions`` (another writer replaced the document meanwhile).

        Args:
            updates: ``{point id: {"chunk_id": str, "extra": dict}}`` (either key or both).
            versions: ``{point id: doc_hash}`` the update is conditioned on (default: none).

        Raises:
            ValueError: An id is not a point id, a key is not one of the writer's fields, a
                ``chunk_id`` is not a non-empty string, or ``extra`` is not a JSON mapping.
        """
        points_filter(list(updates), None)  # raises for an id that is not a point id
        ops: list[tuple[models.Filter, dict[str, Any]]] = []
        for pid, fields in updates.items():
            unknown = set(fields) - {CHUNK_ID, EXTRA}
            if unknown:
                raise ValueError(
                    f"only {CHUNK_ID!r} and {EXTRA!r} can be set this way; got {sorted(unknown)}"
                )
            payload: dict[str, Any] = {}
            if CHUNK_ID in fields:
                chunk_id = fields[CHUNK_ID]
                if not isinstance(chunk_id, str) or not chunk_id:
                    raise ValueError(f"chunk_id of point {pid!r} must be a non-empty string")
                payload[CHUNK_ID] = chunk_id
            if EXTRA in fields:
                extra = fields[EXTRA]
                if not isinstance(extra, Mapping):
                    raise ValueError(f"extra of point {pid!r} must be a mapping, not {extra!r}")
                # stored as plain JSON, as ChunkRecord.extra is
                payload[EXTRA] = plain_json(extra, f"extra of point {pid!r}")
            if not payload:
                continue
            must: list[Any] = [models.HasIdCondition(has_id=[str(pid)])]
            version = (versions or {}).get(pid)
            if version is not None:
                match = models.MatchValue(value=version)
                must.append(models.FieldCondition(key=DOC_HASH, match=match))
            ops.append((models.Filter(must=must), payload))
        if ops:
            with self.write_lock:
                self._backend.set_payload(ops)

    def optimize(self) -> None:
        """Index every point written so far (embedded engine: builds the HNSW graph now).

        Writes trigger this by themselves once the collection holds ``index_after``
        unindexed points (counted by the engine, across runs); call it after a smaller load
        to make the next queries use the index. A no-op for qdrant-client.
        """
        self._backend.finish_writes(force=True)

    def delete_documents(self, doc_ids: Iterable[str | int]) -> None:
        """Delete every chunk of these documents (unknown ids are ignored).

        Ids are taken as ``add_texts`` stores them: a str, or an int as its digits.

        Raises:
            TypeError: ``doc_ids`` is a single string (it would be read as its characters,
                deleting the documents whose ids are those characters), or an id is neither
                a str nor an int.

        An id that is the point id of a point another program wrote (no ``doc_id`` /
        ``doc_hash``: a search
        gives it as the hit's ``doc_id``, :mod:`m3kit.store.foreign_points`) deletes that point.

        Ids are deleted in batches of 256; an engine error in a later batch is raised after an
        error log saying how many documents were deleted before it.
        """
        ids = distinct_doc_ids(doc_ids, "doc_ids")
        with self.write_lock:
            for i in range(0, len(ids), _DOC_BATCH):
                try:
                    self._backend.delete(foreign_or_documents(ids[i : i + _DOC_BATCH]))
                except Exception:
                    if i:  # earlier batches are gone: say so, not just the engine's error
                        logger.error(
                            "m3kit: %d of the %d documents were deleted before this failure "
                            "(the first %d ids given); the others are still stored. Deleting "
                            "is idempotent: call delete_documents again with the same ids.",
                            i,
                            len(ids),
                            i,
                        )
                    raise

    def delete_points(
        self, ids: Sequence[str] | None = None, *, filter: FilterLike | None = None
    ) -> None:
        """Delete the chunks with these point ids and/or matching the filter (both: AND).

        Raises:
            ValueError: Neither is given, or only a ``models.Filter`` without a condition
                (use :meth:`clear` to empty the collection), or an id is not a point id (a
                UUID).
        """
        if ids is None and isinstance(filter, models.Filter) and matches_everything(filter):
            raise ValueError(
                f"filter {filter!r} has no condition: it matches every chunk. Nothing was "
                "deleted; use clear() to empty the collection"
            )
        with self.write_lock:
            self._backend.delete(points_filter(ids, self._filter(filter)))

    def replacing_groups(
        self, field: str, groups: Mapping[Any, Sequence[str]]
    ) -> AbstractContextManager[None]:
        """Journal a group replacement (:mod:`m3kit.store.group_journal`): the block deletes,
        for each ``{value: keep}``, the chunks whose payload ``field`` is ``value`` other than
        those of the documents ``keep``, which are stored whole. A process killed in the block
        leaves it to be finished when the folder is opened again."""
        return replacing_groups(self._backend, field, groups, self._groups_in_progress)

    def finish_groups(self) -> None:
        """Finish the group replacements interrupted earlier (Ctrl-C) in this process, as an
        open finishes those of a killed one; call it before looking at what is stored."""
        with holding(self.write_lock):  # an async write cancelled while it waits: not done
            finish_groups(self._backend, self._groups_in_progress)

    def clear(self) -> None:
        """Delete every chunk; the collection and its schema stay."""
        with self.write_lock:
            self._backend.delete(models.Filter())

    def collection_metadata(self) -> dict[str, Any]:
        """m3kit's record of the collection (what wrote it); ``{}`` when there is none.

        Kept in the collection's metadata (qdrant-client: servers and local mode) or in
        ``m3kit_collection.json`` beside the shard (embedded engine); never a point.
        """
        return self._backend.read_metadata()

    def stock_models(self) -> dict[str, str]:
        """The models an adapter's stock-layout store (``M3QdrantVectorStore``) recorded for
        the collection's vectors (:mod:`m3kit.store.stock_record`); ``{}`` when none did."""
        return self._backend.stock_models()

    def set_collection_metadata(self, meta: Mapping[str, Any]) -> None:
        """Replace m3kit's record of the collection (atomically)."""
        self._backend.write_metadata(meta)

    def close(self) -> None:
        """Release files, locks and connections (idempotent; the store is unusable afterwards).

        A write under way in another thread is waited for (its stale chunks' deletion
        included), so no document is left with its new chunks beside its old ones; writes
        after the close raise.
        """
        with self.write_lock:
            if not self._closed:
                self._closed = True
                self._backend.close()

    def __enter__(self) -> M3Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
