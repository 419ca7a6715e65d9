"""Read JSON-lines (and other UTF-8 text) files line by line, with errors that name the
file and line.

Hand-written (a few dozen lines) because every reader in m3kit needs the same error
contract — ``path:line: what is wrong`` — which neither ``json`` nor ``datasets`` gives.
"""

from __future__ import annotations

import codecs
import gzip
import json
import math
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "iter_json_rows",
    "iter_text_lines",
    "not_utf8",
    "open_text",
    "parse_json_rows",
    "unique_keys",
]


def open_text(path: Path, mode: str = "r") -> IO[str]:
    """Open a UTF-8 text file; ``.gz`` files are (de)compressed transparently. Reading
    skips a byte order mark (``utf-8-sig``: editors on Windows write one); writing writes none.

    To read line by line with decoding errors that name the file and line, use
    :func:`iter_text_lines`.
    """
    encoding = "utf-8-sig" if "r" in mode else "utf-8"
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding=encoding)  # type: ignore[return-value]
    return path.open(mode, encoding=encoding)


def not_utf8(path: object, error: UnicodeDecodeError) -> ValueError:
    """The error for a whole file read as UTF-8 that is not (names the byte and its offset).

    >>> not_utf8("a.txt", UnicodeDecodeError("utf-8", b"ab\\xe9", 2, 3, "invalid"))
    ValueError('a.txt: not UTF-8 text (byte 0xe9 at offset 2); save the file as UTF-8')
    """
    bad = error.object[error.start]
    return ValueError(
        f"{path}: not UTF-8 text (byte {bad:#04x} at offset {error.start}); save the file as UTF-8"
    )


def iter_text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file (``.gz`` decompressed), each ending in ``"\\n"``; a
    leading byte order mark is skipped.

    Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (files saved with classic Mac line
    ends), never at U+2028 / U+0085, which JSON strings may hold unescaped.

    Raises:
        ValueError: A line is not valid UTF-8 (the message names the file, line and byte),
            or a ``.gz`` file is not gzip or is cut short (it names the file).
    """
    line_no = 0
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as fh:
        for chunk in _gzip_checked(fh, path):
            body = chunk[:-1] if chunk.endswith(b"\n") else chunk
            body = body[:-1] if body.endswith(b"\r") else body
            for raw in body.split(b"\r"):
                line_no += 1
                if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                try:
                    yield raw.decode("utf-8") + "\n"
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{path}:{line_no}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                        f"{e.start + 1}); save the file as UTF-8"
                    ) from e


def _gzip_checked(fh: Iterable[bytes], path: Path) -> Iterator[bytes]:
    """``fh``'s lines; a ``.gz`` file that is not gzip, or cut short, is a ``ValueError``
    naming the file (gzip raised ``EOFError`` / ``BadGzipFile`` naming neither)."""
    try:
        yield from fh
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: not a whole gzip file ({e}); compress it again") from e


def parse_json_rows(lines: Iterable[str], origin: object) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_no, row)`` for each non-blank line, which must hold a JSON object (each key
    once: ``json`` would keep a repeated key's last value silently).

    >>> list(parse_json_rows(['{"a": 1}', "", '{"b": 2}'], "x.jsonl"))
    [(1, {'a': 1}), (3, {'b': 2})]
    >>> list(parse_json_rows(["[1]"], "x.jsonl"))
    Traceback (most recent call last):
    ValueError: x.jsonl:1: a row must be a JSON object (one per line)
    """
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{origin}:{line_no}"
        try:  # a key given twice would keep its last value silently
            row = json.loads(
                line,
                object_pairs_hook=unique_keys(f"{where}: the row"),
                parse_constant=_no_nan(where),
                parse_float=_finite_float(where),
            )
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a row must be a JSON object (one per line)")
        yield line_no, row


def _no_nan(where: str) -> Any:
    """A ``json.loads`` ``parse_constant`` refusing ``NaN`` / ``Infinity`` (Python's ``json``
    reads them, but they are no JSON: the store refused them later, naming no file or line).

    >>> list(parse_json_rows(['{"text": "t", "score": NaN}'], "x.jsonl"))
    Traceback (most recent call last):
    ValueError: x.jsonl:1: NaN is not JSON (write null, a number or a string)
    """

    def refuse(name: str) -> Any:
        raise ValueError(f"{where}: {name} is not JSON (write null, a number or a string)")

    return refuse


def _finite_float(where: str) -> Any:
    """A ``json.loads`` ``parse_float`` refusing a number past float's range (``1e400`` read
    as ``inf``, which the store refused only after the model loaded, as "metadata of text N").

    >>> list(parse_json_rows(['{"text": "t", "price": 1e400}'], "x.jsonl"))
    Traceback (most recent call last):
    ValueError: x.jsonl:1: 1e400 is beyond a float's range (write a smaller number or a string)
    """

    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(
                f"{where}: {text} is beyond a float's range (write a smaller number or a string)"
            )
        return value

    return parse


def iter_json_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`parse_json_rows` over the lines of a (possibly gzipped) UTF-8 file
    (:func:`iter_text_lines`)."""
    yield from parse_json_rows(iter_text_lines(path), path)


def unique_keys(what: str) -> Any:
    """A ``json.loads`` ``object_pairs_hook`` refusing a key given twice in one object (``json``
    keeps the last value silently; two keys of a Python mapping, ``1`` and ``"1"``, become
    one JSON key when dumped), naming ``what`` was read.

    >>> json.loads('{"a": 1, "a": 2}', object_pairs_hook=unique_keys("row 3"))
    Traceback (most recent call last):
    ValueError: row 3 has the key 'a' twice in one object (two keys of the mapping become ...
    """

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(
                    f"{what} has the key {key!r} twice in one object (two keys of the mapping "
                    'become one JSON key, as 1 and "1" or True and "true" do): one value would '
                    "silently replace the other; give each key once"
                )
            out[key] = value
        return out

    return build
