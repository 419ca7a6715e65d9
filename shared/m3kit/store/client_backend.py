"""Storage backend on qdrant-client's ``QdrantClient``: ``:memory:``, a local path, or a server.

Local mode (``:memory:`` or a path) is qdrant-client's pure-Python engine; it is not
thread-safe, so every call takes one lock. Server calls go over HTTP and are not serialised.
Every failure to reach or use a server becomes a :class:`~m3kit.errors.StoreConnectionError`
naming the URL (without credentials) and what to check; the API key is never written into a
message, a log line or a repr.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from qdrant_client import QdrantClient, models

from m3kit.errors import StoreConnectionError
from m3kit.outputs import SparseVector
from m3kit.store.client_errors import server_errors
from m3kit.store.cluster import ClusterSettings
from m3kit.store.connection import ConnectionSettings, check_server_only
from m3kit.store.plan import RRF_K, Nearest, PointData, RawHit, Stage
from m3kit.store.records import Fusion
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
from m3kit.store.stock_record import RECORD_KEY

__all__ = ["ClientBackend", "redact_url"]

logger = logging.getLogger(__name__)

_SCROLL_PAGE = 512
#: Collection parameters a ClusterSettings fixes at creation (compared on open).
_CLUSTER_PARAMS = (
    "shard_number",
    "replication_factor",
    "write_consistency_factor",
    "on_disk_payload",
)
#: Key of m3kit's record (what wrote the collection) in the collection's metadata.
META_KEY = "m3kit"


def _quantization_kind(config: Any) -> str:
    """``"scalar"`` / ``"binary"`` / ``"none"`` (or the class name of another kind)."""
    if config is None:
        return "none"
    if isinstance(config, models.ScalarQuantization):
        return "scalar"
    if isinstance(config, models.BinaryQuantization):
        return "binary"
    return type(config).__name__


def redact_url(url: str) -> str:
    """The URL without user info or query string (both may carry secrets).

    >>> redact_url("https://user:pw@example.com:6333/path?api_key=x")
    'https://example.com:6333/path'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _check_url(url: str) -> None:
    """Refuse a URL carrying credentials that qdrant-client would not send.

    Raises:
        ValueError: ``url`` has user info (``user:password@``) or a query string; the
            message names the URL without them.
    """
    parts = urlsplit(url)
    if "@" in parts.netloc or parts.query:
        raise ValueError(
            f"url {redact_url(url)!r} is given with a user name / password or a query string, "
            "which qdrant-client does not send to the server: give the key as api_key= (or "
            "the QDRANT_API_KEY environment variable) and the URL without them"
        )


