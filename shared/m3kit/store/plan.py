"""Backend-neutral query plans and the protocol every storage backend implements.

A :class:`Stage` is one step of a Qdrant universal query: a scoring query (nearest
neighbours on a named vector, or a fusion) over the results of its prefetch stages. Each
backend turns a stage into its own request types; filters are always
``qdrant_client.models.Filter`` (the type users pass), converted by the backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from qdrant_client import models

from m3kit.outputs import SparseVector
from m3kit.store.records import Fusion
from m3kit.store.schema import CollectionSchema, PayloadIndexType, VectorSpec

__all__ = ["RRF_K", "Nearest", "PointData", "RawHit", "Stage", "StorageBackend"]

#: The RRF constant (Cormack et al.); Qdrant's own default is 2, m3kit states 60 explicitly.
RRF_K = 60


@dataclass(frozen=True, eq=False)
class Nearest:
    """Nearest neighbours on one named vector.

    Attributes:
        using: Vector name (``dense``, ``sparse`` or ``colbert``).
        vector: float32 ``[d]`` (dense), a :class:`SparseVector`, or float32 ``[t, d]``
            (ColBERT, scored by MaxSim).
    """

    using: str
    vector: npt.NDArray[np.float32] | SparseVector


@dataclass(frozen=True, eq=False)
class Stage:
    """One stage of a query.

    Attributes:
        limit: Most results of this stage.
        query: Nearest on a vector, or a fusion (``Fusion.RRF`` / ``Fusion.DBSF``) of the
            prefetch results.
        prefetch: Stages whose results this one re-scores.
        filter: Payload filter (applied where candidates are searched).
        exact: Exhaustive search instead of the HNSW index.
        payload_keys: With ``with_payload``, only these payload keys (``None``: all; ``()``:
            none, this stage's hits without payload).
    """

    limit: int
    query: Nearest | Fusion
    prefetch: tuple[Stage, ...] = ()
    filter: models.Filter | None = None
    exact: bool = False
    payload_keys: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RawHit:
    """A backend's scored point: string id, score and (optionally) payload."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class PointData:
    """A point ready to write: id, named vectors and payload (plain JSON types)."""

    id: str
    dense: npt.NDArray[np.float32]
    payload: dict[str, Any]
    sparse: SparseVector | None = None
    colbert: npt.NDArray[np.float32] | None = None


class StorageBackend(Protocol):
    """What :class:`~m3kit.store.M3Store` needs from a Qdrant engine (one collection)."""

    #: Where the collection lives, for messages (never contains credentials).
    where: str
    #: The arguments that open the collection again, as Python source for a call named in
    #: messages (the folder or URL, and the engine; never credentials); ``None``: a
    #: temporary collection (in memory), which no other call can open.
    reopen: str | None
    #: The folder the collection was opened in (``None``: in memory, or on a server).
    location: str | None
    #: The server URL the collection was opened at (``None``: in this process).
    url: str | None
    collection: str
    #: The most bytes of JSON one write request may carry (``None``: no limit, an engine
    #: in this process).
    request_bytes: int | None
    #: The most vector values one write request may carry (``None``: no limit): the embedded
    #: engine holds the GIL through a call (:data:`~m3kit.store.edge_backend.ENGINE_CALL_VALUES`).
    request_values: int | None

    def drop(self) -> None:
        """Delete the collection (points, schema, m3kit's record) and close this backend."""
        ...

    def exists(self) -> bool:
        """Whether the collection exists."""
        ...

    def found_vectors(self) -> dict[str, VectorSpec]:
        """The named vectors of the existing collection."""
        ...

    def create(self, schema: CollectionSchema) -> bool:
        """Create the collection with ``schema``'s vectors; ``False`` when another process
        created it since :meth:`exists` said it did not (a server's 409)."""
        ...

    def open(self) -> None:
        """Acquire the collection for use (after it was checked or created)."""
        ...

    def read_metadata(self) -> dict[str, Any]:
        """m3kit's record of the collection (what wrote it); ``{}`` when there is none."""
        ...

    def write_metadata(self, meta: Mapping[str, Any]) -> None:
        """Replace m3kit's record of the collection (atomically)."""
        ...

    def stock_models(self) -> dict[str, str]:
        """The models the adapters' stock-layout stores recorded for the collection's vectors
        (:mod:`m3kit.store.stock_record`, ``{"dense": identity, ...}``); ``{}``: none."""
        ...

    def payload_indexes(self) -> dict[str, str] | None:
        """The collection's payload indexes as ``{payload path: index type}``.

        ``None`` when the engine has no payload indexes (qdrant-client's local mode).
        """
        ...

    def create_payload_index(self, path: str, kind: PayloadIndexType) -> None:
        """Create (or, for an existing path, replace) the payload index on ``path``."""
        ...

    def upsert(self, points: Sequence[PointData]) -> None:
        """Insert or overwrite points (by id)."""
        ...

    def set_payload(self, updates: Sequence[tuple[models.Filter, Mapping[str, Any]]]) -> None:
        """Set payload keys of the points each filter matches (other keys and vectors kept).

        A filter that matches nothing changes nothing (no error).
        """
        ...

    def finish_writes(self, *, force: bool = False) -> None:
        """Called after writes; the embedded engine builds its indexes here when due."""
        ...

    def delete(self, selector: models.Filter) -> None:
        """Delete every point the filter matches."""
        ...

    def count(self, selector: models.Filter | None = None) -> int:
        """Exact number of points (matching the filter)."""
        ...

    def scroll(self, selector: models.Filter | None, keys: Sequence[str]) -> Iterator[RawHit]:
        """Every point matching the filter, with only the payload ``keys`` (score 0)."""
        ...

    def retrieve(self, ids: Sequence[str]) -> Mapping[str, dict[str, Any]]:
        """Payloads of the given ids (missing ids are left out)."""
        ...

    def query_batch(self, stages: Sequence[Stage], *, with_payload: bool) -> list[list[RawHit]]:
        """Run several top-level stages; one result list per stage, best first."""
        ...

    def close(self) -> None:
        """Release the engine (files, locks, connections)."""
        ...
