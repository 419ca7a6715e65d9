"""``m3kit index``: a jsonl row id that another, earlier indexed file still gives.

Split from :mod:`m3kit.cli`. Within one run, :func:`m3kit.sources.read_sources` refuses an id
two rows give. Across runs the collection holds the first file's document under that id, and
writing the second would replace it silently (or delete it, for a row read empty);
:func:`check_ids_of_other_files` refuses that too, unless the first file no longer gives the
id (the row moved, or the file is gone, or was renamed in letter case only: the file read
now): then the write is an update. A ``.txt`` / ``.md``
file gives one id, its absolute path, which a jsonl row can give too: either may be the one
indexed before.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import TYPE_CHECKING, Any

from m3kit.sources import (
    SourceRead,
    no_longer_read_as,
    positional_id,
    read_in_other_case,
    reader_origin,
    row_origins,
)

if TYPE_CHECKING:
    from m3kit.store import M3Store

__all__ = ["check_ids_of_other_files"]


def check_ids_of_other_files(store: M3Store, read: SourceRead) -> None:
    """Refuse to write (or delete, for a document read empty) an id the collection holds from
    another file that still gives it (a jsonl row, or a ``.txt`` / ``.md`` file whose path it
    is), whichever of the two is read now.

    Every id read now but a jsonl row's ``<path>:<line>`` is looked up (by id): a row's own
    ``_id`` / ``id``, a ``.txt`` / ``.md`` file's path, and the ids read empty. A stored
    document whose file was read in this run is that file's.

    Args:
        store: The collection about to be written.
        read: What this run read.

    Raises:
        ValueError: A stored document has the id of a document read now, was read from
            another file not read now, and that file still gives that id; the message names
            both.
    """
    ids = _ids_other_files_can_give(read)
    if not ids:
        return
    read_now = {str(f) for f in read.files}
    clash = _first_clash(store.document_metadata(ids), read_now)
    if clash is not None:
        doc_id, before, other = clash
        now, now_file = next(
            (r[doc_id], f) for f in sorted(read_now) if doc_id in (r := _rows_of(f))
        )
        raise ValueError(
            f"document id {doc_id!r} appears twice ({before}, indexed before, and {now}); "
            + _hint(other, now_file)
        )


def _ids_other_files_can_give(read: SourceRead) -> list[str]:
    """The ids read now that another file can give too: all but a jsonl row's
    ``<path>:<line>`` (that id names its file)."""
    ids = []
    for doc in read.documents:
        origin = reader_origin(doc.doc_id, doc.metadata)
        if origin is None or not positional_id(doc.doc_id, origin):
            ids.append(doc.doc_id)
    return ids + read.empty


def _hint(other: str, now_file: str) -> str:
    """What to change when ``other``, indexed before, gives the id ``now_file`` gives now."""
    if not _is_jsonl(other):
        return "give the row another id (a .txt / .md file's id is its absolute path)"
    if not _is_jsonl(now_file):
        return f"give the row in {other} another id (a .txt / .md file's id is its absolute path)"
    return f"give the rows unique ids, or remove the row from {other} if it moved"


def _first_clash(
    stored: Mapping[str, Mapping[str, Any]], read_now: Set[str]
) -> tuple[str, str, str] | None:
    """The first stored id another existing file, not read now, still gives, with that row
    (``"<path>:<line>"``, or the path of a ``.txt`` / ``.md`` file) and that file; ``None`` if
    there is none.

    Args:
        stored: ``{doc_id: metadata}`` of the stored documents with the ids read now.
        read_now: The files read in this run.
    """
    rows: dict[str, dict[str, str]] = {}  # each other file read once
    for doc_id, meta in sorted(stored.items()):
        other = reader_origin(doc_id, meta)
        if (
            other is None
            or other in read_now
            or no_longer_read_as(other)  # (a link now: the file read under its target's name)
            or read_in_other_case(other, read_now)  # the file read now, renamed in case only
        ):
            continue
        if other not in rows:
            rows[other] = _rows_of(other)
        if doc_id in rows[other]:
            return doc_id, rows[other][doc_id], other
    return None


def _rows_of(file: str) -> dict[str, str]:
    """``{doc_id: "<path>:<line>"}`` of a jsonl file (:func:`~m3kit.sources.row_origins`);
    ``{path: path}`` of a ``.txt`` / ``.md`` file (its one id, read as text, not as rows)."""
    return row_origins(file) if _is_jsonl(file) else {file: file}


def _is_jsonl(file: str) -> bool:
    return file.lower().endswith(".jsonl")
