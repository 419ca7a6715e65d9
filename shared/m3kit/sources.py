"""Read documents from files and folders (.txt, .md, .jsonl) with stable document ids.

A ``.txt`` / ``.md`` file is one document whose id is the file's absolute path. A ``.jsonl``
file holds one document per line: ``{"text": ..., "_id" or "id": ..., "title": ..., ...}``; the
id is the row's ``_id`` (or ``id``, a string or an integer: ``7`` is the id ``"7"``) when it
has one, else ``<absolute path>:<line number>``.
Every other key (``title`` included) goes to the metadata, but ``m3kit_source``: the reader
keeps the file a row came from there (:data:`ORIGIN_KEY`), so a row that has it is refused.
Ids stay the same when the same files are read again, so indexing them twice stores nothing
new. A ``<path>:<line>`` id
belongs to its file, not to the row: ``m3kit index`` deletes those of a file it reads again
that the file no longer produces (:mod:`m3kit.cli_prune`).

:func:`reader_origin` tells a stored document this reader wrote (what ``m3kit index`` cleans
up) from one added another way, e.g. by LangChain or LlamaIndex, whose ``source`` may name a
file too.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.md").write_text("# Berlin\\nCapital of Germany.", encoding="utf-8")
    >>> _ = (folder / "b.jsonl").write_text('{"_id": "p1", "text": "Oxygen.", "year": 1774}\\n')
    >>> docs = read_documents([folder])
    >>> [(d.doc_id.endswith("a.md"), d.metadata["file_name"]) for d in docs[:1]]
    [(True, 'a.md')]
    >>> docs[1].doc_id, docs[1].text, docs[1].metadata["year"]
    ('p1', 'Oxygen.', 1774)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3kit.encoder_inputs import unpaired_surrogate
from m3kit.jsonl import not_utf8, parse_json_rows
from m3kit.source_files import (
    SUPPORTED_SUFFIXES,
    _find,
    find_files,
    folder_files,
    named_path,
    no_longer_read_as,
)

__all__ = [
    "ORIGIN_KEY",
    "SUPPORTED_SUFFIXES",
    "SourceDocument",
    "SourceRead",
    "explicit_id_file",
    "find_files",
    "folder_files",
    "named_path",
    "no_longer_read_as",
    "positional_id",
    "read_documents",
    "read_in_other_case",
    "read_sources",
    "reader_origin",
    "row_origins",
]

logger = logging.getLogger(__name__)

_ID_KEYS = ("_id", "id")
#: Metadata key holding the file a jsonl row came from when the row has its own ``source``
#: (the row's value is kept as ``source``); see :func:`reader_origin`.
ORIGIN_KEY = "m3kit_source"
_TEXT_KEYS = frozenset({"source", "file_name"})
_ROW_KEYS = frozenset({"file_name", "line"})


@dataclass(frozen=True)
class SourceDocument:
    """One document read from a file.

    Attributes:
        doc_id: Stable id (file path, jsonl row id, or ``path:line``).
        text: The text to index.
        metadata: ``source`` (absolute path) and ``file_name``; jsonl rows add ``line`` and
            every key of the row other than ``text`` and the id (a row's own ``source``,
            ``file_name`` or ``line`` wins; the file is then kept as ``m3kit_source``, a key
            a row may not have).
    """

    doc_id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceRead:
    """What :func:`read_sources` read.

    Attributes:
        documents: The documents with text.
        empty: Ids of documents read empty (and of no document with text): an emptied file's
            stored version is stale, so ``m3kit index`` deletes it.
        files: Every file read (absolute paths), those that gave no document included.
        links: The links inside the given folders read as a file outside the folder given
            (what ``m3kit index --prune`` records, :mod:`m3kit.cli_links`): ``{link: target}``,
            the link named in its resolved folder, the target as ``files`` names it. Found by
            the same walk that found the files.
    """

    documents: list[SourceDocument]
    empty: list[str]
    files: list[Path] = field(default_factory=list)
    links: dict[Path, Path] = field(default_factory=dict)
    #: Folders inside the given ones, and files found in them, that could not be read (no
    #: permission, a share gone stale): skipped with a warning, and ``--prune`` keeps what
    #: was indexed from them.
    unreadable: list[Path] = field(default_factory=list)


def reader_origin(doc_id: str, metadata: Mapping[str, Any]) -> str | None:
    """The file this module's reader read a stored document from; ``None`` if it did not write it.

    Recognised by exactly what the reader writes (collections indexed by earlier versions
    included): a ``.txt`` / ``.md`` file is the document whose id is its absolute path and
    whose metadata is just ``source`` (that path) and ``file_name``; a ``.jsonl`` row carries
    ``file_name`` and ``line`` keys and the file in ``m3kit_source`` (a row with its own
    ``source``), else in ``source``. A document added through the library or an adapter —
    say a PDF page whose ``source`` is the PDF's path — is none of these.

    >>> reader_origin("/data/a.md", {"source": "/data/a.md", "file_name": "a.md"})
    '/data/a.md'
    >>> row = {"source": "wikipedia", "m3kit_source": "/d/r.jsonl", "file_name": "r.jsonl",
    ...        "line": 2}
    >>> reader_origin("/d/r.jsonl:2", row)
    '/d/r.jsonl'
    >>> reader_origin("9f2c", {"source": "/data/report.pdf", "page": 0}) is None
    True
    """
    origin = metadata.get(ORIGIN_KEY, metadata.get("source"))
    if not isinstance(origin, str) or not os.path.isabs(origin):
        return None
    suffix = os.path.splitext(origin)[1].lower()
    if suffix == ".jsonl":
        return origin if metadata.keys() >= _ROW_KEYS else None
    if suffix not in SUPPORTED_SUFFIXES or doc_id != origin or metadata.keys() != _TEXT_KEYS:
        return None
    return origin if metadata["file_name"] == os.path.basename(origin) else None


def positional_id(doc_id: str, file: str | os.PathLike[str]) -> bool:
    """Whether ``doc_id`` is the id the reader gives a row of the jsonl ``file`` without an id
    (``<absolute path>:<line number>``).

    >>> positional_id("/d/r.jsonl:12", "/d/r.jsonl"), positional_id("/d/r.jsonl:x", "/d/r.jsonl")
    (True, False)
    """
    head, sep, line = doc_id.rpartition(":")
    return bool(sep) and head == str(file) and line.isdigit() and not line.startswith("0")


def explicit_id_file(doc: SourceDocument) -> str | None:
    """The jsonl file a document was read from when its row has its own ``_id`` / ``id``.

    ``None`` for any other document: a ``.txt`` / ``.md`` file, or a row whose id is its
    position (``<path>:<line>``); those ids name their file, so no other file can give them.

    >>> row = SourceDocument("p1", "Oxygen.", {"source": "/d/r.jsonl", "file_name": "r.jsonl",
    ...                                          "line": 1})
    >>> explicit_id_file(row), explicit_id_file(SourceDocument("/d/r.jsonl:1", "", row.metadata))
    ('/d/r.jsonl', None)
    """
    origin = reader_origin(doc.doc_id, doc.metadata)
    if origin is None or not origin.lower().endswith(".jsonl"):
        return None
    return None if positional_id(doc.doc_id, origin) else origin


def read_in_other_case(path: str, read_now: Iterable[str]) -> bool:
    """Whether ``path``, a file not read now, is a file read now under a name that differs in
    letter case only: on a case-insensitive filesystem (macOS, Windows), after
    ``mv notes.md Notes.md`` the folder lists ``Notes.md`` while ``notes.md`` still opens it.

    Args:
        path: The file a stored document was read from.
        read_now: The files read in this run (absolute paths).
    """
    key = path.casefold()
    for f in read_now:
        if f != path and f.casefold() == key:
            try:
                if os.path.samefile(f, path):
                    return True
            except OSError:  # gone meanwhile: not the same file
                continue
    return False


def row_origins(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{doc_id: "<path>:<line>"}`` of every row of a jsonl file, empty rows included (the
    first row of an id given twice).

    Raises:
        OSError: The file cannot be read.
        ValueError: As :func:`read_documents`, for a bad row.
    """
    out: dict[str, str] = {}
    for doc, origin in _read_jsonl(Path(path), _decode(Path(path))):
        out.setdefault(doc.doc_id, origin)
    return out


