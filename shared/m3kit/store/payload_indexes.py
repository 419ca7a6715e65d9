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

A ``uuid`` index is refused on metadata keys (one found is named in a warning): it serves
every spelling of one UUID as the same value, where filters compare strings exactly
(:data:`~m3kit.store.schema.UUID_INDEX_REFUSED`).

Two index types hide values of another type from the filters they serve: an ``integer`` index
skips non-integer numbers (``{"price": 1.5}`` and ranges miss ``1.5``) and a ``datetime``
index skips numbers. Writes of such values to a key the collection indexes so are refused
(:func:`check_indexed_values`), and so is declaring such an index on a key whose stored values
it would hide (:func:`check_stored_values`), so a filter matches on an indexed key what it
matches unindexed.

A range of the other kind than a key's index is served by the index as its own kind: a
``datetime`` index serves a number range as dates (the bounds read as seconds since 1970), a
``float`` / ``integer`` index serves a datetime range from its numbers (missing datetime
strings stored there), where unindexed each matches values of its own kind only. Such a
filter is refused (:func:`check_filter_ranges`), naming the key and its index type.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
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
    "check_filter_ranges",
    "check_indexed_values",
    "check_stored_values",
    "ensure_payload_indexes",
    "holding",
    "holds_number",
    "stored_hidden",
    "type_to_use",
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
HIDING_VALUES = frozenset(t.value for t in _HIDING_TYPES)
"""The index types (their names) that leave some values out of the filters they serve."""


#: The kind of range each range-serving index type serves (:func:`check_filter_ranges`).
_RANGE_KINDS = {
    PayloadIndexType.FLOAT.value: "number",
    PayloadIndexType.INTEGER.value: "number",
    PayloadIndexType.DATETIME.value: "datetime",
}

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
    # a uuid index declared keyword now: replaced (the way out the warning below names)
    replace = sorted(
        path
        for path, kind in fields.items()
        if found.get(path) == PayloadIndexType.UUID.value and kind is PayloadIndexType.KEYWORD
    )
    for path in replace:
        backend.create_payload_index(path, PayloadIndexType.KEYWORD)
        found[path] = PayloadIndexType.KEYWORD.value
        logger.info("replaced the uuid payload index on %s by a keyword index", path)
    for path in sorted(p for p, kind in found.items() if kind == PayloadIndexType.UUID.value):
        logger.warning(
            "%r at %s has a uuid payload index on %s (made by another program, or by an "
            "earlier m3kit on request): it serves every spelling of one UUID (upper case, "
            "without hyphens, in braces) as the same value, so a filter or a delete on that key "
            "by one spelling also matches the others; declare the key as keyword "
            "(payload_indexes={key: 'keyword'}, m3kit index --index-field KEY:keyword) to "
            "replace it",
            backend.collection,
            backend.where,
            path,
        )
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
    from m3kit.store.foreign_indexes import warn_hidden_stored  # (it imports this module)

    warn_hidden_stored(backend, found)
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


