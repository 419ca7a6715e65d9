"""Storage backend on qdrant-edge-py: Qdrant's engine (Rust) in-process, one shard per collection.

The shard lives in ``<location>/<collection>/``; with no location it lives in a temporary
folder removed on :meth:`EdgeBackend.close`. Edge has Qdrant's universal query (prefetch,
RRF / DBSF fusion, MaxSim multivectors), so plans run natively.

Edge has no background optimizer, so m3kit decides when indexes are built, from the shard's
own state: after each write call, once :meth:`EdgeBackend.unindexed_points` (points of the
collection not yet in an HNSW graph, whichever process or run wrote them) reaches
``index_after`` (default :data:`INDEX_AFTER`), that call runs the shard's optimizers
in-process, which turn the plain segment into an indexed one. A collection grown by many
small ``m3kit index`` runs therefore never holds more than ``index_after`` unindexed points;
fewer are searched exhaustively, which stays fast at that size. ``M3Store.optimize()`` forces
a pass. Payload indexes (``doc_id`` and declared ``metadata.<key>`` ones) are the engine's own
field indexes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe
from qdrant_client import models

from m3kit.errors import SchemaMismatchError, StoreConnectionError
from m3kit.store.edge_filters import edge_filter, edge_point_id
from m3kit.store.edge_folder import ShardFolder
from m3kit.store.edge_requests import ENGINE_CALL_VALUES, edge_point, edge_prefetch, edge_query
from m3kit.store.plan import PointData, RawHit, Stage
from m3kit.store.points import vector_values
from m3kit.store.schema import (
    COLBERT,
    DENSE,
    SPARSE,
    CollectionSchema,
    PayloadIndexType,
    VectorSpec,
    sparse_modifier,
    storage_datatype,
)

__all__ = ["META_FILE", "EdgeBackend", "edge_config", "read_meta_file"]

#: Unindexed points in the collection before a write call builds indexes. Indexing after
#: every small write would rebuild growing HNSW graphs over and over (measured: 5x slower
#: loading at 20k).
INDEX_AFTER = 20_000

#: The engine's own indexing threshold (KB of vectors in a plain segment) for new
#: collections: minimal, so that an optimizer pass m3kit runs indexes every plain segment.
#: Collections created before keep the engine's default (10 MB per vector name), below which
#: a pass leaves a segment plain (exhaustive search).
ENGINE_INDEXING_THRESHOLD_KB = 1

_PAYLOAD_TYPES = {
    PayloadIndexType.KEYWORD: qe.PayloadSchemaType.Keyword,
    PayloadIndexType.INTEGER: qe.PayloadSchemaType.Integer,
    PayloadIndexType.FLOAT: qe.PayloadSchemaType.Float,
    PayloadIndexType.BOOL: qe.PayloadSchemaType.Bool,
    PayloadIndexType.TEXT: qe.PayloadSchemaType.Text,
    PayloadIndexType.DATETIME: qe.PayloadSchemaType.Datetime,
    PayloadIndexType.UUID: qe.PayloadSchemaType.Uuid,
    PayloadIndexType.GEO: qe.PayloadSchemaType.Geo,
}

#: Indexed segments kept before the optimizer merges the smallest ones.
SEGMENTS = 16

_CONFIG_FILE = "edge_config.json"  # written by qdrant-edge in the shard folder
#: m3kit's record of the collection (what wrote it), beside the shard's own files: qdrant-edge
#: 0.9 has no collection metadata (EdgeConfig has no such field), and a reserved point would
#: need excluding from every query, count and scroll.
META_FILE = "m3kit_collection.json"
_SCROLL_PAGE = 512


def edge_config(schema: CollectionSchema) -> qe.EdgeConfig:
    """The edge shard configuration of an m3kit collection."""
    vectors = {DENSE: qe.EdgeVectorParams(size=schema.dense_dim, distance=qe.Distance.Cosine)}
    if schema.colbert_dim is not None:
        vectors[COLBERT] = qe.EdgeVectorParams(
            size=schema.colbert_dim,
            distance=qe.Distance.Cosine,
            multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
            datatype=qe.VectorStorageDatatype.Float16,
            # m=0: no HNSW graph; ColBERT only re-scores prefetched candidates.
            hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
        )
    sparse = {SPARSE: qe.EdgeSparseVectorParams()} if schema.sparse else None
    return qe.EdgeConfig(
        vectors=vectors,
        sparse_vectors=sparse,
        # Keep indexed segments apart (up to 16) instead of merging them on every pass:
        # merging rebuilds the whole HNSW graph (measured: the 40k pass took 2.6x the 20k
        # one); queries visit each segment's graph, which costs little at this count.
        optimizers=qe.EdgeOptimizersConfig(
            default_segment_number=SEGMENTS, indexing_threshold=ENGINE_INDEXING_THRESHOLD_KB
        ),
    )


def read_meta_file(shard: Path) -> dict[str, Any]:
    """m3kit's record of the collection in the shard folder ``shard``; ``{}`` when absent."""
    path = shard / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore or delete it") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return meta


