"""Putting a saved checkpoint in its folder whole (:meth:`m3kit.model.M3Model.save`).

A save writes the new checkpoint into a new folder inside the target,
``<target>/.m3kit-saving-<random>/`` (holding :data:`~m3kit.checkpoint.SAVING_FILE` while its
files are written), and only once it is complete swaps it in: the target is marked with
:data:`~m3kit.checkpoint.SAVING_FILE`, the old checkpoint's files are moved into
``<target>/.m3kit-old-<random>/``, the new files moved into the target, the marker removed and
the old files deleted. Every move is a rename inside the target (one filesystem, also when
the target is a mount point or its parent is read-only).

- A save that fails while writing (an exception: a full disk, a bad value) removes its folder
  and leaves the old checkpoint as it was.
- A save killed while writing leaves its ``.m3kit-saving-`` folder (refused on load, by its
  marker) inside the target; the old checkpoint there still loads. The next save names it.
- A swap that fails is undone; one killed leaves the target marked (refused on load), the old
  checkpoint's files it had moved out in the ``.m3kit-old-`` folder and the others in the
  target (moving the folder's files back restores it; a new save replaces them all).

The target's entries that are no checkpoint's (a user's notes, a log folder) stay where they
are; the names the caller says an earlier checkpoint owns (its weights, tokenizer files,
search calibration, a PEFT adapter's files) are moved out with it, as is every name the new
checkpoint writes.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

from m3kit.checkpoint import SAVING_FILE

__all__ = ["save_folder_whole"]

logger = logging.getLogger(__name__)

_MARKER_TEXT = "m3kit is writing a checkpoint here; if this file stays, the save did not finish\n"
_SAVING_PREFIX = ".m3kit-saving-"
_OLD_PREFIX = ".m3kit-old-"


def save_folder_whole(
    target: Path,
    write: Callable[[Path], None],
    checkpoint_files: Callable[[Path], Collection[str]],
) -> None:
    """Write a checkpoint with ``write`` into a new folder and swap it into ``target`` whole.

    Args:
        target: The checkpoint folder (created with its parents when missing).
        write: Writes every file of the checkpoint into the (empty) folder it is given.
        checkpoint_files: The names in the old folder that belong to its checkpoint (moved
            out with it, besides every name the new checkpoint has).

    Raises:
        NotADirectoryError: ``target`` is a file.
        OSError: A move of the swap failed (the swap is undone); and whatever ``write``
            raises. The old checkpoint is then left in ``target`` as it was.
    """
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(
            f"cannot save a checkpoint to {target}: it is a file, not a folder"
        )
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    _name_leftovers(target)
    new = target / f"{_SAVING_PREFIX}{secrets.token_hex(4)}"
    new.mkdir()
    try:
        (new / SAVING_FILE).write_text(_MARKER_TEXT, encoding="utf-8")
        write(new)
        (new / SAVING_FILE).unlink()
    except BaseException:
        _remove(new)
        if created and not any(target.iterdir()):
            target.rmdir()  # the folder this save made, empty again
        raise
    _swap_in(target, new, checkpoint_files)


def _swap_in(target: Path, new: Path, checkpoint_files: Callable[[Path], Collection[str]]) -> None:
    """Move the old checkpoint's files out of ``target`` and the complete ``new`` ones in."""
    incoming = sorted(p.name for p in new.iterdir())
    owned = (set(checkpoint_files(target)) | set(incoming)) - {SAVING_FILE}
    # a name with a separator (another tool's shard index) is not an entry of this folder
    leaving = sorted(n for n in owned if Path(n).name == n and os.path.lexists(target / n))
    was_marked = (target / SAVING_FILE).exists()
    old = target / f"{_OLD_PREFIX}{secrets.token_hex(4)}"
    old.mkdir()
    (target / SAVING_FILE).write_text(_MARKER_TEXT, encoding="utf-8")
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in leaving:
            os.rename(target / name, old / name)
            moved_out.append(name)
        for name in incoming:
            os.rename(new / name, target / name)
            moved_in.append(name)
    except BaseException:
        _undo(target, new, old, moved_in, moved_out, keep_marker=was_marked)
        raise
    (target / SAVING_FILE).unlink()
    _remove(old)
    _remove(new)


def _undo(
    target: Path, new: Path, old: Path, moved_in: list[str], moved_out: list[str], keep_marker: bool
) -> None:
    """Put the old checkpoint back after a failed swap (the target stays marked if it can't)."""
    try:
        for name in reversed(moved_in):
            os.rename(target / name, new / name)
        for name in reversed(moved_out):
            os.rename(old / name, target / name)
    except OSError as e:
        logger.error(
            "could not undo a failed checkpoint save in %s (%s): the earlier checkpoint's files "
            "are in %s, the new one's in %s; %s stays, so the folder is refused on load",
            target,
            e,
            old,
            new,
            SAVING_FILE,
        )
        return
    if not keep_marker:
        (target / SAVING_FILE).unlink()
    _remove(old)
    _remove(new)


def _name_leftovers(target: Path) -> None:
    """Warn of the folders an earlier save killed mid-way left in ``target``."""
    for path in sorted(target.glob(".m3kit-*-*")):
        if path.is_dir() and path.name.startswith((_SAVING_PREFIX, _OLD_PREFIX)):
            logger.warning(
                "%s was left by an m3kit checkpoint save that was killed (%s: the new files "
                "being written; %s: the earlier checkpoint's files it had moved out, the rest "
                "of which this save replaced); delete it once not needed",
                path,
                _SAVING_PREFIX + "*",
                _OLD_PREFIX + "*",
            )


def _remove(path: Path) -> None:
    """Delete the folder ``path``; one that stays (a file held open) is named in a warning."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        logger.warning("could not delete %s (left by an m3kit checkpoint save); delete it", path)
