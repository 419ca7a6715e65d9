"""Opening a collection's storage backend: argument checks, engine choice, create or check.

Split from :mod:`m3kit.store.store` (see :meth:`M3Store.open` for the arguments).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from m3kit.errors import CollectionNotFoundError, SchemaMismatchError
from m3kit.store.cluster import ClusterSettings
from m3kit.store.connection import ConnectionSettings, check_server_only
from m3kit.store.payload_indexes import ensure_payload_indexes
from m3kit.store.plan import StorageBackend
from m3kit.store.records import Backend
from m3kit.store.schema import (
    CollectionSchema,
    PayloadIndexType,
    VectorSpec,
    check_schema,
    describe_specs,
    payload_index_fields,
)

__all__ = [
    "DEFAULT_BACKEND",
    "collection_named",
    "folder_backend",
    "open_backend",
    "open_existing_backend",
]

logger = logging.getLogger(__name__)

#: Embedded engine used when no URL is given (chosen from benchmarks/store.py measurements).
DEFAULT_BACKEND = Backend.EDGE


def open_backend(
    location: str | os.PathLike[str] | None,
    *,
    collection: str,
    schema: CollectionSchema,
    url: str | None,
    api_key: str | None,
    backend: Backend | str | None,
    connection: ConnectionSettings | None,
    create: bool,
    payload_indexes: Mapping[str, PayloadIndexType | str] | None,
    index_after: int | None,
    cluster: ClusterSettings | None,
) -> tuple[StorageBackend, Backend]:
    """Open (creating if asked) the collection's backend; return it and its kind."""
    impl, kind, _ = _open(
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
    return impl, kind


def open_existing_backend(
    location: str | os.PathLike[str] | None,
    *,
    collection: str,
    url: str | None,
    api_key: str | None,
    backend: Backend | str | None,
    connection: ConnectionSettings | None,
) -> tuple[StorageBackend, Backend, CollectionSchema]:
    """Open an existing collection's backend with the vectors it holds (none is created).

    Returns:
        The backend, its kind and the collection's schema, read from the collection.

    Raises:
        CollectionNotFoundError: There is no such collection.
        SchemaMismatchError: Its vectors are not an m3kit layout.
    """
    return _open(
        location,
        collection=collection,
        schema=None,
        url=url,
        api_key=api_key,
        backend=backend,
        connection=connection,
        create=False,
        payload_indexes=None,
        index_after=None,
        cluster=None,
    )


def collection_named(
    collection: str | None, collection_name: str | None, default: str = "m3kit"
) -> str:
    """The collection an adapter's constructor names: ``collection=``, or ``collection_name=``
    (langchain-qdrant's and LlamaIndex's keyword), else ``default``.

    >>> collection_named(None, "docs"), collection_named("docs", "docs")
    ('docs', 'docs')
    >>> collection_named(None, None)
    'm3kit'

    Raises:
        ValueError: The two name different collections.
    """
    if collection is not None and collection_name is not None and collection != collection_name:
        raise ValueError(
            f"collection={collection!r} and collection_name={collection_name!r} name "
            "different collections; give one of them"
        )
    return next((n for n in (collection, collection_name) if n is not None), default)


def check_place(
    location: str | os.PathLike[str] | None,
    *,
    collection: str,
    url: str | None,
    api_key: str | None,
    backend: Backend | str | None,
    connection: ConnectionSettings | None,
    cluster: ClusterSettings | None,
    index_after: int | None = None,
) -> tuple[Backend, str | None, str | None]:
    """Check where a collection is to be opened, before anything is opened (or dropped).

    Returns:
        The backend kind, the API key (``$QDRANT_API_KEY`` with a URL) and the folder
        (``None``: a server; ``":memory:"`` kept).

    Raises:
        ValueError: Arguments that contradict each other (a URL as ``location``, cluster
            settings without a server, ...), or a folder holding the other backend's layout.
    """
    kind = Backend(backend) if backend is not None else None
    if url is not None:
        if kind is Backend.EDGE:
            raise ValueError("the embedded engine (backend='edge') has no URL; use 'client'")
        if location is not None:
            raise ValueError("give either location or url, not both")
        kind = Backend.CLIENT
        if api_key is None:
            api_key = os.environ.get("QDRANT_API_KEY") or None
    elif api_key is not None:
        raise ValueError("api_key is only used with url")
    kind = kind or DEFAULT_BACKEND
    if index_after is not None and kind is not Backend.EDGE:
        raise ValueError("index_after applies to the embedded engine (backend='edge') only")
    if cluster is not None and url is None:
        raise ValueError(
            "cluster settings (shards, replication, on-disk, quantisation) apply to a "
            "Qdrant server or cluster: give url=, or leave cluster out"
        )
    check_server_only(connection, url)
    loc = None if location is None else str(location)
    if loc is not None and loc.lower().startswith(("http://", "https://", "grpc://")):
        # langchain-qdrant and qdrant-client take a server URL as location; here it named a
        # folder ("./http:/host:6333") and wrote a local collection there without a word
        raise ValueError(
            f"location={loc!r} is a URL: pass a Qdrant server as url={loc!r} (location is "
            "a folder, or ':memory:')"
        )
    if loc is not None and loc != ":memory:":
        _check_folder(Path(loc), collection, kind)
    return kind, api_key, loc


def _open(
    location: str | os.PathLike[str] | None,
    *,
    collection: str,
    schema: CollectionSchema | None,
    url: str | None,
    api_key: str | None,
    backend: Backend | str | None,
    connection: ConnectionSettings | None,
    create: bool,
    payload_indexes: Mapping[str, PayloadIndexType | str] | None,
    index_after: int | None,
    cluster: ClusterSettings | None,
) -> tuple[StorageBackend, Backend, CollectionSchema]:
    """:func:`open_backend`; ``schema=None`` (only with ``create=False``): the collection's."""
    index_fields = payload_index_fields(payload_indexes)
    kind, api_key, loc = check_place(
        location,
        collection=collection,
        url=url,
        api_key=api_key,
        backend=backend,
        connection=connection,
        cluster=cluster,
        index_after=index_after,
    )
    impl: StorageBackend
    if kind is Backend.CLIENT:
        from m3kit.store.client_backend import ClientBackend

        impl = ClientBackend(
            collection=collection,
            location=loc,
            url=url,
            api_key=api_key,
            connection=connection,
            cluster=cluster,
        )
    else:
        from m3kit.store.edge_backend import INDEX_AFTER, EdgeBackend

        impl = EdgeBackend(
            collection=collection,
            location=loc,
            schema=schema,
            index_after=INDEX_AFTER if index_after is None else index_after,
        )
    try:
        if impl.exists():
            found = impl.found_vectors()
            if schema is None:
                schema = _stored_schema(found, collection=collection, where=impl.where)
            check_schema(schema, found, collection=collection, where=impl.where)
        elif not create or schema is None:
            raise CollectionNotFoundError(
                f"collection {collection!r} does not exist at {impl.where}"
            )
        else:
            logger.info("creating collection %r at %s", collection, impl.where)
            if not impl.create(schema):  # another process created it first: check it
                check_schema(schema, impl.found_vectors(), collection=collection, where=impl.where)
        impl.open()
        ensure_payload_indexes(impl, index_fields)
    except BaseException:
        impl.close()
        raise
    return impl, kind, schema


def _stored_schema(
    found: dict[str, VectorSpec], *, collection: str, where: str
) -> CollectionSchema:
    """The schema of an existing collection holding the vectors ``found``.

    Raises:
        SchemaMismatchError: They are not an m3kit layout.
    """
    schema = CollectionSchema.from_specs(found)
    if schema is None:
        raise SchemaMismatchError(
            f"collection {collection!r} at {where} holds [{describe_specs(found)}]: not an "
            "m3kit collection (a dense cosine vector, and a sparse vector and ColBERT "
            "multivector or not); nothing was written"
        )
    return schema


def folder_backend(folder: str | os.PathLike[str], collection: str) -> Backend | None:
    """Which backend's layout holds ``collection`` in the local ``folder`` (``None``: neither).

    An embedded-engine shard (``<folder>/<collection>/edge_config.json``) wins over a
    qdrant-client local store (``<folder>/meta.json`` and ``<folder>/collection/<collection>``,
    or an alias of one in ``meta.json``: the embedded engine has no aliases, so opening one
    with it made an empty shard of that name, which then hid the alias).
    """
    root = Path(folder)
    if (root / collection / "edge_config.json").is_file():
        return Backend.EDGE
    meta = root / "meta.json"
    if meta.is_file() and (
        (root / "collection" / collection).is_dir() or collection in _local_aliases(meta)
    ):
        return Backend.CLIENT
    return None


def _local_aliases(meta: Path) -> dict[str, str]:
    """The aliases a qdrant-client local store's ``meta.json`` lists (``{}``: none, or a file
    it cannot read: the collection check above still stands)."""
    try:
        aliases = json.loads(meta.read_text(encoding="utf-8")).get("aliases")
    except (OSError, ValueError, AttributeError):
        return {}
    return aliases if isinstance(aliases, dict) else {}


def _check_folder(folder: Path, collection: str, kind: Backend) -> None:
    """Refuse to open a folder written by the other backend (their layouts differ), or an
    embedded shard named like a qdrant-client alias of the same folder (an m3kit before the
    alias check made it when the alias was opened without ``backend='client'``: it hid the
    alias, and an open of either kind would serve the wrong collection)."""
    meta = folder / "meta.json"
    shard = folder / collection
    if (shard / "edge_config.json").is_file() and meta.is_file():
        target = _local_aliases(meta).get(collection)
        if target is not None:
            raise ValueError(
                f"{shard} is an embedded-engine shard named like the qdrant-client alias "
                f"{collection!r} (of collection {target!r}) in {folder}: opening the alias "
                "without backend='client' made it, and it hides the alias. If it holds "
                f"nothing you need, delete the folder {shard}, then open the alias with "
                "backend='client'"
            )
    found = folder_backend(folder, collection)
    if kind is Backend.CLIENT and found is Backend.EDGE:
        raise ValueError(
            f"{folder / collection} holds an embedded-engine (backend='edge') collection; "
            "open it with backend='edge'"
        )
    if kind is Backend.EDGE and found is Backend.CLIENT:
        raise ValueError(
            f"{folder} holds a qdrant-client local collection {collection!r}; open it with "
            "backend='client'"
        )