def read_documents(paths: Iterable[str | os.PathLike[str]]) -> list[SourceDocument]:
    """Read every document of the given files and folders (see :func:`find_files`).

    Empty documents are skipped with a warning (:func:`read_sources` also names them).

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: Unsupported file, a file that is not UTF-8 (or holds a NUL byte), a bad
            jsonl row (not JSON, not an object, no string ``text``, an id that is not a string
            or an integer, the key ``m3kit_source``, text or metadata holding an unpaired
            surrogate escape), or the same id twice.
    """
    return read_sources(paths).documents


def read_sources(
    paths: Iterable[str | os.PathLike[str]], *, empty_folders: bool = False
) -> SourceRead:
    """:func:`read_documents`, plus the ids of the documents read empty.

    Args:
        paths: Files and folders.
        empty_folders: A folder holding no file to read is read as holding nothing (``m3kit
            index --prune-missing``: its documents are then pruned), not an error (an
            unmounted mount point looks so).

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: As :func:`read_documents`.
    """
    docs: list[SourceDocument] = []
    empty: list[str] = []
    where: dict[str, str] = {}
    paths = list(paths)
    named = {Path(p).expanduser().resolve() for p in paths}
    files, links, unreadable = _find(paths, empty_folders)
    for path in files:
        try:
            content = _decode(path)
        except OSError as e:  # no permission, a share gone stale: as an unreadable folder
            if path.resolve() in named:  # a file named on the command line: its own error
                raise
            logger.warning(
                "%s: cannot read the file (%s); skipped, and its stored version is kept "
                "(--prune keeps it too)",
                path,
                e.strerror or e,
            )
            unreadable.append(path.resolve())
            continue
        if path.suffix.lower() == ".jsonl":
            rows = _read_jsonl(path, content)
        else:
            rows = _read_text(path, content)
        for doc, origin in rows:
            _check_id(doc.doc_id, origin)
            if not doc.text.strip():
                logger.warning(
                    "%s is empty: nothing to index (m3kit index deletes its stored version)", origin
                )
                empty.append(doc.doc_id)
                continue
            if doc.doc_id in where:
                raise ValueError(
                    f"document id {doc.doc_id!r} appears twice ({where[doc.doc_id]} and {origin})"
                )
            where[doc.doc_id] = origin
            docs.append(doc)
    kept_empty = [i for i in dict.fromkeys(empty) if i not in where]
    return SourceRead(docs, kept_empty, files, links, unreadable)


