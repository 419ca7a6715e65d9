"""Children of a parent (``ParentDocumentRetriever``) in the LangChain stores' writes.

``ParentDocumentRetriever`` writes all the children of a parent in one
``vectorstore.add_documents`` call, each carrying the parent's id in its metadata (under the
retriever's ``id_key``) and no id of its own. With a store's ``parent_id_key`` set, each such
child gets the id :func:`child_ids` derives from the parent id and its place among that
parent's children in the write (the same parent and place: the same id, so re-adding
unchanged content rewrites the same entries), and the store then deletes the parent's other
entries (children of an earlier version: a changed text, or more children than now). This
module holds what the stores share: the parent ids of a write (:func:`parent_ids`) and the
children's ids.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["child_ids", "parent_ids"]

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "m3kit:langchain_m3:parent-children")


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
        value = meta.get(key) if meta else None
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
