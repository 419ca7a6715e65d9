"""Children of a parent (``ParentDocumentRetriever``) in the LangChain stores' writes.

``ParentDocumentRetriever`` writes all the children of a parent in one
``vectorstore.add_documents`` call, each carrying the parent's id in its metadata (under the
retriever's ``id_key``) and no id of its own. With a store's ``parent_id_key`` set, each such
child gets the id :func:`child_ids` derives from the parent id and its place among that
parent's children in the write (the same parent and place: the same id, so re-adding
unchanged content rewrites the same entries), and the store then deletes the parent's other
entries (children of an earlier version: a changed text, or more children than now); a
write that fails (or is cancelled) does the same, before raising, for each parent it wrote
children of, keeping its children stored at this write's version, so a parent holds one
version of its children (the old ones whole when none of the new was written, never none). This
module holds what both stores share: the parent ids of a write (:func:`parent_ids`), the
children's ids, the ids written per parent (:func:`written_by_parent`), the deletion in
:class:`~m3kit.store.M3Index` (:func:`delete_other_children`; ``M3QdrantVectorStore``
deletes through its qdrant client) and the locks that make two writes of one parent take
turns (:func:`parent_locks`): a write holds its parents' locks through its encoding, its
upsert and its deletes, so writes of other parents encode and write meanwhile, and
``M3VectorStore.clear()`` waits for the writes under way (:meth:`ParentLocks.hold_all`).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from qdrant_client import models

from m3kit.store import M3Index
from m3kit.store.cancelling import holding, waited
from m3kit.store.metadata_values import iso_value
from m3kit.store.schema import DOC_ID, METADATA

__all__ = [
    "check_key",
    "child_ids",
    "delete_other_children",
    "documents_child_ids",
    "fill_ids",
    "parent_ids",
    "parent_locks",
    "parent_path",
    "written_by_parent",
]

_Id = TypeVar("_Id")
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "m3kit:langchain_m3:parent-children")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+")


class ParentLocks:
    """One lock per parent id, kept while a write holds or awaits it (then dropped, so the
    table holds the parents being written, not every parent ever written).

    A parent id is locked by its text (``1`` and ``"1"`` take turns: two parents, locked
    together at no cost to correctness).

    >>> locks = ParentLocks()
    >>> with locks.hold(["p", None, 1, "p"]):
    ...     sorted(locks._locks)
    ['1', 'p']
    >>> locks._locks
    {}
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.RLock, int]] = {}  # lock, writes holding or awaiting
        self._changed = threading.Condition(self._guard)
        self._writes = 0  # hold() calls under way
        self._clears = 0  # hold_all() calls under way (new hold() calls wait for them)
        self._depth = threading.local()  # hold() calls under way in this thread

    @contextlib.contextmanager
    def hold(self, parents: Iterable[str | int | None]) -> Iterator[None]:
        """Hold the lock of every parent id in ``parents`` (``None``: no parent), taken in
        one order (sorted), so two writes naming the same parents never each wait for a lock
        the other holds (a deadlock); first wait for any :meth:`hold_all` under way (unless
        this thread holds parents already)."""
        depth = getattr(self._depth, "n", 0)
        with self._changed:
            if not depth:
                waited(self._changed, lambda: not self._clears)
            self._writes += 1
        self._depth.n = depth + 1
        try:
            with contextlib.ExitStack() as stack:
                for name in sorted({str(parent) for parent in parents if parent is not None}):
                    stack.enter_context(self._one(name))
                yield
        finally:
            self._depth.n = depth
            with self._changed:
                self._writes -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def hold_all(self) -> Iterator[None]:
        """Wait until no :meth:`hold` is under way, and keep new ones waiting until done (a
        ``clear()``: a write of a parent's children lands whole before or after it).

        >>> locks = ParentLocks()
        >>> with locks.hold_all():
        ...     locks._clears
        1

        Raises:
            RuntimeError: This thread is inside :meth:`hold` (it would wait for itself).
        """
        if getattr(self._depth, "n", 0):
            raise RuntimeError("clear() inside a write of parents' children would wait forever")
        with self._changed:
            self._clears += 1
            try:
                waited(self._changed, lambda: not self._writes)
            except BaseException:
                self._clears -= 1
                self._changed.notify_all()
                raise
        try:
            yield
        finally:
            with self._changed:
                self._clears -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def _one(self, name: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(name, (threading.RLock(), 0))
            self._locks[name] = (lock, users + 1)
        try:
            with holding(lock):  # an async write cancelled while it waits: not done
                yield
        finally:
            with self._guard:
                lock, users = self._locks[name]
                if users == 1:
                    del self._locks[name]
                else:
                    self._locks[name] = (lock, users - 1)


_PARENT_LOCKS: weakref.WeakKeyDictionary[object, ParentLocks] = weakref.WeakKeyDictionary()
_PARENT_LOCKS_LOCK = threading.Lock()


def parent_locks(owner: object) -> ParentLocks:
    """The parent locks of ``owner`` (an :class:`~m3kit.store.M3Store`, a ``QdrantClient``):
    one table per owner, shared by every LangChain store writing through it, for its
    lifetime."""
    with _PARENT_LOCKS_LOCK:
        locks = _PARENT_LOCKS.get(owner)
        if locks is None:
            locks = _PARENT_LOCKS[owner] = ParentLocks()
        return locks


def parent_ids(
    metadatas: Sequence[dict[Any, Any] | None] | None, key: str, count: int
) -> list[str | int | None]:
    """Each text's parent id: its metadata's ``key`` (``None``: absent or ``None``).

    Raises:
        ValueError: A parent id is not a string or an integer (a payload filter cannot match
            it exactly, so its stale children could not be found).
    """
    metas = list(metadatas or [])
    out: list[str | int | None] = []
    for i in range(count):
        meta = metas[i] if i < len(metas) else None
        # a UUID (or date) parent id is matched as the string it is stored as
        value = iso_value(meta.get(key)) if meta else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise ValueError(
                f"documents[{i}] has the parent id {value!r} under {key!r} "
                f"(a {type(value).__name__}): with parent_id_key={key!r} a parent id must be "
                "a string or an integer, which is what the store matches to replace the "
                "parent's children"
            )
        out.append(value)
    return out


def child_ids(key: str, parents: Sequence[str | int | None]) -> list[str | None]:
    """Ids: ``uuid5`` of (key, parent id, place among its children in this write) for a
    child, ``None`` for a text without a parent id (the store gives it its own id).

    >>> a = child_ids("doc_id", ["p", "p", None, "q"])
    >>> a[:2] == child_ids("doc_id", ["p", "p"]) and a[0] != a[1] != a[3] and a[2] is None
    True
    """
    seen: dict[str | int, int] = {}
    out: list[str | None] = []
    for parent in parents:
        if parent is None:
            out.append(None)
            continue
        place = seen.get(parent, 0)
        seen[parent] = place + 1
        name = json.dumps([key, parent, place], ensure_ascii=False)
        out.append(str(uuid.uuid5(_NAMESPACE, name)))
    return out


def check_key(key: object) -> str:
    """``key`` if it can be a parent id key: a string a payload filter can address.

    Raises:
        TypeError: ``key`` is not a string.
        ValueError: ``key`` cannot be addressed in a payload filter (empty, or holding a
            double quote).
    """
    if not isinstance(key, str):
        raise TypeError(
            f"parent_id_key must be the metadata key of the parent id (a string, e.g. "
            f"ParentDocumentRetriever's id_key 'doc_id'), got {key!r}"
        )
    if not key or '"' in key:  # refused before anything is written
        raise ValueError(
            f"parent_id_key {key!r} cannot be addressed in a Qdrant payload filter (it is "
            "empty or holds a double quote), so a parent's old children could not be found; "
            "use another id_key"
        )
    return key


def parent_path(prefix: str, key: str) -> str:
    """The payload path of the metadata key ``key`` under the payload key ``prefix`` (where
    the metadata is stored: langchain-qdrant's ``metadata_payload_key``): each is one flat
    key (``ParentDocumentRetriever`` sets ``metadata[id_key]``), so one with a dot, a space
    or a bracket is quoted, not read as a nested path.

    >>> parent_path("metadata", "doc_id"), parent_path("lc.meta", "doc.id")
    ('metadata.doc_id', '"lc.meta"."doc.id"')

    Raises:
        ValueError: ``prefix`` cannot be addressed in a payload filter (empty, or holding a
            double quote; ``key`` is checked by :func:`check_key`).
    """
    if not prefix or '"' in prefix:  # refused before anything is written
        raise ValueError(
            f"metadata_payload_key {prefix!r} cannot be addressed in a Qdrant payload filter "
            "(it is empty or holds a double quote), so a parent's old children could not be "
            "found; use another metadata_payload_key, or no parent_id_key"
        )
    return f"{_segment(prefix)}.{_segment(key)}"


def _segment(name: str) -> str:
    return name if _PLAIN_KEY.fullmatch(name) else f'"{name}"'


def fill_ids(given: Sequence[_Id | None] | None, derived: Sequence[_Id]) -> list[_Id]:
    """``derived`` where ``given`` has no id (langchain-core passes ``[doc.id, ...]`` with
    ``None`` holes once any document has an id), the given id elsewhere.

    >>> fill_ids(["a", None], ["x", "y"])
    ['a', 'y']
    """
    if given is None:
        return list(derived)
    return [d if g is None else g for g, d in zip(given, derived, strict=True)]


def documents_child_ids(
    key: object, documents: Sequence[Any], ids: Sequence[str | None] | None
) -> tuple[list[str | int | None], Sequence[str | None] | None]:
    """The parent id of each document (metadata ``key``) and the ids to write them under:
    each id given (``ids``, else ``Document.id``), and for a child without one its
    :func:`child_ids` id. ``ids`` comes back as given when no document names a parent, or
    when it is malformed (the write refuses it).

    Raises:
        TypeError: ``key`` is not a string.
        ValueError: ``key`` cannot be addressed in a payload filter, or a parent id is not a
            string or an integer.
    """
    name = check_key(key)
    metas = [getattr(doc, "metadata", None) for doc in documents]
    parents = parent_ids(metas, name, len(documents))
    if all(parent is None for parent in parents):
        return parents, ids
    if ids is not None and (isinstance(ids, str) or len(ids) != len(documents)):
        return parents, ids
    given = list(ids) if ids is not None else [getattr(doc, "id", None) for doc in documents]
    return parents, fill_ids(given, child_ids(name, parents))


def written_by_parent(
    parents: Sequence[str | int | None], ids: Sequence[_Id]
) -> dict[str | int, list[_Id]]:
    """The ids just written (``ids``, in the order of ``parents``) of each parent id, in
    the order written; a text without a parent id (``None``) is in none.

    Raises:
        ValueError: ``parents`` and ``ids`` differ in length.

    >>> written_by_parent(["p", None, "q", "p"], ["a", "b", "c", "d"])
    {'p': ['a', 'd'], 'q': ['c']}
    """
    kept: dict[str | int, list[_Id]] = {}
    for parent, written in zip(parents, ids, strict=True):
        if parent is not None:
            kept.setdefault(parent, []).append(written)
    return kept


def delete_other_children(
    index: M3Index, key: str, parents: Sequence[str | int | None], doc_ids: Sequence[str | None]
) -> None:
    """Delete, for each parent id in ``parents``, its documents in ``index`` (metadata
    ``key`` equal to it) other than the ones just written (``doc_ids``, in the order of
    ``parents``; ``None``: not written). A parent none of whose documents was written keeps
    its documents (after a failed write: its earlier version, whole)."""
    field = parent_path(METADATA, key)
    pairs = [(p, d) for p, d in zip(parents, doc_ids, strict=True) if d is not None]
    by_parent = written_by_parent([p for p, _ in pairs], [d for _, d in pairs])
    for parent, written in by_parent.items():
        stale = models.Filter(
            must=[models.FieldCondition(key=field, match=models.MatchValue(value=parent))],
            must_not=[
                models.FieldCondition(key=DOC_ID, match=models.MatchAny(any=sorted(set(written))))
            ],
        )
        index.store.delete_points(filter=stale)
