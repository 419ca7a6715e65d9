"""One Qdrant condition per filter operator, with one exact meaning on every backend.

The LangChain mapping form (:func:`m3kit.store.filters.metadata_filter`) and LlamaIndex's
``MetadataFilters`` (:mod:`llamaindex_m3.filters`) are both translated with these builders,
so a filter means the same thing whichever adapter wrote it and whichever engine runs it
(the embedded qdrant-edge engine, qdrant-client in memory or in a folder, a Qdrant server).

Semantics, in terms of the *values* of a payload key: a missing key or ``null`` has no
values, a list has its elements, any other value is a one-element list (Qdrant's model: a
scalar and a one-element list are indistinguishable to a filter).

* :func:`equals` ``(v)``: some value equals ``v``. Numbers compare by value (``1 == 1.0``);
  a bool equals only a bool and a string only a string (``True`` is not ``1``, ``"1"`` is not
  ``1``). A list key matches when any element does.
* :func:`not_` ``(c)``: exactly the points ``c`` does not match. So "not equal" / "none of"
  match a missing or empty key, and a list key only when *no* element matches
  (``tags != "a"`` is false for ``["a", "b"]``). This is LlamaIndex's own meaning for
  ``NE`` / ``NIN`` on a missing key, and it keeps ``NOT(EQ) == NE``. (Qdrant's
  ``MatchExcept`` means something else: the key present with some value outside the list;
  it is not used.)
* :func:`any_of` ``(vs)``: some value equals one of ``vs``. :func:`all_of` ``(vs)``: every
  one of ``vs`` equals some value (one nested ``Filter(must=...)``, so it stays one condition
  inside ``should`` / ``must_not``).
* :func:`compare` (``gt``, ``gte``, ``lt``, ``lte``): some *number* value (not a bool, not a
  string) lies in the range. Numbers are compared as 64-bit floats, so filter values must be
  finite and integers within ``±2**53`` (beyond, equality is no longer exact: refused). Stored
  integers beyond ``±2**53`` are compared as floats by the embedded engine and exactly by
  qdrant-client's local mode: keep such ids in strings.
* :func:`substring` ``(s)``: some *string* value contains ``s`` (case-sensitive, byte-wise;
  ``""`` matches every string). This is Qdrant's ``MatchSubstring``, which needs no payload
  index (with a keyword index created with the ``prefix`` option it is served by the index,
  same meaning). A case-insensitive substring match has no Qdrant equivalent.
* :func:`is_empty`: the key has no values (missing, ``null`` or ``[]``; ``""`` is a value).
* :func:`where_present` ``(first, then, build)``: ``build(first)`` where ``first`` has values,
  ``build(then)`` elsewhere (a dotted metadata key: the flat key where a chunk has it, else
  the nested path); :func:`present_else` ``(path, where, otherwise)``, its general form.

Payload indexes keep these meanings (qdrant-client's local mode ignores indexes). Two index
types would not, measured on the embedded engine: an ``integer`` index skips non-integer
numbers (``gt 0`` and ``{"k": 1.5}`` miss ``1.5``) and a ``datetime`` index skips numbers
(it serves a numeric range as a date range); so writing such a value to a key indexed so is
refused (:func:`m3kit.store.payload_indexes.check_indexed_values`): index such a key as
``float``. A ``float``, ``integer`` or ``datetime`` index would also serve a ``MatchValue`` of
a string that parses as a UUID as that UUID (matching nothing), so :func:`equals` tests such
a string with a one-value ``MatchAny``, which every index serves by value.

Example:
    >>> equals("metadata.year", 2024).range
    Range(lt=None, gt=None, gte=2024.0, lte=2024.0)
    >>> any_of("metadata.lang", ["en", "de"]).match
    MatchAny(any=['en', 'de'])
    >>> [c.match.value for c in all_of("metadata.tags", ["a", "b"]).must]
    ['a', 'b']
    >>> not_(equals("metadata.lang", "en")).must_not[0].match
    MatchValue(value='en')
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from qdrant_client import models

__all__ = [
    "MAX_EXACT_INT",
    "Scalar",
    "all_of",
    "any_of",
    "compare",
    "equals",
    "exact_number",
    "is_empty",
    "not_",
    "present_else",
    "substring",
    "where_present",
]

Scalar = str | int | float | bool
"""A value a filter compares with."""

MAX_EXACT_INT = 2**53
"""Largest integer magnitude a filter accepts (numbers are compared as 64-bit floats)."""


def exact_number(value: int | float) -> bool:
    """Whether a filter takes number ``value``: finite, and an int within ``±2**53`` (numbers
    are compared as 64-bit floats; a float is taken as it is, so past ``2**53`` the stored
    integers that round to it match it too: keep such ids in strings).

    >>> exact_number(2**53), exact_number(2**53 + 1), exact_number(1e300), exact_number(math.nan)
    (True, False, True, False)
    """
    if isinstance(value, float):
        return math.isfinite(value)
    return abs(value) <= MAX_EXACT_INT


def _number(path: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"filter on {path!r} ({what}) compares numbers, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"filter on {path!r} ({what}): {value!r} is not a finite number")
    if not exact_number(value):
        raise ValueError(
            f"filter on {path!r} ({what}): {value} is beyond ±2**53, where numbers compared "
            "as 64-bit floats are no longer exact; store such values as strings"
        )
    return float(value)


def equals(path: str, value: Scalar) -> models.Condition:
    """Some value of ``path`` equals ``value`` (numbers by value; bools and strings by type).

    Raises:
        ValueError: ``value`` is not a string, bool, or finite number within ``±2**53``.
    """
    if isinstance(value, str) and _reads_as_uuid(value):
        # the embedded engine serves MatchValue of a string that parses as a UUID from a
        # float / integer / datetime index as that UUID, which such an index never holds
        # (nothing matched); MatchAny of the one string compares it as a string everywhere
        return models.FieldCondition(key=path, match=models.MatchAny(any=[value]))
    if isinstance(value, str | bool):
        return models.FieldCondition(key=path, match=models.MatchValue(value=value))
    if isinstance(value, int | float):
        # MatchValue compares an int only with stored ints (never 1.0) and takes no floats;
        # a closed range compares any stored number by value
        x = _number(path, value, "equals")
        return models.FieldCondition(key=path, range=models.Range(gte=x, lte=x))
    raise ValueError(
        f"filter on {path!r}: value {value!r} ({type(value).__name__}) is not supported; use a "
        "string, bool, int or float"
    )


def any_of(path: str, values: Sequence[Scalar]) -> models.Condition:
    """Some value of ``path`` equals one of ``values`` (one condition, however many values).

    Raises:
        ValueError: ``values`` is empty or holds a value :func:`equals` refuses (a dict, a
            list or ``None`` among them included).
    """
    values = _non_empty(path, values, "any of")
    strings = list(dict.fromkeys(v for v in values if isinstance(v, str)))
    conditions: list[models.Condition] = []
    if len(strings) > 1:
        conditions.append(models.FieldCondition(key=path, match=models.MatchAny(any=strings)))
    elif strings:
        conditions.append(equals(path, strings[0]))
    conditions += [equals(path, v) for v in _unique(values) if not isinstance(v, str)]
    return conditions[0] if len(conditions) == 1 else models.Filter(should=conditions)


def all_of(path: str, values: Sequence[Scalar]) -> models.Condition:
    """Each of ``values`` equals some value of ``path`` (one nested filter: never flattened).

    Raises:
        ValueError: ``values`` is empty or holds a value :func:`equals` refuses.
    """
    values = _non_empty(path, values, "all of")
    conditions = [equals(path, v) for v in _unique(values)]
    return conditions[0] if len(conditions) == 1 else models.Filter(must=conditions)


def not_(condition: models.Condition) -> models.Filter:
    """Exactly the points ``condition`` does not match (missing keys included)."""
    return models.Filter(must_not=[condition])


def compare(
    path: str,
    *,
    gt: float | None = None,
    gte: float | None = None,
    lt: float | None = None,
    lte: float | None = None,
) -> models.FieldCondition:
    """Some number value of ``path`` lies in the range (bools and strings never do).

    Raises:
        ValueError: No bound, or a bound that is not a finite number within ``±2**53``.
    """
    bounds = {"gt": gt, "gte": gte, "lt": lt, "lte": lte}
    given = {k: _number(path, v, k) for k, v in bounds.items() if v is not None}
    if not given:
        raise ValueError(f"filter on {path!r}: a range needs at least one bound")
    return models.FieldCondition(key=path, range=models.Range(**given))


def substring(path: str, text: str) -> models.FieldCondition:
    """Some string value of ``path`` contains ``text`` (case-sensitive).

    Raises:
        ValueError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise ValueError(f"filter on {path!r} (substring) needs a string, got {text!r}")
    return models.FieldCondition(key=path, match=models.MatchSubstring(substring=text))


