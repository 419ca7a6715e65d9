"""Checks of a fine-tuning run's settings made before any training (a bad setting found at
the save, or mid-run inside the model, wastes the whole run)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3kit.finetune.trainer import FinetuneConfig

__all__ = [
    "check_max_lengths",
    "check_output_path",
    "check_training_device",
    "check_training_precision",
    "one_device",
]

logger = logging.getLogger(__name__)


def check_training_device(device: str) -> None:
    """Refuse a device the run cannot train on, before the start model loads.

    transformers' ``Trainer`` trains on ``cuda:0`` (:func:`one_device`) whatever index is
    named, while ``precision="auto"`` would probe the GPU named: on a
    T4 (0) + A100 (1) machine ``device="cuda:1"`` picked bf16, then trained on the T4, which
    only emulates it. A GPU this machine lacks (``"cuda"`` with a CPU-only torch) failed
    after the start model had loaded, with torch's bare ``AssertionError``.

    Raises:
        ValueError: ``device`` is not a device torch knows, names a CUDA device other than 0
            (the message says how to train on it: ``CUDA_VISIBLE_DEVICES``), or is a CUDA
            or MPS device that is not available here.
    """
    from m3kit.machine import checked_device, parsed_device

    parsed = parsed_device(device)
    if parsed.type == "cuda" and parsed.index not in (None, 0):
        raise ValueError(
            f"device {device!r}: fine-tuning trains on cuda:0 (transformers' Trainer ignores "
            f"the index); to train on GPU {parsed.index}, run with "
            f"CUDA_VISIBLE_DEVICES={parsed.index} and device='cuda'"
        )
    if parsed.type in ("cuda", "mps"):
        checked_device(parsed.type)  # available here (the index is 0 or none: the Trainer's)


def check_training_precision(precision: str, device: str | None) -> None:
    """Refuse fp16 training where the run trains on the CPU (``device="cpu"``, or none given
    on a machine without CUDA), before mining negatives and loading the start model (it was
    refused only then, with BGE-M3 a corpus encoding and a 568M-parameter load later).

    Raises:
        ValueError: As :func:`m3kit.precision.resolve_training_precision` says it.
    """
    import torch

    from m3kit.machine import parsed_device

    if device is None:
        on_cpu = not torch.cuda.is_available()  # as the run picks its device
    else:
        on_cpu = parsed_device(device).type == "cpu"
    if precision == "fp16" and on_cpu:
        raise ValueError("fp16 training needs a GPU; use bf16 (or fp32) on CPU")


def check_output_path(output_path: str | os.PathLike[str]) -> None:
    """Refuse an output path no checkpoint folder can be made at, before any training.

    The save replaces the files of an earlier checkpoint in the folder and keeps the others
    (notes, logs, a README: :meth:`m3kit.model.M3Model.save`), so a folder holding no
    checkpoint (:func:`m3kit.checkpoint.holds_checkpoint`) but files named as a checkpoint's
    (an application's ``config.json``, ``vocab.txt``, ``onnx/``:
    :func:`m3kit.saved_files.replaced_names`) is refused: they would be replaced.

    Raises:
        ValueError: ``output_path`` is empty (it would save into the current directory), or
            it, or a folder above it, is a file (the save at the end of the run would fail),
            or it is a folder that holds no checkpoint but files the save would replace
            (``config.json``, ``vocab.txt``, ``onnx/``...); the message names them.
    """
    from m3kit.checkpoint import holds_checkpoint
    from m3kit.saved_files import replaced_names

    if not os.fspath(output_path):
        raise ValueError(
            "output_path is empty: it would save the checkpoint into the current directory, "
            "among its files; give the folder to save it in"
        )
    path = Path(output_path).expanduser()  # as loading and saving read it
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                where = "" if place == path else f"under {place}, which is "
                raise ValueError(
                    f"output_path {os.fspath(output_path)!r} is {where}a file, not a folder: "
                    "the fine-tuned checkpoint is a folder; give a new or existing folder"
                )
            break
    if path.is_dir() and not holds_checkpoint(path):
        replaced = replaced_names(path)
        clash = sorted(p.name for p in path.iterdir() if p.name in replaced)
        if clash:
            shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
            raise ValueError(
                f"output_path {os.fspath(output_path)!r} holds no model checkpoint (config.json "
                f"with model weights) but files a checkpoint's save would replace ({shown}): "
                "they are not an earlier checkpoint's; give a new folder, one without them, or "
                "a checkpoint's folder to replace that checkpoint"
            )


def check_max_lengths(cfg: FinetuneConfig, tokenizer: Any, positions: int | None) -> None:
    """Refuse a query or passage length with no room for text after the special tokens, or
    longer than the start model's position embeddings (``positions``; ``None``: unknown).

    Hugging Face tokenizers skip truncation at ``max_length`` 0 or 1 (texts would be trained
    whole) and truncate to the special tokens alone at their count (no text trained on); a
    text longer than the positions fails inside the model, mid-training.

    Raises:
        ValueError: Naming the setting.
    """
    specials = int(tokenizer.num_special_tokens_to_add())
    for name in ("query_max_length", "passage_max_length"):
        value = getattr(cfg, name)
        if positions is not None and value > positions:
            raise ValueError(
                f"{name}={value} is longer than the start model can encode ({positions} "
                f"positions); give {name} <= {positions}"
            )
        if value <= max(specials, 1):
            raise ValueError(
                f"{name}={value} leaves no room for text: this tokenizer adds {specials} "
                f"special token(s) to every text; give {name} > {max(specials, 1)}"
            )


def one_device(args: Any) -> None:
    """Keep transformers' ``Trainer`` on one GPU (``cuda:0``) on a machine with several.

    With more than one visible GPU the ``Trainer`` wraps the model in ``nn.DataParallel``,
    which splits every batch tensor along its first axis: a batch's queries and passages are
    separate tensors of different lengths (and ``targets`` index the whole passage list), so
    each GPU got queries with other queries' passages and the loss failed on a shape
    mismatch; the batch size would also have been multiplied by the GPU count.
    ``torchrun`` (one process per GPU) is the way to train on several.

    Args:
        args: The run's ``TrainingArguments`` (its ``n_gpu`` set to 1 when above it).
    """
    if args.n_gpu > 1:
        logger.warning(
            "%d GPUs visible: fine-tuning trains on cuda:0 only (DataParallel would split each "
            "batch's queries from their passages); pick the GPU with CUDA_VISIBLE_DEVICES",
            args.n_gpu,
        )
        args._n_gpu = 1  # what transformers reads for DataParallel and the batch size
