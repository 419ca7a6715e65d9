"""``from_encoder`` keeps the precision the encoder was asked for, not the one ``auto`` chose on
this machine: ``to_dict`` / ``from_dict`` (or a pickle) on another CPU class decides ``auto``
again there."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaindex_m3 import M3Embedding
from m3kit import M3Encoder
from m3kit.precision import Precision


@pytest.mark.parametrize(("asked", "kept"), [(None, Precision.AUTO), ("fp32", Precision.FP32)])
def test_from_encoder_keeps_the_precision_asked_for(
    tiny_m3_path: Path, asked: str | None, kept: Precision
) -> None:
    encoder = M3Encoder.from_pretrained(tiny_m3_path, **({"dtype": asked} if asked else {}))
    embedding = M3Embedding.from_encoder(encoder)
    assert embedding.dtype is kept
    assert embedding.to_dict()["dtype"] == kept.value
    again = M3Embedding.from_dict(embedding.to_dict())
    assert again.dtype is kept
