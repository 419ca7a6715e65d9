"""Convert ``qdrant_client.models.Filter`` (what users pass) into qdrant-edge filters.

qdrant-edge-py has its own (PyO3) request classes with the same meaning as Qdrant's REST
models; this module maps one onto the other condition by condition and refuses, by name,
anything it does not map.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

__all__ = ["edge_filter", "edge_point_id"]


def edge_point_id(pid: Any) -> Any:
    """Qdrant point ids are unsigned ints or UUIDs; edge takes ``int`` or ``uuid.UUID``."""
    if isinstance(pid, int):
        return pid
    return uuid.UUID(str(pid))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def edge_filter(f: models.Filter | None) -> qe.Filter | None:
    """The edge equivalent of a qdrant-client filter (``None`` stays ``None``)."""
    if f is None:
        return None
    min_should = None
    if f.min_should is not None:
        min_should = qe.MinShould(
            [_condition(c) for c in _as_list(f.min_should.conditions)], f.min_should.min_count
        )
    return qe.Filter(
        must=[_condition(c) for c in _as_list(f.must)] or None,
        should=[_condition(c) for c in _as_list(f.should)] or None,
        must_not=[_condition(c) for c in _as_list(f.must_not)] or None,
        min_should=min_should,
    )


def _match(m: Any) -> Any:
    if isinstance(m, models.MatchValue):
        # edge reads a Python bool as the integer 0/1 (bool is an int subclass), so
        # MatchValue(True) would match the integer 1 and not the boolean true; numpy's
        # bool is not an int, and edge reads it as a boolean.
        value: Any = np.bool_(m.value) if isinstance(m.value, bool) else m.value
        return qe.MatchValue(value)
    if isinstance(m, models.MatchAny):
        return qe.MatchAny(list(m.any))  # type: ignore[arg-type]
    if isinstance(m, models.MatchExcept):
        return qe.MatchExcept(list(m.except_))  # type: ignore[arg-type]
    if isinstance(m, models.MatchText):
        return qe.MatchText(m.text)
    if isinstance(m, models.MatchTextAny):
        return qe.MatchTextAny(m.text_any)
    if isinstance(m, models.MatchPhrase):
        return qe.MatchPhrase(m.phrase)
    if isinstance(m, models.MatchSubstring):
        return qe.MatchSubstring(m.substring)
    if isinstance(m, models.MatchPrefix):
        return qe.MatchPrefix(m.prefix)
    raise ValueError(f"filter match {type(m).__name__} is not supported by the embedded engine")


def _range(r: Any) -> Any:
    if isinstance(r, models.DatetimeRange):

        def iso(v: Any) -> str | None:
            return None if v is None else (v if isinstance(v, str) else v.isoformat())

        return qe.RangeDateTime(gte=iso(r.gte), gt=iso(r.gt), lte=iso(r.lte), lt=iso(r.lt))
    return qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)


def _geo(p: models.GeoPoint) -> qe.GeoPoint:
    return qe.GeoPoint(lon=p.lon, lat=p.lat)


def _field(c: models.FieldCondition) -> qe.FieldCondition:
    vc = c.values_count
    bbox = c.geo_bounding_box
    radius = c.geo_radius
    poly = c.geo_polygon
    return qe.FieldCondition(
        c.key,
        match=_match(c.match) if c.match is not None else None,
        range=_range(c.range) if c.range is not None else None,
        geo_bounding_box=qe.GeoBoundingBox(_geo(bbox.top_left), _geo(bbox.bottom_right))
        if bbox is not None
        else None,
        geo_radius=qe.GeoRadius(_geo(radius.center), radius.radius) if radius else None,
        geo_polygon=qe.GeoPolygon(
            [_geo(p) for p in poly.exterior.points],
            [[_geo(p) for p in ring.points] for ring in poly.interiors or []] or None,
        )
        if poly is not None
        else None,
        values_count=qe.ValuesCount(lt=vc.lt, gt=vc.gt, lte=vc.lte, gte=vc.gte)
        if vc is not None
        else None,
        is_empty=c.is_empty,
        is_null=c.is_null,
    )


def _condition(c: Any) -> Any:
    if isinstance(c, models.FieldCondition):
        return _field(c)
    if isinstance(c, models.Filter):
        return edge_filter(c)
    if isinstance(c, models.HasIdCondition):
        return qe.HasIdCondition({edge_point_id(i) for i in c.has_id})
    if isinstance(c, models.IsEmptyCondition):
        return qe.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return qe.IsNullCondition(c.is_null.key)
    if isinstance(c, models.HasVectorCondition):
        return qe.HasVectorCondition(c.has_vector)
    if isinstance(c, models.NestedCondition):
        inner = edge_filter(c.nested.filter)
        assert inner is not None
        return qe.NestedCondition(c.nested.key, inner)
    raise ValueError(f"filter condition {type(c).__name__} is not supported by the embedded engine")
