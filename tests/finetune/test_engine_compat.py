"""``M3FinetuneEngine`` called as LlamaIndex's ``SentenceTransformersFinetuneEngine`` is, and
a ``torch.device`` as the training device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from m3kit.finetune import M3Finetuner, TrainingExample
from tests.finetune.conftest import tiny_finetune_config


class _Stop(Exception):
    """Raised by the spies below once they have what the test checks."""


def test_a_torch_device_cpu_trains_on_the_cpu(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``device=torch.device("cpu")`` (what LlamaIndex's engine and sentence-transformers
    take) compared unequal to ``"cpu"``, so the Trainer was not told to use the CPU and
    trained on the GPU where there is one."""
    import transformers

    seen: dict[str, Any] = {}

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(transformers, "TrainingArguments", spy)
    cfg = tiny_finetune_config(tiny_m3_path, tmp_path / "ft", device=torch.device("cpu"))
    assert cfg.device == "cpu"
    with pytest.raises(_Stop):
        M3Finetuner(cfg).fit(toy_examples)
    assert seen["use_cpu"] is True
