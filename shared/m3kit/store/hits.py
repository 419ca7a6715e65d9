r"""Stored payloads as typed :class:`~m3kit.store.Hit`\ s: m3kit's chunks, and another
program's points (a stock LlamaIndex node: :mod:`m3kit.store.foreign_payload`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from m3kit.store.foreign_payload import NODE_CONTENT, foreign_text_and_metadata
from m3kit.store.plan import RawHit
from m3kit.store.records import Hit
from m3kit.store.schema import (
    CHUNK_COUNT,
    CHUNK_ID,
    CHUNK_INDEX,
    DOC_HASH,
    DOC_ID,
    END,
    EXTRA,
    METADATA,
    PAGE_CONTENT,
    START,
)

__all__ = ["HIT_KEYS", "to_hit"]


#: The payload keys a :class:`Hit` is built from.
HIT_KEYS = (
    PAGE_CONTENT,
    METADATA,
    DOC_ID,
    CHUNK_INDEX,
    START,
    END,
    DOC_HASH,
    CHUNK_COUNT,
    EXTRA,
    CHUNK_ID,
    NODE_CONTENT,  # a stock LlamaIndex node's text and metadata (foreign_payload)
)


def to_hit(h: RawHit) -> Hit:
    """A backend's raw hit as the typed :class:`Hit` (payload keys of :data:`HIT_KEYS`)."""
    p = h.payload
    meta = p.get(METADATA)
    if p.get(DOC_ID) is None or p.get(DOC_HASH) is None:  # another program's point: m3kit's
        # other keys are not its (a stock LlamaIndex node keeps its metadata at the top,
        # "start": "00:01:02", and its source document's id as "doc_id")
        text, foreign_meta = foreign_text_and_metadata(p)
        return Hit(
            id=h.id,
            score=float(h.score),
            text=text,
            doc_id=str(h.id),
            chunk_index=0,
            metadata=foreign_meta,
        )
    return Hit(
        id=h.id,
        score=float(h.score),
        text=str(p.get(PAGE_CONTENT, "")),
        doc_id=str(p.get(DOC_ID, h.id)),
        chunk_index=int(p.get(CHUNK_INDEX, 0)),
        metadata=dict(meta) if isinstance(meta, Mapping) else {},
        start=_optional_int(p.get(START)),
        end=_optional_int(p.get(END)),
        chunk_count=_optional_int(p.get(CHUNK_COUNT)),
        extra=dict(extra) if isinstance(extra := p.get(EXTRA), Mapping) else {},
        chunk_id=None if p.get(CHUNK_ID) is None else str(p[CHUNK_ID]),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
