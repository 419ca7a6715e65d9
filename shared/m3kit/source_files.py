"""Which files :mod:`m3kit.sources` reads, and the paths it names them by.

Split from :mod:`m3kit.sources`: :func:`find_files` expands files and folders into the files
to read (hidden entries skipped, links to files read as their targets, links to folders not
followed, unreadable folders named), :func:`named_path` is the path a file or folder is
named by in stored documents' ids and ``source``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "SUPPORTED_SUFFIXES",
    "find_files",
    "folder_files",
    "named_path",
    "no_longer_read_as",
]

logger = logging.getLogger(__name__)

#: File name endings read as documents.
SUPPORTED_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".markdown", ".jsonl")


def find_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (recursively) into the supported files, sorted per argument.

    Hidden files and folders (name starting with ``.``, e.g. ``.git`` or ``.m3kit``) are
    skipped inside folders; files given explicitly must have a supported suffix.

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: A file given explicitly is not .txt/.md/.jsonl, or a folder holds none.
    """
    return _find(paths)[0]


def folder_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The supported files inside ``folder`` (recursively, hidden entries skipped), sorted.

    A file is named by its resolved path: a link to a file is read as its target (two links
    to one file, or a link and its target, are one document), unless the target's name says
    another kind of file (:func:`_named`). A link to a folder is not followed (a warning names
    it): give its target as a path.
    """
    return _scan(folder)[0]


def _find(
    paths: Iterable[str | os.PathLike[str]], empty_ok: bool = False
) -> tuple[list[Path], dict[Path, Path], list[Path]]:
    """:func:`find_files`, the links inside the folders read as a file outside the folder
    given (:attr:`SourceRead.links`) and the folders that could not be read
    (:attr:`SourceRead.unreadable`), each folder walked once (``empty_ok``: a folder holding
    no file to read is not an error)."""
    found: list[Path] = []
    links: dict[Path, Path] = {}
    unreadable: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{raw}: no such file or folder")
        if path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise ValueError(
                    f"{raw}: unsupported file type {path.suffix or '(none)'!r}; "
                    f"m3kit reads {', '.join(SUPPORTED_SUFFIXES)}"
                )
            found.append(_named(path))
            continue
        inside, outside = _scan(path, unreadable)
        if not inside and not empty_ok:
            raise ValueError(f"{raw}: folder holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
        found.extend(inside)
        links.update(outside)
    # a file named twice (or in two folders) once
    return list(dict.fromkeys(found)), links, unreadable


def _scan(
    folder: str | os.PathLike[str], unreadable: list[Path] | None = None
) -> tuple[list[Path], dict[Path, Path]]:
    """:func:`folder_files`, and its links read as a file outside ``folder``: ``{link:
    target}``, the link named in its resolved folder, the target as :func:`folder_files`
    names it (one walk). Folders inside it that cannot be read are added to ``unreadable``
    (:func:`_walk`)."""
    top = Path(folder).expanduser().resolve()
    files: list[Path] = []
    links: dict[Path, Path] = {}
    for p in _walk(Path(folder).expanduser(), [] if unreadable is None else unreadable):
        if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES:
            target = _named(p)
            files.append(target)
            if p.is_symlink() and not target.is_relative_to(top):
                links[p.parent.resolve() / p.name] = target
    return sorted(files), links


def named_path(raw: str | os.PathLike[str]) -> Path:
    """The absolute path a given file or folder is named by in stored documents' ids and
    ``source`` (:func:`find_files`): a folder's resolved path, a file's as :func:`_named` says;
    also for a path no longer there (what ``--prune`` compares stored sources with)."""
    path = Path(raw).expanduser()
    return path.resolve() if path.is_dir() else _named(path)


def no_longer_read_as(origin: str) -> bool:
    """Whether the file a stored document came from is no longer read under that name: gone,
    not a file, or a link now (itself or a folder above it), which is read and named as its
    target, so the old name is never read again and its stored documents never replaced.

    A path replaced by a link was neither read nor counted gone: ``--prune`` kept its old
    text forever, and a jsonl row's id seemed given by two files.
    """
    return not os.path.isfile(origin) or str(_named(Path(origin))) != origin


def _kind(path: Path) -> str | None:
    """How a file is read, by its name: ``"jsonl"``, ``"text"``, or ``None`` (not read)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    return "text" if suffix in SUPPORTED_SUFFIXES else None


def _named(path: Path) -> Path:
    """The absolute path a supported file is read and named by: its resolved path, or, for a
    link whose target's name says another kind of file (the Hugging Face cache's
    ``data.jsonl -> blobs/<sha>``), the link itself in its resolved folder. Read as its target,
    such a link's rows were one text document, under a name the cleanup did not recognise."""
    target = path.resolve()
    if _kind(target) == _kind(path):
        return target
    return path.parent.resolve() / path.name


def _walk(folder: Path, unreadable: list[Path]) -> Iterator[Path]:
    """The files under ``folder`` (hidden ones and links to folders left out).

    A folder inside it that cannot be listed (no permission, a network share gone stale) is
    skipped with a warning and added to ``unreadable``: skipped silently, ``--prune`` took
    its files for deleted and removed every document indexed from them.

    Raises:
        PermissionError: ``folder`` itself cannot be listed (an ``OSError`` of that kind).
    """

    def cannot_list(error: OSError) -> None:
        where = Path(error.filename) if error.filename else folder
        if where == folder:
            raise type(error)(error.errno, f"{folder}: cannot read the folder", str(folder))
        logger.warning(
            "%s: cannot read the folder (%s); its files are skipped, and --prune keeps what "
            "was indexed from it",
            where,
            error.strerror or error,
        )
        unreadable.append(where.resolve())

    for root, dirs, files in os.walk(folder, onerror=cannot_list):  # links: listed, not followed
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for d in dirs:
            if (Path(root) / d).is_symlink():
                logger.warning(
                    "%s is a link to a folder; not followed (give its target to index it)",
                    Path(root) / d,
                )
        for name in files:
            if not name.startswith("."):
                yield Path(root) / name
