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
