"""How :class:`~m3kit.store.M3Store` opens a collection (its base, split from
:mod:`m3kit.store.store`): the backend opened or created with the expected vectors, a write a
killed process left half done finished, then the collection's recorded sparse cut and stamps
checked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from m3kit.store.cluster import ClusterSettings
from m3kit.store.collection_record import check_recorded_stamps
from m3kit.store.connection import ConnectionSettings, with_timeout
from m3kit.store.group_journal import finish_groups
from m3kit.store.opening import open_backend
from m3kit.store.records import Backend
from m3kit.store.replace_journal import finish_interrupted
from m3kit.store.schema import CollectionSchema, PayloadIndexType, check_collection_name
from m3kit.store.sparse_cut import settle_sparse_cut

if TYPE_CHECKING:
    from m3kit.store.store import M3Store

__all__ = ["StoreOpening"]


class StoreOpening:
    """The class methods that open a :class:`~m3kit.store.M3Store` (its base)."""

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str] | None = None,
        *,
        collection: str,
        dense_dim: int,
        colbert_dim: int | None,
        sparse: bool,
        url: str | None = None,
        api_key: str | None = None,
        backend: Backend | str | None = None,
        timeout: int | None = None,
        create: bool = True,
        payload_indexes: Mapping[str, PayloadIndexType | str] | None = None,
        index_after: int | None = None,
        cluster: ClusterSettings | None = None,
        connection: ConnectionSettings | None = None,
    ) -> M3Store:
        """Open (creating if needed) a collection and check it has the expected vectors.

        Args:
            location: ``None`` / ``":memory:"`` (in memory; the embedded engine uses a
                temporary folder removed on :meth:`close`) or a folder to persist in.
            collection: Collection name.
            dense_dim: Dense vector size.
            colbert_dim: ColBERT token vector size, or ``None`` for no ColBERT vectors.
            sparse: Whether to store learned-sparse vectors.
            url: Qdrant server URL (implies ``Backend.CLIENT``).
            api_key: Server API key; default: the ``QDRANT_API_KEY`` environment variable.
            backend: ``Backend.EDGE`` (embedded Rust engine) or ``Backend.CLIENT``
                (qdrant-client); default: CLIENT with a URL, else :data:`DEFAULT_BACKEND`.
            timeout: Server request timeout in seconds (shorthand for
                ``connection=ConnectionSettings(timeout=...)``; not with ``connection``).
            create: Create the collection when it does not exist (else raise
                :class:`~m3kit.errors.CollectionNotFoundError`).
            payload_indexes: ``{metadata key: PayloadIndexType}`` to index (payload path
                ``metadata.<key>``) for fast filtered search; the ones the collection lacks are
                created, existing ones left alone. qdrant-client's local mode has no payload
                indexes: there this is logged and does nothing.
            index_after: Embedded engine only: unindexed points in the collection at which a
                write builds the dense HNSW index (default 20,000).
            cluster: Qdrant server only (:class:`~m3kit.store.cluster.ClusterSettings`):
                shards, replication, write consistency, on-disk storage and quantisation of
                a new collection, and parallel write batches.
            connection: Qdrant server only (:class:`~m3kit.store.connection.ConnectionSettings`):
                request timeout and the server's request size limit, which writes are split
                to fit.

        Raises:
            SchemaMismatchError: The collection exists with other vectors, or a declared
                payload index exists with another type, or would hide values the collection
                holds (``1.5`` under a new ``integer`` index; nothing written).
            StoreConnectionError: The server cannot be reached or refuses the request.
            ValueError: The collection's recorded sparse cut is damaged, or a change of it
                was left unfinished (finish it: ``M3Index.open(..., reindex=True)``), or it
                holds chunks stamped with another cut than the recorded one.
            FingerprintMismatchError: The collection holds chunks stamped with another
                encoder than the one it records (:mod:`m3kit.store.encoder_stamps`).
        """
        store = cls._open_unsettled(
            location,
            collection=collection,
            dense_dim=dense_dim,
            colbert_dim=colbert_dim,
            sparse=sparse,
            url=url,
            api_key=api_key,
            backend=backend,
            timeout=timeout,
            create=create,
            payload_indexes=payload_indexes,
            index_after=index_after,
            cluster=cluster,
            connection=connection,
        )
        try:  # a collection's recorded sparse cut applies to every writer and searcher
            settle_sparse_cut(store, None)  # (a cut change left unfinished is refused)
            check_recorded_stamps(store)  # chunks of another encoder than the recorded one
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _open_unsettled(
        cls,
        location: str | os.PathLike[str] | None,
        *,
        collection: str,
        dense_dim: int,
        colbert_dim: int | None,
        sparse: bool,
        url: str | None = None,
        api_key: str | None = None,
        backend: Backend | str | None = None,
        timeout: int | None = None,
        create: bool = True,
        payload_indexes: Mapping[str, PayloadIndexType | str] | None = None,
        index_after: int | None = None,
        cluster: ClusterSettings | None = None,
        connection: ConnectionSettings | None = None,
    ) -> M3Store:
        """:meth:`open` without its sparse cut (set by :class:`M3Index`, which may finish a
        cut change that :meth:`open` refuses); the same arguments."""
        check_collection_name(collection)
        connection = with_timeout(connection, timeout)
        schema = CollectionSchema(dense_dim=dense_dim, colbert_dim=colbert_dim, sparse=sparse)
        impl, kind = open_backend(
            location,
            collection=collection,
            schema=schema,
            url=url,
            api_key=api_key,
            backend=backend,
            connection=connection,
            create=create,
            payload_indexes=payload_indexes,
            index_after=index_after,
            cluster=cluster,
        )
        # (cls is M3Store or a subclass: this class is only its base)
        store: M3Store = cls(impl, schema, kind=kind)  # type: ignore[call-arg,assignment]
        store.cluster = cluster
        store.connection = connection
        try:
            finish_interrupted(impl)  # a replacing write a killed process left half done
            finish_groups(impl)  # ... and a group replacement (LangChain's parent_id_key)
        except BaseException:
            store.close()
            raise
        return store
