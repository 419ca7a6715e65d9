"""Point ids and stale-point deletion for the children of a parent in ``M3QdrantVectorStore``.

``ParentDocumentRetriever`` writes all the children of a parent in one
``vectorstore.add_documents`` call, each carrying the parent's id in its metadata (under the
retriever's ``id_key``) and no id of its own. For such a write, each child gets the point id
:func:`child_point_ids` derives from the parent id and its place among that parent's children
in the write (the same parent and place: the same id, so re-adding unchanged content rewrites
the same points), and :func:`delete_stale_children` then deletes the parent's other points
(children of an earlier version: a changed text, or more children than now).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient, models

__all__ = ["child_point_ids", "delete_stale_children", "parent_ids"]

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "m3kit:langchain_m3:parent-children")


def parent_ids(
    metadatas: Sequence[dict[Any, Any]] | None, key: str, count: int
) -> list[str | int | None]:
    """Each text's parent id: its metadata's ``key`` (``None``: absent or ``None``).

    Raises:
        ValueError: A parent id is not a string or an integer (a payload filter cannot match
            it exactly, so its stale children could not be found).
    """
    metas = list(metadatas or [])
    out: list[str | int | None] = []
    for i in range(count):
        value = metas[i].get(key) if i < len(metas) and metas[i] else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise ValueError(
                f"documents[{i}] has the parent id {value!r} under {key!r} "
                f"(a {type(value).__name__}): with parent_id_key={key!r} a parent id must be "
                "a string or an integer, which is what the store matches to replace the "
                "parent's children"
            )
        out.append(value)
    return out


def child_point_ids(key: str, parents: Sequence[str | int | None]) -> list[str | int]:
    """Point ids: ``uuid5`` of (key, parent id, place among its children in this write) for a
    child, a random ``uuid4`` (as langchain-qdrant draws) for a text without a parent id.

    >>> a = child_point_ids("doc_id", ["p", "p", None, "q"])
    >>> a[:2] == child_point_ids("doc_id", ["p", "p"]) and a[0] != a[1] != a[3]
    True
    """
    seen: dict[str | int, int] = {}
    out: list[str | int] = []
    for parent in parents:
        if parent is None:
            out.append(uuid.uuid4().hex)
            continue
        place = seen.get(parent, 0)
        seen[parent] = place + 1
        name = json.dumps([key, parent, place], ensure_ascii=False)
        out.append(str(uuid.uuid5(_NAMESPACE, name)))
    return out


def delete_stale_children(
    client: QdrantClient,
    collection_name: str,
    field: str,
    parents: Sequence[str | int | None],
    ids: Sequence[str | int],
) -> None:
    """Delete, for each parent id in ``parents``, its points (payload ``field`` equal to it)
    other than the ones just written (``ids``, in the order of ``parents``)."""
    kept: dict[str | int, list[str | int]] = {}
    for parent, point in zip(parents, ids, strict=True):
        if parent is not None:
            kept.setdefault(parent, []).append(point)
    for parent, points in kept.items():
        stale = models.Filter(
            must=[models.FieldCondition(key=field, match=models.MatchValue(value=parent))],
            must_not=[models.HasIdCondition(has_id=list(points))],
        )
        client.delete(
            collection_name=collection_name,
            points_selector=models.FilterSelector(filter=stale),
        )
