"""Build ``qdrant_client.models.Filter`` objects from the simple forms users write.

>>> f = metadata_filter({"lang": "en", "year": [2023, 2024]})
>>> [c.key for c in f.must]
['metadata.lang', 'metadata.year']
>>> type(f.must[1].match).__name__
'MatchAny'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qdrant_client import models

from m3kit.store.schema import CHUNK_INDEX, DOC_HASH, DOC_ID, METADATA

__all__ = [
    "FilterLike",
    "and_filters",
    "documents_filter",
    "ids_filter",
    "metadata_filter",
    "stale_chunks_filter",
    "to_filter",
]

FilterLike = Mapping[str, Any] | models.Filter


def _condition(key: str, value: Any) -> models.FieldCondition:
    path = f"{METADATA}.{key}"
    if isinstance(value, (list, tuple, set, frozenset)):
        values = list(value)
        if not values:
            raise ValueError(f"filter on {key!r}: an any-of list must not be empty")
        if all(isinstance(v, str) for v in values) or all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            return models.FieldCondition(key=path, match=models.MatchAny(any=values))
        raise ValueError(
            f"filter on {key!r}: an any-of list must hold only strings or only integers, "
            f"got {values!r}"
        )
    if isinstance(value, (str, bool, int)):
        return models.FieldCondition(key=path, match=models.MatchValue(value=value))
    if isinstance(value, float):
        return models.FieldCondition(key=path, range=models.Range(gte=value, lte=value))
    raise ValueError(
        f"filter on {key!r}: value {value!r} ({type(value).__name__}) is not supported; use a "
        "string, int, bool, float, a list of strings/ints (any-of), or a qdrant models.Filter"
    )


def metadata_filter(mapping: Mapping[str, Any]) -> models.Filter:
    """Equality on ``metadata.<key>`` for each item (a list value means any-of)."""
    if not mapping:
        raise ValueError("an empty filter mapping matches everything; pass filter=None instead")
    return models.Filter(must=[_condition(str(k), v) for k, v in mapping.items()])


def to_filter(value: FilterLike | None) -> models.Filter | None:
    """Normalise what callers pass as ``filter`` (a mapping or a ``models.Filter``)."""
    if value is None:
        return None
    if isinstance(value, models.Filter):
        return value
    if isinstance(value, Mapping):
        return metadata_filter(value)
    raise TypeError(
        f"filter must be a mapping or qdrant_client.models.Filter, got {type(value).__name__}"
    )


def and_filters(*filters: models.Filter | None) -> models.Filter | None:
    """All of the given filters (``None`` entries ignored)."""
    present = [f for f in filters if f is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return models.Filter(must=list(present))


def ids_filter(ids: Sequence[str]) -> models.Filter:
    """Points whose id is one of ``ids``."""
    return models.Filter(must=[models.HasIdCondition(has_id=list(ids))])


def documents_filter(doc_ids: Sequence[str]) -> models.Filter:
    """Points whose ``doc_id`` payload is one of ``doc_ids``."""
    return models.Filter(
        must=[models.FieldCondition(key=DOC_ID, match=models.MatchAny(any=list(doc_ids)))]
    )


def stale_chunks_filter(doc_id: str, doc_hash: str, chunk_count: int) -> models.Filter:
    """Chunks of ``doc_id`` that are not part of the version ``doc_hash`` with ``chunk_count``."""
    current = models.Filter(
        must=[
            models.FieldCondition(key=DOC_HASH, match=models.MatchValue(value=doc_hash)),
            models.FieldCondition(key=CHUNK_INDEX, range=models.Range(lt=chunk_count)),
        ]
    )
    return models.Filter(
        must=[models.FieldCondition(key=DOC_ID, match=models.MatchValue(value=doc_id))],
        must_not=[current],
    )
