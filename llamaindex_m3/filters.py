"""Convert LlamaIndex ``MetadataFilters`` into the filters of :mod:`m3kit.store`, exactly.

Simple filters (equality and ``IN`` joined by ``AND``) become the store's mapping form
(``{key: value}``, a list meaning any-of); anything richer becomes a
``qdrant_client.models.Filter`` on the same payload paths (``metadata.<key>``, and the
top-level ``doc_id`` / ``chunk_index`` the store writes for every chunk). Both forms are
built from :mod:`m3kit.store.conditions`, so they mean the same on every backend.

Keys are read as LlamaIndex's own stores read them. ``doc_id``, ``ref_doc_id`` and
``document_id`` name the node's document (:data:`DOCUMENT_KEYS`), as in ``SimpleVectorStore``
and the stock Qdrant store, whatever the node's own metadata holds under those names; a node
without a source document has ``"None"`` there, as in those stores
(:mod:`llamaindex_m3.sourceless`). A key
with dots or brackets (``"file.name"``) is that flat key where the chunk has it (as
``SimpleVectorStore`` reads it), else the path into nested metadata (as the stock Qdrant store
reads it). ``chunk_index`` matches the value a returned node shows (:data:`TOP_LEVEL_KEYS`).

Every filter becomes exactly one condition and every ``MetadataFilters`` one nested
``Filter``: ``AND`` -> ``must``, ``OR`` -> ``should``, ``NOT`` -> ``must_not`` (none of its
filters matches, LlamaIndex's meaning). A filter that needs several conditions (``ALL`` of
several values, ``NE`` / ``NIN``) is wrapped in its own nested ``Filter``, so
``OR(tags ALL [a, b], lang == en)`` stays "both tags, or English".

Operators (a key's *values*: a missing key or ``null`` has none, a list has its elements, a
scalar is itself; see :mod:`m3kit.store.conditions`):

==========================  ==============================================================
``EQ``, ``CONTAINS``        some value equals the filter value (numbers by value, ``1 ==
                            1.0``; a bool only a bool). ``CONTAINS`` on a string key is
                            equality, not a substring test (use ``TEXT_MATCH``).
``NE``                      not ``EQ``: a missing key matches; a list only if no element
                            equals the value.
``GT`` ``GTE`` ``LT``       some number value compares (strings and bools never do).
``LTE``
``IN``, ``ANY``             some value equals one of the listed values.
``NIN``                     not ``IN`` (a missing key matches).
``ALL``                     each listed value equals some value.
``TEXT_MATCH``              some string value contains the text (case-sensitive
                            substring; ``MatchSubstring``, no payload index needed).
``IS_EMPTY``                no values: missing, ``null`` or ``[]`` (``""`` is a value).
``TEXT_MATCH_INSENSITIVE``  refused (``NotImplementedError``): Qdrant has no
                            case-insensitive substring match, and its full-text match
                            (tokens) would be an approximation.
==========================  ==============================================================

An empty nested ``MetadataFilters`` is refused (``ValueError``): whether "and of nothing"
inside an ``OR`` means everything or nothing is a guess. An empty top-level one means no
filter.

Hand-written rather than reusing ``llama_index.vector_stores.qdrant``'s private
``_build_subfilter``: that one is a method of its store, addresses top-level payload keys
(its own layout) and would tie this module to that package's internals.

Example:
    >>> from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
    >>> to_store_filter(MetadataFilters(filters=[
    ...     MetadataFilter(key="lang", value="en"),
    ...     MetadataFilter(key="year", value=[2023, 2024], operator="in"),
    ... ]))
    {'lang': 'en', 'year': [2023, 2024]}
    >>> f = to_store_filter(MetadataFilters(filters=[MetadataFilter(key="year", value=2020,
    ...     operator=">=")]))
    >>> f.must[0].key, f.must[0].range.gte
    ('metadata.year', 2020.0)
    >>> f = to_store_filter(MetadataFilters(condition="or", filters=[
    ...     MetadataFilter(key="tags", value=["a", "b"], operator="all"),
    ...     MetadataFilter(key="lang", value="en"),
    ... ]))
    >>> both, english = f.should
    >>> [c.match.value for c in both.must], english.match.value
    (['a', 'b'], 'en')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from llamaindex_m3.sourceless import document_key_condition
from m3kit.errors import missing_extra
from m3kit.store import conditions as c
from m3kit.store.filters import metadata_condition
from m3kit.store.schema import flat_metadata_path, is_plain_key

try:
    from llama_index.core.vector_stores.types import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("llama-index-core", "llamaindex", e) from e

from qdrant_client import models

__all__ = [
    "DOCUMENT_KEYS",
    "TOP_LEVEL_KEYS",
    "refuse_deleting_all",
    "to_flat_payload_filter",
    "to_store_filter",
]

DOCUMENT_KEYS = frozenset({"doc_id", "ref_doc_id", "document_id"})
"""Filter keys that name the node's document (the store's ``doc_id`` field, what
``VectorStoreQuery.doc_ids`` and ``delete(ref_doc_id)`` use), as in LlamaIndex's own stores,
which write all three over any metadata key of those names."""

TOP_LEVEL_KEYS = frozenset({"chunk_index"})
"""Filter keys a returned node shows from the store's own payload fields: a filter on one
matches the value the node shows, the user's own metadata key of that name where the chunk
has one, else the chunk's field."""


