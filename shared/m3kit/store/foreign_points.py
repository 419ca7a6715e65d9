"""Points of an m3kit collection that m3kit did not write, or that lost a vector since.

A Qdrant server collection is open to every client: a point written into it with plain
qdrant-client, stock langchain-qdrant (``vector_name="dense", sparse_vector_name="sparse"``)
or stock LlamaIndex carries no ``doc_id`` and no ColBERT vector, and an update in place by
those tools (same point id) turns an m3kit chunk into such a point. Qdrant skips a point
that lacks the vector a query searches, so m3kit's default search (its ColBERT rerank) never
returns them, and a reindex cannot re-encode what it cannot rebuild. These checks say so
instead of leaving it silent: :func:`foreign_points` counts them (a count request per
vector and one more), an index opened on a qdrant-client collection of at most
:data:`OPEN_CHECK_MAX_POINTS` points warns, and a reindex to another encoder refuses them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qdrant_client import models

from m3kit.store.filters import documents_filter
from m3kit.store.schema import DOC_HASH, DOC_ID
from m3kit.store.store_reads import _canonical_uuid

if TYPE_CHECKING:
    from m3kit.store.plan import StorageBackend
    from m3kit.store.store import M3Store

__all__ = [
    "DELETE_FOREIGN",
    "OPEN_CHECK_MAX_POINTS",
    "ForeignPoints",
    "delete_replaced_foreign",
    "foreign_named",
    "foreign_or_documents",
    "foreign_point_id",
    "foreign_points",
    "warn_foreign_points",
    "without_document",
]

logger = logging.getLogger(__name__)


def foreign_point_id(doc_id: str) -> str | int | None:
    """The point id that ``doc_id`` names when it is a point's id as a hit of a point without
    ``doc_id`` carries it: a UUID (as the engines spell it) or an unsigned integer in decimal
    (``"7"``: Qdrant's point id 7); ``None`` for any other id.

    >>> foreign_point_id("7"), foreign_point_id("07"), foreign_point_id("doc-7")
    (7, None, None)
    >>> foreign_point_id("5B0C8D0E7D6F4C1E9A530C6B7F1E2A11")
    '5b0c8d0e-7d6f-4c1e-9a53-0c6b7f1e2a11'
    """
    canonical = _canonical_uuid(doc_id)
    if canonical is not None:
        return canonical
    if doc_id.isascii() and doc_id.isdecimal() and str(int(doc_id)) == doc_id:
        number = int(doc_id)
        return number if number < 2**64 else None
    return None


def foreign_named(doc_ids: Sequence[str]) -> models.Filter | None:
    """The points without ``doc_id`` whose point id is one of ``doc_ids``
    (:func:`foreign_point_id`); ``None`` when none is a point id."""
    points: list[models.ExtendedPointId] = [
        p for d in doc_ids if (p := foreign_point_id(d)) is not None
    ]
    if not points:
        return None
    return models.Filter(must=[models.HasIdCondition(has_id=points), without_document()])


def foreign_or_documents(doc_ids: Sequence[str]) -> models.Filter:
    """The chunks of these documents, and the points without ``doc_id`` whose point id is one
    of them (a hit of such a point carries its point id as ``doc_id``)."""
    docs = documents_filter(doc_ids)
    foreign = foreign_named(doc_ids)
    return docs if foreign is None else models.Filter(should=[docs, foreign])


def delete_replaced_foreign(backend: StorageBackend, doc_ids: Sequence[str]) -> None:
    """Delete the points without ``doc_id`` that a write of ``doc_ids`` replaced: those whose
    point id is one of them (one request for the write, none when no id is a point id).

    A search or ``get_by_ids`` returns such a point (another program's) with its point id as
    ``doc_id``; adding what it returned again (the way to move it onto m3kit's layout, with
    every vector) stored the document beside the old point: two hits of one text, and
    ``get_by_ids`` returned both. The write now replaces it, as it replaces its own chunks.
    """
    foreign = foreign_named(doc_ids)
    if foreign is not None:
        backend.delete(foreign)


def without_document() -> models.Filter:
    """The points without m3kit's ``doc_id`` or ``doc_hash`` (every m3kit write stores both;
    stock LlamaIndex stores a ``doc_id`` of its own, its node's source document, no hash)."""
    return models.Filter(
        should=[
            models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
            for key in (DOC_ID, DOC_HASH)
        ]
    )


@dataclass(frozen=True)
class ForeignPoints:
    """What :func:`foreign_points` found.

    Attributes:
        without_document: Points without ``doc_id`` or ``doc_hash`` (another program wrote
            or rewrote them).
        without_vector: ``{vector name: points of the collection without it}`` (only
            names with one or more).
    """

    without_document: int = 0
    without_vector: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.without_document or self.without_vector)

    def describe(self) -> str:
        """What was found and what it does, for a log line or an error message."""
        parts = []
        if self.without_document:
            parts.append(
                f"{self.without_document} point(s) without m3kit's doc_id / doc_hash (written or "
                "rewritten by another program: qdrant-client, stock langchain-qdrant or "
                "LlamaIndex): searches give their point id as doc_id (delete takes it), and "
                "a reindex to another encoder cannot re-encode them"
            )
        for name, n in sorted(self.without_vector.items()):
            parts.append(
                f"{n} point(s) without the {name!r} vector, which searches through "
                f"{name!r} (the default ColBERT rerank for 'colbert') never return"
            )
        return "; ".join(parts)


def foreign_points(store: M3Store) -> ForeignPoints:
    """Count the points of ``store``'s collection m3kit did not write whole: those without
    ``doc_id``, and those without one of the collection's vectors."""
    backend = store._backend
    missing = {}
    for head in sorted(store.heads, key=lambda h: h.value):
        lacking = models.Filter(must_not=[models.HasVectorCondition(has_vector=head.value)])
        if n := backend.count(lacking):
            missing[head.value] = n
    return ForeignPoints(backend.count(without_document()), missing)


#: How to delete the points without ``doc_id`` (for messages).
DELETE_FOREIGN = (
    "store.delete_points(filter=models.Filter(should=[models.IsEmptyCondition("
    "is_empty=models.PayloadField(key=k)) for k in ('doc_id', 'doc_hash')]))"
)


#: The most points an index's open counts foreign points in (:func:`warn_foreign_points`):
#: the counts scan every point (about 4 microseconds each, measured on the embedded engine).
OPEN_CHECK_MAX_POINTS = 200_000


def warn_foreign_points(store: M3Store) -> ForeignPoints | None:
    """Log a warning when ``store``'s collection holds points m3kit did not write whole
    (:func:`foreign_points`), with the ways to mend it; returns what was found (``None``: not
    checked).

    Checked on qdrant-client collections (local or a server: other programs reach them) of at
    most :data:`OPEN_CHECK_MAX_POINTS` points; not on the embedded engine's shard, which no
    other program opens. A failed count is logged, never fails the open: the check only
    warns.
    """
    from m3kit.store.records import Backend

    if store.backend is not Backend.CLIENT:
        return None
    try:
        total = store._backend.count(None)
        if total > OPEN_CHECK_MAX_POINTS:
            logger.info(
                "collection %r: %d points, above %d: points another program wrote are not "
                "counted at open (m3kit.store.foreign_points.foreign_points(store) counts them)",
                store.collection,
                total,
                OPEN_CHECK_MAX_POINTS,
            )
            return None
        found = foreign_points(store)
    except Exception as e:
        logger.warning(
            "collection %r: could not count the points another program wrote (%s)",
            store.collection,
            e,
        )
        return None
    if found:
        logger.warning(
            "collection %r (%s): %s. Add those documents again through m3kit (a document "
            "with a chunk lacking a vector is written again), or delete the points without "
            "doc_id / doc_hash (%s)",
            store.collection,
            store.backend.value,
            found.describe(),
            DELETE_FOREIGN,
        )
    return found
