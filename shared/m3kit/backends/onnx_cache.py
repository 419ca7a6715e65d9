"""The folders of the ONNX export cache: building one, checking one, publishing one.

Each export lives in ``<cache>/<key>/`` with a ``manifest.json`` recording every file's sha256
(:func:`verified_export` checks them). A build runs in a private ``<cache>/.building-*/``
folder (:func:`building_folder`) and is published with one atomic ``rename``
(:func:`publish`), so a reader never sees half an export. Several processes may export the
same model at once (pool workers, Ray actors, two services): the first to publish wins and
the others use its export; a verified export is never removed or replaced under a reader.

A process killed mid-build (the OOM killer, SIGKILL) cannot remove its build folder, up to
three copies of the weights. Each build holds an exclusive lock on ``.lock`` in its folder
while it runs (POSIX ``flock``, released by the kernel when the process dies), so the next
build removes the folders whose lock nobody holds (:func:`remove_abandoned_builds`). On a
filesystem that takes no locks, builds run unlocked and no build folder is ever removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "BUILD_PREFIX",
    "MANIFEST",
    "building_folder",
    "publish",
    "remove_abandoned_builds",
    "sha256_file",
    "share_like_new_files",
    "verified_export",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
BUILD_PREFIX = ".building-"
_LOCK = ".lock"
#: A build folder younger than this is never removed: its builder may not hold its lock yet.
_GRACE_S = 60.0
#: A build folder without a lock file (m3kit before build locks) is abandoned after this.
_UNLOCKED_AFTER_S = 86400.0


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def share_like_new_files(folder: Path) -> None:
    """Give every file in ``folder`` the mode a new file gets here (the umask's, e.g. 0644).

    onnx writes a model's external data (``model.onnx.data``, the weights) owner-only (0600)
    whatever the umask: an export built by one user (a Docker build as root, a CI job) could
    not be read by any other, although its folder and ``model.onnx`` could. A file system
    that refuses ``chmod`` (some FUSE mounts) keeps the export usable by its builder: the
    file is named in a warning.
    """
    probe = folder / ".mode"
    probe.touch()
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    for f in folder.iterdir():
        if not f.is_file() or stat.S_IMODE(f.stat().st_mode) == mode:
            continue
        try:
            f.chmod(mode)
        except OSError as exc:
            logger.warning(
                "%s keeps its mode (chmod refused: %s); other users cannot read it", f, exc
            )


def verified_export(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a complete export for ``key`` whose files hash as recorded.

    Raises:
        PermissionError: A file of the export cannot be read (another user's, built owner-only
            before :func:`share_like_new_files`): naming it and the remedies.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("key") != key or not isinstance(manifest.get("files"), dict):
        return False
    for name, digest in manifest["files"].items():
        path = folder / name
        try:
            actual = sha256_file(path) if path.is_file() else None
        except PermissionError as exc:
            raise PermissionError(
                exc.errno,
                f"the cached ONNX export {folder} cannot be read ({path.name}: {exc.strerror}); "
                "another user built it (exports are readable as their builder's umask "
                "allows; earlier m3kit versions wrote the weights owner-only): its owner can "
                f"run chmod -R a+rX {folder}, or delete it to rebuild, or give another folder "
                "(onnx_cache_dir= / m3kit --onnx-cache-dir, or the M3KIT_CACHE variable)",
            ) from exc
        if actual != digest:
            logger.warning("cached ONNX export %s is corrupt (%s); rebuilding it", folder, name)
            return False
    return True


def _try_lock(fh: IO[bytes]) -> bool | None:
    """Take an exclusive lock on ``fh`` without waiting.

    Returns:
        True when taken, False when another process holds it, None when the filesystem
        takes no locks (some network filesystems): then nobody can tell a live build.
    """
    import fcntl

    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        logger.debug("no file lock on %s: %s", fh.name, e)
        return None
    return True


def remove_abandoned_builds(cache: Path) -> None:
    """Remove the build folders in ``cache`` that no running build holds (POSIX only).

    A folder is abandoned when nobody holds its ``.lock`` (its builder died) or, with no lock
    file at all, when it is older than a day (a build of m3kit before build locks). A folder
    younger than a minute is kept either way.
    """
    if os.name != "posix":  # no flock: a live build cannot be told from a dead one
        return
    now = time.time()
    for folder in cache.glob(BUILD_PREFIX + "*"):
        try:
            age = now - folder.stat().st_mtime
            if not folder.is_dir() or age < _GRACE_S:
                continue
            lock = folder / _LOCK
            if not lock.is_file():
                if age >= _UNLOCKED_AFTER_S:
                    logger.warning("removing %s, left by an interrupted ONNX export", folder)
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            with open(lock, "rb") as fh:
                if _try_lock(fh) is True:  # held until closed, so no build resumes
                    logger.warning("removing %s, left by a killed ONNX export", folder)
                    shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:  # another process removed it first
            continue
        except PermissionError:  # another user's build (mkdtemp folders are 0700): theirs
            logger.debug("skipping %s: another user's ONNX export folder", folder)
            continue


@contextlib.contextmanager
def building_folder(cache: Path) -> Iterator[Path]:
    """A private folder in ``cache`` for one build, locked while it lives, removed after.

    Removes the abandoned build folders of killed processes first.

    Raises:
        PermissionError: ``cache`` is read-only or not ours (names it and the settings that
            choose another).
    """
    try:
        cache.mkdir(parents=True, exist_ok=True)
        remove_abandoned_builds(cache)
        tmp = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=cache))
    except OSError as exc:
        if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
            raise PermissionError(
                exc.errno,
                f"the ONNX export cache {cache} cannot be written ({exc.strerror}), and this "
                "model has no export there yet: give a writable folder "
                "(onnx_cache_dir= / m3kit --onnx-cache-dir, or the M3KIT_CACHE variable), or "
                "export it once where the cache is writable",
            ) from exc
        raise
    with open(tmp / _LOCK, "wb") as lock:
        if os.name == "posix":
            _try_lock(lock)  # a fresh file: nobody else holds it (None: no locks here)
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def publish(final: Path, folder: Path, key: str, *, attempts: int = 3) -> None:
    """Move the complete export ``final`` to ``folder`` in one atomic rename.

    When another process published the same export first, its export is kept (it may be in
    use) and ``final`` is left to be removed with its build folder. A corrupt or stale export
    in ``folder`` is moved aside (into ``final``'s build folder) and replaced.

    Raises:
        OSError: ``folder`` could not be replaced in ``attempts`` tries (names it).
    """
    aside = final.parent / "replaced"
    aside.mkdir(exist_ok=True)
    for attempt in range(attempts):
        try:
            final.rename(folder)  # refused while folder exists and is not empty
            return
        except OSError:
            if not folder.exists():
                raise
        if verified_export(folder, key):
            logger.info("another process published this ONNX export first: using %s", folder)
            return
        with contextlib.suppress(FileNotFoundError):  # another process moved it already
            folder.rename(aside / str(attempt))
    raise OSError(f"could not replace the ONNX export in {folder} after {attempts} tries")