def to_store_filter(filters: MetadataFilters | None) -> Mapping[str, Any] | models.Filter | None:
    """The :meth:`m3kit.store.M3Index.search` ``filter`` equivalent of LlamaIndex filters.

    Args:
        filters: The filters (``None`` or an empty list: no filter).

    Returns:
        ``None``, a ``{key: value}`` mapping (equality, list = any-of) or a qdrant ``Filter``.

    Raises:
        NotImplementedError: An operator or condition this store cannot express exactly
            (the message names it).
        ValueError: A value of the wrong shape for its operator, or an empty nested
            ``MetadataFilters``.
        TypeError: ``filters`` is not ``MetadataFilters`` (a ``{key: value}`` dict, as the
            core and LangChain take, failed with "'dict' object has no attribute 'filters'").
    """
    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        raise TypeError(
            f"filters must be LlamaIndex MetadataFilters, not {type(filters).__name__}; e.g. "
            'MetadataFilters(filters=[MetadataFilter(key="topic", value="chem")]) or '
            'MetadataFilters.from_dicts([{"key": "topic", "value": "chem"}])'
        )
    if not filters.filters:
        return None
    translated = _group(filters, _condition)  # validates every value, also for the mapping form
    simple = _as_mapping(filters)
    return simple if simple is not None else translated


def refuse_deleting_all(
    store: str, node_ids: list[str] | None, filters: MetadataFilters | None
) -> None:
    """Refuse a ``delete_nodes`` that names no node (LlamaIndex's Qdrant store deleted them
    all), in both stores.

    Args:
        store: The store's class name, for the message.
        node_ids: The ids given (``None``: none; ``[]`` names no node and deletes none).
        filters: The filters given.

    Raises:
        ValueError: ``node_ids`` is ``None`` and ``filters`` is ``None`` or holds no filter.
    """
    if node_ids is None and (filters is None or not filters.filters):
        given = "is None" if filters is None else "is an empty MetadataFilters"
        raise ValueError(
            f"{store}.delete_nodes needs node_ids or filters with a filter; node_ids is None "
            f"and filters {given} (to delete every node, call clear())"
        )


def to_flat_payload_filter(filters: MetadataFilters) -> models.Filter:
    """The qdrant ``Filter`` of LlamaIndex filters on LlamaIndex's own Qdrant payload layout.

    ``QdrantVectorStore`` (llama-index-vector-stores-qdrant) writes a node's metadata keys at
    the top level of its payload, with ``doc_id`` / ``document_id`` / ``ref_doc_id`` beside
    them; a key is read as :func:`to_store_filter` reads it there (a dotted key is the flat
    key where the node has it, else the path into nested metadata). Operators mean
    what they mean in :func:`to_store_filter` (the table above), so
    :class:`~llamaindex_m3.M3QdrantVectorStore` filters as :class:`~llamaindex_m3.M3VectorStore`
    does. ``QdrantVectorStore``'s own translation differs silently: ``TEXT_MATCH`` compares
    whole tokens and ignores case, ``TEXT_MATCH_INSENSITIVE`` finds nothing for a substring,
    ``NE`` / ``NIN`` match a list holding the value and miss a node without the key, and an
    ``IN`` list of floats is a pydantic error.

    Args:
        filters: The filters of one group (nested groups are translated too).

    Raises:
        NotImplementedError: An operator this translation cannot express exactly.
        ValueError: A value of the wrong shape for its operator, or an empty nested group.

    >>> f = to_flat_payload_filter(MetadataFilters(filters=[
    ...     MetadataFilter(key="year", value=2020, operator=">=")]))
    >>> f.must[0].key, f.must[0].range.gte
    ('year', 2020.0)
    """
    return _group(filters, _flat_condition)


def _as_mapping(filters: MetadataFilters) -> dict[str, Any] | None:
    """``{key: value}`` when every filter is a plain equality / IN joined by AND."""
    if filters.condition not in (None, FilterCondition.AND):
        return None
    out: dict[str, Any] = {}
    for f in filters.filters:
        if (
            not isinstance(f, MetadataFilter)
            or f.key in TOP_LEVEL_KEYS | DOCUMENT_KEYS
            or f.key in out
            or not is_plain_key(f.key)  # the mapping form nests dots
        ):
            return None
        if f.operator is FilterOperator.EQ and not isinstance(f.value, list | type(None)):
            out[f.key] = f.value
        elif f.operator is FilterOperator.IN and isinstance(f.value, list) and f.value:
            out[f.key] = list(f.value)
        else:
            return None
    return out


