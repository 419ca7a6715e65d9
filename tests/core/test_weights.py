"""Weight digests: files replaced in place are read again; a model is never named by files it
was not loaded from."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from m3kit import M3Encoder
from m3kit.testing import build_tiny_m3_checkpoint
from m3kit.weights import _weight_files, model_weights_digest, weights_digest


def _replace_keeping_mtimes(target: Path, source: Path) -> None:
    """Put ``source``'s weight files in place of ``target``'s with the old mtimes, as
    ``rsync -a`` or ``tar x`` of a same-sized checkpoint do (a new file renamed over the old
    one: a model loaded from the old file keeps its weights)."""
    for old in _weight_files(target):
        st = old.stat()
        new = source / old.name
        assert new.stat().st_size == st.st_size, "the test needs same-sized files"
        tmp = old.with_name(old.name + ".new")
        shutil.copyfile(new, tmp)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        tmp.replace(old)


@pytest.fixture
def two_checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    return (
        build_tiny_m3_checkpoint(tmp_path / "a", seed=0),
        build_tiny_m3_checkpoint(tmp_path / "b", seed=1),
    )


def test_files_replaced_with_their_mtime_kept_are_digested_again(
    two_checkpoints: tuple[Path, Path],
) -> None:
    a, b = two_checkpoints
    first, of_b = weights_digest(None, a), weights_digest(None, b)
    assert first != of_b
    _replace_keeping_mtimes(a, b)
    assert weights_digest(None, a) == of_b


def test_a_loaded_model_is_not_named_by_files_replaced_after_loading(
    two_checkpoints: tuple[Path, Path],
) -> None:
    a, b = two_checkpoints
    enc = M3Encoder.from_pretrained(a, dtype="fp32")
    loaded = model_weights_digest(enc.model)
    assert loaded == weights_digest(None, a) and loaded.startswith("files-sha256:")
    _replace_keeping_mtimes(a, b)
    now = model_weights_digest(enc.model)
    assert now.startswith("tensors-sha256:"), "the model still holds a's weights, not b's files"
    assert now != weights_digest(None, b)
