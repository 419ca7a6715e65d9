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

from m3kit.distributed import ray_pipeline
from m3kit.distributed.ray_pipeline import ChunkerSpec, index_with_ray

ROWS = [{"doc_id": "a", "text": "Alpha."}, {"doc_id": "b", "text": "Beta."}]


@pytest.fixture
def no_actors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the Ray dataset (and so any actor) is built."""

    def built(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the Ray dataset was built: actors would load and encode")

    monkeypatch.setattr(ray_pipeline._Queue, "dataset", built)


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
