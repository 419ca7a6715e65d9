"""What ``m3kit index`` deletes besides replacing what it read: stale rows, and ``--prune``.

Split from :mod:`m3kit.cli`. Only documents the file reader wrote
(:func:`m3kit.sources.reader_origin`) are ever deleted here; documents added through the
library or an adapter are left alone, whatever their ``source`` says.

- A ``.jsonl`` row without an id is ``<file>:<line>``: the id belongs to its file, not to
  the row. After a run reads a jsonl file, its stored positional ids that this read did not
  produce (the file lost rows, so the rest moved up) are deleted, with or without
  ``--prune``; otherwise a kept row would be served twice.
- ``--prune`` deletes the reader's documents from under the given paths whose file is gone,
  or was read in this run without producing that document (a removed jsonl row). A file that
  still exists but was not read (a hidden file indexed by naming it) keeps its documents,
  unless it is a file read now under a name that differs in case only (renamed on a
  case-insensitive filesystem, where the old name still opens it). A file outside a given
  folder read through a link in it is pruned when its last link there is gone
  (:mod:`m3kit.cli_links`).
  A given path that no longer exists (a moved folder) is only pruned (:func:`paths_to_read`),
  and only with ``--prune-missing`` while documents indexed from it are stored
  (:func:`refuse_vanished`: a drive or share that is not mounted looks the same);
  ``m3kit index`` exits 1 when nothing was pruned from it, now or by an earlier run that
  the collection remembers (:func:`mistyped_paths`): a mistyped path; an existing
  folder without a file to read stays an error (an unmounted mount point is an
  empty folder: pruning it would delete everything indexed from it).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3kit.cli_links import linked_under
from m3kit.sources import (
    SourceRead,
    named_path,
    no_longer_read_as,
    positional_id,
    read_in_other_case,
    reader_origin,
)

if TYPE_CHECKING:
    from m3kit.store import M3Index, M3Store

__all__ = [
    "PRUNED_KEY",
    "Cleanup",
    "clean_up",
    "mistyped_paths",
    "paths_to_read",
    "refuse_vanished",
    "say_pruned_only",
    "stale_documents",
]

logger = logging.getLogger("m3kit.cli")

#: Key of the collection's record listing the missing paths ``--prune`` pruned documents from.
PRUNED_KEY = "pruned_paths"


@dataclass(frozen=True)
class Cleanup:
    """What :func:`clean_up` deleted.

    Attributes:
        moved_rows: Positional ids of jsonl rows read now that no longer exist at that line.
        pruned: Other documents ``--prune`` deleted (file gone, or no longer in its file).
        pruned_from: The file each of ``pruned`` was read from, in the same order.
    """

    moved_rows: list[str]
    pruned: list[str]
    pruned_from: list[str]

    def unmatched(self, missing: Sequence[str]) -> list[str]:
        """The given paths among ``missing`` (no longer there) that nothing was pruned from:
        mistyped, or pruned by an earlier run."""
        return [
            raw
            for raw in missing
            if not any(_under(Path(f), [_resolved(raw)]) for f in self.pruned_from)
        ]


def paths_to_read(paths: Sequence[str], *, prune: bool) -> list[str]:
    """The given paths to read: with ``prune``, one that no longer exists is pruned only.

    A moved or deleted folder (or file) can then still be pruned (``m3kit index old/
    --prune-missing``; :func:`refuse_vanished` is the check, :func:`say_pruned_only` the
    line on stderr). An existing folder without a file to read is returned, so reading it
    stays an error: an unmounted mount point is an empty folder, and pruning it would delete
    everything indexed from it. Without ``prune`` every path is returned, so reading a
    missing one stays an error too.

    Raises:
        ValueError: A path is a loop of symbolic links (it cannot be read, nor resolved to
            prune what was indexed from it).
    """
    for raw in paths:
        if _link_loop(Path(raw).expanduser()):
            raise ValueError(f"{raw}: a loop of symbolic links; give the path it should name")
    if not prune:
        return list(paths)
    return [raw for raw in paths if Path(raw).expanduser().exists()]


def refuse_vanished(store: M3Store, missing: Sequence[str]) -> None:
    """Refuse to prune a ``missing`` given path while documents indexed from it are stored.

    A drive or network share that is not mounted looks exactly like a deleted folder (its
    path is gone with it): pruning it would delete everything indexed from it. A missing
    path with nothing stored from it (pruned by an earlier run, or mistyped) passes; a file
    outside it that a recorded link in it was read as counts (:mod:`m3kit.cli_links`);
    ``m3kit index --prune-missing`` skips this check (the folder is gone on purpose).

    Raises:
        ValueError: Names the first such path, how many documents were indexed from it,
            and ``--prune-missing``.
    """
    if not missing:
        return
    roots = {raw: _resolved(raw) for raw in missing}
    record = store.collection_metadata()
    origins = [reader_origin(i, meta) for i, meta in store.document_metadata().items()]
    for raw, root in roots.items():
        linked = linked_under(record, root)
        count = sum(
            1 for o in origins if o is not None and (_under(Path(o), [root]) or o in linked)
        )
        if count:
            raise ValueError(
                f"{raw}: no such file or folder, and {count} stored document(s) were indexed "
                "from it; --prune does not delete them (a drive or share that is not mounted "
                "looks the same): mount it again, or run with --prune-missing to delete them"
            )


def say_pruned_only(missing: Sequence[str]) -> None:
    """A line on stderr for each ``missing`` given path: it is pruned, not read."""
    for raw in missing:
        print(f"{raw}: no such file or folder; pruning what was indexed from it", file=sys.stderr)


def stale_documents(
    stored: Mapping[str, Mapping[str, Any]],
    read: SourceRead,
    *,
    roots: Iterable[str | os.PathLike[str]] | None,
    unlinked: Mapping[str, str] | None = None,
) -> Cleanup:
    """The documents :func:`clean_up` deletes, from the stored ``{doc_id: metadata}``.

    Args:
        stored: Every stored document's metadata (``M3Store.document_metadata()``).
        read: What this run read.
        roots: The given paths, with ``--prune``; ``None``: no pruning.
        unlinked: ``{target: link}`` of the files outside the given folders whose last link
            in them is gone (:func:`m3kit.cli_links.drop_links`), with ``--prune``: their
            documents not read now are pruned too (``pruned_from`` names the link).
    """
    produced = {d.doc_id for d in read.documents}
    read_now = {str(p) for p in read.files}
    jsonl_now = {f for f in read_now if f.lower().endswith(".jsonl")}
    folders = None if roots is None else [_resolved(str(r)) for r in roots]
    moved: list[str] = []
    pruned: list[str] = []
    pruned_from: list[str] = []
    unreadable = list(read.unreadable)
    for doc_id, meta in sorted(stored.items()):
        origin = reader_origin(doc_id, meta) if doc_id not in produced else None
        if origin is None or _under(Path(origin), unreadable):  # not seen: not known gone
            continue
        if origin in jsonl_now and positional_id(doc_id, origin):
            moved.append(doc_id)
        elif (
            folders is not None
            and _under(Path(origin), folders)
            and (
                origin in read_now
                or no_longer_read_as(origin)  # (a link now: read under its target's name)
                or read_in_other_case(origin, read_now)  # renamed in case only
            )
        ):
            pruned.append(doc_id)
            pruned_from.append(origin)
        elif unlinked is not None and origin in unlinked:
            pruned.append(doc_id)
            pruned_from.append(unlinked[origin])
    return Cleanup(moved, pruned, pruned_from)


def clean_up(
    index: M3Index,
    read: SourceRead,
    *,
    roots: Sequence[str] | None,
    unlinked: Mapping[str, str] | None = None,
    missing: Sequence[str] = (),
) -> Cleanup:
    """Delete the stale documents (:func:`stale_documents`) of ``index``.

    One scroll over the stored documents' metadata, skipped when there is nothing to look
    for (no jsonl file read and no ``--prune``). The ``missing`` given paths it prunes from
    are remembered (:data:`PRUNED_KEY`) before anything is deleted: a run killed between
    the two made every later run call such a path mistyped and exit 1.
    """
    if roots is None and not any(str(p).lower().endswith(".jsonl") for p in read.files):
        return Cleanup([], [], [])
    done = stale_documents(index.store.document_metadata(), read, roots=roots, unlinked=unlinked)
    unmatched = done.unmatched(missing)
    _remember_pruned(index.store, [_resolved(raw) for raw in missing if raw not in unmatched])
    gone = done.moved_rows + done.pruned
    if gone:
        index.delete(gone)
    if done.moved_rows:
        logger.info("deleted %d jsonl row(s) no longer at their line", len(done.moved_rows))
    if done.pruned:
        shown = ", ".join(done.pruned[:10])
        logger.info("pruned %d document(s): %s", len(done.pruned), shown)
    return done


def mistyped_paths(
    store: M3Store, cleanup: Cleanup, missing: Sequence[str], present: Sequence[str]
) -> list[str]:
    """The ``missing`` given paths that nothing was pruned from, in this run or an earlier
    one (a mistyped path); remembers the paths pruned now in the collection's record.

    A path pruned once stays known, so a scheduled ``m3kit index docs/ old/ --prune`` keeps
    exiting 0 after ``old/`` is gone and pruned; a path given again while it exists is
    forgotten (deleted again later, it is pruned again).

    Args:
        store: The collection (its record is read, and written when the list changes).
        cleanup: What this run pruned.
        missing: The given paths that no longer exist.
        present: The given paths that exist.
    """
    record = store.collection_metadata()
    known = [Path(p) for p in record.get(PRUNED_KEY, [])]
    unmatched = cleanup.unmatched(missing)
    now = {_resolved(raw) for raw in missing if raw not in unmatched}
    here = [_resolved(raw) for raw in present]
    kept = sorted(
        str(p) for p in {*known, *now} if not any(p == h or p.is_relative_to(h) for h in here)
    )
    if kept != sorted(str(p) for p in known):
        store.set_collection_metadata({**record, PRUNED_KEY: kept})
    return [raw for raw in unmatched if not _under(_resolved(raw), known)]


def _remember_pruned(store: M3Store, paths: Sequence[Path]) -> None:
    """Add ``paths`` to the record's :data:`PRUNED_KEY` (written only when new)."""
    record = store.collection_metadata()
    known = set(record.get(PRUNED_KEY, []))
    added = {str(p) for p in paths} - known
    if added:
        store.set_collection_metadata({**record, PRUNED_KEY: sorted(known | added)})


def _link_loop(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def _resolved(raw: str) -> Path:
    return named_path(raw)


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)