class ClientBackend:
    """One collection behind a :class:`qdrant_client.QdrantClient`."""

    def __init__(
        self,
        *,
        collection: str,
        location: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        connection: ConnectionSettings | None = None,
        cluster: ClusterSettings | None = None,
    ) -> None:
        """Open the client (nothing is read or written yet).

        Args:
            collection: Collection name.
            location: ``None`` or ``":memory:"`` (in memory) or a folder (local mode).
            url: Server URL; excludes ``location``.
            api_key: Server API key (kept only inside the client's HTTP headers).
            connection: Server only: request timeout and request size limit
                (:class:`~m3kit.store.connection.ConnectionSettings`; default: qdrant-client's
                timeout, Qdrant's default limit of 32 MiB).
            cluster: Server only: shards, replication, on-disk storage and quantisation of a
                new collection (checked against an existing one).
        """
        if url is not None and location is not None:
            raise ValueError("give either location (memory or a folder) or url, not both")
        if cluster is not None and url is None:
            raise ValueError(
                "cluster settings (shards, replication, on-disk, quantisation) apply to a "
                "Qdrant server or cluster: give url=, or leave cluster out"
            )
        check_server_only(connection, url)
        given, connection = connection, connection or ConnectionSettings()
        self.collection = collection
        self.cluster = cluster
        self.url = url
        self.location = None if url is not None or location == ":memory:" else location
        self._secrets = tuple(s for s in (api_key,) if s)
        self._remote = url is not None
        self.request_bytes = connection.request_bytes if self._remote else None
        self.request_values: int | None = None
        self._lock: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if self._remote else threading.RLock()
        )
        if url is not None:
            _check_url(url)
            self.where = redact_url(url)
            self.reopen: str | None = f"url={self.where!r}" + (
                "" if given is None else f", connection={given!r}"
            )
            with self._translate():
                self._client = QdrantClient(
                    url=url,
                    api_key=api_key,
                    timeout=connection.timeout,
                    check_compatibility=False,
                )
        elif location is None or location == ":memory:":
            self.where = ":memory: (qdrant-client local mode)"
            self.reopen = None
            self._client = QdrantClient(location=":memory:")
        else:
            self.where = f"{location} (qdrant-client local mode)"
            self.reopen = f"{str(location)!r}, backend='client'"
            try:
                self._client = QdrantClient(path=str(location))
            except RuntimeError as exc:  # portalocker: the folder is held by another client
                raise StoreConnectionError(
                    f"cannot open the local Qdrant folder {location}: "
                    f"{str(exc).rstrip('.')}. Close the other "
                    "M3Store / QdrantClient using it (one process, one client per folder)."
                ) from None

    def __repr__(self) -> str:
        return f"ClientBackend(collection={self.collection!r}, where={self.where!r})"

    # -- errors -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        """Turn transport failures into StoreConnectionError (remote mode only)."""
        if not self._remote:
            with self._lock:
                yield
            return
        with server_errors(self.where, self.collection, self._secrets):
            yield

    # -- schema -----------------------------------------------------------------------------
    def exists(self) -> bool:
        with self._translate():
            return bool(self._client.collection_exists(self.collection))

    def found_vectors(self) -> dict[str, VectorSpec]:
        with self._translate():
            info = self._client.get_collection(self.collection)
        params = info.config.params
        found = _vector_specs(params)
        if self.cluster is not None:
            vectors = params.vectors
            dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
            self.cluster.check_existing(
                {
                    **{k: getattr(params, k, None) for k in _CLUSTER_PARAMS},
                    # the dense vector's own, else the collection's (what it then uses)
                    "quantization": _quantization_kind(
                        getattr(dense, "quantization_config", None)
                        or info.config.quantization_config
                    ),
                    "on_disk_vectors": bool(getattr(dense, "on_disk", None)),
                },
                collection=self.collection,
                where=self.where,
            )
        return found

    def create(self, schema: CollectionSchema) -> bool:
        vectors = _vectors_config(schema, self.cluster)
        sparse = {SPARSE: models.SparseVectorParams()} if schema.sparse else None
        extra = self.cluster.create_kwargs() if self.cluster is not None else {}
        from qdrant_client.http.exceptions import UnexpectedResponse

        with self._translate():
            try:
                self._client.create_collection(
                    self.collection, vectors_config=vectors, sparse_vectors_config=sparse, **extra
                )
            except UnexpectedResponse as exc:
                # another process (a second worker, a parallel m3kit index) created it after
                # this one found none: opened as any existing collection, its schema checked
                if exc.status_code != 409:
                    raise
                logger.info(
                    "collection %r at %s was created by another process meanwhile; opening it",
                    self.collection,
                    self.where,
                )
                return False
        return True

    def open(self) -> None:
        """Nothing to do: the client connected (or opened its folder) on construction."""

    def read_metadata(self) -> dict[str, Any]:
        """The ``m3kit`` key of the collection's metadata (servers and local mode alike)."""
        with self._translate():
            info = self._client.get_collection(self.collection)
        meta = (getattr(info.config, "metadata", None) or {}).get(META_KEY)
        return dict(meta) if isinstance(meta, dict) else {}

    def stock_models(self) -> dict[str, str]:
        """The record of the adapters' stock-layout stores (its own key of the metadata)."""
        with self._translate():
            info = self._client.get_collection(self.collection)
        record = (getattr(info.config, "metadata", None) or {}).get(RECORD_KEY)
        return {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else {}

    def write_metadata(self, meta: Mapping[str, Any]) -> None:
        """Set the ``m3kit`` key of the collection's metadata (other keys are kept).

        Raises:
            StoreConnectionError: The server did not keep it (a Qdrant server too old to have
                collection metadata).
        """
        with self._translate():
            self._client.update_collection(self.collection, metadata={META_KEY: dict(meta)})
        if self._remote and self.read_metadata() != dict(meta):
            raise StoreConnectionError(
                f"Qdrant at {self.where} did not keep the collection metadata m3kit records "
                "the encoder in; upgrade the server to a Qdrant version with collection metadata"
            )

    def payload_indexes(self) -> dict[str, str] | None:
        """The server's payload indexes by path; ``None`` in local mode (which has none)."""
        if not self._remote:
            return None
        with self._translate():
            info = self._client.get_collection(self.collection)
        return {
            path: str(getattr(index.data_type, "value", index.data_type))
            for path, index in (info.payload_schema or {}).items()
        }

    def create_payload_index(self, path: str, kind: PayloadIndexType) -> None:
        schema: Any = models.PayloadSchemaType(kind.value)
        if kind is PayloadIndexType.TEXT:  # without phrase matching, a MatchPhrase matches none
            schema = models.TextIndexParams(type=models.TextIndexType.TEXT, phrase_matching=True)
        with self._translate():
            self._client.create_payload_index(self.collection, path, schema, wait=True)

    # -- writes -----------------------------------------------------------------------------
    def upsert(self, points: Sequence[PointData]) -> None:
        structs = []
        for p in points:
            vec: dict[str, Any] = {DENSE: p.dense.tolist()}
            if p.sparse is not None:
                vec[SPARSE] = _sparse(p.sparse)
            if p.colbert is not None:
                vec[COLBERT] = p.colbert.tolist()
            structs.append(models.PointStruct(id=p.id, vector=vec, payload=p.payload))
        with self._translate():
            self._client.upsert(self.collection, points=structs, wait=True)

    def set_payload(self, updates: Sequence[tuple[models.Filter, Mapping[str, Any]]]) -> None:
        ops = [
            models.SetPayloadOperation(
                set_payload=models.SetPayload(payload=dict(payload), filter=selector)
            )
            for selector, payload in updates
        ]
        if ops:  # one request for all of them
            with self._translate():
                self._client.batch_update_points(self.collection, ops, wait=True)

    def finish_writes(self, *, force: bool = False) -> None:
        """Nothing to do: Qdrant indexes in the background (server) or never (local mode)."""

    def delete(self, selector: models.Filter) -> None:
        with self._translate():
            self._client.delete(
                self.collection, points_selector=models.FilterSelector(filter=selector), wait=True
            )

    # -- reads ------------------------------------------------------------------------------
    def count(self, selector: models.Filter | None = None) -> int:
        with self._translate():
            return int(self._client.count(self.collection, count_filter=selector, exact=True).count)

    def scroll(self, selector: models.Filter | None, keys: Sequence[str]) -> Iterator[RawHit]:
        offset: Any = None
        while True:
            with self._translate():
                records, offset = self._client.scroll(
                    self.collection,
                    scroll_filter=selector,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=list(keys),
                    with_vectors=False,
                )
            for r in records:
                yield RawHit(str(r.id), 0.0, dict(r.payload or {}))
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str]) -> Mapping[str, dict[str, Any]]:
        if not ids:
            return {}
        with self._translate():
            records = self._client.retrieve(
                self.collection, ids=list(ids), with_payload=True, with_vectors=False
            )
        return {str(r.id): dict(r.payload or {}) for r in records}

    def query_batch(self, stages: Sequence[Stage], *, with_payload: bool) -> list[list[RawHit]]:
        requests = []
        # Local mode is always exhaustive and warns when given search params: send none.
        exact = self._remote
        for stage in stages:
            query, using = _query(stage.query)
            requests.append(
                models.QueryRequest(
                    prefetch=[_prefetch(p, exact) for p in stage.prefetch] or None,
                    query=query,
                    using=using,
                    filter=stage.filter,
                    params=models.SearchParams(exact=True) if stage.exact and exact else None,
                    limit=stage.limit,
                    with_payload=(
                        list(stage.payload_keys)
                        if with_payload and stage.payload_keys
                        else with_payload and stage.payload_keys is None
                    ),
                    with_vector=False,
                )
            )
        with self._translate():
            responses = self._client.query_batch_points(self.collection, requests=requests)
        return [
            [RawHit(str(p.id), float(p.score), dict(p.payload or {})) for p in r.points]
            for r in responses
        ]

    def drop(self) -> None:
        """Delete the collection (its points, schema and metadata: m3kit's record) and close."""
        with self._lock, self._translate():
            self._client.delete_collection(self.collection)
        self.close()

    def close(self) -> None:
        with self._lock:
            self._client.close()