def _group(
    filters: MetadataFilters, condition_of: Callable[[MetadataFilter], models.Condition]
) -> models.Filter:
    conditions: list[models.Condition] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            if not f.filters:
                raise ValueError(
                    "an empty nested MetadataFilters has no agreed meaning (everything? "
                    "nothing?); leave it out"
                )
            conditions.append(_group(f, condition_of))
        else:
            conditions.append(condition_of(f))
    condition = filters.condition or FilterCondition.AND
    if condition is FilterCondition.AND:
        return models.Filter(must=conditions)
    if condition is FilterCondition.OR:
        return models.Filter(should=conditions)
    if condition is FilterCondition.NOT:
        return models.Filter(must_not=conditions)
    raise NotImplementedError(f"filter condition {condition!r} is not supported")


def _scalar(f: MetadataFilter) -> Any:
    if isinstance(f.value, list) or f.value is None:
        raise ValueError(
            f"filter on {f.key!r} ({f.operator.value}) takes one value, got {f.value!r}"
        )
    return f.value


def _list(f: MetadataFilter) -> list[Any]:
    if not isinstance(f.value, list):
        raise ValueError(
            f"filter on {f.key!r} ({f.operator.value}) takes a list of values, got {f.value!r}"
        )
    return list(f.value)


def _range(bound: str) -> Callable[[str, MetadataFilter], models.Condition]:
    def build(path: str, f: MetadataFilter) -> models.Condition:
        bounds: dict[str, Any] = {bound: f.value}
        return c.compare(path, **bounds)

    return build


def _insensitive(path: str, f: MetadataFilter) -> models.Condition:
    raise NotImplementedError(
        f"MetadataFilter operator TEXT_MATCH_INSENSITIVE on {f.key!r} has no exact Qdrant "
        "equivalent (no case-insensitive substring match; full-text match compares tokens); "
        "use TEXT_MATCH, or store a lower-cased copy of the field and TEXT_MATCH on it"
    )


_BUILDERS: dict[FilterOperator, Callable[[str, MetadataFilter], models.Condition]] = {
    FilterOperator.EQ: lambda p, f: c.equals(p, _scalar(f)),
    FilterOperator.CONTAINS: lambda p, f: c.equals(p, _scalar(f)),
    FilterOperator.NE: lambda p, f: c.not_(c.equals(p, _scalar(f))),
    FilterOperator.GT: _range("gt"),
    FilterOperator.GTE: _range("gte"),
    FilterOperator.LT: _range("lt"),
    FilterOperator.LTE: _range("lte"),
    FilterOperator.IN: lambda p, f: c.any_of(p, _list(f)),
    FilterOperator.ANY: lambda p, f: c.any_of(p, _list(f)),
    FilterOperator.NIN: lambda p, f: c.not_(c.any_of(p, _list(f))),
    FilterOperator.ALL: lambda p, f: c.all_of(p, _list(f)),
    FilterOperator.TEXT_MATCH: lambda p, f: c.substring(p, f.value),  # type: ignore[arg-type]
    FilterOperator.TEXT_MATCH_INSENSITIVE: _insensitive,
    FilterOperator.IS_EMPTY: lambda p, f: c.is_empty(p),
}


def _builder(f: MetadataFilter) -> Callable[[str, MetadataFilter], models.Condition]:
    build = _BUILDERS.get(f.operator)
    if build is None:
        names = ", ".join(
            o.name for o in _BUILDERS if o is not FilterOperator.TEXT_MATCH_INSENSITIVE
        )
        raise NotImplementedError(
            f"MetadataFilter operator {f.operator.name} ({f.operator.value!r}) on {f.key!r} is "
            f"not supported by m3kit's stores; supported: {names}"
        )
    return build


def _flat_condition(f: MetadataFilter) -> models.Condition:
    """A filter on LlamaIndex's Qdrant payload: the paths of :func:`metadata_condition` (a
    dotted key is the flat key where the node has it, else the nested path; a key with
    spaces quoted) without m3kit's ``metadata.`` prefix (that store writes metadata keys at
    the payload's top level)."""
    build = _builder(f)
    return metadata_condition(f.key, lambda path: build(path, f), top_level=True)


def _condition(f: MetadataFilter) -> models.Condition:
    """A filter on :mod:`m3kit.store`'s payload (metadata under ``metadata.``)."""
    build = _builder(f)
    if f.key in DOCUMENT_KEYS:
        return document_key_condition(f, build)
    if f.key in TOP_LEVEL_KEYS:  # the value hit_to_node shows: the user's key, else the field
        return c.where_present(flat_metadata_path(f.key), f.key, lambda path: build(path, f))
    # a dotted key: the flat key where the chunk has it, else the nested path
    return metadata_condition(f.key, lambda path: build(path, f))
