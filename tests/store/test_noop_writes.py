"""A write that encodes nothing checks nothing of what only encoding uses.

A review of the embedding-event hook found ``add_texts`` checking the chunker's model before
looking up what to encode: an idempotent re-run (every document stored unchanged), or an empty
batch, was refused where it had been a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence

from m3kit import M3Encoder
from m3kit.chunking import Chunk
from m3kit.store import M3Index


class _OwnChunker:
    """A chunker of one's own whose ``encoder`` attribute is no M3Encoder."""

    encoder = "a model of its own"
    signature = "own-chunker"

    def chunk(self, texts: Sequence[str]) -> list[list[Chunk]]:
        raise AssertionError("nothing is to be cut")


def test_an_empty_write_checks_no_chunker(tiny_encoder: M3Encoder) -> None:
    with M3Index.open(tiny_encoder) as index:
        assert index.add_texts([], chunker=_OwnChunker()) == []
        assert index.count() == 0
