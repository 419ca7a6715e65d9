"""Reads and writes racing ``close()``.

A read on the embedded engine that a ``close()`` in another thread cuts short raises the
store's clear "closed" error, not the engine's bare ``Exception: Service runtime error: Shard
is not initialized`` (a web server closing its index while requests were in flight saw the
latter in about half of the races). The race is made deterministic: the shard is closed
between the read taking it and calling it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from m3kit import M3Encoder
from m3kit.store import ChunkRecord, M3Index

READS: dict[str, Callable[[M3Index], object]] = {
    "count": lambda index: index.count(),
    "scroll": lambda index: index.store.document_metadata(),
    "search": lambda index: index.search("fox", k=2),
}


@pytest.mark.parametrize("read", sorted(READS))
def test_a_read_cut_short_by_close_says_the_store_is_closed(
    tiny_encoder: M3Encoder, read: str
) -> None:
    index = M3Index.open(tiny_encoder)
    index.add_texts(["The quick brown fox.", "Berlin is the capital of Germany."])
    backend: Any = index.store._backend
    real = backend.shard

    class ClosedMidRead:  # close() lands after the read took the shard, before it calls it
        def __getattr__(self, name: str) -> Any:
            method = getattr(real, name)

            def call(*args: Any, **kwargs: Any) -> Any:
                backend._closed = True
                real.close()
                return method(*args, **kwargs)

            return call

    backend._shard = ClosedMidRead()
    with pytest.raises(RuntimeError, match="is closed .*open the collection again"):
        READS[read](index)
    backend._shard = None
    index.close()


def test_a_write_that_waited_for_a_close_writes_nothing(
    tiny_encoder: M3Encoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write that waited for the write lock while another thread closed the store went on:
    it wrote its replace journal into the released folder (another handle may hold it by
    then), failed, and logged an ERROR about a failed clean-up of "0 document(s)"."""
    folder = tmp_path / "db"
    index = M3Index.open(tiny_encoder, folder)
    index.add_texts(["The quick brown fox."], doc_ids=["a"])
    record = ChunkRecord("b", 0, "Berlin.", {}, tiny_encoder.encode(["Berlin."]))
    before = sorted(p.name for p in folder.iterdir())
    index.close()  # (it came first; the write's own lock was taken after)
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="is closed"):
        index.store.upsert([record], replace=True)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
