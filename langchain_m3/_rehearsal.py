"""A ``force_recreate=True`` call rehearsed before its collection is dropped.

langchain-qdrant drops the collection, then builds the store and adds the documents: an
argument or a document refused after the drop (a misspelt ``chunking``, a ``filter`` that is
not one, metadata that is not JSON, an id given twice with different content) has lost the
collection for nothing. m3kit first runs the same construction and the same writes on an
empty in-memory index of the same encoder and sparse cut (what the collection is once
dropped), whose writes check every document as a real write does up to the encoding (the
chunker's model included), but cut and encode nothing; only when that passes is the
collection dropped and the call run for real.

Hand-written because no library offers a dry run of a write: the rehearsal is the adapters'
own code on the core's own checks, so a rule added to either is rehearsed too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from m3kit.encoder import M3Encoder, Truncation
from m3kit.store import M3Index
from m3kit.store.documents import _Chunker, _Doc, check_chunker_encoder
from m3kit.store.records import ChunkRecord

__all__ = ["rehearse"]

logger = logging.getLogger(__name__)


class _RehearsalIndex(M3Index):
    """An in-memory index whose ``add_texts`` checks its documents and stores none."""

    _announces = False  # (the real index logs its search defaults and warnings)

    def _records(
        self,
        docs: Sequence[_Doc],
        chunker: _Chunker | None,
        show_progress: bool | None,
        truncation: Truncation | str = "warn",
    ) -> tuple[list[ChunkRecord], list[str]]:
        # the one step that cuts and encodes: only what it checks without encoding
        if chunker is not None:
            check_chunker_encoder(self.encoder, chunker)
            # m3kit's chunkers plan their cut by tokenising alone: the splitter's output and a
            # chunk too long for the window are refused as chunk() refuses them, with its
            # message (a chunker of one's own is only cut for real)
            refuse_oversized = getattr(chunker, "refuse_oversized", None)
            if callable(refuse_oversized):
                refuse_oversized([doc.text for doc in docs])
        return [], []

    def add_texts(self, *args: Any, **kwargs: Any) -> list[str]:
        # no progress bar for a write that encodes nothing (the real one shows its own)
        return super().add_texts(*args, **{**kwargs, "show_progress": False})


def rehearse(
    encoder: M3Encoder,
    sparse_cut: dict[str, Any],
    collection: str,
    build: Callable[[M3Index], object],
) -> None:
    """Run ``build`` (a constructor and its writes) on an empty in-memory index of ``encoder``
    with ``sparse_cut`` (``M3Index.open`` keyword arguments) named ``collection``, encoding
    nothing. What only the encoded vectors tell (a chunk larger than a server's request
    limit), and what a chunker of one's own refuses as it cuts, are still refused after the
    drop.

    Raises:
        Exception: What ``build`` raises: the real call would raise it after the drop.
    """
    logger.info("collection %r: the call rehearsed in memory before the drop", collection)
    with _RehearsalIndex.open(encoder, None, collection=collection, **sparse_cut) as index:
        build(index)
