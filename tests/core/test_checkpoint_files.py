"""Damaged checkpoint files: every one is a CheckpointError naming the file, never a load.

A head or backbone file that is truncated, a Git LFS pointer (a clone without ``git lfs``),
the wrong shape, or missing a tensor must not load with random weights in its place.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from m3kit import CheckpointError, M3Encoder

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4f2a6c1e0c55e1b7c6d6f1a1e3f0b0d0c2e7c5b4a3f2e1d0c9b8a7f6e5d4c3b2\n"
    "size 2271064456\n"
)


@pytest.fixture
def tiny_copy(tiny_m3_path: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_m3_path, dst)
    return dst


def _save(state: dict[str, torch.Tensor]) -> Callable[[Path], None]:
    return lambda path: torch.save(state, path)


@pytest.mark.parametrize(
    ("name", "write"),
    [
        # hidden size 32: sparse_linear is Linear(32, 1), colbert_linear Linear(32, 32)
        ("sparse_linear.pt", _save({"weight": torch.zeros(1, 16), "bias": torch.zeros(1)})),
        ("sparse_linear.pt", _save({"weight": torch.zeros(2, 32), "bias": torch.zeros(2)})),
        ("sparse_linear.pt", _save({"weight": torch.zeros(1, 32)})),
        ("colbert_linear.pt", _save({"weight": torch.zeros(32, 32), "bias": torch.zeros(31)})),
        ("colbert_linear.pt", _save({"weight": torch.zeros(32, 32)})),
        (
            "colbert_linear.pt",
            _save({"weight": torch.zeros(32, 32), "bias": torch.zeros(32), "x": torch.zeros(1)}),
        ),
    ],
    ids=[
        "sparse-in-16",
        "sparse-out-2",
        "sparse-no-bias",
        "colbert-bias-31",
        "colbert-no-bias",
        "colbert-extra-key",
    ],
)
def test_a_head_file_that_does_not_fit_is_an_error_naming_that_file(
    tiny_copy: Path, name: str, write: Callable[[Path], None]
) -> None:
    write(tiny_copy / name)
    with pytest.raises(CheckpointError, match=rf"{name}\b.*(does not fit|size|key)"):
        M3Encoder.from_pretrained(tiny_copy, dtype="fp32")


@pytest.mark.parametrize("name", ["colbert_linear.pt", "sparse_linear.pt"])
@pytest.mark.parametrize(
    "content", [b"hello", b"abc", b"", b"\x00" * 64], ids=["hello", "abc", "empty", "zeros"]
)
def test_an_unreadable_head_file_is_an_error_naming_it(
    tiny_copy: Path, name: str, content: bytes
) -> None:
    (tiny_copy / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=name):
        M3Encoder.from_pretrained(tiny_copy, dtype="fp32")


def test_a_truncated_head_file_is_an_error_naming_it(tiny_copy: Path) -> None:
    path = tiny_copy / "colbert_linear.pt"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match="colbert_linear.pt"):
        M3Encoder.from_pretrained(tiny_copy, dtype="fp32")


@pytest.mark.parametrize("name", ["colbert_linear.pt", "sparse_linear.pt"])
def test_a_git_lfs_pointer_head_file_says_so(tiny_copy: Path, name: str) -> None:
    (tiny_copy / name).write_text(LFS_POINTER, encoding="utf-8")
    with pytest.raises(CheckpointError, match=rf"{name} is a Git LFS pointer") as info:
        M3Encoder.from_pretrained(tiny_copy, dtype="fp32")
    assert "git lfs pull" in str(info.value)


def _edit_backbone(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _query_weight(state: dict[str, torch.Tensor]) -> str:
    return next(k for k in state if k.endswith("layer.0.attention.self.query.weight"))


def test_a_backbone_missing_a_tensor_is_an_error_not_a_random_layer(tiny_copy: Path) -> None:
    _edit_backbone(tiny_copy, lambda s: s.pop(_query_weight(s)))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*attention\.self\.query"):
        M3Encoder.from_pretrained(tiny_copy, dtype="fp32")


def test_a_backbone_tensor_of_the_wrong_shape_is_a_checkpoint_error(tiny_copy: Path) -> None:
    _edit_backbone(tiny_copy, lambda s: s.update({_query_weight(s): s[_query_weight(s)][:16]}))
    with pytest.raises(CheckpointError, match=str(tiny_copy)):
        M3Encoder.from_pretrained(tiny_copy, dtype="fp32")


@pytest.mark.parametrize("damage", ["lfs", "truncated", "empty"])
def test_a_damaged_backbone_file_is_an_error_naming_it(tiny_copy: Path, damage: str) -> None:
    path = tiny_copy / "model.safetensors"
    if damage == "lfs":
        path.write_text(LFS_POINTER, encoding="utf-8")
    else:
        path.write_bytes(path.read_bytes()[:-100] if damage == "truncated" else b"")
    expected = "is a Git LFS pointer" if damage == "lfs" else "model.safetensors"
    with pytest.raises(CheckpointError, match=expected):
        M3Encoder.from_pretrained(tiny_copy, dtype="fp32")