def _decode(path: Path) -> str:
    """The file's text (UTF-8, a byte order mark skipped).

    Raises:
        ValueError: The file is not UTF-8, or holds a NUL byte (valid UTF-8, but in no text
            file: UTF-16 without a byte order mark, or a binary file), naming its offset.
    """
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")  # a byte order mark is not text
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from e
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ValueError(
            f"{path}: not UTF-8 text (a NUL byte at offset {nul}; UTF-16 without a byte order "
            "mark, or a binary file); save the file as UTF-8"
        )
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as read_text: lines end "\n"


def _read_text(path: Path, content: str) -> Iterator[tuple[SourceDocument, str]]:
    meta = {"source": str(path), "file_name": path.name}
    yield SourceDocument(str(path), content, meta), str(path)


def _read_jsonl(path: Path, content: str) -> Iterator[tuple[SourceDocument, str]]:
    # "\n" only (_decode made every line end one): str.splitlines also cuts at U+2028,
    # U+0085 and other characters a JSON string may hold unescaped
    for line_no, row in parse_json_rows(content.split("\n"), path):
        origin = f"{path}:{line_no}"
        text = row.pop("text", None)
        if not isinstance(text, str):
            raise ValueError(f"{origin}: the row needs a string 'text' field")
        row_id = _row_id(row, origin)
        for k in _ID_KEYS:  # a row with both keys keeps neither in its metadata
            row.pop(k, None)
        _check_reserved_keys(row, origin)
        _check_row_utf8(text, row, origin)
        if row_id is not None and not row_id.strip():
            raise ValueError(f"{origin}: the row's id is empty (give a non-empty id, or none)")
        doc_id = row_id if row_id is not None else origin
        meta = {"source": str(path), "file_name": path.name, "line": line_no, **row}
        if meta["source"] != str(path):  # the row's own source: keep where it came from too
            meta[ORIGIN_KEY] = str(path)
        yield SourceDocument(doc_id, text, meta), origin


