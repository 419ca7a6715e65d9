"""Finish, when a folder is opened again, a replacing write its killed process left half done.

A replacing write (:meth:`~m3kit.store.M3Store.upsert` with ``replace=True``: every
``add_texts``) writes each document's new chunks, then deletes its other versions' chunks,
one document at a time. A process killed between the two (SIGKILL, power loss: nothing runs
on the way out) left documents holding chunks of both versions, which search served side by
side, silently, until the same documents were written again.

For a collection in a folder (the embedded engine, or qdrant-client's local mode: one
process at a time holds the folder), the write first records which version of which document
it is writing in a small journal beside the collection (``.m3kit-replacing-<collection>.json``,
written whole by a rename), and removes it once the old versions are deleted. Opening the
folder again with the journal still there finishes the write: a document some of whose new
chunks are stored loses its other versions' chunks (as a write that fails part-way does:
:meth:`~m3kit.store.M3Store.upsert`), and one none of whose new chunks is stored keeps its old
version whole. A document stored in part (killed while its chunks were being written) is
named in a warning: the next write of it completes it. A collection on a server, where other
writers may be writing, or in memory keeps no journal.

Why hand-written: Qdrant has no multi-request transaction, and neither engine offers a
write-ahead record of the application's own intent.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from qdrant_client import models

from m3kit.store.filters import stale_chunks_filter
from m3kit.store.foreign_points import delete_replaced_foreign
from m3kit.store.plan import StorageBackend
from m3kit.store.schema import DOC_HASH, DOC_ID

__all__ = ["finish_interrupted", "journal_path", "record_replacing", "replaced", "write_whole"]

logger = logging.getLogger(__name__)

_FORMAT = 1


def journal_path(backend: StorageBackend, kind: str = "replacing") -> Path | None:
    """Where ``backend``'s collection keeps its ``kind`` of journal (``"replacing"``; the
    group journal's ``"groups"``); ``None``: none (a server, memory)."""
    if backend.location is None or backend.url is not None:
        return None
    return Path(backend.location) / f".m3kit-{kind}-{backend.collection}.json"


def write_whole(path: Path, blob: str) -> None:
    """Write ``blob`` to ``path`` whole (a temporary file, synced, then renamed over it)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_replacing(backend: StorageBackend, version: Mapping[str, tuple[str, int]]) -> None:
    """Record, before the write, the version ``(doc_hash, chunk_count)`` of each document."""
    path = journal_path(backend)
    if path is None:
        return
    write_whole(
        path, json.dumps({"format": _FORMAT, "documents": {d: list(v) for d, v in version.items()}})
    )


def replaced(backend: StorageBackend) -> None:
    """The write's old versions are deleted: its journal goes."""
    path = journal_path(backend)
    if path is not None:
        path.unlink(missing_ok=True)


def finish_interrupted(backend: StorageBackend) -> None:
    """Finish the replacing write a killed process left recorded (see the module docstring).

    Logs a warning naming what it did; removes the journal when done (a process killed
    while doing this finds it again: each step is safe to repeat).
    """
    path = journal_path(backend)
    if path is None or not path.is_file():
        return
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        documents = {str(d): (str(v[0]), int(v[1])) for d, v in raw["documents"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        logger.warning(
            "%s: the journal of an interrupted write could not be read (%s); removed. "
            "Documents that write was replacing may hold chunks of two versions until they "
            "are written again",
            path,
            e,
        )
        path.unlink(missing_ok=True)
        return
    finished: list[str] = []
    partial: list[str] = []
    for doc_id, (doc_hash, chunk_count) in documents.items():
        new = backend.count(
            models.Filter(
                must=[
                    models.FieldCondition(key=DOC_ID, match=models.MatchValue(value=doc_id)),
                    models.FieldCondition(key=DOC_HASH, match=models.MatchValue(value=doc_hash)),
                ]
            )
        )
        if new == 0:  # none of its new chunks landed: the old version is whole
            continue
        backend.delete(stale_chunks_filter(doc_id, doc_hash, chunk_count))
        finished.append(doc_id)
        if new < chunk_count:
            partial.append(doc_id)
    delete_replaced_foreign(backend, finished)
    backend.finish_writes()
    path.unlink(missing_ok=True)
    if finished:
        shown = ", ".join(repr(d) for d in partial[:5]) + (" ..." if len(partial) > 5 else "")
        logger.warning(
            "collection %r: the last write was interrupted before it deleted the old versions "
            "of %d document(s) it had written; deleted them now.%s",
            backend.collection,
            len(finished),
            f" {len(partial)} of them are stored in part (write them again): {shown}"
            if partial
            else "",
        )