def _vector_specs(params: models.CollectionParams) -> dict[str, VectorSpec]:
    """The vectors a collection's parameters declare, by name."""
    found: dict[str, VectorSpec] = {}
    vectors = params.vectors
    if isinstance(vectors, models.VectorParams):
        vectors = {"": vectors}
    for name, vp in (vectors or {}).items():
        multi = vp.multivector_config
        found[name] = VectorSpec(
            "multivector" if multi is not None else "dense",
            int(vp.size),
            str(vp.distance.value).lower(),
            "MaxSim" if multi is not None and multi.comparator.value == "max_sim" else None,
            storage_datatype(vp.datatype),
        )
    for name, sp in (params.sparse_vectors or {}).items():
        found[name] = VectorSpec("sparse", modifier=sparse_modifier(sp.modifier))
    return found


def _vectors_config(
    schema: CollectionSchema, cluster: ClusterSettings | None
) -> dict[str, models.VectorParams]:
    """The dense (and ColBERT) vectors of a new collection: ColBERT as float16 MaxSim
    multivectors without a graph (it only reranks), both on disk when ``cluster`` says so."""
    on_disk = True if cluster is not None and cluster.on_disk_vectors else None
    vectors = {
        DENSE: models.VectorParams(
            size=schema.dense_dim,
            distance=models.Distance.COSINE,
            on_disk=on_disk,
            quantization_config=None if cluster is None else cluster.dense_quantization(),
        )
    }
    if schema.colbert_dim is not None:
        vectors[COLBERT] = models.VectorParams(
            size=schema.colbert_dim,
            distance=models.Distance.COSINE,
            multivector_config=models.MultiVectorConfig(
                comparator=models.MultiVectorComparator.MAX_SIM
            ),
            hnsw_config=models.HnswConfigDiff(m=0),  # rerank only: no graph to build
            datatype=models.Datatype.FLOAT16,
            on_disk=on_disk,
        )
    return vectors


def _sparse(v: SparseVector) -> models.SparseVector:
    v = v.without_zeros()  # a zero-weight query term matched points (score 0) the edge missed
    return models.SparseVector(indices=v.indices.tolist(), values=v.values.tolist())


def _query(query: Nearest | Fusion) -> tuple[models.Query, str | None]:
    if isinstance(query, Fusion):
        if query is Fusion.RRF:
            return models.RrfQuery(rrf=models.Rrf(k=RRF_K)), None
        if query is Fusion.DBSF:
            return models.FusionQuery(fusion=models.Fusion.DBSF), None
        raise ValueError(f"{query!r} is not a Qdrant fusion (M3 is computed by m3kit)")
    vec = query.vector
    nearest = _sparse(vec) if isinstance(vec, SparseVector) else vec.tolist()
    return models.NearestQuery(nearest=nearest), query.using


def _prefetch(stage: Stage, remote: bool) -> models.Prefetch:
    query, using = _query(stage.query)
    return models.Prefetch(
        prefetch=[_prefetch(p, remote) for p in stage.prefetch] or None,
        query=query,
        using=using,
        filter=stage.filter,
        params=models.SearchParams(exact=True) if stage.exact and remote else None,
        limit=stage.limit,
    )