def _row_id(row: Mapping[str, Any], origin: str) -> str | None:
    """The row's ``_id`` (else ``id``) as text; ``None`` when it has neither (or ``null``).

    An integer is its digits (``7`` is the id ``"7"``, as ``add_texts(doc_ids=[7])`` stores
    it); any other value is refused, not stored as its Python text (``{'a': 1}``, ``True``).

    Raises:
        ValueError: The id is an object, a list, a boolean or a float; the message names
            the row (``origin``), the key and the value.
    """
    key = next((k for k in _ID_KEYS if row.get(k) is not None), None)
    if key is None:
        return None
    value = row[key]
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(
        f"{origin}: the row's {key!r} is {json.dumps(value)}, not a string or an integer "
        "(give a string id, or none)"
    )


def _check_id(doc_id: str, origin: str) -> None:
    """Refuse an id Qdrant cannot store: one that is not UTF-8 text (a file name that is not
    UTF-8, which Python hands over with surrogate escapes, or a jsonl id's ``\\ud800`` escape).

    Raises:
        ValueError: Names the file (or row) and the character.
    """
    try:
        doc_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = origin.encode("utf-8", "backslashreplace").decode("utf-8")  # printable
        what = "the file name" if doc_id == origin else f"the document id {doc_id!r}"
        raise ValueError(
            f"{shown}: {what} is not valid UTF-8 text (an unpaired surrogate at character "
            f"{exc.start}); Qdrant stores ids as UTF-8: rename the file, or give the row "
            "another id"
        ) from None


def _check_row_utf8(text: str, metadata: Mapping[str, Any], origin: str) -> None:
    """Refuse a row whose text or metadata holds an unpaired surrogate (a ``\\ud800`` escape is
    valid JSON but not UTF-8 text): the tokenizer and Qdrant refuse it later, naming no file.

    Raises:
        ValueError: Names the row (``origin``) and what holds the surrogate.
    """
    at = unpaired_surrogate(text)
    if at is not None:
        raise ValueError(
            f"{origin}: the row's text is not valid UTF-8 text (an unpaired surrogate escape "
            f"such as \\ud800 at character {at}); fix the row"
        )
    try:
        json.dumps(dict(metadata), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{origin}: the row's metadata holds a string that is not valid UTF-8 text (an "
            "unpaired surrogate escape such as \\ud800); fix the row"
        ) from None


def _check_reserved_keys(row: Mapping[str, Any], origin: str) -> None:
    """Refuse a row with its own :data:`ORIGIN_KEY`: cleanup (:mod:`m3kit.cli_prune`) and the
    id check (:mod:`m3kit.cli_ids`) would take its value for the file the row came from.

    Raises:
        ValueError: The row has the key; the message names it and the row (``origin``).
    """
    if ORIGIN_KEY in row:
        raise ValueError(
            f"{origin}: the row has the key {ORIGIN_KEY!r}, which m3kit keeps for the file a row "
            "was read from; rename the key"
        )
