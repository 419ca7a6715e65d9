"""What a fine-tuning run is told (:class:`FinetuneConfig`) and what it returns
(:class:`FinetuneResult`); :class:`~m3kit.finetune.trainer.M3Finetuner` runs it.

Apart from :mod:`m3kit.finetune.trainer` (the file-size guide); both classes are imported
from there too, as before.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from m3kit.encoder_inputs import whole_number
from m3kit.finetune.data import DEFAULT_NEGATIVES
from m3kit.finetune.losses import LossConfig
from m3kit.finetune.run_checks import check_training_device, check_training_precision
from m3kit.finetune.sparse_start import SparseStart
from m3kit.outputs import ALL_HEADS, Head
from m3kit.precision import TRAINING_PRECISIONS

__all__ = ["FLAGEMBEDDING_RECIPE", "FinetuneConfig", "FinetuneResult"]

#: FlagEmbedding's BGE-M3 fine-tuning settings (:meth:`FinetuneConfig.flagembedding`).
FLAGEMBEDDING_RECIPE: dict[str, Any] = {
    "learning_rate": 2e-5,
    "head_learning_rate": None,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "num_negatives": 3,
    "temperature": 0.02,
    "sparse_temperature": None,
    "colbert_temperature": None,
    "ensemble_weights": (1.0, 0.3, 1.0),
    "self_distill": True,
    "symmetric": False,
    "false_negative_margin": None,
    "query_max_length": 64,
    "passage_max_length": 256,
}


#: :class:`FinetuneConfig` settings that count something (``None`` where allowed: unset).
_COUNT_SETTINGS = (
    "frozen_layers",
    "max_steps",
    "batch_size",
    "gradient_accumulation_steps",
    "num_negatives",
    "span_negatives",
    "span_overlap",
    "query_max_length",
    "passage_max_length",
    "logging_steps",
)


@dataclass
class FinetuneConfig:
    """What to train and how.

    Attributes:
        model: Start checkpoint: an M3 checkpoint, or a dense-only BGE / sentence-transformers
            model (it then gets new heads: sparse as ``sparse_start`` says, ColBERT the
            identity projection).
        output_path: Folder of the fine-tuned M3-layout checkpoint.
        heads: Heads to train (loss terms); default all three.
        sparse_start: How a new sparse head (a dense-only ``model``'s) starts:
            :attr:`SparseStart.IDF` (default) fits each token's weight to its inverse
            document frequency over the training passages, from its hidden state (BM25's
            weighting before the first step; :mod:`m3kit.finetune.sparse_start`);
            :attr:`SparseStart.UNIFORM` weights every token 0.1 (plain token overlap, as
            before). On squad_en's validation articles the trained sparse head rose from
            0.7867 to 0.8011 nDCG@10 with ``IDF``. No effect on an M3 checkpoint's own head.
        freeze_encoder: Train the heads only (the backbone stays fixed). Needs sparse or
            ColBERT among ``heads`` (the dense head has no parameters of its own).
        frozen_layers: Keep the token embeddings and the first this many transformer layers
            fixed; backpropagation stops above them, so steps cost less
            (:func:`~m3kit.finetune.layers.freeze_bottom_layers`). 0: train them all.
        epochs: Passes over the training examples.
        max_steps: Stop after this many optimiser steps (overrides ``epochs`` when set).
        batch_size: Queries per step (each brings 1 positive + ``num_negatives`` passages).
        gradient_accumulation_steps: Steps accumulated per optimiser update.
        num_negatives: Hard negatives sampled per query per step (fewer if a row has fewer:
            :meth:`M3Finetuner.fit` counts such rows in a warning). Default 1: held out, 1
            negative scored as 3 did on every head at about half the passages encoded a
            step (``README.md`` "Fine-tuning" has the measurements).
        span_negatives: Span training (:meth:`M3Finetuner.fit_spans`) only (``fit`` refuses
            it): other spans of the positive's window pooled as its negatives. Default 0
            (in-batch negatives only): on squad_en's long documents, 3 in-window negatives
            (the positive's own neighbours) pushed apart the token states late chunking
            shares, and the span-trained model's late chunking fell below its naive chunking
            (``benchmarks/results/late_chunking_span_chunks.md`` vs ``..._noneg.md``).
        span_overlap: Span training only (``fit`` refuses it): text tokens consecutive
            windows of a document share (default ``None``:
            :class:`~m3kit.late_chunking.LateChunker`'s default, an eighth of the window's text
            capacity). Training pools each span from the windows
            the chunker would encode it in, so set ``passage_max_length`` and this to the
            chunker's ``window`` and ``overlap``.
        learning_rate: Peak AdamW learning rate (linear warm-up then decay). ``None`` (the
            default): by the start model's size, 1e-4 below 100M parameters (on
            all-MiniLM-L6-v2 with new heads it beat 2e-5 by 4.1 sparse and 0.4 dense
            nDCG@10 points), else 2e-5 (sentence-transformers' default; FlagEmbedding's
            recipe for BGE-M3)
            (:func:`~m3kit.finetune.training_loop.default_learning_rate`);
            :attr:`FinetuneResult.learning_rate` says which ran.
        head_learning_rate: Peak learning rate of the sparse and ColBERT head layers
            (default: ``learning_rate``); new heads of a dense-only start can move faster
            than the pretrained encoder. Refused when only the dense head is trained.
        warmup_ratio: Share of the steps used for warm-up.
        weight_decay: AdamW weight decay.
        temperature: InfoNCE temperature (BGE-M3: 0.02).
        sparse_temperature: Temperature of the sparse terms (default: ``temperature``);
            refused when the sparse head is not among ``heads``.
        colbert_temperature: Temperature of the ColBERT terms (default: ``temperature``);
            refused when the ColBERT head is not among ``heads``.
        ensemble_weights: ``(dense, sparse, colbert)`` weights of the ensemble score.
        self_distill: Distil the ensemble into each head.
        symmetric: Add the passage -> query InfoNCE term to each head's loss (default on:
            on squad_en validation articles with MiniLM it raised sparse nDCG@10 0.762 ->
            0.780 and ColBERT 0.864 -> 0.867 with lr 1e-4, dense equal within noise;
            ``benchmarks/results/finetune_sweep.md``).
        false_negative_margin: Exclude candidates whose dense score is within this margin of
            the positive's (unlabelled positives); ``None`` keeps every negative.
        query_max_length: Query truncation in tokens.
        passage_max_length: Passage truncation in tokens (:meth:`M3Finetuner.fit_spans`: the
            late chunker's window, special tokens included).
        query_instruction: Prefix for queries (default: the checkpoint's own, if any).
        mask_shared_positives: Never use a copy of a query's positive as its negative (two
            queries of one passage in a batch; a row's negative that another row of its
            query has as positive, :func:`~m3kit.finetune.positives.without_query_positives`).
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast, float32
            master weights; fp16 on GPU only). ``"auto"``: bf16 where it is native (CPUs
            with AVX-512 BF16 or AMX, GPUs 8.0+), fp16 on older GPUs, else fp32
            (:func:`m3kit.precision.resolve_training_precision`). Measured with MiniLM on
            squad_en (1,000 rows, AMX CPU), each against LlamaIndex's engine in its own run:
            bf16 0.44x its time, fp32 0.66x (``finetune_timing_amx_n1.md``,
            ``finetune_timing_fp32_amx_n1.md``), held-out nDCG@10 within 0.1 point per head
            of fp32 (``finetune_bf16_df2e088.md`` against ``finetune_heldout.md``).
        attention_dropout: Dropout on the attention probabilities while training; ``None``
            (default) keeps the checkpoint's own (0.1 for BERT / XLM-R models such as MiniLM
            and BGE-M3). ``0.0`` trades a little quality for speed on CPU, where drawing
            the dropout mask over every ``heads x tokens x tokens`` score is a third of a
            step: MiniLM on squad_en's validation articles (1,000 rows, 3 negatives, bf16,
            AMX CPU) trained 1.5x faster (209.5 s -> 141.8 s) with dense nDCG@10 0.5-0.6
            point lower over two splits (``benchmarks/results/finetune_sweep.md``). The saved
            checkpoint keeps its config's value. Needs an attention with ``query`` / ``key``
            / ``value`` layers and a ``dropout`` (BERT, XLM-R and their kin); others raise.
        keep_freed_memory: Training on CPU under glibc (Linux), keep the memory freed
            tensors leave in the process for the next ones instead of unmapping it
            (:func:`m3kit.heap.keep_freed_memory`): large tensors, such as attention logits
            at 256 tokens, then cost no fresh page faults each step. Faster steps for a
            higher peak resident size, given back when training ends (the README's
            "Fine-tuning" has the measurements). ``False`` leaves glibc as it is.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available); a
            ``torch.device`` is read as its string (``torch.device("cpu")`` -> ``"cpu"``).
            ``"cuda:1"`` and other indices but 0 are refused: transformers' Trainer trains on
            ``cuda:0``; pick the GPU with ``CUDA_VISIBLE_DEVICES``. So is a device that cannot
            run here (``"cuda"`` with a CPU-only torch or no GPU).
        seed: Seeds shuffling, negative sampling and head initialisation: a whole number in
            ``[0, 2**32 - 1]``.
        logging_steps: Log the loss every this many steps.
        show_progress: Show the Trainer's progress bar.
    """

    model: str | os.PathLike[str]
    output_path: str | os.PathLike[str]
    heads: frozenset[Head] = field(default_factory=lambda: ALL_HEADS)
    freeze_encoder: bool = False
    frozen_layers: int = 0
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    num_negatives: int = DEFAULT_NEGATIVES
    span_negatives: int = 0
    span_overlap: int | None = None
    learning_rate: float | None = None
    head_learning_rate: float | None = None
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    temperature: float = 0.02
    sparse_temperature: float | None = None
    colbert_temperature: float | None = None
    ensemble_weights: tuple[float, float, float] = (1.0, 0.3, 1.0)
    self_distill: bool = True
    symmetric: bool = True
    false_negative_margin: float | None = None
    query_max_length: int = 64
    passage_max_length: int = 256
    query_instruction: str | None = None
    mask_shared_positives: bool = True
    precision: str = "auto"
    attention_dropout: float | None = None
    keep_freed_memory: bool = True
    device: str | torch.device | None = None
    seed: int = 42
    logging_steps: int = 10
    show_progress: bool = True
    # (last: the fields before it keep their positions)
    sparse_start: SparseStart | str = SparseStart.IDF

    def __post_init__(self) -> None:
        self.heads = Head.parse(self.heads)
        try:
            self.sparse_start = SparseStart(self.sparse_start)
        except ValueError:
            options = ", ".join(repr(m.value) for m in SparseStart)
            raise ValueError(
                f"sparse_start must be one of {options}, not {self.sparse_start!r}"
            ) from None
        if os.fspath(self.output_path).startswith("~"):
            # as loading expands it: "~/models/ft" was saved into a folder named "~" under
            # the working directory, and loading the returned path read $HOME's (older) model
            self.output_path = os.path.expanduser(os.fspath(self.output_path))
        if isinstance(self.device, torch.device):
            # torch.device("cpu") != "cpu": the run would not be told to stay on the CPU
            self.device = str(self.device)
        if self.device is not None:
            check_training_device(self.device)
        if self.freeze_encoder and self.heads == {Head.DENSE}:
            raise ValueError(
                "freeze_encoder with only the dense head trains nothing: the dense head has no "
                "parameters besides the encoder"
            )
        for name in _COUNT_SETTINGS:  # 1.5 negatives or a 2.5-row batch has no meaning
            if getattr(self, name) is not None:
                setattr(self, name, whole_number(name, getattr(self, name)))
        self._check_seed_and_instruction()
        if self.frozen_layers < 0:
            raise ValueError(f"frozen_layers must be >= 0, got {self.frozen_layers}")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_size and gradient_accumulation_steps must be >= 1")
        for name in ("learning_rate", "head_learning_rate"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if self.head_learning_rate is not None and self.heads == {Head.DENSE}:
            # the dense head has no layers of its own: no parameter would train at this rate
            raise ValueError(
                "head_learning_rate is the learning rate of the sparse and ColBERT head layers, "
                "which are not trained here (heads ['dense']): train a sparse or ColBERT head, "
                "or leave head_learning_rate None"
            )
        for name in ("num_negatives", "span_negatives"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.span_overlap is not None and self.span_overlap < 0:
            raise ValueError(f"span_overlap must be >= 0 (or None), got {self.span_overlap}")
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1), got {self.attention_dropout}")
        if self.precision not in TRAINING_PRECISIONS:
            options = ", ".join(repr(p) for p in TRAINING_PRECISIONS)
            raise ValueError(f"precision must be one of {options}, not {self.precision!r}")
        check_training_precision(self.precision, self.device)
        if not (math.isfinite(self.warmup_ratio) and 0.0 <= self.warmup_ratio <= 1.0):
            # above 1 the warm-up outlasts the run: the peak learning rate is never reached
            raise ValueError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if self.logging_steps < 1:
            raise ValueError(f"logging_steps must be >= 1, got {self.logging_steps}")
        if self.max_steps is not None and self.max_steps < 1:
            # 0 or less was read as "not set": the run trained for its epochs instead
            raise ValueError(
                f"max_steps must be >= 1 (or None: train epochs), got {self.max_steps}"
            )
        if not math.isfinite(self.epochs):  # NaN passed "<= 0" and failed after the load
            raise ValueError(f"epochs must be a finite number, got {self.epochs}")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError("epochs must be > 0 (or give max_steps)")
        self.loss_config()  # validates the loss settings (temperatures, margin)

    def _check_seed_and_instruction(self) -> None:
        """Refuse a seed or query instruction that would fail only inside the run (after the
        start model loads: numpy's seeding, or the first batch's ``instruction + query``).

        Raises:
            ValueError: ``seed`` is not a whole number in ``[0, 2**32 - 1]`` (``None``
                included), or ``query_instruction`` is neither a string nor ``None``.
        """
        self.seed = whole_number("seed", self.seed)
        if not 0 <= self.seed < 2**32:  # transformers seeds numpy with it, which takes no more
            raise ValueError(f"seed must be in [0, 2**32 - 1] (numpy's range), got {self.seed}")
        if self.query_instruction is not None and not isinstance(self.query_instruction, str):
            raise ValueError(
                "query_instruction must be a string (or None: the start checkpoint's own), "
                f"got {type(self.query_instruction).__name__} {self.query_instruction!r}"
            )

    @classmethod
    def flagembedding(
        cls,
        model: str | os.PathLike[str],
        output_path: str | os.PathLike[str],
        **overrides: Any,
    ) -> FinetuneConfig:
        """FlagEmbedding's BGE-M3 recipe (m3kit's defaults before the MiniLM sweep turned on
        ``symmetric`` and 1 hard negative per query became the default).

        Temperature 0.02 for every head, self-distillation, no symmetric term, no
        false-negative filtering, lr 2e-5, 3 hard negatives, query / passage max length
        64 / 256. ``overrides`` change any other field.

        Example::

            cfg = FinetuneConfig.flagembedding("BAAI/bge-m3", "out/ft", epochs=2)
        """
        return cls(model=model, output_path=output_path, **{**FLAGEMBEDDING_RECIPE, **overrides})

    def loss_config(self) -> LossConfig:
        return LossConfig(
            heads=self.heads,
            temperature=self.temperature,
            ensemble_weights=self.ensemble_weights,
            self_distill=self.self_distill,
            sparse_temperature=self.sparse_temperature,
            colbert_temperature=self.colbert_temperature,
            symmetric=self.symmetric,
            false_negative_margin=self.false_negative_margin,
        )


@dataclass(frozen=True)
class FinetuneResult:
    """What :meth:`M3Finetuner.fit` produced.

    Attributes:
        path: The saved M3-layout checkpoint (load it with ``M3Encoder.from_pretrained``).
        heads: Heads that were trained.
        steps: Optimiser steps taken.
        examples: Training examples seen per epoch.
        train_seconds: Wall time of the training loop.
        log: Logged loss terms: those of the first batch of every ``logging_steps``-th
            optimiser step (the first step included), one dict per logged step.
        precision: The autocast the run used (``"auto"`` resolved): fp32, bf16 or fp16.
        learning_rate: The peak learning rate the run used (``None`` in the config resolved
            by the start model's size); ``None`` only in a result built by hand.
        sparse_fit_seconds: Wall time of fitting a new sparse head to the training passages
            before the loop (``sparse_start="idf"``; 0.0 when no head was fitted): part of
            the run's cost, outside ``train_seconds``.
    """

    path: Path
    heads: frozenset[Head]
    steps: int
    examples: int
    train_seconds: float
    log: tuple[dict[str, float], ...]
    precision: str = "fp32"
    learning_rate: float | None = None
    sparse_fit_seconds: float = 0.0
