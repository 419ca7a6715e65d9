"""Weight digests: files replaced in place are read again; a model is never named by files it
was not loaded from."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_a_loaded_model_is_not_named_by_files_replaced_while_they_are_read(
    two_checkpoints: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save swapping new files in while the loaded model's files were hashed (seconds for
    BGE-M3) gave the model the new files' digest: its ONNX export, built from the old weights
    it holds, was cached under the new checkpoint's key and served to every later load."""
    from m3kit import weights

    a, b = two_checkpoints
    enc = M3Encoder.from_pretrained(a, dtype="fp32")
    read = weights._file_sha256
    swapped: list[bool] = []

    def swap_while_reading(path: Path) -> str:
        if not swapped:  # after the first file is opened, the save's renames land
            swapped.append(True)
            digest = read(path)
            replace_weight_files(a, b)
            return digest
        return read(path)

    monkeypatch.setattr(weights, "_file_sha256", swap_while_reading)
    now = model_weights_digest(enc.model)
    assert swapped and now.startswith("tensors-sha256:")
    monkeypatch.undo()
    assert now != weights_digest(None, b)
    assert weights_digest(None, b) == weights_digest(None, a)  # (no mixed digest was cached)


def test_the_digest_cache_keeps_the_newest_file_states(
    two_checkpoints: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One entry per checkpoint file state ever digested was kept for the life of the process
    (a service loading many checkpoints, or saving fine-tunes again and again, grew it)."""
    from m3kit import weights

    monkeypatch.setattr(weights, "_FILES_KEPT", 1)
    a, b = two_checkpoints
    first = weights_digest(None, a)
    weights_digest(None, b)
    assert len(weights._by_files) == 1
    assert weights_digest(None, a) == first  # digested again, the same
