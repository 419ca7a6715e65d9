"""An index refuses to write or search once its encoder changed in memory.

An index takes its encoder's fingerprint when opened and stamps it on every point. Training
``encoder.model`` in place afterwards (or giving it other weights, or reassigning
``max_length``) used to go unnoticed: new vectors of other weights were written, and queries of
other weights compared, as the collection's encoder's: a silently mixed collection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from m3kit import EncoderChangedError, FingerprintMismatchError, M3Encoder
from m3kit.store import ChunkRecord, M3Index

TEXTS = ["late chunking keeps context", "sparse weights per token", "colbert scores tokens"]


def _train_step(model: Any) -> None:
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01)
    torch.optim.AdamW(model.parameters(), lr=0.1).step()


def _record(index: M3Index) -> ChunkRecord:
    out = index.encoder.encode(["a new text"])
    return ChunkRecord(doc_id="new", chunk_index=0, text="a new text", metadata={}, vectors=out)


def test_an_index_refuses_writes_and_searches_after_its_encoder_trained(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with M3Index.open(enc, tmp_path / "db") as index:
        index.add_texts(TEXTS)
        assert len(index.search("context", k=1)) == 1
        _train_step(enc.model)  # the user's own training loop, on the live encoder
        record = _record(index)
        calls: list[Any] = [
            lambda: index.add_texts(["a new text"]),
            lambda: index.search("context"),
            lambda: index.store.upsert([record]),  # what the adapters write through
            lambda: index.store.query(dense=np.ones(enc.dense_dim, dtype=np.float32)),
        ]
        for call in calls:
            with pytest.raises(EncoderChangedError, match=r"changed in memory") as err:
                call()
            assert "parameter backbone." in str(err.value) and "weights" in str(err.value)
        assert index.count() == len(TEXTS)
        assert isinstance(err.value, FingerprintMismatchError)  # caught where those are


def test_a_setting_reassigned_after_opening_is_refused(tiny_m3_path: Path) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with M3Index.open(enc) as index:
        index.add_texts(TEXTS)
        enc.max_length = 4
        with pytest.raises(EncoderChangedError, match="max_length"):
            index.add_texts(["a longer text cut at another length than the others"])
        enc.max_length = index.fingerprint.max_length  # undone: accepted again
        index.add_texts(["back as it was"])
        assert index.count() == len(TEXTS) + 1


def test_a_changed_encoder_opens_the_collection_only_to_reindex_it(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with M3Index.open(enc, tmp_path / "db") as index:
        index.add_texts(TEXTS)
    _train_step(enc.model)
    with pytest.raises(FingerprintMismatchError, match="weights"):
        M3Index.open(enc, tmp_path / "db")
    with M3Index.open(enc, tmp_path / "db", reindex=True) as index:
        assert index.fingerprint.weights.startswith("tensors-sha256:")
        assert index.count() == len(TEXTS)
        assert len(index.search("context", k=1)) == 1
