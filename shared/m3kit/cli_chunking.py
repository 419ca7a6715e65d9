"""How ``m3kit index`` chunks: the flags given, else what the collection remembers.

Split from :mod:`m3kit.cli`. Like ``--model``, the chunking flags (``--late-chunking``,
``--chunk-size``, ``--window``, ``--late-heads``, ``--overlap``, ``--placement``) are remembered
in the collection's m3kit record after each run that indexes files, so a later run without them
chunks the same way. Without this, ``m3kit index docs/ --late-chunking`` followed by
``m3kit index docs/`` after an edit re-chunked every document naively: a document's version
includes how it was chunked.
``--no-late-chunking`` goes back to naive chunking (and is remembered in turn).

>>> remembered = IndexChunking(late=True, chunk_size=128, window=514, late_heads=None)
>>> IndexChunking.resolve(None, None, None, None, remembered) == remembered
True
>>> IndexChunking.resolve(False, None, None, None, remembered).describe()
'--no-late-chunking --chunk-size 128'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3kit.store import M3Store

__all__ = ["RECORD_KEY", "IndexChunking", "refuse_unremembered_late_chunks"]

logger = logging.getLogger("m3kit.cli")

#: The key of the collection's m3kit record that holds the remembered chunking.
RECORD_KEY = "index_chunking"


@dataclass(frozen=True)
class IndexChunking:
    """The chunking flags of ``m3kit index``.

    Attributes:
        late: ``--late-chunking`` (``False``: each chunk encoded alone).
        chunk_size: ``--chunk-size`` (``None``: the model's default).
        window: ``--window`` (late chunking only; ``None``: the chunker's default).
        late_heads: ``--late-heads`` (late chunking only; ``None``: the default heads).
        overlap: ``--overlap`` (late chunking only; ``None``: the chunker's default).
        placement: ``--placement`` (late chunking only; ``None``: the chunker's default).
    """

    late: bool = False
    chunk_size: int | None = None
    window: int | None = None
    late_heads: str | None = None
    overlap: int | None = None
    placement: str | None = None

    @classmethod
    def resolve(
        cls,
        late: bool | None,
        chunk_size: int | None,
        window: int | None,
        late_heads: str | None,
        remembered: IndexChunking | None,
        overlap: int | None = None,
        placement: str | None = None,
    ) -> IndexChunking:
        """Each flag given wins; the others come from ``remembered`` (a window, late heads,
        overlap and placement only while late chunking stays on), else the defaults.

        Raises:
            ValueError: ``window``, ``late_heads``, ``overlap`` or ``placement`` without late
                chunking.
        """
        before = remembered or cls()
        is_late = before.late if late is None else late
        if window is not None and not is_late:
            raise ValueError("--window needs --late-chunking")
        if late_heads is not None and not is_late:
            raise ValueError("--late-heads needs --late-chunking")
        if overlap is not None and not is_late:
            raise ValueError("--overlap needs --late-chunking")
        if placement is not None and not is_late:
            raise ValueError("--placement needs --late-chunking")
        keep = is_late and before.late
        return cls(
            late=is_late,
            chunk_size=chunk_size if chunk_size is not None else before.chunk_size,
            window=window if window is not None else (before.window if keep else None),
            late_heads=late_heads
            if late_heads is not None
            else (before.late_heads if keep else None),
            overlap=overlap if overlap is not None else (before.overlap if keep else None),
            placement=placement if placement is not None else (before.placement if keep else None),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> IndexChunking | None:
        """What a collection's m3kit record remembers (``None``: nothing, or unreadable)."""
        raw = record.get(RECORD_KEY)
        if not isinstance(raw, Mapping):
            return None
        try:
            # overlap, placement: absent from records written before their flags existed
            # (the defaults)
            out = cls(
                **{k: raw[k] for k in ("late", "chunk_size", "window", "late_heads")},
                overlap=raw.get("overlap"),
                placement=raw.get("placement"),
            )
        except (KeyError, TypeError):
            logger.warning(
                "ignoring an unreadable %s in the collection record: %r", RECORD_KEY, raw
            )
            return None
        return out

    def remember(self, store: M3Store) -> None:
        """Keep these flags in the collection's m3kit record (its other keys are kept)."""
        record = store.collection_metadata()
        if record.get(RECORD_KEY) == asdict(self):
            return
        store.set_collection_metadata({**record, RECORD_KEY: asdict(self)})

    def describe(self) -> str:
        """The flags, as a user would type them."""
        parts = ["--late-chunking" if self.late else "--no-late-chunking"]
        for flag, value in (
            ("--chunk-size", self.chunk_size),
            ("--window", self.window),
            ("--late-heads", self.late_heads),
            ("--overlap", self.overlap),
            ("--placement", self.placement),
        ):
            if value is not None:
                parts.append(f"{flag} {value}")
        return " ".join(parts)


def refuse_unremembered_late_chunks(store: M3Store, doc_ids: Sequence[str]) -> None:
    """Refuse a run without chunking flags that would re-chunk late-chunked documents naively.

    For a collection that remembers no chunking flags (indexed by an m3kit from before they
    were remembered, or only from Python): such a run chunks naively at the default size, so
    each stored late-chunked document it reads would be re-chunked and re-encoded that way,
    and that chunking remembered.

    Args:
        store: The opened collection.
        doc_ids: The ids of the documents the run is about to write.

    Raises:
        ValueError: Some of them are stored late-chunked; names them and the flags to give.
    """
    from qdrant_client import models

    from m3kit.store.filters import documents_filter
    from m3kit.store.schema import CHUNKING, DOC_ID
    from m3kit.store.store_reads import _DOC_BATCH

    is_late = models.FieldCondition(key=f"{CHUNKING}.kind", match=models.MatchValue(value="late"))
    names: set[str] = set()
    for i in range(0, len(doc_ids), _DOC_BATCH):  # doc ids only, as every lookup batches them
        late = models.Filter(must=[documents_filter(doc_ids[i : i + _DOC_BATCH]), is_late])
        names.update(str(hit.payload[DOC_ID]) for hit in store._backend.scroll(late, [DOC_ID]))
    if not names:
        return
    names_sorted = sorted(names)
    shown = ", ".join(repr(n) for n in names_sorted[:3]) + (", ..." if len(names) > 3 else "")
    raise ValueError(
        f"{len(names)} document(s) of collection {store.collection!r} ({shown}) are stored "
        "late-chunked, but the collection remembers no chunking flags (it was indexed by an "
        "m3kit from before they were remembered, or from Python), so this run would re-chunk "
        "and re-encode them naively: give the chunking flags once, as they were indexed "
        "(--late-chunking --chunk-size N, and --window / --overlap / --placement / "
        "--late-heads if you gave them), or --no-late-chunking to re-chunk them naively; "
        "later runs remember them"
    )
