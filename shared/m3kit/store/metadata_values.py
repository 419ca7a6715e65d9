"""Metadata values that JSON has no type for, written as the frameworks' own stores write them.

langchain-qdrant and qdrant-client serialise a payload through pydantic, which writes a
``datetime`` / ``date`` / ``time`` as its ISO 8601 string and a ``UUID`` as its canonical
string; a user's metadata holding one (LangChain's ``TimeWeightedVectorStoreRetriever``
stamps every document with ``created_at`` / ``last_accessed_at`` datetimes) is stored that
way there. m3kit stores the same strings, read back as strings as from those stores, instead
of refusing the metadata as not JSON. Every other value is left as it is, to be checked (and
refused where Qdrant cannot hold it) by :func:`m3kit.store.points.plain_json`.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Mapping
from typing import Any

# qdrant-client's own serialiser (a dependency of it, so of m3kit): the strings it writes
from pydantic_core import to_jsonable_python

__all__ = ["iso_value", "iso_values", "sorted_json"]


def iso_values(metadata: Mapping[Any, Any], where: str | None = None) -> dict[Any, Any]:
    """A copy of ``metadata`` with dates, times and UUIDs (at any depth) as their strings.

    Keys and every other value are kept as they are (tuples stay tuples), so a metadata
    without such values gives the same content ids and hashes as before. ``where``: what the
    metadata is, for messages (``"metadata of text 3"``).

    >>> when = datetime.datetime(2026, 12, 5, 9, 30, tzinfo=datetime.timezone.utc)
    >>> iso_values({"created_at": when, "day": [datetime.date(2026, 12, 5)], 3: (1, 2)})
    {'created_at': '2026-12-05T09:30:00Z', 'day': ['2026-12-05'], 3: (1, 2)}
    >>> iso_values({"run": uuid.UUID(int=1), "at": {"t": datetime.time(8, 15)}})
    {'run': '00000000-0000-0000-0000-000000000001', 'at': {'t': '08:15:00'}}
    """
    out = {}
    for key, value in metadata.items():
        try:
            out[key] = iso_value(value)
        except ValueError as e:  # named by its key (a nested one by its path) and ``where``
            place = f"{key!r}: " if where is None else f"{where}: {key!r}: "
            raise ValueError(f"{place}{e}") from None
    return out


def iso_value(value: Any) -> Any:
    """One metadata value as :func:`iso_values` stores it (a filter's value is read so too).

    >>> iso_value(uuid.UUID(int=1)), iso_value([datetime.time(8, 15)]), iso_value(1.5)
    ('00000000-0000-0000-0000-000000000001', ['08:15:00'], 1.5)

    Raises:
        ValueError: A missing date (pandas' ``NaT``, what ``DataFrame.to_dict()`` gives for
            an empty datetime cell: a ``datetime`` unequal to itself, as NaN), which failed
            with "'float' object cannot be interpreted as an integer", naming nothing.
    """
    # datetime is a date; written exactly as qdrant-client writes them
    if isinstance(value, (datetime.date, datetime.time, uuid.UUID)):
        if value != value:  # NaT, as NaN, is unequal to itself
            raise ValueError(
                "a missing date (pandas' NaT), which has no ISO string: store None instead"
            )
        return to_jsonable_python(value)
    if isinstance(value, Mapping):
        return iso_values(value)
    if isinstance(value, tuple):  # a namedtuple too: JSON writes it as a list either way
        return tuple(iso_value(item) for item in value)
    if isinstance(value, list):
        return [iso_value(item) for item in value]
    return value


def sorted_json(value: Any, **dumps: Any) -> str:
    """``json.dumps(value, sort_keys=True, **dumps)``: the canonical JSON a hash reads.

    A mapping whose keys are of mixed types (``{0: "alice", "source": "people.csv"}``, a
    pandas row with integer column names beside a key of the loader's) cannot be sorted
    (``TypeError: '<' not supported between instances of 'str' and 'int'``); its JSON form,
    keys as the strings Qdrant stores them under, is. Any other value hashes as before.

    >>> sorted_json({"row": {0: "alice", "source": "csv"}})
    '{"row": {"0": "alice", "source": "csv"}}'
    >>> sorted_json({"b": 1, "a": 2})
    '{"a": 2, "b": 1}'
    """
    try:
        return json.dumps(value, sort_keys=True, **dumps)
    except TypeError as e:
        if "not supported between instances" not in str(e):
            raise
    # unsorted, json writes every key as a string; read back, those sort
    return json.dumps(json.loads(json.dumps(value, **dumps)), sort_keys=True, **dumps)
