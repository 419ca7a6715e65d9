"""Storage backend on qdrant-edge-py: Qdrant's engine (Rust) in-process, one shard per collection.

The shard lives in ``<location>/<collection>/``; with no location it lives in a temporary
folder removed on :meth:`EdgeBackend.close`. Edge has Qdrant's universal query (prefetch,
RRF / DBSF fusion, MaxSim multivectors), so plans run natively. Edge has no background
optimizer: once :data:`INDEX_AFTER` points were written since the last pass, the writing call
runs the shard's optimizers in-process (building the ``dense`` HNSW graph); fewer new points
are searched exhaustively, which stays fast at that size. ``M3Store.optimize()`` forces a
pass.
"""

from __future__ import annotations

import json
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
from m3kit.outputs import SparseVector
from m3kit.store.edge_filters import edge_filter, edge_point_id
from m3kit.store.plan import RRF_K, Nearest, PointData, RawHit, Stage
from m3kit.store.records import Fusion
from m3kit.store.schema import COLBERT, DENSE, DOC_ID, SPARSE, CollectionSchema, VectorSpec

__all__ = ["EdgeBackend", "edge_config"]

#: Points written before the writing call builds indexes. Indexing after every small write
#: would rebuild growing HNSW graphs over and over (measured: 5x slower loading at 20k).
INDEX_AFTER = 20_000

#: Indexed segments kept before the optimizer merges the smallest ones.
SEGMENTS = 16

_CONFIG_FILE = "edge_config.json"  # written by qdrant-edge in the shard folder
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
        optimizers=qe.EdgeOptimizersConfig(default_segment_number=SEGMENTS),
    )


def _error(where: str, exc: BaseException) -> StoreConnectionError:
    text = str(exc)
    hint = (
        "another M3Store or process has it open; close that one first"
        if "WouldBlock" in text or "lock" in text.lower()
        else "check the folder exists, is writable and holds an m3kit collection"
    )
    return StoreConnectionError(
        f"cannot open the embedded Qdrant shard at {where}: {text} ({hint})"
    )