def is_empty(path: str) -> models.IsEmptyCondition:
    """``path`` has no values: missing, ``null`` or ``[]``."""
    return models.IsEmptyCondition(is_empty=models.PayloadField(key=path))


def where_present(first: str, then: str, build: Callable[[str], models.Condition]) -> models.Filter:
    """``build(first)`` on the points where ``first`` has values, ``build(then)`` on the rest.

    >>> f = where_present('metadata."a.b"', "metadata.a.b", lambda path: equals(path, "x"))
    >>> [[getattr(c, "key", None) for c in part.must] for part in f.should]
    [[None, 'metadata."a.b"'], [None, 'metadata.a.b']]
    """
    return present_else(first, build(first), build(then))


def present_else(path: str, where: models.Condition, otherwise: models.Condition) -> models.Filter:
    """``where`` on the points where ``path`` has values, ``otherwise`` on the rest.

    >>> f = present_else("metadata.doc_id", equals("metadata.doc_id", "1"), equals("doc_id", "1"))
    >>> [[getattr(c, "key", None) for c in part.must] for part in f.should]
    [[None, 'metadata.doc_id'], [None, 'doc_id']]
    """
    return models.Filter(
        should=[
            models.Filter(must=[not_(is_empty(path)), where]),
            models.Filter(must=[is_empty(path), otherwise]),
        ]
    )


def _reads_as_uuid(text: str) -> bool:
    """Whether ``text`` parses as a UUID (hyphenated, 32 hex digits, braced or ``urn:uuid:``).

    >>> _reads_as_uuid("6F0B7C1E5A435B8E9A573D1C2B7E4F10"), _reads_as_uuid("en")
    (True, False)
    """
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _non_empty(path: str, values: Sequence[Scalar], what: str) -> list[Scalar]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | set | frozenset):
        raise ValueError(f"filter on {path!r} ({what}) needs a list of values, got {values!r}")
    out = list(values)
    if not out:
        raise ValueError(f"filter on {path!r} ({what}): the list is empty")
    for v in out:
        if not isinstance(v, str | int | float):  # bool is an int
            raise ValueError(
                f"filter on {path!r} ({what}): {v!r} ({type(v).__name__}) is not supported in "
                "the list; use a string, bool, int or float"
            )
    return out


def _unique(values: list[Scalar]) -> list[Scalar]:
    """Values without repeats, keeping ``True`` and ``1`` apart (they hash alike)."""
    return [v for _, v in dict.fromkeys((isinstance(v, bool), v) for v in values)]
