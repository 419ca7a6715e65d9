"""Values Qdrant refuses (NaN, infinities, unpaired surrogates) are refused before any write.

The embedded engine refused them in the middle of a write, after earlier batches were stored:
a changed document written in the same call was left half old, half new (the reviewer's
repro: 64 new chunks, 26 old ones still served). qdrant-client's local mode stored them, so
the same data worked on one backend only. Both now refuse them up front, naming the value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from m3kit.chunking import NaiveChunker
from m3kit.store import ChunkRecord, M3Index, output_row
from tests.store.conftest import stored_texts

SURROGATE = chr(0xD800)


@pytest.mark.parametrize(
    ("metadata", "text", "named"),
    [
        ({"price": math.nan}, "b text", "metadata of text 1"),
        ({"price": -math.inf}, "b text", "metadata of text 1"),
        ({"note": f"bad {SURROGATE}"}, "b text", "metadata of text 1"),
        ({}, f"b text {SURROGATE}", "text 1 is not valid UTF-8"),
        ({1: "x", "a": 2}, "b text", "metadata of text 1 is not JSON-serialisable"),
    ],
    ids=["nan", "inf", "surrogate-metadata", "surrogate-text", "mixed-keys"],
)
def test_a_bad_value_leaves_every_document_as_it_was(
    open_index: Callable[..., M3Index],
    tiny_encoder: Any,
    metadata: dict[str, Any],
    text: str,
    named: str,
) -> None:
    index = open_index(tiny_encoder)
    chunker = NaiveChunker(tiny_encoder, chunk_size=8)
    old = " ".join(f"OLD sentence number {i} apple banana." for i in range(30))
    index.add_texts([old], [{"v": 1}], ["A"], chunker=chunker)
    before = stored_texts(index)
    assert len(before["A"]) > 64  # more than one write batch: a mid-write refusal split it
    new = " ".join(f"NEW sentence number {i} apple banana." for i in range(25))
    with pytest.raises(ValueError, match=named):
        index.add_texts([new, text], [{"v": 1}, metadata], ["A", "B"], chunker=chunker)
    assert stored_texts(index) == before


def test_upsert_checks_every_record_before_writing(
    open_index: Callable[..., M3Index], tiny_encoder: Any
) -> None:
    index = open_index(tiny_encoder)
    texts = [f"document number {i}" for i in range(70)]
    out = tiny_encoder.encode(texts)
    records = [
        ChunkRecord(f"d{i}", 0, t, {"i": i}, output_row(out, i)) for i, t in enumerate(texts)
    ]
    bad = ChunkRecord("d69", 0, texts[69], {"i": math.nan}, output_row(out, 69))
    with pytest.raises(ValueError, match=r"metadata of record 'd69'#0 is not JSON"):
        index.store.upsert([*records[:69], bad], batch_size=8)
    assert index.count() == 0
    bad_text = ChunkRecord("d69", 0, f"x {SURROGATE}", {}, output_row(out, 69))
    with pytest.raises(ValueError, match=r"text of record 'd69'#0 is not valid UTF-8"):
        index.store.upsert([*records[:69], bad_text], batch_size=8)
    assert index.count() == 0
    index.store.upsert(records, batch_size=8)
    assert index.count() == 70
