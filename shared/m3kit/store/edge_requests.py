"""Requests to the embedded engine (qdrant-edge) from m3kit's points and query plans (split
from :mod:`m3kit.store.edge_backend`)."""

from __future__ import annotations

from typing import Any

import qdrant_edge as qe

from m3kit.outputs import SparseVector
from m3kit.store.edge_filters import edge_filter, edge_point_id
from m3kit.store.plan import RRF_K, Nearest, PointData, Stage
from m3kit.store.records import Fusion
from m3kit.store.schema import COLBERT, DENSE, SPARSE

__all__ = ["ENGINE_CALL_VALUES", "edge_point", "edge_prefetch", "edge_query"]

ENGINE_CALL_VALUES = 1_100_000
"""Vector values one write request (one engine call) carries at most: four BGE-M3 chunks of
256 tokens (a point larger alone goes alone; a document's points stay in one request when
they fit, :class:`~m3kit.store.points.WriteBatches`). The engine holds the GIL through a
call, so a write paused every other thread (an event loop beside an ``aadd_*``) for its whole
length: 64 such chunks in one call paused them 0.4-0.5 s; in calls of 4, 0.02 s, and the
write took 0.3 s instead of 0.4-0.6 s (an AMX-class Xeon, 2 cores; the engine alone)."""


def edge_point(p: PointData) -> qe.Point:
    """A point as the engine takes it."""
    vec: dict[str, Any] = {DENSE: p.dense.tolist()}
    if p.sparse is not None:
        vec[SPARSE] = _sparse(p.sparse)
    if p.colbert is not None:
        vec[COLBERT] = p.colbert.tolist()
    return qe.Point(edge_point_id(p.id), vec, p.payload)


def _sparse(v: SparseVector) -> qe.SparseVector:
    v = v.without_zeros()  # (this engine drops them itself; qdrant-client matched them)
    return qe.SparseVector(v.indices.tolist(), v.values.tolist())


def edge_query(query: Nearest | Fusion) -> Any:
    """A query plan's query (a nearest search, or Qdrant's fusion) as the engine takes it."""
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


def edge_prefetch(stage: Stage) -> qe.Prefetch:
    """A query plan's stage as an engine prefetch."""
    return qe.Prefetch(
        limit=stage.limit,
        query=edge_query(stage.query),
        prefetches=[edge_prefetch(p) for p in stage.prefetch] or None,
        params=qe.SearchParams(exact=True) if stage.exact else None,
        filter=edge_filter(stage.filter),
    )
