"""What a failed LangChain write stored: for :func:`langchain_m3._writes.write_documents`.

A write is several :meth:`M3Index.add_texts <m3kit.store.M3Index.add_texts>` calls (one per
kind of document, or per ``batch_size``), each encoding and writing its documents in groups
and skipping those already stored at their version. When one fails (or is cancelled), the
caller (``M3VectorStore`` with a ``parent_id_key``, which then deletes the parents' other
children) needs to know which documents are stored at the version the write gives them, and
which of them the write itself stored (an unchanged document was stored so already):
:func:`report_failure` compares the store after the failure with :func:`stored_at_version`
taken before the write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from m3kit.store import M3Index

__all__ = ["Call", "Failed", "report_failure", "stored_at_version"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    """The documents with ids of one ``add_texts`` call of a write, and its chunker.

    Attributes:
        positions: Each document's place in the write.
        texts: Their texts.
        metadatas: Their metadata, as written.
        doc_ids: Their ids.
        chunker: The call's chunker (its signature is part of each document's version).
    """

    positions: Sequence[int]
    texts: Sequence[str]
    metadatas: Sequence[Mapping[str, Any]]
    doc_ids: Sequence[str]
    chunker: Any


@dataclass(frozen=True)
class Failed:
    """The documents of a failed write (each a list in the write's order; ``None``: no).

    Attributes:
        stored: The id of each document stored at the version the write gives it (written
            before the failure, or stored so already).
        written: The id of each document this write stored (not at its version before).
    """

    stored: list[str | None]
    written: list[str | None]


def stored_at_version(
    index: M3Index, kept: Sequence[str | None], calls: Sequence[Call]
) -> list[str | None]:
    """``kept`` (the id of each document of the write kept as stored, without an
    ``add_texts`` call, else ``None``) with the id of each document in ``calls`` that
    ``index`` stores at the version the write gives it."""
    out = list(kept)
    for call in calls:
        if not call.doc_ids:
            continue
        _, todo = index.pending(call.texts, call.metadatas, call.doc_ids, chunker=call.chunker)
        waiting = {d.doc_id for d in todo}
        for position, doc_id in zip(call.positions, call.doc_ids, strict=True):
            if doc_id not in waiting:
                out[position] = doc_id
    return out


def report_failure(
    index: M3Index,
    kept: Sequence[str | None],
    calls: Sequence[Call],
    before: Sequence[str | None],
    on_failure: Callable[[Failed], None],
) -> None:
    """Hand ``on_failure`` what the failed write stored (``before``: :func:`stored_at_version`
    taken before it). An error here is logged, not raised over the write's own."""
    try:
        after = stored_at_version(index, kept, calls)
        written = [a if b is None else None for a, b in zip(after, before, strict=True)]
        on_failure(Failed(after, written))
    except Exception:
        logger.exception("a write failed, and so did the clean-up after it")