def write_meta_file(shard: Path, meta: Mapping[str, Any]) -> None:
    """Write a shard's metadata file atomically (a temporary file of a fixed name renamed
    over it, both synced). Not :func:`~m3kit.store.replace_journal.write_whole`: its
    ``mkstemp`` file is owner-only (0600), and a collection another user's service reads
    needs the file as the umask makes it."""
    path = shard / META_FILE
    tmp = path.with_name(f".{META_FILE}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(dict(meta), f, sort_keys=True, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(shard, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _vector_specs(raw: Mapping[str, Any]) -> dict[str, VectorSpec]:
    """The vectors a shard's persisted config declares, by name (KeyError, TypeError,
    ValueError or AttributeError where its format is not the one known)."""
    found: dict[str, VectorSpec] = {}
    for name, vp in (raw.get("vectors") or {}).items():
        multi = vp.get("multivector_config")
        found[name] = VectorSpec(
            "multivector" if multi else "dense",
            int(vp["size"]),
            str(vp.get("distance", "")).lower(),
            "MaxSim" if multi and multi.get("comparator") == "max_sim" else None,
            storage_datatype(vp.get("datatype")),
        )
    for name, sp in (raw.get("sparse_vectors") or {}).items():
        found[name] = VectorSpec("sparse", modifier=sparse_modifier((sp or {}).get("modifier")))
    return found


def _error(where: str, exc: BaseException, *, creating: bool = False) -> StoreConnectionError:
    text = str(exc)
    hint = (
        "another M3Store or process has it open; close that one first"
        if "WouldBlock" in text or "lock" in text.lower()
        # two processes creating one collection at once: the loser's engine can fail on a
        # file the winner is making (measured: "No such file or directory")
        else "another process may have been creating it at the same moment: open it again; "
        "else check the folder is writable"
        if creating
        else "check the folder exists, is writable and holds an m3kit collection"
    )
    return StoreConnectionError(
        f"cannot open the embedded Qdrant shard at {where}: {text} ({hint})"
    )


class EdgeBackend:
    """One collection as a qdrant-edge shard."""

    def __init__(
        self,
        *,
        collection: str,
        location: str | None,
        schema: CollectionSchema | None,
        index_after: int = INDEX_AFTER,
    ) -> None:
        """Locate (not yet open) the shard.

        Args:
            collection: Collection name (the shard's folder name).
            location: Parent folder, or ``None`` / ``":memory:"`` for a temporary one.
            schema: Schema to create the shard with if it does not exist; ``None``: the
                existing shard's, read by :meth:`found_vectors` (call it before the rest).
            index_after: Unindexed points in the collection at which a write call builds
                indexes.
        """
        if isinstance(index_after, bool) or not isinstance(index_after, int) or index_after < 1:
            raise ValueError(f"index_after must be a positive integer, got {index_after!r}")
        self.collection = collection
        self.request_bytes: int | None = None  # in-process: no requests
        self.request_values: int | None = ENGINE_CALL_VALUES
        self.index_after = index_after
        self._schema = schema
        self._tmp: str | None = None
        self.url: str | None = None
        self.location: str | None = None
        if location is None or location == ":memory:":
            self._tmp = tempfile.mkdtemp(prefix="m3kit-edge-")
            parent = Path(self._tmp)
            self.where = "memory (temporary folder, embedded engine)"
            self.reopen: str | None = None
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        else:
            parent = Path(location)
            self.location = location
            self.where = f"{parent} (embedded engine)"
            self.reopen = f"{str(location)!r}, backend='edge'"
        self._path = parent / collection
        self._folder = ShardFolder(self._path, collection, self.where)
        self._shard: qe.EdgeShard | None = None
        self._closed = False  # by close(): the shard is not loaded again
        # Writes are serialised so an optimize pass never interleaves another writer's batch.
        self._write_lock = threading.Lock()
        # Points this handle wrote since its last pass: a second trigger for overwrites, which
        # the shard's counters do not show as unindexed (see unindexed_points).
        self._written = 0

    def __repr__(self) -> str:
        return f"EdgeBackend(collection={self.collection!r}, where={self.where!r})"

    @property
    def shard(self) -> qe.EdgeShard:
        shard = self._shard
        if shard is None:
            with self._write_lock:
                if self._closed:
                    raise self._closed_error()
                if self._shard is None:
                    try:
                        self._shard = qe.EdgeShard.load(str(self._path))
                    except Exception as exc:
                        raise _error(str(self._path), exc) from None
                    self._folder.loaded()
                shard = self._shard
        else:  # removed or replaced since: its old files would answer (ShardFolder)
            self._folder.check()
        return shard

    # -- schema -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self._path / _CONFIG_FILE).is_file()

    def found_vectors(self) -> dict[str, VectorSpec]:
        """Read the shard's persisted config (read-only: nothing is opened or written).

        Should the file's format ever be unreadable, the shard is loaded with the expected
        config instead, which qdrant-edge checks against the stored segments.
        """
        try:
            found = _vector_specs(json.loads((self._path / _CONFIG_FILE).read_text()))
            if self._schema is None:  # opened for its own layout
                self._schema = CollectionSchema.from_specs(found)
            return found
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
        if self._schema is None:
            raise StoreConnectionError(
                f"cannot read the vectors of collection {self.collection!r} at {self.where} "
                f"from its {_CONFIG_FILE}; open it with M3Store.open and its dimensions"
            )
        try:
            self._shard = qe.EdgeShard.load(str(self._path), edge_config(self._schema))
        except Exception as exc:
            if "incompatible" not in str(exc).lower():
                raise _error(str(self._path), exc) from None
            raise SchemaMismatchError(
                f"collection {self.collection!r} at {self.where} does not match the encoder "
                f"(expected [{self._schema.describe()}]): {exc}; nothing was written"
            ) from None
        self._folder.loaded()
        return self._schema.specs()

    def create(self, schema: CollectionSchema) -> bool:
        self._folder.check_room(0)  # its write-ahead log
        try:
            self._shard = qe.EdgeShard.create(str(self._path), edge_config(schema))
        except Exception as exc:
            raise _error(str(self._path), exc, creating=True) from None
        self._folder.loaded()
        return True  # (the folder lock keeps other processes out)

    def open(self) -> None:
        """Load the shard now, so a folder held by another store fails at open time."""
        _ = self.shard

    def read_metadata(self) -> dict[str, Any]:
        return read_meta_file(self._path)

    def stock_models(self) -> dict[str, str]:
        """None: the stock-layout stores write through qdrant-client, never into this engine."""
        return {}

    def write_metadata(self, meta: Mapping[str, Any]) -> None:
        self._folder.check()
        write_meta_file(self._path, meta)

    def payload_indexes(self) -> dict[str, str]:
        names = {engine: ours.value for ours, engine in _PAYLOAD_TYPES.items()}
        return {
            path: names.get(index.data_type, str(index.data_type))
            for path, index in self.shard.info().payload_schema.items()
        }

    def create_payload_index(self, path: str, kind: PayloadIndexType) -> None:
        shard = self.shard
        # a text index without phrase matching serves a MatchPhrase as matching nothing
        schema: Any = (
            qe.TextIndexParams(phrase_matching=True)
            if kind is PayloadIndexType.TEXT
            else _PAYLOAD_TYPES[kind]
        )
        with self._write_lock:
            shard.update(qe.UpdateOperation.create_field_index(path, schema))

    # -- writes -----------------------------------------------------------------------------
    def upsert(self, points: Sequence[PointData]) -> None:
        shard = self.shard
        with self._write_lock:
            # one engine call, so a failed request leaves its documents as they were (the
            # requests are sized by request_values: the engine holds the GIL through a call)
            self._folder.check_room(4 * sum(map(vector_values, points)))  # (float32)
            shard.update(qe.UpdateOperation.upsert_points([edge_point(p) for p in points]))
            self._written += len(points)

    def set_payload(self, updates: Sequence[tuple[models.Filter, Mapping[str, Any]]]) -> None:
        ops = []
        for selector, payload in updates:
            flt = edge_filter(selector)
            assert flt is not None
            ops.append(qe.UpdateOperation.set_payload_by_filter(flt, dict(payload)))
        shard = self.shard
        with self._write_lock:
            for op in ops:
                shard.update(op)

    def unindexed_points(self) -> int:
        """Points of the collection whose vectors are in no HNSW graph yet (engine state).

        Read from the shard's counters, so it counts what every process and run wrote:
        ``indexed_vectors_count`` sums over the named vectors, where a point's sparse vector
        counts in any segment and its dense (and ColBERT) vectors only once an optimizer pass
        indexed its segment. Overwritten and deleted points still count as indexed in their
        old segment until the engine vacuums it, so after overwrites this undercounts; the
        write counter in :meth:`finish_writes` covers that case.
        """
        schema = self._schema
        if schema is None:  # opened for its own layout, which found_vectors did not read
            raise RuntimeError(f"the vectors of collection {self.collection!r} were not read")
        info = self.shard.info()
        graphs = 1 if schema.colbert_dim is None else 2  # dense (+ ColBERT)
        vectors = graphs + (1 if schema.sparse else 0)
        missing = info.points_count * vectors - info.indexed_vectors_count
        return max(0, -(-missing // graphs))

    def finish_writes(self, *, force: bool = False) -> None:
        """Build indexes when due or forced; blocking.

        Due once :meth:`unindexed_points` or the points this handle wrote since its last
        pass reach ``index_after``.
        """
        shard = self.shard
        with self._write_lock:
            due = force or self._written >= self.index_after
            if not due:
                due = self.unindexed_points() >= self.index_after
            if due:
                shard.optimize()
                self._written = 0

    def delete(self, selector: models.Filter) -> None:
        flt = edge_filter(selector)
        assert flt is not None
        shard = self.shard
        with self._write_lock:
            shard.update(qe.UpdateOperation.delete_points_by_filter(flt))

    # -- reads ------------------------------------------------------------------------------
    def _closed_error(self) -> RuntimeError:
        return RuntimeError(
            f"the embedded Qdrant shard at {self.where} is closed (M3Store.close / "
            "M3Index.close); open the collection again to use it"
        )

    @contextlib.contextmanager
    def _reading(self) -> Iterator[qe.EdgeShard]:
        """The shard to read; a read that a ``close()`` in another thread cut short raises
        the closed error (the engine's own was a bare "Shard is not initialized")."""
        shard = self.shard
        try:
            yield shard
        except Exception:
            if self._closed:
                raise self._closed_error() from None
            raise

    def count(self, selector: models.Filter | None = None) -> int:
        with self._reading() as shard:
            return int(shard.count(qe.CountRequest(exact=True, filter=edge_filter(selector))))

    def scroll(self, selector: models.Filter | None, keys: Sequence[str]) -> Iterator[RawHit]:
        offset: Any = None
        flt = edge_filter(selector)
        while True:
            with self._reading() as shard:
                records, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=_SCROLL_PAGE,
                        filter=flt,
                        with_payload=list(keys),
                        with_vector=False,
                    )
                )
            for r in records:
                yield RawHit(str(r.id), 0.0, dict(r.payload or {}))
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str]) -> Mapping[str, dict[str, Any]]:
        if not ids:
            return {}
        with self._reading() as shard:
            records = shard.retrieve(
                [edge_point_id(i) for i in ids], with_payload=True, with_vector=False
            )
        return {str(r.id): dict(r.payload or {}) for r in records}

    def query_batch(self, stages: Sequence[Stage], *, with_payload: bool) -> list[list[RawHit]]:
        requests = [
            qe.QueryRequest(
                limit=s.limit,
                query=edge_query(s.query),
                prefetches=[edge_prefetch(p) for p in s.prefetch] or None,
                filter=edge_filter(s.filter),
                params=qe.SearchParams(exact=True) if s.exact else None,
                with_payload=(
                    qe.PayloadSelector.Include(list(s.payload_keys))
                    if with_payload and s.payload_keys
                    else with_payload and s.payload_keys is None
                ),
                with_vector=False,
            )
            for s in stages
        ]
        with self._reading() as shard:
            if len(requests) == 1:
                results = [shard.query(requests[0])]
            else:
                results = shard.query_batch(qe.QueryBatchRequest(requests))
        return [
            [RawHit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]
            for points in results
        ]

    def drop(self) -> None:
        """Delete the collection (its shard folder, the record in it) and close."""
        self.close()
        shutil.rmtree(self._path, ignore_errors=self._tmp is not None)

    def close(self) -> None:
        with self._write_lock:
            self._closed = True
            if self._shard is not None:
                replaced = self._folder.replaced()
                self._shard.close()
                self._shard = None
                if replaced:
                    self._folder.warn_closed()
        if self._tmp is not None:
            self._cleanup()
