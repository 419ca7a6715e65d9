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


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("pooling", "CLS", "pooling must be one of cls, mean, max"),
        ("pooling", "weightedmean", "pooling must be one of cls, mean, max"),
        ("max_length", "512", "max_length must be an integer >= 2"),
        ("max_length", 512.5, "max_length must be an integer >= 2"),
        ("max_length", -5, "max_length must be an integer >= 2"),
        ("max_length", True, "max_length must be an integer >= 2"),
        ("query_instruction", 5, "query_instruction must be a string"),
        ("format_version", 2, "format_version 2 was written by a newer m3kit"),
        ("format_version", "1", "format_version must be an integer >= 1"),
    ],
)
def test_a_bad_m3kit_json_value_is_an_error_naming_the_file_and_field(
    tiny_copy: Path, field: str, value: object, match: str
) -> None:
    """A hand-edited m3kit.json failed as a bare ValueError / TypeError (a string length at
    the first encode), loaded 512.5 as 512, and an integer instruction failed at encode."""
    import json

    from m3kit.checkpoint import resolve_checkpoint

    path = tiny_copy / "m3kit.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config[field] = value
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(CheckpointError, match=rf"m3kit\.json: {match}"):
        resolve_checkpoint(tiny_copy)


def test_m3kit_json_may_leave_every_value_unset(tiny_copy: Path) -> None:
    import json

    from m3kit.checkpoint import resolve_checkpoint

    (tiny_copy / "m3kit.json").write_text(
        json.dumps({"pooling": "mean", "query_instruction": None, "max_length": None}),
        encoding="utf-8",
    )
    info = resolve_checkpoint(tiny_copy)
    assert (info.pooling.value, info.query_instruction, info.max_length) == ("mean", None, 8192)


@pytest.mark.parametrize("name", ["colbert_linear.pt", "sparse_linear.pt"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_head_file_with_non_finite_weights_is_an_error_naming_it(
    tiny_copy: Path, name: str, bad: float
) -> None:
    """A diverged fine-tune's NaN head loaded: ColBERT vectors came out NaN and every sparse
    weight failed the ``> min_weight`` test (empty sparse vectors), without a word."""
    from m3kit.heads import load_state_dict_safely

    state = load_state_dict_safely(tiny_copy / name)
    state["weight"][0, 0] = bad
    torch.save(state, tiny_copy / name)
    with pytest.raises(CheckpointError, match=rf"{name}.*weight.*not finite"):
        M3Encoder.from_pretrained(tiny_copy, dtype="fp32")


@pytest.mark.parametrize("weights", [None, "adapter_model.safetensors", "adapter_model.bin"])
def test_a_folder_holding_a_peft_adapter_is_refused_naming_it(
    tiny_copy: Path, weights: str | None
) -> None:
    """transformers (peft installed) applied an ``adapter_config.json`` it found: the folder
    loaded as the base model that file names plus the adapter, not the weights it holds."""
    from m3kit.checkpoint import resolve_checkpoint
    from m3kit.model import M3Model

    info = resolve_checkpoint(tiny_copy)
    config = tiny_copy / "adapter_config.json"
    config.write_text('{"peft_type": "LORA", "base_model_name_or_path": "other"}')
    names = ["adapter_config.json"]
    if weights is not None:
        (tiny_copy / weights).write_bytes(b"lora weights")
        names.append(weights)
    message = rf"holds a PEFT adapter \({', '.join(names)}\).*merge_and_unload\(\)"
    with pytest.raises(CheckpointError, match=message):
        M3Encoder.from_pretrained(tiny_copy)
    with pytest.raises(CheckpointError, match=message):  # resolved before the adapter came
        M3Model.from_checkpoint(info)


def test_adapter_weights_without_their_config_load(tiny_copy: Path) -> None:
    """transformers applies an adapter only through ``adapter_config.json``: leftover adapter
    weights alone change nothing, so the folder loads (it was refused, naming that file)."""
    before = M3Encoder.from_pretrained(tiny_copy).encode(["a text"]).dense
    (tiny_copy / "adapter_model.safetensors").write_bytes(b"left over")
    after = M3Encoder.from_pretrained(tiny_copy).encode(["a text"]).dense
    assert (before == after).all()
