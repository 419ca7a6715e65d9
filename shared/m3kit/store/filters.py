"""Build ``qdrant_client.models.Filter`` objects from the simple forms users write.

>>> f = metadata_filter({"lang": "en", "year": [2023, 2024]})
>>> f.must[0].key, f.must[0].match.value
('metadata.lang', 'en')
>>> [c.range.gte for c in f.must[1].should]  # numbers compare by value (2023 matches 2023.0)
[2023.0, 2024.0]

The meaning of each condition (lists, missing keys, numbers) is in :mod:`m3kit.store.conditions`.
"""

from __future__ import annotations

import numbers
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from qdrant_client import models

from m3kit.encoder_inputs import unpaired_surrogate
from m3kit.store.conditions import any_of, equals, where_present
from m3kit.store.metadata_values import iso_value
from m3kit.store.schema import (
    CHUNK_ID,
    CHUNK_INDEX,
    DOC_HASH,
    DOC_ID,
    METADATA,
    flat_metadata_path,
    metadata_path,
)

__all__ = [
    "FilterLike",
    "and_filters",
    "chunk_ids_filter",
    "distinct_doc_ids",
    "distinct_ids",
    "doc_id_text",
    "documents_filter",
    "ids_filter",
    "matches_everything",
    "metadata_condition",
    "metadata_filter",
    "points_filter",
    "refuse_has_id",
    "stale_chunks_filter",
    "to_filter",
]

FilterLike = Mapping[str, Any] | models.Filter


def _condition(key: str, value: Any) -> models.Condition:
    if key.startswith("$"):
        raise ValueError(
            f"filter key {key!r}: operator mappings ($and, $or, $eq, ...) are not supported; "
            "the mapping form is {key: value} equality (a list value means any-of), pass a "
            "qdrant_client.models.Filter for anything richer"
        )
    # a date, time or UUID matches the string it is stored as (metadata_values)
    try:
        if isinstance(value, list | tuple | set | frozenset):
            values = [iso_value(v) for v in value]
            return metadata_condition(key, lambda path: any_of(path, values))
        value = iso_value(value)
    except ValueError as e:  # a missing date (NaT)
        raise ValueError(f"filter on {key!r}: {e}") from None
    if isinstance(value, str | bool | int | float):
        return metadata_condition(key, lambda path: equals(path, value))
    raise ValueError(
        f"filter on {key!r}: value {value!r} ({type(value).__name__}) is not supported; use a "
        "string, int, bool, float, date, time, UUID, a list of those (any-of), or a qdrant "
        "models.Filter"
    )


def metadata_condition(
    key: str, build: Callable[[str], models.Condition], *, top_level: bool = False
) -> models.Condition:
    """``build`` on the payload path of metadata ``key``.

    A key with dots names a flat key where a chunk's metadata has one (``{"file.name": ...}``,
    as LlamaIndex and many loaders write it), else the nested path (``{"file": {"name": ...}}``),
    so the filter matches whichever the chunk holds; a key without dots is one path.
    ``top_level``: the metadata keys are the payload's own (LlamaIndex's Qdrant store writes
    them so), not under ``metadata.``.

    >>> metadata_condition("lang", lambda path: equals(path, "en")).key
    'metadata.lang'
    >>> f = metadata_condition("file.name", lambda path: equals(path, "a.pdf"))
    >>> [part.must[1].key for part in f.should]
    ['metadata."file.name"', 'metadata.file.name']
    >>> f = metadata_condition("file.name", lambda p: equals(p, "a.pdf"), top_level=True)
    >>> [part.must[1].key for part in f.should]
    ['"file.name"', 'file.name']

    Raises:
        ValueError: The key is empty or holds a double quote (Qdrant cannot address it).
    """
    cut = len(METADATA) + 1 if top_level else 0  # "metadata."
    flat = flat_metadata_path(key)[cut:]
    try:
        nested = metadata_path(key)[cut:]
    except ValueError:  # an empty part ("a..b"): a flat key only
        return build(flat)
    return build(flat) if nested == flat else where_present(flat, nested, build)


def metadata_filter(mapping: Mapping[str, Any]) -> models.Filter:
    """Equality on ``metadata.<key>`` for each item (a list value means any-of), all of them;
    a dotted key matches the flat key or the nested path (:func:`metadata_condition`).

    Each item means :func:`m3kit.store.conditions.equals` (or ``any_of`` for a list): on a
    list-valued key it matches when any element does; numbers compare by value.

    Raises:
        ValueError: An empty mapping, an operator key (``$and``...), or an unsupported value.
    """
    if not mapping:
        raise ValueError("an empty filter mapping matches everything; pass filter=None instead")
    return models.Filter(must=[_condition(str(k), v) for k, v in mapping.items()])


def to_filter(value: FilterLike | None) -> models.Filter | None:
    """Normalise what callers pass as ``filter`` (a mapping or a ``models.Filter``).

    Raises:
        ValueError: A key or text in it is not UTF-8 (:func:`refuse_non_utf8`).
    """
    if value is None:
        return None
    if isinstance(value, models.Filter):
        refuse_non_utf8(value)
        return value
    if isinstance(value, Mapping):
        out = metadata_filter(value)
        refuse_non_utf8(out)
        return out
    raise TypeError(
        f"filter must be a mapping or qdrant_client.models.Filter, got {type(value).__name__}"
    )


