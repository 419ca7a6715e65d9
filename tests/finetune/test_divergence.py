"""A diverged fine-tune (NaN / inf loss or weights) stops with an error and saves nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from m3kit.errors import TrainingDivergedError
from m3kit.finetune import FinetuneConfig, LossConfig, M3Finetuner, TrainingExample
from tests.finetune.conftest import tiny_finetune_config


def _nan_backbone_copy(src: Path, out: Path) -> Path:
    """``src`` with a NaN in its backbone (heads intact: their files load)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, out)
    weights = load_file(str(out / "model.safetensors"))
    weights["embeddings.LayerNorm.weight"][0] = float("nan")
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_a_nan_start_backbone_stops_at_step_1_and_saves_nothing(
    tiny_m3_path: Path, tmp_path: Path, toy_examples: list[TrainingExample]
) -> None:
    start = _nan_backbone_copy(tiny_m3_path, tmp_path / "nan_start")
    out = tmp_path / "ft"
    with pytest.raises(TrainingDivergedError, match=r"not finite \(nan\) at step 1 ") as info:
        M3Finetuner(tiny_finetune_config(start, out)).fit(toy_examples)
    assert "dense=nan" in str(info.value) and "nothing was saved" in str(info.value)
    assert not out.exists()


def test_a_loss_going_non_finite_mid_run_names_that_step(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import m3kit.finetune.training_loop as loop

    real = loop.m3_loss
    calls: list[int] = []

    def blows_up_on_the_third_batch(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            out.terms["total"] = float("inf")
        return out

    monkeypatch.setattr(loop, "m3_loss", blows_up_on_the_third_batch)
    out = tmp_path / "ft"
    # 2 batches per optimiser step: the third batch is the first of step 2
    cfg = tiny_finetune_config(tiny_m3_path, out, gradient_accumulation_steps=2, batch_size=2)
    with pytest.raises(TrainingDivergedError, match=r"\(inf\) at step 2 \(batch 3\)"):
        M3Finetuner(cfg).fit(toy_examples)
    assert len(calls) == 3 and not out.exists()


def test_non_finite_weights_after_the_last_step_are_not_saved(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_step = torch.optim.AdamW.step

    def step_then_overflow(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        result = real_step(self, *args, **kwargs)  # type: ignore[arg-type]
        with torch.no_grad():
            self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_overflow)
    out = tmp_path / "ft"
    cfg = tiny_finetune_config(tiny_m3_path, out, max_steps=1)
    with pytest.raises(TrainingDivergedError, match=r"after 1 step\(s\).*not finite") as info:
        M3Finetuner(cfg).fit(toy_examples)
    assert "holds NaN or inf" in str(info.value) and str(out) in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["learning_rate", "head_learning_rate", "temperature"])
def test_non_finite_rates_and_temperatures_are_refused(
    tmp_path: Path, name: str, value: float
) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be a finite number > 0, got {value}"):
        FinetuneConfig(model="m", output_path=tmp_path, **{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["temperature", "sparse_temperature", "colbert_temperature"])
def test_loss_config_refuses_a_nan_temperature(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be a finite number > 0, got nan"):
        LossConfig(**{name: float("nan")})  # type: ignore[arg-type]
