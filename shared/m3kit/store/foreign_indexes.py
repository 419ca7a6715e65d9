"""Payload indexes another program made that hide stored values, named when a collection
opens (split from :mod:`m3kit.store.payload_indexes`).

m3kit refuses to declare an ``integer`` / ``datetime`` index over values it would leave out
of its filters, and to write such values under one; an index another program created
(qdrant-client's ``create_payload_index`` on a server) was never checked: a filter on its
key silently missed the points whose values it leaves out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from qdrant_client import models

from m3kit.store.payload_indexes import (
    HIDING_VALUES,
    holding,
    stored_hidden,
    type_to_use,
)
from m3kit.store.plan import StorageBackend
from m3kit.store.schema import DOC_ID, METADATA, PayloadIndexType

__all__ = ["HIDDEN_SCAN_POINTS", "served_all", "warn_hidden_stored"]

logger = logging.getLogger(__name__)

#: Points :func:`warn_hidden_stored` reads at most per index at each open (a review measured
#: 0.5 s for 40,000 on the embedded engine, strings under an integer index: no warning).
HIDDEN_SCAN_POINTS = 10_000


def warn_hidden_stored(backend: StorageBackend, found: Mapping[str, str]) -> list[str]:
    """Warn of stored values an existing ``integer`` / ``datetime`` index leaves out of the
    filters it serves: one another program created (qdrant-client's ``create_payload_index``
    on a server), or values another program wrote under one (m3kit checks its own writes
    and declarations). A filter on such a key silently misses those points.

    Two counts per such index (the points holding the key; those its index serves a full
    range to) tell whether a value may be left out, and only then are the values of at most
    :data:`HIDDEN_SCAN_POINTS` points read (strings under the key also make the counts differ;
    a list holding a served and a hidden value, ``[3, 4.5]``, passes them).

    Args:
        backend: The opened collection.
        found: Its payload indexes, ``{payload path: type}``.

    Returns:
        The paths warned about.
    """
    warned = []
    for path, kind in sorted(found.items()):
        if kind not in HIDING_VALUES or not path.startswith(f"{METADATA}."):
            continue
        if backend.count(holding(path)) == backend.count(served_all(path, kind)):
            continue
        hidden_value = stored_hidden(backend, path, kind, HIDDEN_SCAN_POINTS)
        if hidden_value is None:  # strings or bools, which no number filter matches anyway
            logger.info(
                "collection %r: the %s index on %s serves fewer points than hold the key; "
                "no value it hides among the first %d read (strings, or beyond)",
                backend.collection,
                kind,
                path,
                HIDDEN_SCAN_POINTS,
            )
            continue
        hit, key, value, hidden = hidden_value
        logger.warning(
            "collection %r at %s: %r is %r in document %r (point %s), %s, and the %s index on "
            "%s leaves it out of the filters it serves ({%r: %r} or a range misses that "
            "point, and others like it); index the key as %s in a new collection, or store "
            "values of the index's type",
            backend.collection,
            backend.where,
            key,
            value,
            hit.payload.get(DOC_ID),
            hit.id,
            hidden,
            kind,
            path,
            key,
            value,
            type_to_use(kind),
        )
        warned.append(path)
    return warned


def served_all(path: str, kind: str) -> models.Filter:
    """The points an index of ``kind`` on ``path`` serves a full range to."""
    full: models.Range | models.DatetimeRange = (
        models.Range(gte=-1e300, lte=1e300)
        if kind == PayloadIndexType.INTEGER.value
        else models.DatetimeRange(
            gte=datetime(1, 1, 1, tzinfo=UTC), lte=datetime(9999, 12, 31, tzinfo=UTC)
        )
    )
    return models.Filter(must=[models.FieldCondition(key=path, range=full)])
