"""``m3kit index``: a jsonl row id that another, earlier indexed file still gives.

Split from :mod:`m3kit.cli`. Within one run, :func:`m3kit.sources.read_sources` refuses an id
two rows give. Across runs the collection holds the first file's document under that id, and
writing the second would replace it silently; :func:`check_ids_of_other_files` refuses that
too, unless the first file no longer gives the id (the row moved, or the file is gone): then
the write is an update.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from m3kit.sources import SourceDocument, explicit_id_file, reader_origin, row_origins

if TYPE_CHECKING:
    from m3kit.store import M3Store

__all__ = ["check_ids_of_other_files"]


def check_ids_of_other_files(store: M3Store, docs: Sequence[SourceDocument]) -> None:
    """Refuse to write a row id the collection holds from another jsonl file that still has it.

    Only the rows read with their own ``_id`` / ``id`` are looked up (by id); other ids name
    their file.

    Args:
        store: The collection about to be written.
        docs: The documents this run read.

    Raises:
        ValueError: A stored document has the id of a row read now, was read from another
            jsonl file, and that file still has a row with that id; the message names both
            rows.
    """
    files = {d.doc_id: f for d in docs if (f := explicit_id_file(d)) is not None}
    if not files:
        return
    stored = store.document_metadata(list(files))
    clash = _first_clash(stored, files)
    if clash is not None:
        doc_id, before = clash
        now = row_origins(files[doc_id])[doc_id]
        other = before.rpartition(":")[0]
        raise ValueError(
            f"document id {doc_id!r} appears twice ({before}, indexed before, and {now}); "
            f"give the rows unique ids, or remove the row from {other} if it moved"
        )


def _first_clash(
    stored: Mapping[str, Mapping[str, Any]], files: Mapping[str, str]
) -> tuple[str, str] | None:
    """The first stored id another existing jsonl file still gives, with that row
    (``"<path>:<line>"``); ``None`` if there is none.

    Args:
        stored: ``{doc_id: metadata}`` of the stored documents with the ids read now.
        files: ``{doc_id: jsonl file}`` of the rows read now.
    """
    rows: dict[str, dict[str, str]] = {}  # each other file read once
    for doc_id, meta in sorted(stored.items()):
        other = reader_origin(doc_id, meta)
        if other is None or other == files[doc_id] or not os.path.isfile(other):
            continue
        if other not in rows:
            rows[other] = row_origins(other)
        if doc_id in rows[other]:
            return doc_id, rows[other][doc_id]
    return None
