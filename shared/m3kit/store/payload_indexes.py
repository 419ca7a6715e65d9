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
(:func:`check_indexed_values`), and so is declaring such an index on a key whose stored values
it would hide (:func:`check_stored_values`), so a filter matches on an indexed key what it
matches unindexed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from qdrant_client import models

from m3kit.errors import SchemaMismatchError
from m3kit.store.plan import StorageBackend
from m3kit.store.schema import (
    CHUNK_ID,
    CHUNK_INDEX,
    DOC_ID,
    ENCODER_ID,
    METADATA,
    SPARSE_CUT,
    PayloadIndexType,
    metadata_path,
)

__all__ = [
    "BUILT_IN_INDEXES",
    "check_indexed_values",
    "check_stored_values",
    "ensure_payload_indexes",
]

BUILT_IN_INDEXES: dict[str, PayloadIndexType] = {
    DOC_ID: PayloadIndexType.KEYWORD,
    CHUNK_ID: PayloadIndexType.KEYWORD,
    ENCODER_ID: PayloadIndexType.KEYWORD,
    SPARSE_CUT: PayloadIndexType.KEYWORD,
}
"""Indexes every collection has: m3kit's own lookups filter on them (replace, delete, ``find``;
an encoder reindex; the cut-stamp check at open), which without one read every point's payload."""

#: The index types that leave some values out of the filters they serve (:func:`_hidden_by`).
_HIDING_TYPES = frozenset({PayloadIndexType.INTEGER, PayloadIndexType.DATETIME})

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
        SchemaMismatchError: A declared path is already indexed with another type, or a
            declared index would hide values the collection holds
            (:func:`check_stored_values`); nothing was created.
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
    check_stored_values(backend, {p: k for p, k in fields.items() if p not in found})
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


def _first_hidden(
    metadata: Mapping[str, Any], indexes: Mapping[str, str]
) -> tuple[str, Any, str, str, str] | None:
    """``(key, value, payload path, index type, what the value is)`` of the first metadata
    value an index in ``indexes`` leaves out of its filters (``None``: none is)."""
    for key, value in _leaves(metadata, ""):
        try:
            path = metadata_path(key)
        except ValueError:  # a key no path addresses has no index
            continue
        kind = indexes.get(path)
        hidden = None if kind is None else _hidden_by(kind, value)
        if kind is not None and hidden is not None:
            return key, value, path, kind, hidden
    return None


def _type_to_use(kind: str) -> str:
    """The index type to declare instead of ``kind`` for a key holding values it hides."""
    return "'float'" if kind == PayloadIndexType.INTEGER.value else "'float' (or none)"


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
    found = _first_hidden(metadata, indexes)
    if found is not None:
        key, value, path, kind, hidden = found
        raise ValueError(
            f"{what}: {key!r} is {value!r}, {hidden}, but the collection indexes {path} "
            f"as {kind}, and filters served by that index skip it ({{{key!r}: {value!r}}} "
            f"or a range would miss this point); store a value of the index's type, or "
            f"index the key as {_type_to_use(kind)} in a new collection"
        )


def check_stored_values(backend: StorageBackend, fields: Mapping[str, PayloadIndexType]) -> None:
    """Refuse to create indexes that would hide values the collection already holds.

    :func:`check_indexed_values` guards writes to a key once its index exists; values written
    before an ``integer`` / ``datetime`` index is declared (a collection re-opened with a new
    ``payload_indexes=``) were never checked, and the new index would leave them out of the
    filters it serves without a word. So the stored values of each such key are scanned: the
    points holding the key, that key's payload only, a page at a time.

    Args:
        backend: The opened collection.
        fields: The indexes about to be created, ``{payload path: type}``; types that hide
            nothing are not scanned.

    Raises:
        SchemaMismatchError: Names the key, a value, its document and point, and the index
            type to declare instead.
    """
    for path, kind in fields.items():
        if kind not in _HIDING_TYPES:
            continue
        holding = models.Filter(
            must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=path))]
        )
        for hit in backend.scroll(holding, [path, DOC_ID, CHUNK_INDEX]):
            found = _first_hidden(hit.payload.get(METADATA) or {}, {path: kind.value})
            if found is None:
                continue
            key, value, _, _, hidden = found
            raise SchemaMismatchError(
                f"collection {backend.collection!r} at {backend.where}: {key!r} is {value!r} "
                f"in document {hit.payload.get(DOC_ID)!r} (chunk {hit.payload.get(CHUNK_INDEX)}"
                f", point {hit.id}), {hidden}, and the {kind.value} index declared on {path} "
                f"would leave it out of the filters it serves ({{{key!r}: {value!r}}} or a "
                f"range would miss that point); declare {key!r} as "
                f"{_type_to_use(kind.value)}, or correct the stored values first; "
                "nothing was created"
            )