def _is_number(value: Any) -> bool:
    """An int or a float, not a bool: the only kind of value an index can hide."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hidden_by(kind: str, value: Any) -> str | None:
    """What a value is when an index of ``kind`` leaves it out of the filters it serves."""
    if not _is_number(value):
        return None
    if kind == PayloadIndexType.INTEGER.value and isinstance(value, float):
        return None if value.is_integer() else "a non-integer number"
    if kind == PayloadIndexType.DATETIME.value:
        return "a number"
    return None


#: One metadata value's place: its keys from the metadata's top, and for each key whether its
#: value was a list the value sits in (what an index path's ``[]`` after that key needs).
_Place = tuple[tuple[str, ...], tuple[bool, ...]]


def _leaves(value: Any, place: _Place = ((), ())) -> Iterator[tuple[_Place, Any]]:
    """``(place, value)`` of every value in nested metadata, lists flattened."""
    keys, listed = place
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, ((*keys, str(k)), (*listed, False)))
    elif isinstance(value, list):
        inside = (*listed[:-1], True) if listed else listed
        for v in value:
            yield from _leaves(v, (keys, inside))
    else:
        yield place, value


def _stored_paths(place: _Place) -> set[str]:
    """The payload paths an index may be declared on that cover the value at ``place``:
    its path, lists taken as Qdrant takes them (``metadata.tags`` covers ``{"tags": [1]}``),
    and, for a value inside a list, the path with array access (``metadata.tags[]``; only a
    list's values are under that one). Empty for a key no path addresses. A key with a dot is
    one key, quoted (``{"file.year": 1}`` is stored at ``metadata."file.year"``), not the
    nested ``metadata.file.year`` an index on ``"file.year"`` covers.

    >>> sorted(_stored_paths((("file", "year"), (False, False))))
    ['metadata.file.year']
    >>> sorted(_stored_paths((("file.year",), (False,))))
    ['metadata."file.year"']
    >>> sorted(_stored_paths((("a b",), (True,))))
    ['metadata."a b"', 'metadata."a b"[]']
    >>> sorted(_stored_paths((("items", "price"), (True, False))))
    ['metadata.items.price', 'metadata.items[].price']
    """
    keys, listed = place
    if any(not k or '"' in k for k in keys):
        return set()
    # a key without a dot takes the path metadata_path gives it (an index declared on it)
    parts = [f'"{k}"' if "." in k else metadata_path(k).removeprefix(f"{METADATA}.") for k in keys]
    arrays = [part + "[]" if inside else part for part, inside in zip(parts, listed, strict=True)]
    return {".".join([METADATA, *parts]), ".".join([METADATA, *arrays])}


def _first_hidden(
    metadata: Mapping[str, Any], indexes: Mapping[str, str]
) -> tuple[str, Any, str, str, str] | None:
    """``(key, value, payload path, index type, what the value is)`` of the first metadata
    value an index in ``indexes`` leaves out of its filters (``None``: none is). An index on
    one element (``tags[0]``) is not checked."""
    for place, value in _leaves(metadata):
        for path in sorted(_stored_paths(place)):
            kind = indexes.get(path)
            hidden = None if kind is None else _hidden_by(kind, value)
            if kind is not None and hidden is not None:
                return ".".join(place[0]), value, path, kind, hidden
    return None


def holds_number(metadata: Mapping[str, Any]) -> bool:
    """Whether nested metadata holds a number (not a bool): the only values a payload index
    can hide (:func:`check_indexed_values`), so a write without one need not read them.

    >>> holds_number({"lang": "en", "tags": ["a"], "ok": True}), holds_number({"a": {"b": [2]}})
    (False, True)
    """
    return any(_is_number(value) for _, value in _leaves(metadata))


def type_to_use(kind: str) -> str:
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
            f"index the key as {type_to_use(kind)} in a new collection"
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
        found = stored_hidden(backend, path, kind.value)
        if found is None:
            continue
        hit, key, value, hidden = found
        raise SchemaMismatchError(
            f"collection {backend.collection!r} at {backend.where}: {key!r} is {value!r} "
            f"in document {hit.payload.get(DOC_ID)!r} (chunk {hit.payload.get(CHUNK_INDEX)}"
            f", point {hit.id}), {hidden}, and the {kind.value} index declared on {path} "
            f"would leave it out of the filters it serves ({{{key!r}: {value!r}}} or a "
            f"range would miss that point); declare {key!r} as "
            f"{type_to_use(kind.value)}, or correct the stored values first; "
            "nothing was created"
        )


def holding(path: str) -> models.Filter:
    """The points with a value at ``path``."""
    return models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=path))])


def stored_hidden(
    backend: StorageBackend, path: str, kind: str, most: int | None = None
) -> tuple[Any, str, Any, str] | None:
    """``(hit, key, value, what it is)`` of the first stored value an index of ``kind`` on
    ``path`` leaves out of its filters (``None``: none): the points holding the key, that
    key's payload only, a page at a time."""
    hits = backend.scroll(holding(path), [path, DOC_ID, CHUNK_INDEX])
    for hit in hits if most is None else itertools.islice(hits, most):
        found = _first_hidden(hit.payload.get(METADATA) or {}, {path: kind})
        if found is not None:
            key, value, _, _, hidden = found
            return hit, key, value, hidden
    return None


def _ranges(condition: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """``(payload path, range)`` of every range condition in a filter, nested ones included."""
    if isinstance(condition, models.FieldCondition):
        if condition.range is not None:
            yield prefix + condition.key, condition.range
    elif isinstance(condition, models.NestedCondition):
        yield from _ranges(condition.nested.filter, f"{prefix}{condition.nested.key}[].")
    elif isinstance(condition, models.Filter):
        min_should = condition.min_should.conditions if condition.min_should else []
        for part in (condition.must, condition.should, condition.must_not, min_should):
            for c in part if isinstance(part, list) else [] if part is None else [part]:
                yield from _ranges(c, prefix)


def check_filter_ranges(
    selector: models.Filter | None, indexes: Callable[[], Mapping[str, str]]
) -> None:
    """Refuse a range of the other kind than the payload index of its key.

    A ``datetime`` index serves a number range (``Range(gt=5)``, or ``{"when": 5}``, an
    equality on a number) as a range of dates, its bounds read as seconds since 1970: it
    matches dates, where unindexed it matches numbers only. A ``float`` / ``integer`` index
    serves a ``DatetimeRange`` from the numbers it holds: it misses datetime strings stored
    there, which unindexed it matches. (Measured on the embedded engine; a server runs the same
    index code.)

    >>> when = models.FieldCondition(key="metadata.when", range=models.Range(gt=5))
    >>> check_filter_ranges(models.Filter(must=[when]), lambda: {"metadata.when": "datetime"})
    Traceback (most recent call last):
    ValueError: filter on 'metadata.when': a number range (gt 5.0), but the collection ...

    Args:
        selector: The filter (``None``: none).
        indexes: Gives the collection's payload indexes, ``{payload path: type}``; called
            only when the filter has a range on a metadata key (``metadata.*``: where
            indexes are declared; m3kit's own keys carry keyword indexes only).

    Raises:
        ValueError: Names the key, the range, the index type and the filter to use instead.
    """
    # only metadata keys: indexes are declared there (m3kit's own keys have keyword ones)
    ranges = [(p, r) for p, r in _ranges(selector, "") if p.startswith(f"{METADATA}.")]
    if not ranges:
        return
    found = indexes()
    for path, rng in ranges:
        kind = found.get(path)
        serves = _RANGE_KINDS.get(kind) if kind is not None else None
        given = "datetime" if isinstance(rng, models.DatetimeRange) else "number"
        if serves is None or serves == given:
            continue
        bounds = ", ".join(
            f"{k} {v}" for k in ("gt", "gte", "lt", "lte") if (v := getattr(rng, k)) is not None
        )
        if given == "number":
            raise ValueError(
                f"filter on {path!r}: a number range ({bounds}), but the collection indexes "
                f"it as {kind}, and that index serves a number range as dates (seconds since "
                "1970), so it would match dates, which unindexed it never does (an equality "
                "on a number is such a range); compare its dates with "
                "models.DatetimeRange; nothing was searched"
            )
        raise ValueError(
            f"filter on {path!r}: a datetime range ({bounds}), but the collection indexes it "
            f"as {kind}, and that index serves it from the numbers it holds, so it would miss "
            "the datetime strings stored there, which unindexed it matches; compare numbers "
            "with models.Range, or index the key as 'datetime' in a new collection; nothing "
            "was searched"
        )