#: The text fields of Qdrant's match classes.
_MATCH_TEXTS = ("value", "any", "except_", "text", "text_any", "phrase", "substring", "prefix")


def refuse_non_utf8(condition: Any) -> None:
    """Refuse a filter holding a key or text that is not UTF-8 (an unpaired surrogate):
    Qdrant keeps text as UTF-8, so nothing stored has it; the embedded engine refused it with
    an argument error of its own naming neither ("failed to extract enum ..."), while
    qdrant-client's local mode matched nothing.

    >>> refuse_non_utf8(metadata_filter({"lang": "en"}))
    >>> refuse_non_utf8(metadata_filter({"lang": "e" + chr(0xD800)}))
    Traceback (most recent call last):
    ValueError: filter on 'metadata.lang': 'e\\ud800' is not valid UTF-8 text (an unpaired \
surrogate at character 1); Qdrant stores text as UTF-8, so no stored key or value can have it
    """
    if isinstance(condition, models.Filter):
        for part in (condition.must, condition.should, condition.must_not):
            for c in part if isinstance(part, list) else [part] if part is not None else []:
                refuse_non_utf8(c)
        if condition.min_should is not None:
            for c in condition.min_should.conditions:
                refuse_non_utf8(c)
        return
    if isinstance(condition, models.NestedCondition):
        _refuse_text(condition.nested.key, condition.nested.key)
        refuse_non_utf8(condition.nested.filter)
    elif isinstance(condition, models.FieldCondition):
        _refuse_text(condition.key, condition.key)
        for name in _MATCH_TEXTS:
            found = getattr(condition.match, name, None)
            for value in found if isinstance(found, list) else [found]:
                _refuse_text(condition.key, value)
    elif isinstance(condition, models.IsEmptyCondition):
        _refuse_text(condition.is_empty.key, condition.is_empty.key)
    elif isinstance(condition, models.IsNullCondition):
        _refuse_text(condition.is_null.key, condition.is_null.key)


def _refuse_text(key: str, value: Any) -> None:
    _refuse_surrogate(value, f"filter on {key!r}:", "text as UTF-8, so no stored key or value")


def refuse_has_id(condition: Any) -> None:
    """Raise if a ``HasIdCondition`` is anywhere in a filter (nested ones included).

    For the adapters' search filters, where the ids users hold are document ids: Qdrant's
    ``has_id`` matches point ids, which m3kit derives from ``(doc_id, chunk_index)``
    (:func:`m3kit.store.schema.point_id`), so langchain-qdrant's
    ``HasIdCondition(has_id=[doc.id])`` would silently match nothing. Point ids and document
    ids cannot be told apart (a document id may be a UUID), so the condition is refused rather
    than translated. (:class:`~m3kit.store.M3Store`, whose callers hold point ids, takes it.)

    >>> refuse_has_id(models.Filter(must=[models.HasIdCondition(has_id=["d1"])]))
    Traceback (most recent call last):
    ...
    ValueError: filter: HasIdCondition(has_id=['d1']) matches ...

    Raises:
        ValueError: Names the condition and the ``doc_id`` filter to use instead.
    """
    if isinstance(condition, models.HasIdCondition):
        raise ValueError(
            f"filter: HasIdCondition(has_id={list(condition.has_id)!r}) matches Qdrant point "
            "ids, which m3kit derives from (doc_id, chunk_index), not the Document / node ids "
            "you hold, so it would match nothing; filter by document id with "
            "{'doc_id': [...]} (LangChain / LlamaIndex stores) or, in a qdrant Filter, "
            "FieldCondition(key='doc_id', match=MatchAny(any=[...]))"
        )
    if isinstance(condition, models.NestedCondition):
        refuse_has_id(condition.nested.filter)
    elif isinstance(condition, models.Filter):
        min_should = condition.min_should.conditions if condition.min_should else []
        for part in (condition.must, condition.should, condition.must_not, min_should):
            for inner in part if isinstance(part, list) else [part]:
                refuse_has_id(inner)


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


def chunk_ids_filter(ids: Sequence[str]) -> models.Filter:
    """Points whose point id or stored ``chunk_id`` (a writer's own id) is one of ``ids``.

    >>> f = chunk_ids_filter(["node-1", "6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10"])
    >>> [type(c).__name__ for c in f.should]
    ['FieldCondition', 'HasIdCondition']

    Raises:
        TypeError: ``ids`` is a single string, or holds a non-string.
        ValueError: An id is not UTF-8 text (as :func:`documents_filter`).
    """
    wanted = distinct_ids(ids, "ids")
    for chunk_id in wanted:
        _refuse_surrogate(chunk_id, "chunk id")
    should: list[Any] = [models.FieldCondition(key=CHUNK_ID, match=models.MatchAny(any=wanted))]
    uuids: list[int | str | uuid.UUID] = [i for i in wanted if _is_uuid(i)]
    if uuids:
        should.append(models.HasIdCondition(has_id=uuids))
    return models.Filter(should=should)


