"""Payload indexes declared on metadata keys, created idempotently when a store opens.

Qdrant filters on an unindexed payload key by reading every candidate's payload; a payload
index makes filtered search (``filter={"lang": "en"}``) fast on a server or cluster. m3kit
always indexes its own keys (keyword): ``doc_id`` and ``chunk_id`` (replace, delete,
``find``), ``encoder_id`` (an encoder reindex's scroll) and ``sparse_cut`` (the cut-stamp count
every open of a sparse collection makes, :mod:`m3kit.store.cut_stamps`), and creates them when
it opens a collection made before one of them was indexed; other keys are declared with
``payload_indexes=`` on :meth:`~m3kit.store.M3Store.open` (or ``m3kit index --index-field
KEY[:TYPE]``). Declared
indexes the collection lacks are created, existing ones are left alone, so re-opening with
the same declaration sends no index request.

Engines: a Qdrant server or cluster and the embedded engine (qdrant-edge field indexes)
create them; qdrant-client's local mode has no payload indexes, so a declaration there is
logged and does nothing.

Two index types hide values of another type from the filters they serve: an ``integer`` index
skips non-integer numbers (``{"price": 1.5}`` and ranges miss ``1.5``) and a ``datetime``
index skips numbers. Writes of such values to a key the collection indexes so are refused
(:func:`check_indexed_values`), so a filter matches on an indexed key what it matches
unindexed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from m3kit.errors import SchemaMismatchError
from m3kit.store.plan import StorageBackend
from m3kit.store.schema import (
    CHUNK_ID,
    DOC_ID,
    ENCODER_ID,
    SPARSE_CUT,
    PayloadIndexType,
    metadata_path,
)

__all__ = ["BUILT_IN_INDEXES", "check_indexed_values", "ensure_payload_indexes"]

BUILT_IN_INDEXES: dict[str, PayloadIndexType] = {
    DOC_ID: PayloadIndexType.KEYWORD,
    CHUNK_ID: PayloadIndexType.KEYWORD,
    ENCODER_ID: PayloadIndexType.KEYWORD,
    SPARSE_CUT: PayloadIndexType.KEYWORD,
}
"""Indexes every collection has: m3kit's own lookups filter on them (replace, delete, ``find``;
an encoder reindex; the cut-stamp check at open), which without one read every point's payload."""

logger = logging.getLogger(__name__)


def ensure_payload_indexes(
    backend: StorageBackend, fields: Mapping[str, PayloadIndexType]
) -> list[str]:
    """Create the built-in and declared payload indexes the collection does not have yet.

    Args:
        backend: The opened collection.
        fields: Declared ``{payload path: type}``
            (see :func:`~m3kit.store.schema.payload_index_fields`); :data:`BUILT_IN_INDEXES`
            are created too, before them.

    Returns:
        The paths whose index was created now (empty when all existed).

    A built-in index that cannot be created (a read-only API key on a collection made before
    it existed) is logged as a warning, not raised: the store still opens for searching.

    Raises:
        SchemaMismatchError: A declared path is already indexed with another type (nothing
            was created).
    """
    found = backend.payload_indexes()
    if found is None:
        if not fields:
            return []
        logger.info(
            "%s has no payload indexes; the declared ones (%s) are not created there",
            backend.where,
            ", ".join(sorted(fields)),
        )
        return []
    clashes = [
        f"{path} is indexed as {found[path]}, declared {kind.value}"
        for path, kind in sorted(fields.items())
        if path in found and found[path] != kind.value
    ]
    if clashes:
        raise SchemaMismatchError(
            f"collection {backend.collection!r} at {backend.where}: "
            + "; ".join(clashes)
            + ". Declare the existing type, or drop that payload index first; nothing was "
            "created."
        )
    created = []
    for path, kind in BUILT_IN_INDEXES.items():
        if path in found:
            continue
        try:
            backend.create_payload_index(path, kind)
        except Exception as exc:  # e.g. a read-only API key: the store still opens for search
            logger.warning(
                "could not create the %s payload index in %r at %s (%s): lookups by %s "
                "filter it unindexed, which is slower; open the store once with write access",
                path,
                backend.collection,
                backend.where,
                exc,
                path,
            )
            continue
        created.append(path)
    declared = [path for path in fields if path not in found]  # metadata.* paths
    for path in declared:
        backend.create_payload_index(path, fields[path])
    created += declared
    if created:
        kinds = {**BUILT_IN_INDEXES, **fields}
        logger.info(
            "created payload index(es) on %s in %r at %s",
            ", ".join(f"{p} ({kinds[p].value})" for p in created),
            backend.collection,
            backend.where,
        )
    return created


def _hidden_by(kind: str, value: Any) -> str | None:
    """What a value is when an index of ``kind`` leaves it out of the filters it serves."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind == PayloadIndexType.INTEGER.value and isinstance(value, float):
        return None if value.is_integer() else "a non-integer number"
    if kind == PayloadIndexType.DATETIME.value:
        return "a number"
    return None


def _leaves(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    """``(dotted metadata key, value)`` of every value in nested metadata, lists flattened."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v, key)
    else:
        yield key, value


def check_indexed_values(
    metadata: Mapping[str, Any], indexes: Mapping[str, str], what: str
) -> None:
    """Refuse a metadata value that the collection's payload index on its key would hide.

    An ``integer`` index leaves non-integer numbers out and a ``datetime`` index leaves
    numbers out, and a filter it serves (``{"price": 1.5}``, a range) then misses them, while
    the same filter on an unindexed key, or in qdrant-client's local mode, matches them.

    >>> check_indexed_values({"price": 2.0}, {"metadata.price": "integer"}, "metadata")
    >>> check_indexed_values({"price": [1.5]}, {"metadata.price": "integer"}, "metadata")
    Traceback (most recent call last):
    ValueError: metadata: 'price' is 1.5, a non-integer number, but the collection indexes ...

    Args:
        metadata: A point's metadata, as stored.
        indexes: The collection's payload indexes, ``{payload path: type}``.
        what: Names the metadata in the message.

    Raises:
        ValueError: Names the key, the value, the index and what to do.
    """
    for key, value in _leaves(metadata, ""):
        try:
            path = metadata_path(key)
        except ValueError:  # a key no path addresses has no index
            continue
        kind = indexes.get(path)
        hidden = None if kind is None else _hidden_by(kind, value)
        if hidden is not None:
            fix = "'float'" if kind == PayloadIndexType.INTEGER.value else "'float' (or none)"
            raise ValueError(
                f"{what}: {key!r} is {value!r}, {hidden}, but the collection indexes {path} "
                f"as {kind}, and filters served by that index skip it ({{{key!r}: {value!r}}} "
                f"or a range would miss this point); store a value of the index's type, or "
                f"index the key as {fix} in a new collection"
            )
