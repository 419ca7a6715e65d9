"""Point ids and stale-point deletion for the children of a parent in ``M3QdrantVectorStore``.

``ParentDocumentRetriever`` writes all the children of a parent in one
``vectorstore.add_documents`` call, each carrying the parent's id in its metadata (under the
retriever's ``id_key``) and no id of its own. For such a write, each child gets the point id
:func:`child_point_ids` derives from the parent id and its place among that parent's children
in the write (the same parent and place: the same id, so re-adding unchanged content rewrites
the same points), and :func:`delete_stale_children` then deletes the parent's other points
(children of an earlier version: a changed text, or more children than now; after a failed
write, those of each parent other than the children upserted before the failure). Such a write
holds its parents' locks (:func:`langchain_m3._parents.parent_locks` of the store's client)
through its encoding, its upserts and its deletes, so two writes of one parent in this process
cannot interleave (one would delete a child of the other's set), while writes of other parents
encode at the same time; each upsert and delete holds :func:`client_write_lock` alone (a
local-mode client is not safe for two threads writing at once). The parent ids and the
children's ids are :mod:`langchain_m3._parents`' (shared with ``M3VectorStore``).
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Sequence

from qdrant_client import QdrantClient, models

from langchain_m3._parents import child_ids, written_by_parent

__all__ = ["child_point_ids", "client_write_lock", "delete_stale_children"]

_LOCKS: weakref.WeakKeyDictionary[QdrantClient, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def client_write_lock(client: QdrantClient) -> threading.Lock:
    """The lock each upsert and delete of a write replacing parents' children holds (not its
    encoding): one per client (stores opened on one client share it), for its lifetime."""
    with _LOCKS_LOCK:
        lock = _LOCKS.get(client)
        if lock is None:
            lock = _LOCKS[client] = threading.Lock()
        return lock


def child_point_ids(key: str, parents: Sequence[str | int | None]) -> list[str | int]:
    """Point ids: ``uuid5`` of (key, parent id, place among its children in this write) for a
    child, a random ``uuid4`` (as langchain-qdrant draws) for a text without a parent id.

    >>> a = child_point_ids("doc_id", ["p", "p", None, "q"])
    >>> a[:2] == child_point_ids("doc_id", ["p", "p"]) and a[0] != a[1] != a[3]
    True
    """
    return [uuid.uuid4().hex if point is None else point for point in child_ids(key, parents)]


def delete_stale_children(
    client: QdrantClient,
    collection_name: str,
    field: str,
    parents: Sequence[str | int | None],
    ids: Sequence[str | int],
) -> None:
    """Delete, for each parent id in ``parents``, its points (payload ``field`` equal to it)
    other than the ones just written (``ids``, in the order of ``parents``)."""
    for parent, points in written_by_parent(parents, ids).items():
        stale = models.Filter(
            must=[models.FieldCondition(key=field, match=models.MatchValue(value=parent))],
            must_not=[models.HasIdCondition(has_id=list(points))],
        )
        client.delete(
            collection_name=collection_name,
            points_selector=models.FilterSelector(filter=stale),
        )
