"""Finish, when a folder is opened again, a group replacement a killed process left half done.

An adapter's writer that replaces a *group* of documents (LangChain's ``parent_id_key``: the
children of one parent document) writes the new documents, then deletes the group's others.
A process killed between the two (SIGKILL, or Ctrl-C and then another write) left the parent
holding its old children beside the new ones, searched side by side, until it was written
again. So, once the new documents are stored whole, the writer records the replacement
(:func:`replacing_groups`: the payload field, each group's value and the documents it keeps)
in a small journal beside the collection (``.m3kit-groups-<collection>-<uuid>.json``, one per
replacement), and removes it once the others are deleted; a folder opened again with journals
there finishes their deletes (:func:`finish_groups`, safe to repeat), and so does the writer's
next replacement in the same process (after a Ctrl-C), before it looks at what is stored: a
journal finished after that lookup deleted the children the lookup had found unchanged. A
kill during the write itself is the document journal's (:mod:`m3kit.store.replace_journal`):
each document is then its old or its new version, whole. A collection on a server or in
memory keeps no journal.

Why hand-written: as for :mod:`m3kit.store.replace_journal`, neither engine has a
multi-request transaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from qdrant_client import models

from m3kit.store.plan import StorageBackend
from m3kit.store.replace_journal import journal_path, write_whole
from m3kit.store.schema import DOC_ID

__all__ = ["delete_others", "finish_groups", "journals", "replacing_groups"]

logger = logging.getLogger(__name__)

_FORMAT = 1


def delete_others(
    backend: StorageBackend, field: str, groups: Sequence[tuple[Any, Sequence[str]]]
) -> None:
    """Delete, for each ``(value, keep)``, the points whose payload ``field`` is ``value``
    and whose document is not one of ``keep``."""
    for value, keep in groups:
        backend.delete(
            models.Filter(
                must=[models.FieldCondition(key=field, match=models.MatchValue(value=value))],
                must_not=[
                    models.FieldCondition(key=DOC_ID, match=models.MatchAny(any=sorted(keep)))
                ],
            )
        )


def journals(backend: StorageBackend) -> list[Path]:
    """The group journals of ``backend``'s collection (one file per replacement)."""
    base = journal_path(backend, "groups")
    if base is None or not base.parent.is_dir():
        return []
    # exactly <stem>-<32 hex digits>.json: a prefix match also took the journals of another
    # collection of the folder whose name extends this one's ("docs" and "docs-v2")
    mine = re.compile(re.escape(base.name.removesuffix(".json")) + r"-[0-9a-f]{32}\.json")
    return sorted(p for p in base.parent.iterdir() if mine.fullmatch(p.name))


@contextlib.contextmanager
def replacing_groups(
    backend: StorageBackend,
    field: str,
    groups: Mapping[Any, Sequence[str]],
    in_progress: set[Path],
) -> Iterator[None]:
    """Journal the group replacement the block does (the block deletes each group's
    documents other than those kept, which are stored whole) in a file of its own (writes of
    other groups run meanwhile); removed when the block ends without an error, else finished
    at the next open of the folder, or by the process's next :func:`finish_groups`.
    ``in_progress``: the journals of blocks under way, which :func:`finish_groups` skips."""
    base = journal_path(backend, "groups")
    if base is None or not groups:
        yield
        return
    path = base.with_name(f"{base.name.removesuffix('.json')}-{uuid.uuid4().hex}.json")
    entries = [[value, sorted(keep)] for value, keep in groups.items()]
    in_progress.add(path)
    try:
        write_whole(path, json.dumps({"format": _FORMAT, "field": field, "groups": entries}))
        yield
        path.unlink(missing_ok=True)
    finally:
        in_progress.discard(path)


def finish_groups(
    backend: StorageBackend, in_progress: set[Path] | frozenset[Path] = frozenset()
) -> None:
    """Finish the group replacements a killed or interrupted writer left recorded (all but
    ``in_progress``, those of blocks under way)."""
    for path in journals(backend):
        if path not in in_progress:
            _finish(backend, path)


def _finish(backend: StorageBackend, path: Path) -> None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        field = str(raw["field"])
        groups = [(value, [str(d) for d in keep]) for value, keep in raw["groups"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning(
            "%s: the journal of an interrupted replacement could not be read (%s); removed. "
            "Its groups may hold documents of two versions until they are written again",
            path,
            e,
        )
        path.unlink(missing_ok=True)
        return
    delete_others(backend, field, groups)
    backend.finish_writes()
    path.unlink(missing_ok=True)
    logger.warning(
        "collection %r: a replacement of %d group(s) (%s) was interrupted before it deleted "
        "their earlier documents; deleted them now",
        backend.collection,
        len(groups),
        field,
    )
