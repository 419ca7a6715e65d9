"""``from_encoder`` keeps the precision the encoder was asked for, not the one ``auto`` chose on
this machine: pickled and loaded on another CPU class (bf16 native here, emulated and ~5x
slower there; or the reverse), ``auto`` is decided again by the hardware it loads on."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from langchain_m3 import M3Embeddings
from m3kit import M3Encoder
from m3kit.precision import Precision


@pytest.mark.parametrize(("asked", "kept"), [(None, Precision.AUTO), ("fp32", Precision.FP32)])
def test_from_encoder_keeps_the_precision_asked_for(
    tiny_m3_path: Path, asked: str | None, kept: Precision
) -> None:
    encoder = M3Encoder.from_pretrained(tiny_m3_path, **({"dtype": asked} if asked else {}))
    embeddings = M3Embeddings.from_encoder(encoder)
    assert embeddings.dtype is kept
    again = pickle.loads(pickle.dumps(embeddings))
    assert again.dtype is kept
    assert again.encoder.requested_precision is kept
    assert again.embed_query("a river") == pytest.approx(
        embeddings.embed_query("a river"), abs=1e-2
    )


def test_from_encoder_keeps_no_query_instruction_over_the_checkpoints_own(
    instruction_m3_path: Path,
) -> None:
    """An encoder loaded with ``query_instruction=""`` from a checkpoint declaring one has
    none; its pickle reloaded with ``None`` ("the checkpoint's own") and failed as another
    model."""
    encoder = M3Encoder.from_pretrained(instruction_m3_path, query_instruction="")
    again = pickle.loads(pickle.dumps(M3Embeddings.from_encoder(encoder)))
    assert again.encoder.query_instruction is None
    with_own = M3Embeddings.from_encoder(M3Encoder.from_pretrained(instruction_m3_path))
    assert pickle.loads(pickle.dumps(with_own)).encoder.query_instruction == "query: "
