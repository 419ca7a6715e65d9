"""Fine-tuning keeps transformers' ``Trainer`` on one GPU on a machine with several.

With two or more visible GPUs the ``Trainer`` wrapped the model in ``nn.DataParallel``, which
splits every batch tensor along its first axis: a batch's queries and passages are separate
tensors of different lengths, so each GPU got queries with other queries' passages and the
loss failed on a shape mismatch (the batch size would also have doubled). No GPU here: the
arguments' GPU count is set as transformers sets it on such a machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from transformers import TrainingArguments
from transformers.training_args import ParallelMode

from m3kit.finetune import M3Finetuner, TrainingExample, training_loop
from m3kit.finetune.run_checks import one_device
from tests.finetune.conftest import tiny_finetune_config


def test_several_visible_gpus_train_on_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True)
    args._n_gpu = 2  # what _setup_devices sets with two visible GPUs
    assert args.parallel_mode is ParallelMode.NOT_DISTRIBUTED  # the Trainer's DataParallel
    assert args.train_batch_size == 8
    with caplog.at_level(logging.WARNING, logger="m3kit.finetune.run_checks"):
        one_device(args)
    assert args.n_gpu == 1
    assert args.parallel_mode is ParallelMode.NOT_PARALLEL
    assert args.train_batch_size == 4
    assert "2 GPUs visible" in caplog.text and "CUDA_VISIBLE_DEVICES" in caplog.text
    one_device(args)  # one GPU (or none): left as it is
    assert args.n_gpu == 1


def test_a_run_keeps_its_trainer_on_one_device(
    tiny_m3_path: Path,
    tmp_path: Path,
    toy_examples: list[TrainingExample],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []

    def spy(args: TrainingArguments) -> None:
        args._n_gpu = 2
        one_device(args)
        seen.append(args.n_gpu)

    monkeypatch.setattr(training_loop, "one_device", spy)
    M3Finetuner(tiny_finetune_config(tiny_m3_path, tmp_path / "ft")).fit(toy_examples)
    assert seen == [1]
