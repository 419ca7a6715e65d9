"""The training loop shared by :meth:`M3Finetuner.fit` and :meth:`M3Finetuner.fit_spans`.

Loads the start model (:func:`prepare_training`), runs transformers' ``Trainer`` over a
:class:`TrainingModule` and a collator, and saves the M3-layout checkpoint
(:func:`run_training`): each training mode only brings its own batches and loss module.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from m3kit.checkpoint import CheckpointInfo, CheckpointKind, position_limit
from m3kit.errors import TrainingDivergedError
from m3kit.finetune.cpu_dropout import cpu_dropout
from m3kit.finetune.layers import freeze_bottom_layers, set_attention_dropout
from m3kit.finetune.losses import LossConfig, colbert_scores, dense_scores, m3_loss, sparse_scores
from m3kit.finetune.run_checks import check_max_lengths, check_output_path, one_device
from m3kit.finetune.sparse_start import SparseStart, fit_sparse_head
from m3kit.finetune.start_model import NEW_SPARSE_WEIGHT, load_start, save_start_checkpoint
from m3kit.heap import keep_freed_memory
from m3kit.model import M3Forward, M3Model
from m3kit.outputs import Head
from m3kit.precision import resolve_training_precision

if TYPE_CHECKING:
    from m3kit.finetune.trainer import FinetuneConfig, FinetuneResult

__all__ = [
    "NEW_SPARSE_WEIGHT",
    "TrainingModule",
    "TrainingSetup",
    "default_learning_rate",
    "prepare_training",
    "run_training",
    "save_start_checkpoint",
    "set_attention_dropout",
]

logger = logging.getLogger(__name__)

#: Below this many parameters a start model trains at :data:`SMALL_MODEL_LEARNING_RATE` by
#: default, at or above it at :data:`LEARNING_RATE`.
SMALL_MODEL_PARAMETERS = 100_000_000
#: all-MiniLM-L6-v2 (22.7M parameters) with new heads, 1,000 squad_en rows, held-out articles:
#: 1e-4 gave dense / sparse / ColBERT nDCG@10 0.8218 / 0.7823 / 0.9131, 2e-5 gave 0.8176 /
#: 0.7411 / 0.9128 (``benchmarks/results/finetune_n3_fair_zen4.md``, ``finetune_lr2e5_zen4.md``;
#: 2e-4 lost dense on the validation articles, ``finetune_sweep.md``).
SMALL_MODEL_LEARNING_RATE = 1e-4
#: sentence-transformers' default, and FlagEmbedding's BGE-M3 recipe
#: (:meth:`~m3kit.finetune.FinetuneConfig.flagembedding`): base- and large-sized models.
LEARNING_RATE = 2e-5


def default_learning_rate(num_parameters: int) -> float:
    """The peak learning rate a start model of ``num_parameters`` trains at by default.

    >>> default_learning_rate(22_700_000)  # all-MiniLM-L6-v2
    0.0001
    >>> default_learning_rate(568_000_000)  # BGE-M3
    2e-05
    """
    return SMALL_MODEL_LEARNING_RATE if num_parameters < SMALL_MODEL_PARAMETERS else LEARNING_RATE


class TrainingModule(nn.Module):
    """Base of what the Trainer optimises: the model being trained, its loss and a loss log.

    A loss that is not finite (NaN or inf: a diverged model, a NaN start checkpoint, an
    fp16 overflow) raises :class:`~m3kit.errors.TrainingDivergedError` naming the step,
    before its backward pass: transformers' ``Trainer`` would go on training (and hide the
    NaN from its logged mean, ``logging_nan_inf_filter``) and the run would save NaN weights.
    Only the loss is checked, not the gradients: fp16's loss scaler skips steps whose
    gradients overflow by design.
    """

    def __init__(self, model: M3Model, loss: LossConfig, ignore_ids: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.loss_config = loss
        self.ignore_ids = list(ignore_ids)
        self.log: list[dict[str, float]] = []
        #: The optimiser step (0-based) each entry of ``log`` belongs to: a step accumulates
        #: ``gradient_accumulation_steps`` batches, fewer at the end of an epoch.
        self.log_steps: list[int] = []
        #: Run attention through PyTorch's plain (math) SDPA kernel (:func:`run_training` sets
        #: it for bf16 on CPU).
        self.math_attention = False
        #: Optimiser steps completed (:func:`run_training` keeps it up to date).
        self.steps_done = 0
        #: Where the run saves its checkpoint (named by a divergence error).
        self.output_path: str | os.PathLike[str] | None = None

    def forward_heads(self, ids: torch.Tensor, mask: torch.Tensor) -> M3Forward:
        """The model's forward with the heads the loss needs."""
        heads = self.loss_config.heads
        kernel = sdpa_kernel([SDPBackend.MATH]) if self.math_attention else contextlib.nullcontext()
        with kernel:
            return self.model(ids, mask, sparse=Head.SPARSE in heads, colbert=Head.COLBERT in heads)

    def loss(
        self,
        q: M3Forward,
        q_ids: torch.Tensor,
        q_mask: torch.Tensor,
        candidates: Candidates,
        targets: torch.Tensor,
        exclude: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Score every query against every candidate per head, then :func:`m3_loss`."""
        heads = self.loss_config.heads
        c = candidates
        scores: dict[Head, torch.Tensor] = {}
        if Head.DENSE in heads:
            scores[Head.DENSE] = dense_scores(q.dense.float(), c.dense.float())
        if Head.SPARSE in heads:
            assert q.sparse is not None and c.sparse is not None
            scores[Head.SPARSE] = sparse_scores(
                q_ids, q.sparse.float(), c.ids, c.sparse.float(), self.ignore_ids
            )
        if Head.COLBERT in heads:
            assert q.colbert is not None and c.colbert is not None
            scores[Head.COLBERT] = colbert_scores(
                q.colbert.float(), q_mask[:, 1:], c.colbert.float(), c.colbert_mask
            )
        out = m3_loss(scores, targets, exclude, self.loss_config)
        self.log.append(out.terms)
        self.log_steps.append(self.steps_done)
        total = out.terms["total"]  # already a float: the check costs no device sync
        if not math.isfinite(total):
            terms = ", ".join(f"{k}={v:.4g}" for k, v in out.terms.items())
            raise TrainingDivergedError(
                f"the training loss is not finite ({total}) at step {self.steps_done + 1} "
                f"(batch {len(self.log)}); loss terms: {terms}. Training stopped and nothing "
                f"was saved{_to(self.output_path)}. Lower the learning rate, train in bf16 or "
                "fp32 rather than fp16 (fp16 activations overflow past 65504), or check the "
                "start checkpoint for NaN / inf weights"
            )
        return {"loss": out.total}


@dataclass(frozen=True)
class Candidates:
    """What every query is scored against, per head.

    Attributes:
        dense: ``[c, h]`` dense vectors.
        ids: ``[c, l]`` token ids (for the sparse scores; padding / special ids are ignored).
        sparse: ``[c, l]`` sparse weights of those tokens, or None.
        colbert: ``[c, l', d]`` ColBERT vectors, or None.
        colbert_mask: ``[c, l']`` 1 for real ColBERT vectors.
    """

    dense: torch.Tensor
    ids: torch.Tensor
    sparse: torch.Tensor | None
    colbert: torch.Tensor | None
    colbert_mask: torch.Tensor


@dataclass(frozen=True)
class TrainingSetup:
    """The start model of a run and what its batches need (:func:`prepare_training`).

    Attributes:
        info: The resolved start checkpoint.
        model: The start model (backbone frozen when ``freeze_encoder``).
        tokenizer: Its Hugging Face tokenizer.
        prefix: Query instruction put before every query (``""``: none).
        ignore_ids: Special token ids the sparse scores leave out.
        sparse_fit_seconds: Wall time of fitting a new sparse head (0.0: none fitted).
    """

    info: CheckpointInfo
    model: M3Model
    tokenizer: Any
    prefix: str
    ignore_ids: list[int]
    sparse_fit_seconds: float = 0.0

    def save(self, model: M3Model, path: str | os.PathLike[str]) -> Path:
        """Save ``model`` (this setup's, trained or not yet) as the run's checkpoint at
        ``path``: its tokenizer, the query instruction it trains with, its max length."""
        return model.save(
            path,
            self.tokenizer,
            query_instruction=self.prefix or None,
            max_length=self.info.max_length,
        )


def prepare_training(cfg: FinetuneConfig, passages: Sequence[str]) -> TrainingSetup:
    """Load the start model for ``cfg`` (shared by :meth:`M3Finetuner.fit` and ``fit_spans``);
    a new sparse head is fitted to ``passages`` (the training passages) as
    ``cfg.sparse_start`` says."""
    check_output_path(cfg.output_path)
    info, model, tokenizer = load_start(cfg.model, cfg.heads, cfg.seed)
    if Path(info.path).resolve() == Path(cfg.output_path).resolve():
        _detach_from_files(model)  # the run's save replaces the files it was loaded from
    check_max_lengths(cfg, tokenizer, position_limit(info.path))
    special = {
        getattr(tokenizer, f"{n}_token_id", None)
        for n in ("cls", "eos", "pad", "unk", "bos", "sep")
    }
    ignore_ids = sorted(i for i in special if i is not None)
    new_sparse = info.kind is CheckpointKind.DENSE and Head.SPARSE in cfg.heads
    fit_seconds = 0.0
    if new_sparse and cfg.sparse_start is SparseStart.IDF:
        fit_start = time.perf_counter()
        model.to(_training_device(cfg)[1])  # (the fit's forward pass on the run's device)
        try:
            fit_sparse_head(
                model,
                tokenizer,
                passages,
                max_length=cfg.passage_max_length,
                ignore_ids=ignore_ids,
                scale=NEW_SPARSE_WEIGHT,
                seed=cfg.seed,
            )
        finally:
            model.to("cpu")  # (as loaded: the Trainer places it)
        fit_seconds = time.perf_counter() - fit_start
    if cfg.attention_dropout is not None:
        set_attention_dropout(model.backbone, cfg.attention_dropout)
    if cfg.freeze_encoder:
        for param in model.backbone.parameters():
            param.requires_grad_(False)
    elif cfg.frozen_layers:
        freeze_bottom_layers(model.backbone, cfg.frozen_layers)
    prefix = cfg.query_instruction if cfg.query_instruction is not None else ""
    if cfg.query_instruction is None and info.query_instruction:
        prefix = info.query_instruction
    return TrainingSetup(info, model, tokenizer, prefix, ignore_ids, fit_seconds)


def _training_device(cfg: FinetuneConfig) -> tuple[bool, torch.device]:
    """Whether ``cfg`` trains on the CPU, and its device."""
    use_cpu = cfg.device == "cpu" or (cfg.device is None and not torch.cuda.is_available())
    return use_cpu, torch.device("cpu" if use_cpu else cfg.device or "cuda")


def _detach_from_files(model: nn.Module) -> None:
    """Give every tensor of ``model`` memory of its own, off the files it was loaded from.

    transformers maps safetensors weights into memory: a tensor that training leaves as it is
    (a frozen layer, a head not trained) keeps reading the file's pages until the save. When
    the run saves into the folder it started from, that save replaces those very files; the
    old file lives on while mapped only where the system lets a mapped file be removed
    (Linux, not Windows), and a file rewritten in place would change the weights being saved.
    """
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = tensor.data.clone()


def run_training(
    cfg: FinetuneConfig,
    setup: TrainingSetup,
    module: TrainingModule,
    examples: list[Any],
    collator: Any,
) -> FinetuneResult:
    """Run transformers' ``Trainer`` on ``module`` and save the M3-layout checkpoint.

    ``module`` returns ``{"loss": ...}`` from the collator's batches, holds the model being
    trained as ``module.model`` and appends each step's loss terms to ``module.log``.
    """
    try:
        from transformers import PrinterCallback, Trainer, TrainingArguments
    except ImportError as e:  # pragma: no cover - transformers is a core dependency
        from m3kit.errors import missing_extra

        raise missing_extra("transformers", "finetune", e) from e
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:  # Trainer refuses to start without it
        from m3kit.errors import missing_extra

        raise missing_extra("accelerate", "finetune")
    from m3kit.finetune.trainer import FinetuneResult  # a cycle at import time

    steps_per_epoch = math.ceil(len(examples) / (cfg.batch_size * cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    use_cpu, device = _training_device(cfg)
    precision = resolve_training_precision(cfg.precision, device)
    # Without attention dropout PyTorch picks its fused (flash) SDPA kernel on CPU, whose
    # backward under bf16 autocast was slower than the plain kernel (MiniLM, AMX CPU, 80
    # sequences of <= 128 tokens: 3.75 vs 2.81 s a step; in fp32 flash was faster, 3.47 vs
    # 3.88 s). With dropout PyTorch uses the plain kernel anyway.
    module.math_attention = device.type == "cpu" and precision == "bf16"
    module.output_path = cfg.output_path
    learning_rate = cfg.learning_rate
    if learning_rate is None:
        size = sum(p.numel() for p in module.model.parameters())
        learning_rate = default_learning_rate(size)
        logger.info(
            "learning rate %g (the default for a start model of %.1fM parameters)",
            learning_rate,
            size / 1e6,
        )
    with tempfile.TemporaryDirectory(prefix="m3kit-ft-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps or -1,
            learning_rate=learning_rate,
            warmup_steps=int(cfg.warmup_ratio * total_steps),
            weight_decay=cfg.weight_decay,
            lr_scheduler_type="linear",
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=use_cpu,
            seed=cfg.seed,
            data_seed=cfg.seed,
            logging_steps=cfg.logging_steps,
            save_strategy="no",
            report_to="none",
            remove_unused_columns=False,
            dataloader_num_workers=0,
            disable_tqdm=not cfg.show_progress,
        )
        one_device(args)
        trainer = Trainer(
            model=module,
            args=args,
            train_dataset=_ListDataset(examples),
            data_collator=collator,
        )
        if not cfg.show_progress:
            trainer.remove_callback(PrinterCallback)
        if cfg.head_learning_rate is not None:
            trainer.optimizer = _optimizer(trainer, module, cfg, learning_rate)
        trainer.add_callback(_step_counter(module))
        # On CPU, dropout masks from 16-bit draws (m3kit.finetune.cpu_dropout): PyTorch's
        # per-element draws were ~23 % of a step there; CUDA's dropout is fast already.
        dropout = cpu_dropout(module.model.backbone) if use_cpu else contextlib.nullcontext()
        # On CPU, tensors over glibc's mmap threshold (the attention logits at 256 tokens)
        # reuse freed memory instead of fresh page-faulted maps (m3kit.heap).
        with dropout, keep_freed_memory(use_cpu and cfg.keep_freed_memory):
            start = time.perf_counter()
            state = trainer.train()
            seconds = time.perf_counter() - start
            # The optimizer's moments (twice the trained weights) were made inside the block:
            # freed in it, its trim gives their memory back; freed later, glibc keeps it.
            if trainer.optimizer is not None:
                trainer.optimizer.state.clear()
    check_finite_weights(module.model, int(state.global_step), cfg.output_path)
    model = module.model.to("cpu").float().eval()
    out = setup.save(model, cfg.output_path)
    logger.info("fine-tuned checkpoint written to %s (%.1f s)", out, seconds)
    log = logged_steps(module, cfg.logging_steps)
    return FinetuneResult(
        path=out,
        heads=cfg.heads,
        steps=int(state.global_step),
        examples=len(examples),
        train_seconds=seconds,
        log=log,
        precision=precision,
        learning_rate=learning_rate,
        sparse_fit_seconds=setup.sparse_fit_seconds,
    )


def logged_steps(module: TrainingModule, every: int) -> tuple[dict[str, float], ...]:
    """The loss terms of the first batch of every ``every``-th optimiser step (the first one
    included): one entry per logged step, however many batches each step accumulated."""
    out: list[dict[str, float]] = []
    previous: int | None = None
    for step, terms in zip(module.log_steps, module.log, strict=True):
        if step != previous and step % every == 0:
            out.append(terms)
        previous = step
    return tuple(out)


def check_finite_weights(
    model: nn.Module, steps: int, output_path: str | os.PathLike[str] | None = None
) -> None:
    """Refuse to save a model whose weights hold NaN or inf (the last step diverged).

    Raises:
        TrainingDivergedError: Naming the first such parameter.
    """
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise TrainingDivergedError(
                f"after {steps} step(s) the weights are not finite: {name} holds NaN or inf. "
                f"Nothing was saved{_to(output_path)}. Lower the learning rate, or train in "
                "bf16 or fp32 rather than fp16"
            )


def _to(output_path: str | os.PathLike[str] | None) -> str:
    return "" if output_path is None else f" to {output_path}"


def _step_counter(module: TrainingModule) -> Any:
    """A Trainer callback keeping ``module.steps_done`` at the Trainer's optimiser steps."""
    from transformers import TrainerCallback

    class StepCounter(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            module.steps_done = int(state.global_step)

    return StepCounter()


def _optimizer(
    trainer: Any, module: nn.Module, cfg: FinetuneConfig, learning_rate: float
) -> torch.optim.Optimizer:
    """AdamW as the Trainer builds it (at ``learning_rate``), with the head layers in groups
    of their own LR."""
    decay = set(trainer.get_decay_parameter_names(module))
    groups = []
    for is_head in (False, True):
        lr = cfg.head_learning_rate if is_head else learning_rate
        for decayed in (True, False):
            params = [
                p
                for n, p in module.named_parameters()
                if p.requires_grad
                and n.startswith("model.heads.") == is_head
                and (n in decay) == decayed
            ]
            if params:
                wd = cfg.weight_decay if decayed else 0.0
                groups.append({"params": params, "lr": lr, "weight_decay": wd})
    return torch.optim.AdamW(groups, lr=learning_rate)


class _ListDataset(torch.utils.data.Dataset[Any]):
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]
