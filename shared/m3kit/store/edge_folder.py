"""An embedded shard's folder, watched for removal or replacement while a store has it open
(split from :mod:`m3kit.store.edge_backend`).

The embedded engine holds its files open: a folder removed and made again (``rm -rf`` and a
new collection built there) or replaced by a copy (a backup restored) under an open store
left that store searching the old files, its writes confirmed and then lost, or written into
the new folder's files by name, damaging them (measured on qdrant-edge 0.9). Qdrant's own
answer is not to touch an open collection's files; this makes breaking that rule an error
rather than silent loss.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from m3kit.errors import StoreConnectionError

__all__ = ["ROOM_MARGIN", "ShardFolder"]

ROOM_MARGIN = 64 * 2**20
"""Free bytes a write leaves at least on the shard's disk: the engine maps its files (a
write-ahead log of two 32 MB files, segments), and a write into a mapped page the disk has no
room for kills the process with SIGBUS (measured on a full tmpfs: exit 135, nothing logged)."""

logger = logging.getLogger(__name__)


class ShardFolder:
    """The identity (device, inode) of a shard folder when its shard was loaded."""

    def __init__(self, path: Path, collection: str, where: str) -> None:
        self.path = path
        self.collection = collection
        self.where = where
        self._identity: tuple[int, int] | None = None

    def loaded(self) -> None:
        """The shard was loaded (or created) from the folder now."""
        self._identity = _identity(self.path)

    def replaced(self) -> bool:
        """Whether the folder was removed or replaced since :meth:`loaded`."""
        return self._identity is not None and _identity(self.path) != self._identity

    def check(self) -> None:
        """Refuse to go on with a shard whose folder was removed or replaced.

        Raises:
            StoreConnectionError: Names the folder and what to do.
        """
        if self.replaced():
            raise StoreConnectionError(
                f"the folder of collection {self.collection!r} at {self.where} was removed or "
                "replaced while this store had it open (another process, a backup restored, "
                "rm -rf): this store's view of it is gone, nothing was read or written. Close "
                "every store on a collection before its folder is replaced, and open it again"
            )

    def check_room(self, nbytes: int) -> None:
        """Refuse a write of about ``nbytes`` (twice that is asked for, as segments and the log
        both hold it) that would leave less than :data:`ROOM_MARGIN` free on the disk.

        Raises:
            StoreConnectionError: Names the folder, the free and needed space.
        """
        where = self.path
        while not where.exists() and where.parent != where:  # (a shard not created yet)
            where = where.parent
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            return
        needed = 2 * nbytes + ROOM_MARGIN
        if free < needed:
            raise StoreConnectionError(
                f"the disk of collection {self.collection!r} at {self.where} has "
                f"{free / 2**20:.0f} MiB free; this write needs about {needed / 2**20:.0f} MiB "
                "(the embedded engine maps its files, and a write the disk has no room for "
                "kills the process): nothing more was written; free some space and write again"
            )

    def warn_closed(self) -> None:
        """Log that a shard closed after its folder was replaced may have written there."""
        logger.warning(
            "the folder of collection %r at %s was removed or replaced while a store had it "
            "open; closing that store may have written into the new folder's files: if a "
            "backup was restored there, restore it again now that the store is closed",
            self.collection,
            self.where,
        )


def _identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of a folder (``None``: there is none), which a folder removed and
    made again, or replaced by a copy, does not keep."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