def distinct_ids(ids: Iterable[Any], name: str) -> list[str]:
    """``ids`` without repeats (first-seen order), checked to be strings.

    >>> distinct_ids(["a", "b", "a"], "doc_ids")
    ['a', 'b']

    Raises:
        TypeError: ``ids`` is a single string (it would be read as its characters: ``"ab"``
            as the ids ``a`` and ``b``), or holds a non-string.
    """
    if isinstance(ids, str):
        raise TypeError(f"{name} is a sequence of ids, not a single string: use [{ids!r}]")
    given = list(ids)
    bad = [i for i in given if not isinstance(i, str)]  # (before a set: a list is unhashable)
    if bad:
        raise TypeError(f"{name}: ids are strings, got {bad[0]!r}")
    return list(dict.fromkeys(given))


def doc_id_text(value: Any, where: str) -> str:
    """A document id as stored: a str as given, an int as its digits (``7`` is ``"7"``).

    The one rule of every call taking document ids (``add_texts`` writes them, ``delete`` and
    the lookups read them), so an id is found under the value it was written with.

    >>> doc_id_text(7, "doc_ids[0]"), doc_id_text("a", "doc_ids[1]")
    ('7', 'a')

    Raises:
        TypeError: Any other value (a bool, float, mapping, list, bytes, ...), which would
            be stored as its Python text (``"{'a': 1}"``, ``"True"``); names ``where``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))  # numpy integers too
    raise TypeError(
        f"{where}: a document id is a str or an int, not {type(value).__name__} {value!r}"
    )


def distinct_doc_ids(ids: Iterable[Any], name: str) -> list[str]:
    """Document ids as stored (:func:`doc_id_text`), without repeats (first-seen order).

    >>> distinct_doc_ids(["a", 7, "7"], "doc_ids")
    ['a', '7']

    Raises:
        TypeError: ``ids`` is a single string (it would be read as its characters), or
            holds an id that is neither a str nor an int (named by its position).
    """
    if isinstance(ids, str):
        raise TypeError(f"{name} is a sequence of ids, not a single string: use [{ids!r}]")
    return list(dict.fromkeys(doc_id_text(d, f"{name}[{i}]") for i, d in enumerate(ids)))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _refuse_surrogate(value: Any, what: str, kept: str = "ids as UTF-8, so none") -> None:
    at = unpaired_surrogate(value) if isinstance(value, str) else None
    if at is not None:
        raise ValueError(
            f"{what} {value!r} is not valid UTF-8 text (an unpaired surrogate at character "
            f"{at}); Qdrant stores {kept} can have it"
        )


def documents_filter(doc_ids: Sequence[str]) -> models.Filter:
    """Points whose ``doc_id`` payload is one of ``doc_ids``.

    Raises:
        ValueError: An id is not UTF-8 text (an unpaired surrogate): no stored document has
            it, and the embedded engine refuses it with an error of its own naming none.
    """
    for doc_id in doc_ids:
        _refuse_surrogate(doc_id, "document id")
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


def matches_everything(selector: models.Filter) -> bool:
    """Whether ``selector`` has no condition: no ``must`` (or only such filters), no
    ``should`` (or one such filter among them), no ``must_not`` and no ``min_should``.

    >>> matches_everything(models.Filter(must=[models.Filter()]))
    True
    >>> matches_everything(models.Filter(must_not=[models.Filter()]))
    False
    """

    def listed(value: Any) -> list[Any]:
        return [] if value is None else list(value) if isinstance(value, list) else [value]

    def empty(condition: Any) -> bool:
        return isinstance(condition, models.Filter) and matches_everything(condition)

    if selector.min_should is not None or listed(selector.must_not):
        return False
    if not all(empty(c) for c in listed(selector.must)):
        return False
    should = listed(selector.should)
    return not should or any(empty(c) for c in should)


def points_filter(ids: Sequence[str] | None, filter: FilterLike | None) -> models.Filter:
    """Points with these ids (UUIDs) and/or matching the filter (both: AND).

    >>> points_filter(None, {"lang": "en"}).must[0].key
    'metadata.lang'
    >>> points_filter(["6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10"], None).must[0].has_id
    ['6f0b7c1e-5a43-5b8e-9a57-3d1c2b7e4f10']

    Raises:
        ValueError: Neither is given, or an id is not a UUID.
    """
    if ids is None and filter is None:
        raise ValueError("give point ids, a filter or both")
    by_id = None
    if ids is not None:
        if isinstance(ids, str):
            raise TypeError(f"ids is a sequence of point ids, not a single string: use [{ids!r}]")
        for i in ids:
            try:
                uuid.UUID(str(i))
            except ValueError:
                raise ValueError(
                    f"{i!r} is not a point id (point ids are UUIDs: point_id(doc_id, chunk_index))"
                ) from None
        by_id = ids_filter([str(i) for i in ids])
    selector = and_filters(by_id, to_filter(filter))
    assert selector is not None
    return selector
