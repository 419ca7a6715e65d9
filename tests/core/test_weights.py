"""Weight digests: files replaced in place are read again; a model is never named by files it
was not loaded from."""

from __future__ import annotations

from pathlib import Path

from m3kit import M3Encoder
from m3kit.testing import replace_weight_files
from m3kit.weights import model_weights_digest, weights_digest


def test_files_replaced_with_their_mtime_kept_are_digested_again(
    two_checkpoints: tuple[Path, Path],
) -> None:
    a, b = two_checkpoints
    first, of_b = weights_digest(None, a), weights_digest(None, b)
    assert first != of_b
    replace_weight_files(a, b)
    assert weights_digest(None, a) == of_b


def test_a_loaded_model_is_not_named_by_files_replaced_after_loading(
    two_checkpoints: tuple[Path, Path],
) -> None:
    a, b = two_checkpoints
    enc = M3Encoder.from_pretrained(a, dtype="fp32")
    loaded = model_weights_digest(enc.model)
    assert loaded == weights_digest(None, a) and loaded.startswith("files-sha256:")
    replace_weight_files(a, b)
    now = model_weights_digest(enc.model)
    assert now.startswith("tensors-sha256:"), "the model still holds a's weights, not b's files"
    assert now != weights_digest(None, b)
