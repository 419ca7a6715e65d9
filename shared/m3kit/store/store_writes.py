"""The write path of :class:`~m3kit.store.M3Store`: chunks in, stale versions out.

Split from :mod:`m3kit.store.store` (as :mod:`m3kit.store.store_reads` is): :class:`StoreWrites`
is a base class of ``M3Store`` holding :meth:`~m3kit.store.M3Store.upsert`; ``M3Store.__init__``
sets the backend, schema, heads, writer id, cluster settings and write lock it uses.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any, cast

from qdrant_client import models
from tqdm.auto import tqdm

from m3kit.outputs import Head
from m3kit.store.cluster import ClusterSettings
from m3kit.store.filters import stale_chunks_filter
from m3kit.store.foreign_points import delete_replaced_foreign
from m3kit.store.payload_indexes import check_indexed_values, holds_number
from m3kit.store.plan import PointData, StorageBackend
from m3kit.store.points import (
    WriteBatches,
    check_fits_request,
    document_versions,
    fitting_batch_size,
    plain_json,
    to_point,
)
from m3kit.store.record_check import check_write
from m3kit.store.records import ChunkRecord
from m3kit.store.replace_journal import finish_interrupted, record_replacing, replaced
from m3kit.store.schema import (
    CHUNK_COUNT,
    CHUNK_INDEX,
    DOC_HASH,
    DOC_ID,
    METADATA,
    CollectionSchema,
)
from m3kit.store.sparse_cut import SparseCut

if TYPE_CHECKING:
    from m3kit.store.store import M3Store

__all__ = ["StoreWrites"]

logger = logging.getLogger(__name__)


class StoreWrites:
    """The write methods of :class:`~m3kit.store.M3Store` (its base; ``M3Store`` sets these)."""

    _backend: StorageBackend
    schema: CollectionSchema
    writer_id: str | None
    encoder_check: Callable[[], None] | None = None  # set by M3Index (M3Store.__init__)
    cluster: ClusterSettings | None
    write_lock: threading.RLock
    sparse_cut: SparseCut | None = None  # set by M3Index (M3Store.__init__)

    _closed: bool

    def _refuse_closed(self) -> None:
        """Refuse a write the store's ``close()`` came before (checked under the write lock):
        one that waited for the lock while another thread closed the store went on into the
        released folder, wrote its replace journal there and logged a failed clean-up."""
        if self._closed:
            raise RuntimeError(
                f"the store at {self._backend.where} is closed (M3Store.close / M3Index.close); "
                "nothing was written: open the collection again to use it"
            )

    @property
    def heads(self) -> frozenset[Head]:
        """The heads this collection stores."""
        out = {Head.DENSE}
        if self.schema.sparse:
            out.add(Head.SPARSE)
        if self.schema.colbert_dim is not None:
            out.add(Head.COLBERT)
        return frozenset(out)

    def upsert(
        self,
        records: Iterable[ChunkRecord],
        batch_size: int | None = None,
        show_progress: bool | None = None,
        *,
        replace: bool = False,
        text_instruction: str | None = None,
    ) -> list[str]:
        """Write chunks; points with the same (doc_id, chunk_index) are overwritten.

        Args:
            records: The chunks. Records of one document should come in one call (their
                default ``doc_hash`` / ``chunk_count`` are computed over the call).
            batch_size: Points per write request (default: the cluster settings'
                ``write_batch_size``, else 64); on a server, fewer when that many would pass
                Qdrant's default request limit of 32 MiB (large ColBERT vectors). With cluster
                settings, up to ``write_parallelism`` requests are in flight at once.
            show_progress: tqdm bar (default: on for more than one batch).
            replace: After writing, delete each written document's other chunks (older
                versions, or indices beyond its ``chunk_count``; in a folder, a process killed
                before that is finished when the folder is opened again:
                :mod:`m3kit.store.replace_journal`); also when a write request
                fails, for the documents of every request that succeeded (with parallel
                requests, also those that landed after the failed one). A document larger
                than one request, written in part, keeps only its new chunks and is written
                whole by the next ``add_texts``. A document's points go in one request when
                they fit, so a failed request leaves its documents old.
            text_instruction: The prefix the records' texts were encoded after (LlamaIndex's
                ``text_instruction``; ``None`` or ``""``: none), which must be the one the
                collection records (:mod:`m3kit.store.doc_prefix`; recorded if it has none).

        Returns:
            The point ids, in input order.

        Raises:
            EncoderChangedError: The store belongs to an :class:`~m3kit.store.M3Index` whose
                encoder changed in memory since it was opened (nothing written).
            RuntimeError: The store was closed (nothing written).
            FingerprintMismatchError: Another index or process re-encoded the collection
                with another encoder since this store was opened, or is doing so (nothing
                written; open it again): the record is read before every call
                (:mod:`m3kit.store.record_check`).
            ValueError: Likewise for the collection's sparse cut; the collection records
                another document prefix than ``text_instruction``; or a chunk is larger than
                one request to the server may be (nothing written; the message names it).
        """
        if self.encoder_check is not None:
            self.encoder_check()
        recs = list(records)
        if batch_size is None:
            batch_size = self.cluster.write_batch_size if self.cluster is not None else 64
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        version = document_versions(recs)
        points = [  # every record checked before the first write
            to_point(
                self.schema, self.heads, self.writer_id, r, *version[r.doc_id], self.sparse_cut
            )
            for r in recs
        ]
        self._check_indexed(points)
        check_fits_request(points, self._backend.request_bytes)  # else a 413 after some writes
        limits = self._backend.request_bytes, self._backend.request_values  # (a server; edge)
        batch_size = fitting_batch_size(points, batch_size, *limits)
        plan = WriteBatches.of([r.doc_id for r in recs], points, batch_size)
        show = len(plan.batches) > 1 if show_progress is None else show_progress
        workers = min(self.cluster.write_parallelism if self.cluster else 1, len(plan.batches))
        written: set[int] = set()  # requests that succeeded
        with self.write_lock:
            self._refuse_closed()  # closed while this write waited for the lock
            # the record read under the lock, so this store's writers check and write one
            # at a time (two of other document prefixes on an emptied collection: doc_prefix)
            check_write(cast("M3Store", self), text_instruction)
            with tqdm(
                total=len(plan.batches), desc="upsert", unit="batch", disable=not show
            ) as bar:
                if replace:  # a process killed before the old versions go: finished at next open
                    # an earlier write of this process interrupted (Ctrl-C) left its journal: it is
                    # finished first, as an open would, not overwritten (its documents kept both
                    # versions' chunks for good)
                    finish_interrupted(self._backend)
                    record_replacing(self._backend, version)
                try:
                    if workers > 1:  # a server: several requests in flight
                        _write_parallel(self._backend.upsert, plan, workers, written, bar)
                    else:
                        for i, batch in enumerate(plan.batches):
                            self._backend.upsert(batch)
                            written.add(i)
                            bar.update(1)
                except BaseException:
                    # the documents written whole still lose their stale chunks (a shrunk
                    # document's old tail would be served), and so does a document larger than a
                    # request written in part: its new chunks stay, its old ones go, and it is
                    # incomplete (the next add_texts writes it again) but never half old; the
                    # documents of the failed request are left as they were. With parallel
                    # requests, "written" includes those that landed after the failed one.
                    if replace:
                        started = plan.started_documents(written)
                        try:  # logged, not raised over the write's own error
                            self._drop_stale(started, version)
                        except Exception:
                            logger.exception(
                                "a write failed, and so did deleting the stale chunks of the %d "
                                "document(s) written before it; writing them again replaces those "
                                "chunks",
                                len(started),
                            )
                    raise
                if replace:
                    self._drop_stale(list(version), version)
                    replaced(self._backend)  # (after a failed write it stays: the next open
                    # finishes what the failed request may have stored in part)
                else:
                    self._backend.finish_writes()
        return [p.id for p in points]

    def set_chunk_count(self, doc_id: str, doc_hash: str, chunk_count: int) -> None:
        """Give every stored chunk of ``doc_id`` at version ``doc_hash`` the count ``chunk_count``.

        For a writer that adds chunks to a stored version of a document (LlamaIndex's
        ``VectorStoreIndex`` writes a document's nodes in batches): the chunks it wrote carry
        the new count, this gives it to the ones written before. Nothing else changes; chunks
        of other versions, and any at ``chunk_count`` or beyond (not part of that version:
        ``upsert(..., replace=True)`` deletes them), are left as they are.

        Raises:
            ValueError: ``doc_id`` or ``doc_hash`` is not a non-empty string, or
                ``chunk_count`` is not a positive int.
        """
        for name, value in (("doc_id", doc_id), ("doc_hash", doc_hash)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if isinstance(chunk_count, bool) or not isinstance(chunk_count, int) or chunk_count < 1:
            raise ValueError(f"chunk_count must be a positive int, got {chunk_count!r}")
        selector = models.Filter(
            must=[
                models.FieldCondition(key=DOC_ID, match=models.MatchValue(value=doc_id)),
                models.FieldCondition(key=DOC_HASH, match=models.MatchValue(value=doc_hash)),
                models.FieldCondition(key=CHUNK_INDEX, range=models.Range(lt=chunk_count)),
            ],
            must_not=[
                models.FieldCondition(key=CHUNK_COUNT, match=models.MatchValue(value=chunk_count))
            ],
        )
        with self.write_lock:
            self._backend.set_payload([(selector, {CHUNK_COUNT: chunk_count})])

    def set_version(self, doc_id: str, doc_hash: str, new_hash: str) -> None:
        """Give every stored chunk of ``doc_id`` at version ``doc_hash`` the version ``new_hash``.

        For a writer that changes some chunks of a stored version in place (a LlamaIndex node
        read back and edited): the version then no longer names what another writer stored
        under it, so a later write of that writer's document is not taken for one already
        stored. Nothing else changes; chunks of other versions are left as they are.

        Raises:
            ValueError: ``doc_id``, ``doc_hash`` or ``new_hash`` is not a non-empty string.
        """
        for name, value in (("doc_id", doc_id), ("doc_hash", doc_hash), ("new_hash", new_hash)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        selector = models.Filter(
            must=[
                models.FieldCondition(key=DOC_ID, match=models.MatchValue(value=doc_id)),
                models.FieldCondition(key=DOC_HASH, match=models.MatchValue(value=doc_hash)),
            ]
        )
        with self.write_lock:
            self._backend.set_payload([(selector, {DOC_HASH: new_hash})])

    def metadata_operations(
        self, updates: Mapping[str, tuple[str, str, Mapping[str, Any]]]
    ) -> list[tuple[models.Filter, dict[str, Any]]]:
        """The checked operations of :meth:`set_document_metadata` (nothing written).

        Args:
            updates: ``{doc_id: (old doc_hash, new doc_hash, metadata)}``; each chunk is
                updated only while it holds the old version (another writer's newer version
                is left as it is).

        Raises:
            ValueError: Metadata that is not JSON, or a value a payload index of the
                collection would hide.
        """
        ops: list[tuple[models.Filter, dict[str, Any]]] = []
        indexes: Mapping[str, str] | None = None
        for doc_id, (old_hash, new_hash, metadata) in updates.items():
            plain = plain_json(metadata, f"the metadata of document {doc_id!r}")
            if holds_number(plain):
                if indexes is None:
                    indexes = cast("M3Store", self)._payload_index_types()
                check_indexed_values(plain, indexes, f"metadata of document {doc_id!r}")
            selector = models.Filter(
                must=[
                    models.FieldCondition(key=DOC_ID, match=models.MatchValue(value=doc_id)),
                    models.FieldCondition(key=DOC_HASH, match=models.MatchValue(value=old_hash)),
                ]
            )
            ops.append((selector, {METADATA: plain, DOC_HASH: new_hash}))
        return ops

    def set_document_metadata(
        self, updates: Mapping[str, tuple[str, str, Mapping[str, Any]]]
    ) -> None:
        """Give documents new metadata and a new version in place, without their vectors
        (:mod:`m3kit.store.metadata_updates`: only the metadata changed); the collection's
        record is checked first, as for every write, and the operations go in requests that
        fit the server's size limit.

        Args:
            updates: As :meth:`metadata_operations`.

        Raises:
            FingerprintMismatchError: As :meth:`upsert` (nothing written).
            ValueError: As :meth:`metadata_operations` (nothing written).
            RuntimeError: The store is closed.
        """
        ops = self.metadata_operations(updates)
        if not ops:
            return
        with self.write_lock:
            self._refuse_closed()
            check_write(cast("M3Store", self))  # another process's reindex or recut: refused
            for batch in _request_batches(ops, self._backend.request_bytes):
                self._backend.set_payload(batch)

    def _check_indexed(self, points: Sequence[PointData]) -> None:
        """Refuse metadata an index of the collection would hide (:func:`check_indexed_values`).

        The collection's indexes are read at each write whose metadata holds a number (the
        only values an index hides), so one another store added since this one opened is
        seen; qdrant-client's local mode has none.
        """
        self.refuse_hidden_values(
            (
                f"metadata of document {p.payload[DOC_ID]!r} (chunk {p.payload[CHUNK_INDEX]})",
                p.payload.get(METADATA) or {},
            )
            for p in points
        )

    def refuse_hidden_values(self, metadatas: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Refuse a metadata value a payload index of the collection would hide, before the
        documents are encoded: ``metadatas`` is ``(what, metadata)`` pairs (``what`` names it
        in the error). Writes check again (an index may be added meanwhile).

        Raises:
            ValueError: See :func:`~m3kit.store.payload_indexes.check_indexed_values`.
        """
        named = [(what, meta) for what, meta in metadatas if holds_number(meta)]
        if not named:
            return
        indexes = cast("M3Store", self)._payload_index_types()
        for what, meta in named if indexes else ():
            check_indexed_values(meta, indexes, what)

    def _drop_stale(self, doc_ids: Sequence[str], version: Mapping[str, tuple[str, int]]) -> None:
        """Make the writes so far visible, then delete each document's chunks of other
        versions (or beyond its chunk count), and the foreign points they replace."""
        self._backend.finish_writes()
        for doc_id in doc_ids:
            self._backend.delete(stale_chunks_filter(doc_id, *version[doc_id]))
        delete_replaced_foreign(self._backend, doc_ids)


