"""``m3kit search --filter KEY=VALUE``: the values as a filter mapping (split from
:mod:`m3kit.cli`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["filter_mapping", "filter_pair"]


def filter_mapping(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``--filter`` pairs as a filter mapping; a key given more than once matches any of them.

    >>> filter_mapping([("lang", "en"), ("year", 2020), ("lang", "de")])
    {'lang': ['en', 'de'], 'year': 2020}
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key not in out:
            out[key] = value
            continue
        before = out[key] if isinstance(out[key], list) else [out[key]]
        out[key] = before + (value if isinstance(value, list) else [value])
    return out


def filter_pair(value: str) -> tuple[str, Any]:
    """A ``--filter KEY=VALUE``: VALUE read as JSON, else as plain text.

    A bare number also matches its text (ids, versions and codes stored as strings are
    common, and a command line cannot tell them apart); a quoted one (``'v="2.0"'``) is text
    only. One no filter can compare exactly (an integer past ``±2**53``, ``NaN``, ``1e400``)
    is text:

    >>> filter_pair("ver=2.0"), filter_pair('ver="2.0"'), filter_pair("lang=en")
    (('ver', [2.0, '2.0']), ('ver', '2.0'), ('lang', 'en'))
    >>> filter_pair("id=1234567890123456789"), filter_pair("code=NaN"), filter_pair("x=1e20")
    (('id', '1234567890123456789'), ('code', 'NaN'), ('x', [1e+20, '1e20']))
    """
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    try:
        parsed: Any = json.loads(raw, parse_constant=_no_constant)
    except ValueError:  # JSONDecodeError too
        return key, raw  # plain text, e.g. --filter topic=geo
    if isinstance(parsed, bool) or not isinstance(parsed, int | float):
        return key, parsed
    from m3kit.store.conditions import exact_number  # (qdrant-client: not at --help)

    return key, [parsed, raw] if exact_number(parsed) else raw


def _no_constant(name: str) -> Any:
    """JSON's ``NaN`` / ``Infinity``, which Python reads as numbers: plain text here."""
    raise ValueError(name)
