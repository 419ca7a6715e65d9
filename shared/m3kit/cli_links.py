"""Links inside the folders ``m3kit index`` reads to files outside them, for ``--prune``.

A link to a file is read as its target (:func:`m3kit.sources.folder_files`), so its document
is stored under the target's path. When the target is outside the folder, ``--prune`` on the
folder did not see the document once the link was removed, re-pointed or left dangling: it
stayed searchable. Each run records these links in the collection's record
(:data:`LINKS_KEY`: ``{target: {"links": [...], "direct": bool}}``, :func:`remember_links`,
before anything is written). A ``--prune`` run drops the recorded links under its folders that
it did not read as the same target (:func:`drop_links`), and prunes a target whose last
recorded link is gone, unless the target was indexed otherwise too ("direct"): read under a
given path of its own (its folder, or named as a file), or already stored when a link to it
was first recorded (indexed some other way, or by a link before m3kit recorded links). A
target read in the run is never pruned (:func:`m3kit.cli_prune.stale_documents`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3kit.sources import SourceRead, named_path, reader_origin

if TYPE_CHECKING:
    from m3kit.store import M3Store

__all__ = [
    "LINKS_KEY",
    "LinkDrop",
    "LinkedFile",
    "drop_links",
    "linked_under",
    "links_read",
    "remember_links",
    "save_links",
]

#: Key of the collection's record of the links to files outside the folders read.
LINKS_KEY = "linked_files"


@dataclass(frozen=True)
class LinkedFile:
    """A target's recorded links.

    Attributes:
        links: The links (absolute, in their resolved folders) read as this target.
        direct: Whether the target was indexed otherwise too: its document is then never
            pruned for its links going.
    """

    links: tuple[str, ...]
    direct: bool


@dataclass(frozen=True)
class LinkDrop:
    """What :func:`drop_links` decided.

    Attributes:
        unlinked: ``{target: a link that was read as it}`` of the targets to prune.
        links: The record to save once they are (:func:`save_links`).
    """

    unlinked: dict[str, str]
    links: dict[str, LinkedFile]


def links_read(read: SourceRead) -> dict[str, str]:
    """``{link: target}`` of the links to outside files inside the given folders, as the
    reader found them while reading (:attr:`m3kit.sources.SourceRead.links`): the folders
    are not walked again."""
    return {str(link): str(target) for link, target in read.links.items()}


def linked_under(record: Mapping[str, Any], root: Path) -> set[str]:
    """The recorded targets with a link at or below ``root``."""
    return {
        target
        for target, entry in _load(record).items()
        if any(_under(Path(link), [root]) for link in entry.links)
    }


def remember_links(
    store: M3Store, read: SourceRead, paths: Sequence[str], now: Mapping[str, str]
) -> None:
    """Record the links read ``now`` (:func:`links_read`), and which targets were indexed
    otherwise; call before anything is written.

    Args:
        store: The collection (its record is read, and written when the links change).
        read: What this run read.
        paths: The given paths that exist.
        now: ``{link: target}`` read in this run.
    """
    record = store.collection_metadata()
    known = _load(record)
    new = {t for t in now.values() if t not in known}
    stored = _stored_origins(store) if new else set()
    links = dict(known)
    for link, target in now.items():
        entry = links.get(target, LinkedFile((), target in stored))
        links[target] = LinkedFile(tuple(sorted({*entry.links, link})), entry.direct)
    tops = [named_path(raw) for raw in paths]
    read_now = {str(f) for f in read.files}
    for target, entry in links.items():
        if not entry.direct and target in read_now and _under(Path(target), tops):
            links[target] = LinkedFile(entry.links, True)  # read under a path of its own
    if links != known:
        save_links(store, links)


def drop_links(
    store: M3Store, now: Mapping[str, str], present: Sequence[str], missing: Sequence[str]
) -> LinkDrop:
    """Drop the recorded links under the given folders that were not read as their target
    now (removed, re-pointed, dangling; all under a ``missing`` path), for ``--prune``.

    Args:
        store: The collection (its record is read).
        now: ``{link: target}`` read in this run.
        present: The given paths that exist (only folders hold links).
        missing: The given paths that no longer exist (pruned only).
    """
    folders = [named_path(raw) for raw in present if Path(raw).expanduser().is_dir()]
    folders += [named_path(raw) for raw in missing]
    links: dict[str, LinkedFile] = {}
    unlinked: dict[str, str] = {}
    for target, entry in _load(store.collection_metadata()).items():
        gone = [k for k in entry.links if _under(Path(k), folders) and now.get(k) != target]
        kept = tuple(k for k in entry.links if k not in gone)
        if kept:
            links[target] = LinkedFile(kept, entry.direct)
        elif gone and not entry.direct:
            unlinked[target] = gone[0]
    return LinkDrop(unlinked, links)


def save_links(store: M3Store, links: Mapping[str, LinkedFile]) -> None:
    """Write ``links`` into the collection's record (when they differ from it)."""
    record = store.collection_metadata()
    data = {t: {"links": list(e.links), "direct": e.direct} for t, e in sorted(links.items())}
    if record.get(LINKS_KEY, {}) != data:
        store.set_collection_metadata({**record, LINKS_KEY: data})


def _load(record: Mapping[str, Any]) -> dict[str, LinkedFile]:
    raw = record.get(LINKS_KEY, {})
    return {
        str(t): LinkedFile(tuple(str(k) for k in e.get("links", [])), bool(e.get("direct")))
        for t, e in (raw.items() if isinstance(raw, Mapping) else ())
        if isinstance(e, Mapping)
    }


def _stored_origins(store: M3Store) -> set[str]:
    """The files the reader's stored documents were read from (one scroll)."""
    origins = (reader_origin(i, meta) for i, meta in store.document_metadata().items())
    return {o for o in origins if o is not None}


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)