def _write_parallel(
    upsert: Callable[[Any], None], plan: WriteBatches, workers: int, written: set[int], bar: Any
) -> None:
    """Send the requests ``workers`` at a time with ``upsert``, adding each that succeeds
    to ``written``.

    On a failure, requests not yet sent are cancelled, those in flight are waited for
    (and counted when they land), then the first error is raised: the caller's stale
    cleanup then covers every request that reached the server, not only those before the
    failed one in writing order. An interruption here (Ctrl-C) does the same: nothing more
    is sent, and what was in flight is waited for and counted.
    """
    errors: list[BaseException] = []
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(upsert, b): i for i, b in enumerate(plan.batches)}
        try:
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                failure = future.exception()
                if failure is None:
                    written.add(futures[future])
                    bar.update(1)
                    continue
                errors.append(failure)
                for pending in futures:
                    pending.cancel()  # only those not started; running ones finish
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            written.update(
                i
                for f, i in futures.items()
                if f.done() and not f.cancelled() and f.exception() is None
            )
            raise
    if errors:
        if len(errors) > 1:
            logger.warning(
                "%d more write request(s) in flight failed too: %s",
                len(errors) - 1,
                "; ".join(repr(e) for e in errors[1:4]),
            )
        raise errors[0]


#: Operations per metadata request at most (each a filter and a payload).
_OPS_PER_REQUEST = 256


def _request_batches(
    ops: list[tuple[models.Filter, dict[str, Any]]], limit: int | None
) -> list[list[tuple[models.Filter, dict[str, Any]]]]:
    """``ops`` in requests of at most :data:`_OPS_PER_REQUEST`, each under ``limit`` bytes
    (``None``: no limit) by a generous estimate of its JSON (one request of 4,000 documents'
    metadata passed a server's limit: HTTP 413).

    >>> len(_request_batches([(models.Filter(), {"m": "x" * 100})] * 600, None))
    3
    >>> len(_request_batches([(models.Filter(), {"m": "x" * 100})] * 10, 1500))
    5
    """
    batches: list[list[tuple[models.Filter, dict[str, Any]]]] = [[]]
    size = 0
    for op in ops:
        cost = 2 * len(json.dumps(op[1])) + 512  # the payload (escapes) and its filter
        full = len(batches[-1]) >= _OPS_PER_REQUEST or (limit is not None and size + cost > limit)
        if batches[-1] and full:
            batches.append([])
            size = 0
        batches[-1].append(op)
        size += cost
    return batches
