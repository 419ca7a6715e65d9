"""``index_with_ray`` refuses a changed encoder or collection before any actor starts.

Its first write checked them (as every ``M3Store.upsert`` does), but only after the actors had
loaded their models and encoded the first batch: minutes of work on a large model, thrown
away. Nothing was written either way; now nothing is encoded either.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from m3kit import EncoderChangedError, FingerprintMismatchError, M3Encoder
from m3kit.store import M3Index
from m3kit.store.collection_record import _write

pytest.importorskip("ray")

from m3kit.distributed import ray_queue
from m3kit.distributed.ray_pipeline import ChunkerSpec, index_with_ray

ROWS = [{"doc_id": "a", "text": "Alpha."}, {"doc_id": "b", "text": "Beta."}]


@pytest.fixture
def no_actors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the Ray dataset (and so any actor) is built."""

    def built(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the Ray dataset was built: actors would load and encode")

    monkeypatch.setattr(ray_queue.DocumentQueue, "dataset", built)


def test_an_encoder_changed_in_memory_is_refused_before_any_actor(
    tiny_m3_path: Path, tmp_path: Path, no_actors: None
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with M3Index.open(enc, tmp_path / "db", collection="c") as index:
        with torch.no_grad():
            next(enc.model.parameters()).add_(0.01)  # trained in place after opening
        with pytest.raises(EncoderChangedError, match="changed in memory"):
            index_with_ray(index, ROWS, chunker=ChunkerSpec("naive"), num_actors=1)
        assert index.store.count() == 0


def test_a_collection_re_encoded_elsewhere_is_refused_before_any_actor(
    tiny_m3_path: Path, tmp_path: Path, no_actors: None
) -> None:
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    with M3Index.open(enc, tmp_path / "db", collection="c") as index:
        index.add_texts(["Gamma."], doc_ids=["g"])
        other = dataclasses.replace(index.fingerprint, weights="files-sha256:another")
        _write(index.store, other)  # another process re-encoded it and recorded its encoder
        with pytest.raises(FingerprintMismatchError, match="nothing was encoded or written"):
            index_with_ray(index, ROWS, chunker=ChunkerSpec("naive"), num_actors=1)
        assert index.store.count() == 1


def test_a_truncated_document_is_refused_before_any_batch_is_encoded(
    tiny_m3_path: Path, tmp_path: Path, no_actors: None
) -> None:
    """With ``truncation="error"`` the batch encoding the long document raised, after the
    batches before it were written (10 of 12 documents stored, where ``add_texts`` stores 0)."""
    from m3kit.errors import TruncationError

    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32", max_length=16)
    rows = [{"doc_id": f"d{i}", "text": f"Short {i}."} for i in range(11)]
    rows.append({"doc_id": "long", "text": "word " * 200})
    with M3Index.open(enc, tmp_path / "db", collection="c") as index:
        with pytest.raises(TruncationError, match="document 'long'"):
            index_with_ray(
                index, rows, chunker=ChunkerSpec("whole"), docs_per_batch=2, truncation="error"
            )
        assert index.store.count() == 0


@pytest.mark.parametrize("writer", ["ray", "add_texts"])
def test_a_value_a_payload_index_would_hide_is_refused_before_any_is_encoded(
    tiny_m3_path: Path, tmp_path: Path, no_actors: None, writer: str
) -> None:
    """A write checked its own batch only: Ray stored 10 of 12 documents before refusing the
    last one's ``price: 1.5`` on an integer index, ``add_texts`` 64 of 70 (one write group)."""
    enc = M3Encoder.from_pretrained(tiny_m3_path, dtype="fp32")
    count = 12 if writer == "ray" else 70
    texts = [f"Document {i}." for i in range(count)]
    metas: list[dict[str, Any]] = [{"price": i} for i in range(count - 1)] + [{"price": 1.5}]
    ids = [f"d{i}" for i in range(count)]
    indexes = {"price": "integer"}
    with M3Index.open(enc, tmp_path / "db", collection="c", payload_indexes=indexes) as index:
        with pytest.raises(ValueError, match=f"document 'd{count - 1}'.*non-integer"):
            if writer == "ray":
                rows = [
                    {"doc_id": i, "text": t, "metadata": m}
                    for i, t, m in zip(ids, texts, metas, strict=True)
                ]
                index_with_ray(index, rows, chunker=ChunkerSpec("whole"), docs_per_batch=2)
            else:
                index.add_texts(texts, metas, ids)
        assert index.store.count() == 0
