"""Training on CPU runs inside m3kit.heap.keep_freed_memory unless told not to, and the
allocator setting changes no number: the same seed trains the same weights either way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from m3kit.finetune import M3Finetuner, TrainingExample
from m3kit.heads import load_state_dict_safely
from tests.finetune.conftest import tiny_finetune_config
from tests.heap_spy import KeepFreedMemorySpy


def test_cpu_training_keeps_freed_memory_by_default_and_trains_the_same_weights(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from m3kit.finetune import training_loop

    real_forward = training_loop.TrainingModule.forward_heads
    inside: list[bool] = []
    trainers: list[transformers.Trainer] = []
    moments_at_exit: list[int] = []
    real_train = transformers.Trainer.train

    def spy_train(self: transformers.Trainer, *args: object, **kwargs: object) -> object:
        trainers.append(self)
        return real_train(self, *args, **kwargs)  # type: ignore[arg-type]

    def optimizer_moments() -> None:
        # freed inside the block, so its trim returns the optimizer's memory
        optimizer = trainers[-1].optimizer
        assert optimizer is not None
        moments_at_exit.append(len(optimizer.state))

    keep = KeepFreedMemorySpy(training_loop.keep_freed_memory, on_exit=optimizer_moments)

    def spy_forward(self: training_loop.TrainingModule, ids: torch.Tensor, mask: torch.Tensor):  # type: ignore[no-untyped-def]
        inside.append(keep.inside)
        return real_forward(self, ids, mask)

    monkeypatch.setattr(training_loop, "keep_freed_memory", keep)
    monkeypatch.setattr(transformers.Trainer, "train", spy_train)
    monkeypatch.setattr(training_loop.TrainingModule, "forward_heads", spy_forward)
    kept = M3Finetuner(tiny_finetune_config(tiny_m3_path, tmp_path / "kept")).fit(toy_examples)
    assert keep.asked == [True] and inside and all(inside) and moments_at_exit == [0]
    keep.asked.clear()
    off = tiny_finetune_config(tiny_m3_path, tmp_path / "off", keep_freed_memory=False)
    plain = M3Finetuner(off).fit(toy_examples)
    assert keep.asked == [False]
    a = load_state_dict_safely(kept.path / "model.safetensors")
    b = load_state_dict_safely(plain.path / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
