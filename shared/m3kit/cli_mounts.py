"""Mount points under the paths ``m3kit index`` reads, so that ``--prune`` does not empty a
collection while a drive or share is not mounted.

A share mounted inside an indexed tree (``docs/nas``) leaves its mount point behind, empty,
when it is not mounted: its files look deleted, and ``--prune`` would delete everything
indexed from them. Each run records the mount points it read files under, at or below the
given paths (the collection record's :data:`MOUNTS_KEY`); ``--prune`` then refuses to prune a
document under a recorded mount point that is not mounted now (:func:`refuse_unmounted`), and
``--prune-missing`` prunes them on purpose. (A given path that vanished with its share is
:func:`m3kit.cli_prune.refuse_vanished`'s; a given path that is itself an unmounted mount
point is an empty folder, which ``m3kit index`` refuses to read.) Whether a folder is a mount
point is ``os.path.ismount``'s answer: a mount point is a folder on another device than its
parent, so a folder merely emptied by hand is pruned as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from m3kit.cli_prune import stale_documents
from m3kit.sources import SourceRead, named_path
from m3kit.store import M3Store

__all__ = ["MOUNTS_KEY", "mounts_read", "refuse_unmounted", "remember_mounts"]

#: Key of the collection's record listing the mount points files were read under.
MOUNTS_KEY = "mount_points"


def mounts_read(files: Iterable[str | os.PathLike[str]], roots: Sequence[str]) -> set[str]:
    """The mount points at or below the given ``roots`` that hold one of ``files``."""
    tops = [named_path(raw) for raw in roots]
    known: dict[Path, bool] = {}
    found: set[str] = set()
    for folder in {Path(f).parent for f in files}:
        for p in (folder, *folder.parents):
            if not any(p == top or p.is_relative_to(top) for top in tops):
                break
            if p not in known:
                known[p] = os.path.ismount(p)
            if known[p]:
                found.add(str(p))
    return found


def refuse_unmounted(
    store: M3Store,
    read: SourceRead,
    roots: Sequence[str],
    unlinked: Mapping[str, str] | None = None,
) -> None:
    """Refuse to prune documents read under a recorded mount point not mounted now (files
    there, or outside files whose links there are gone: ``unlinked``, as
    :func:`m3kit.cli_prune.stale_documents` takes it).

    Raises:
        ValueError: Names the first such mount point, how many stored documents ``--prune``
            would delete under it, and ``--prune-missing``.
    """
    recorded = store.collection_metadata().get(MOUNTS_KEY, [])
    offline = [Path(m) for m in recorded if not os.path.ismount(m)]
    if not offline:
        return
    gone = stale_documents(
        store.document_metadata(), read, roots=roots, unlinked=unlinked
    ).pruned_from
    for mount in offline:
        count = sum(1 for origin in gone if Path(origin).is_relative_to(mount))
        if count:
            raise ValueError(
                f"{mount}: a mount point when it was indexed, not mounted now, and {count} "
                "stored document(s) were indexed from under it; --prune does not delete them "
                "(its files look deleted): mount it again, or run with --prune-missing to "
                "delete them"
            )


def remember_mounts(
    store: M3Store,
    read: SourceRead,
    roots: Sequence[str],
    *,
    pruned: bool,
    links: Iterable[str] = (),
) -> None:
    """Record the mount points this run read files (or links to outside files) under.

    Args:
        store: The collection (its record is read, and written when the list changes).
        read: What this run read.
        roots: The given paths.
        links: The links to files outside the given folders read now
            (:func:`m3kit.cli_links.links_read`).
        pruned: Whether this run pruned (``--prune`` past :func:`refuse_unmounted`, or
            ``--prune-missing``): a recorded mount point not mounted now is then forgotten,
            nothing being stored from under it any more. A run without pruning keeps it, so a
            later ``--prune`` still refuses.
    """
    record = store.collection_metadata()
    recorded = [str(m) for m in record.get(MOUNTS_KEY, [])]
    kept = {m for m in recorded if not pruned or os.path.ismount(m)}
    now = sorted(kept | mounts_read([*read.files, *links], roots))
    if now != sorted(recorded):
        store.set_collection_metadata({**record, MOUNTS_KEY: now})
