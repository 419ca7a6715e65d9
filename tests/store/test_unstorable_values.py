"""Values Qdrant refuses (NaN, infinities, unpaired surrogates) are refused before any write.

The embedded engine refused them in the middle of a write, after earlier batches were stored:
a changed document written in the same call was left half old, half new (the reviewer's
repro: 64 new chunks, 26 old ones still served). qdrant-client's local mode stored them, so
the same data worked on one backend only. Both now refuse them up front, naming the value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from m3kit import M3Encoder, M3Output
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
        ({1: "x", "1": 2}, "b text", "metadata of text 1 has the key '1' twice"),
    ],
    # (int and str keys that are distinct JSON keys are stored: test_metadata_shape.py)
    ids=["nan", "inf", "surrogate-metadata", "surrogate-text", "one-json-key"],
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
    with pytest.raises(ValueError, match=r"metadata of record 'd69'#0\['i'\] \(nan\) is not JSON"):
        index.store.upsert([*records[:69], bad], batch_size=8)
    assert index.count() == 0
    bad_text = ChunkRecord("d69", 0, f"x {SURROGATE}", {}, output_row(out, 69))
    with pytest.raises(ValueError, match=r"text of record 'd69'#0 is not valid UTF-8"):
        index.store.upsert([*records[:69], bad_text], batch_size=8)
    assert index.count() == 0
    index.store.upsert(records, batch_size=8)
    assert index.count() == 70


def _poisoned(row: M3Output, head: str, value: float) -> M3Output:
    """``row`` with one ``value`` (NaN / inf) in its ``head`` vector."""
    dense, colbert = row.dense.copy(), row.colbert[0].copy()
    sparse = row.sparse[0]
    if head == "dense":
        dense[0, 0] = value
    else:
        colbert[-1, 0] = value
    return dataclasses.replace(row, _dense=dense, _sparse=(sparse,), _colbert=(colbert,))


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("head", ["dense", "colbert"])  # (a SparseVector refuses them itself)
def test_non_finite_vectors_are_refused_before_any_write_naming_the_text(
    open_index: Callable[..., M3Index], tiny_encoder: Any, head: str, value: float
) -> None:
    index = open_index(tiny_encoder)
    texts = [f"document number {i}" for i in range(20)]
    out = tiny_encoder.encode(texts)
    records = [ChunkRecord(f"d{i}", 0, t, {}, output_row(out, i)) for i, t in enumerate(texts)]
    records[17] = dataclasses.replace(
        records[17], vectors=_poisoned(records[17].vectors, head, value)
    )
    name = "ColBERT" if head == "colbert" else head
    with pytest.raises(
        ValueError, match=rf"record 'd17'#0 \('document number 17'\) has NaN or infinite {name}"
    ):
        index.store.upsert(records, batch_size=4)
    assert index.count() == 0


def test_an_encoder_giving_nan_vectors_writes_nothing(
    open_index: Callable[..., M3Index], tiny_m3_path: Path
) -> None:
    """A checkpoint with a NaN weight encodes NaN vectors: add_texts refuses them by name."""
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with torch.no_grad():
        encoder.model.backbone.embeddings.LayerNorm.weight[0] = math.nan
    index = open_index(encoder)
    with pytest.raises(ValueError, match=r"\('Jupiter is a gas giant\.'\) has NaN or infinite"):
        index.add_texts(["Jupiter is a gas giant.", "Honeybees dance."])
    assert index.count() == 0


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("head", ["dense", "colbert"])  # (a SparseVector refuses them itself)
def test_non_finite_query_vectors_are_refused_naming_the_head(
    open_index: Callable[..., M3Index], tiny_encoder: Any, head: str, value: float
) -> None:
    """A query an encoder gave NaN / inf for (an fp16 overflow) is refused, as a write is: the
    embedded engine answered it with no hit (or, for ColBERT or sparse, left that head out of
    the scores) and qdrant-client's local mode with NaN scores or its own error, silently
    different."""
    index = open_index(tiny_encoder)
    texts = [f"document number {i}" for i in range(12)]
    index.add_texts(texts)
    q = _poisoned(tiny_encoder.encode(["number 3"], query=True), head, value)
    name = "ColBERT" if head == "colbert" else head
    for fusion in ("rrf", "m3"):
        with pytest.raises(ValueError, match=rf"{name} query vector has NaN or infinite values"):
            index.store.query(
                dense=q.dense[0], sparse=q.sparse[0], colbert=q.colbert[0], k=3, fusion=fusion
            )


def test_a_value_json_refuses_is_named_by_its_path_and_shown() -> None:
    """A 30-column row's bad cell: the message named the row alone, and an unpaired surrogate
    by its position in the JSON of the whole metadata (meaningless to the user)."""
    from m3kit.store.points import plain_json

    cases = [
        ({"row": {"price": math.nan}}, r"text 0\['row'\]\['price'\] \(nan\) is not JSON \(Out"),
        ({"tags": [{"n": np.int64(3)}]}, r"text 0\['tags'\]\[0\]\['n'\] \(np.int64\(3\)\)"),
        (
            {"src": "x" * 300 + SURROGATE},
            r"text 0\['src'\] \(an unpaired surrogate '\\ud800' at character 300 of the "
            r"string\) is not JSON$",
        ),
    ]
    for metadata, message in cases:
        with pytest.raises(ValueError, match=message):
            plain_json(metadata, "metadata of text 0")