class EdgeBackend:
    """One collection as a qdrant-edge shard."""

    def __init__(self, *, collection: str, location: str | None, schema: CollectionSchema) -> None:
        """Locate (not yet open) the shard.

        Args:
            collection: Collection name (the shard's folder name).
            location: Parent folder, or ``None`` / ``":memory:"`` for a temporary one.
            schema: Schema to create the shard with if it does not exist.
        """
        self.collection = collection
        self._schema = schema
        self._tmp: str | None = None
        if location is None or location == ":memory:":
            self._tmp = tempfile.mkdtemp(prefix="m3kit-edge-")
            parent = Path(self._tmp)
            self.where = "memory (temporary folder, embedded engine)"
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        else:
            parent = Path(location)
            self.where = f"{parent} (embedded engine)"
        self._path = parent / collection
        self._shard: qe.EdgeShard | None = None
        # Writes are serialised so an optimize pass never interleaves another writer's batch.
        self._write_lock = threading.Lock()
        self._pending = 0  # points written since the last optimizer pass

    def __repr__(self) -> str:
        return f"EdgeBackend(collection={self.collection!r}, where={self.where!r})"

    @property
    def shard(self) -> qe.EdgeShard:
        shard = self._shard
        if shard is None:
            with self._write_lock:
                if self._shard is None:
                    try:
                        self._shard = qe.EdgeShard.load(str(self._path))
                    except Exception as exc:
                        raise _error(str(self._path), exc) from None
                shard = self._shard
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
            raw = json.loads((self._path / _CONFIG_FILE).read_text())
            found: dict[str, VectorSpec] = {}
            for name, vp in (raw.get("vectors") or {}).items():
                multi = vp.get("multivector_config")
                found[name] = VectorSpec(
                    "multivector" if multi else "dense",
                    int(vp["size"]),
                    str(vp.get("distance", "")).lower(),
                    "MaxSim" if multi and multi.get("comparator") == "max_sim" else None,
                )
            for name in raw.get("sparse_vectors") or {}:
                found[name] = VectorSpec("sparse")
            return found
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
        try:
            self._shard = qe.EdgeShard.load(str(self._path), edge_config(self._schema))
        except Exception as exc:
            if "incompatible" not in str(exc).lower():
                raise _error(str(self._path), exc) from None
            raise SchemaMismatchError(
                f"collection {self.collection!r} at {self.where} does not match the encoder "
                f"(expected [{self._schema.describe()}]): {exc}; nothing was written"
            ) from None
        return self._schema.specs()

    def create(self, schema: CollectionSchema) -> None:
        try:
            self._shard = qe.EdgeShard.create(str(self._path), edge_config(schema))
        except Exception as exc:
            raise _error(str(self._path), exc) from None
        self._shard.update(
            qe.UpdateOperation.create_field_index(DOC_ID, qe.PayloadSchemaType.Keyword)
        )

    def open(self) -> None:
        """Load the shard now, so a folder held by another store fails at open time."""
        _ = self.shard

    # -- writes -----------------------------------------------------------------------------
    def upsert(self, points: Sequence[PointData]) -> None:
        out = []
        for p in points:
            vec: dict[str, Any] = {DENSE: p.dense.tolist()}
            if p.sparse is not None:
                vec[SPARSE] = _sparse(p.sparse)
            if p.colbert is not None:
                vec[COLBERT] = p.colbert.tolist()
            out.append(qe.Point(edge_point_id(p.id), vec, p.payload))
        shard = self.shard
        with self._write_lock:
            shard.update(qe.UpdateOperation.upsert_points(out))
            self._pending += len(out)

    def finish_writes(self, *, force: bool = False) -> None:
        """Build indexes once enough points are new (or when forced); blocking."""
        shard = self.shard
        with self._write_lock:
            if self._pending and (force or self._pending >= INDEX_AFTER):
                shard.optimize()
                self._pending = 0

    def delete(self, selector: models.Filter) -> None:
        flt = edge_filter(selector)
        assert flt is not None
        shard = self.shard
        with self._write_lock:
            shard.update(qe.UpdateOperation.delete_points_by_filter(flt))

    # -- reads ------------------------------------------------------------------------------
    def count(self, selector: models.Filter | None = None) -> int:
        return int(self.shard.count(qe.CountRequest(exact=True, filter=edge_filter(selector))))

    def scroll(self, selector: models.Filter | None, keys: Sequence[str]) -> Iterator[RawHit]:
        offset: Any = None
        flt = edge_filter(selector)
        while True:
            records, offset = self.shard.scroll(
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
        records = self.shard.retrieve(
            [edge_point_id(i) for i in ids], with_payload=True, with_vector=False
        )
        return {str(r.id): dict(r.payload or {}) for r in records}

    def query_batch(self, stages: Sequence[Stage], *, with_payload: bool) -> list[list[RawHit]]:
        requests = [
            qe.QueryRequest(
                limit=s.limit,
                query=_query(s.query),
                prefetches=[_prefetch(p) for p in s.prefetch] or None,
                filter=edge_filter(s.filter),
                params=qe.SearchParams(exact=True) if s.exact else None,
                with_payload=with_payload,
                with_vector=False,
            )
            for s in stages
        ]
        if len(requests) == 1:
            results = [self.shard.query(requests[0])]
        else:
            results = self.shard.query_batch(qe.QueryBatchRequest(requests))
        return [
            [RawHit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]
            for points in results
        ]

    def close(self) -> None:
        with self._write_lock:
            if self._shard is not None:
                self._shard.close()
                self._shard = None
        if self._tmp is not None:
            self._cleanup()


def _sparse(v: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(v.indices.tolist(), v.values.tolist())


def _query(query: Nearest | Fusion) -> Any:
    if isinstance(query, Fusion):
        if query is Fusion.RRF:
            return qe.Fusion.Rrf(k=RRF_K)
        if query is Fusion.DBSF:
            return qe.Fusion.Dbsf()
        raise ValueError(f"{query!r} is not a Qdrant fusion (M3 is computed by m3kit)")
    vec = query.vector
    return qe.Query.Nearest(
        _sparse(vec) if isinstance(vec, SparseVector) else vec.tolist(), using=query.using
    )


def _prefetch(stage: Stage) -> qe.Prefetch:
    return qe.Prefetch(
        limit=stage.limit,
        query=_query(stage.query),
        prefetches=[_prefetch(p) for p in stage.prefetch] or None,
        params=qe.SearchParams(exact=True) if stage.exact else None,
        filter=edge_filter(stage.filter),
    )
