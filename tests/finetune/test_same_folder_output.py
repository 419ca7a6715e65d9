"""A run whose ``output_path`` is the folder of its start model (``M3FinetuneEngine``'s second
``finetune()`` call, ``m3kit finetune --model out --output out``).

transformers maps the start model's safetensors file into memory, so the loaded tensors kept
reading that file: the save at the end replaces it, and the weights a run had not trained
(frozen layers) were only as safe as the system's handling of a removed mapped file. The
start model now holds its weights in memory of its own when it is saved where it came from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from m3kit.finetune import M3Finetuner, TrainingExample
from m3kit.finetune.training_loop import prepare_training
from tests.finetune.conftest import tiny_finetune_config


def _overwrite_in_place(path: Path) -> None:
    """Zero the file's tensor data without giving it a new inode (a rewrite in place)."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.seek(size // 4)
        fh.write(b"\0" * (size - size // 4))
        fh.flush()
        os.fsync(fh.fileno())


def test_a_start_model_saved_where_it_came_from_no_longer_reads_its_files(
    tiny_m3_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_m3_path, folder)
    setup = prepare_training(tiny_finetune_config(folder, folder), [])
    loaded = {k: v.clone() for k, v in setup.model.state_dict().items()}
    _overwrite_in_place(folder / "model.safetensors")
    changed = [k for k, v in setup.model.state_dict().items() if not torch.equal(v, loaded[k])]
    assert changed == []


def test_training_into_the_start_folder_keeps_the_frozen_layers(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_m3_path, folder)
    start = load_file(str(folder / "model.safetensors"))
    cfg = tiny_finetune_config(folder, folder, frozen_layers=1)
    result = M3Finetuner(cfg).fit(toy_examples)
    assert result.path == folder
    saved = load_file(str(folder / "model.safetensors"))
    frozen = [k for k in start if k.startswith(("embeddings.", "encoder.layer.0."))]
    trained = [k for k in start if k.startswith("encoder.layer.1.")]
    assert frozen and trained
    for key in frozen:
        torch.testing.assert_close(saved[key], start[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(saved[k], start[k]) for k in trained)
