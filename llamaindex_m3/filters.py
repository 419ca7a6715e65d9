"""Convert LlamaIndex ``MetadataFilters`` into the filters of :mod:`m3kit.store`.

Simple filters (equality and ``IN`` joined by ``AND``) become the store's mapping form
(``{key: value}``, a list meaning any-of); anything richer becomes a
``qdrant_client.models.Filter`` on the same payload paths (``metadata.<key>``, and the
top-level ``doc_id`` / ``chunk_index`` the store writes for every chunk).

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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from m3kit.errors import missing_extra

try:
    from llama_index.core.vector_stores.types import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("llama-index-core", "llamaindex") from e

from qdrant_client import models

__all__ = ["TOP_LEVEL_KEYS", "to_store_filter"]

TOP_LEVEL_KEYS = frozenset({"doc_id", "chunk_index"})
"""Filter keys addressing the store's own payload fields rather than ``metadata.<key>``."""

_SUPPORTED = (
    FilterOperator.EQ,
    FilterOperator.NE,
    FilterOperator.GT,
    FilterOperator.GTE,
    FilterOperator.LT,
    FilterOperator.LTE,
    FilterOperator.IN,
    FilterOperator.NIN,
    FilterOperator.ANY,
    FilterOperator.ALL,
    FilterOperator.CONTAINS,
    FilterOperator.TEXT_MATCH,
    FilterOperator.IS_EMPTY,
)


def to_store_filter(filters: MetadataFilters | None) -> Mapping[str, Any] | models.Filter | None:
    """The :meth:`m3kit.store.M3Index.search` ``filter`` equivalent of LlamaIndex filters.

    Args:
        filters: The filters (``None`` or an empty list: no filter).

    Returns:
        ``None``, a ``{key: value}`` mapping (equality, list = any-of) or a qdrant ``Filter``.

    Raises:
        NotImplementedError: An operator this store cannot express (the message names it).
        ValueError: A value of the wrong shape for its operator.
    """
    if filters is None or not filters.filters:
        return None
    simple = _as_mapping(filters)
    return simple if simple is not None else _filter(filters)


def _as_mapping(filters: MetadataFilters) -> dict[str, Any] | None:
    """``{key: value}`` when every filter is a plain equality / IN joined by AND."""
    if filters.condition not in (None, FilterCondition.AND):
        return None
    out: dict[str, Any] = {}
    for f in filters.filters:
        if not isinstance(f, MetadataFilter) or f.key in TOP_LEVEL_KEYS or f.key in out:
            return None
        if f.operator is FilterOperator.EQ and not isinstance(f.value, list | type(None)):
            out[f.key] = f.value
        elif f.operator is FilterOperator.IN and isinstance(f.value, list) and f.value:
            if any(isinstance(v, float) for v in f.value):
                return None  # the mapping form takes only str/int lists
            out[f.key] = list(f.value)
        else:
            return None
    return out


def _filter(filters: MetadataFilters) -> models.Filter:
    conditions: list[Any] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            if f.filters:
                conditions.append(_filter(f))
            continue
        conditions.extend(_conditions(f))
    condition = filters.condition or FilterCondition.AND
    if condition is FilterCondition.AND:
        return models.Filter(must=conditions)
    if condition is FilterCondition.OR:
        return models.Filter(should=conditions)
    if condition is FilterCondition.NOT:
        return models.Filter(must_not=conditions)
    raise NotImplementedError(f"filter condition {condition.value!r} is not supported")


def _path(key: str) -> str:
    return key if key in TOP_LEVEL_KEYS else f"metadata.{key}"


def _values(f: MetadataFilter) -> list[Any]:
    if isinstance(f.value, list):
        if not f.value:
            raise ValueError(f"filter on {f.key!r} ({f.operator.value}): the list is empty")
        return list(f.value)
    if f.value is None:
        raise ValueError(f"filter on {f.key!r} ({f.operator.value}) needs a value")
    return [f.value]


def _keywords(f: MetadataFilter) -> list[Any]:
    """Values of an any-of / none-of match: Qdrant takes only strings or integers there."""
    values = _values(f)
    if all(isinstance(v, str) for v in values) or all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        return values
    raise ValueError(
        f"filter on {f.key!r} ({f.operator.value}) needs strings or integers, got {values!r}"
    )


def _number(f: MetadataFilter) -> float:
    if isinstance(f.value, bool) or not isinstance(f.value, int | float):
        raise ValueError(
            f"filter on {f.key!r} ({f.operator.value}) compares numbers, got {f.value!r}"
        )
    return float(f.value)


def _match(key: str, value: Any) -> models.FieldCondition:
    if isinstance(value, float):  # Qdrant matches floats by range, not by value
        return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _conditions(f: MetadataFilter) -> list[Any]:
    op, key = f.operator, _path(f.key)
    if op not in _SUPPORTED:
        names = ", ".join(o.name for o in _SUPPORTED)
        raise NotImplementedError(
            f"MetadataFilter operator {op.name} ({op.value!r}) on {f.key!r} is not supported "
            f"by M3Retriever; supported: {names}"
        )
    if op in (FilterOperator.EQ, FilterOperator.CONTAINS):
        if isinstance(f.value, list) or f.value is None:
            raise ValueError(f"filter on {f.key!r} ({op.value}) takes one value, got {f.value!r}")
        return [_match(key, f.value)]
    if op in (FilterOperator.IN, FilterOperator.ANY):
        return [models.FieldCondition(key=key, match=models.MatchAny(any=_keywords(f)))]
    if op in (FilterOperator.NE, FilterOperator.NIN):
        return [
            models.FieldCondition(key=key, match=models.MatchExcept(**{"except": _keywords(f)}))
        ]
    if op is FilterOperator.ALL:
        return [_match(key, v) for v in _values(f)]
    if op is FilterOperator.TEXT_MATCH:
        if not isinstance(f.value, str):
            raise ValueError(f"filter on {f.key!r} (text_match) needs a string, got {f.value!r}")
        return [models.FieldCondition(key=key, match=models.MatchText(text=f.value))]
    if op is FilterOperator.IS_EMPTY:
        return [models.IsEmptyCondition(is_empty=models.PayloadField(key=key))]
    bound = _number(f)
    ranges = {
        FilterOperator.GT: models.Range(gt=bound),
        FilterOperator.GTE: models.Range(gte=bound),
        FilterOperator.LT: models.Range(lt=bound),
        FilterOperator.LTE: models.Range(lte=bound),
    }
    return [models.FieldCondition(key=key, range=ranges[op])]
