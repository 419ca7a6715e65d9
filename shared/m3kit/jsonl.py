"""Read JSON-lines files row by row, with errors that name the file and line.

Hand-written (a dozen lines) because every reader in m3kit needs the same error contract —
``path:line: what is wrong`` — which neither ``json`` nor ``datasets`` gives.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["iter_json_rows", "open_text", "parse_json_rows"]


def open_text(path: Path, mode: str = "r") -> IO[str]:
    """Open a UTF-8 text file; ``.gz`` files are (de)compressed transparently. Reading
    skips a byte order mark (``utf-8-sig``: editors on Windows write one); writing writes none.
    """
    encoding = "utf-8-sig" if "r" in mode else "utf-8"
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding=encoding)  # type: ignore[return-value]
    return path.open(mode, encoding=encoding)


def parse_json_rows(lines: Iterable[str], origin: object) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_no, row)`` for each non-blank line, which must hold a JSON object.

    >>> list(parse_json_rows(['{"a": 1}', "", '{"b": 2}'], "x.jsonl"))
    [(1, {'a': 1}), (3, {'b': 2})]
    >>> list(parse_json_rows(["[1]"], "x.jsonl"))
    Traceback (most recent call last):
    ValueError: x.jsonl:1: a row must be a JSON object (one per line)
    """
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{origin}:{line_no}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise ValueError(f"{origin}:{line_no}: a row must be a JSON object (one per line)")
        yield line_no, row


def iter_json_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`parse_json_rows` over a (possibly gzipped) file."""
    with open_text(path) as fh:
        yield from parse_json_rows(fh, path)
