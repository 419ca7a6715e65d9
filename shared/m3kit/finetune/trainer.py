"""``M3Finetuner``: unified fine-tuning of the dense, sparse and ColBERT heads.

Built on transformers' ``Trainer`` (optimiser, LR schedule, gradient accumulation,
bf16/fp16 autocast, device placement): the module it trains wraps the shared
:class:`m3kit.model.M3Model` and returns the loss of :func:`m3kit.finetune.losses.m3_loss`,
so no head maths is duplicated. The result is an M3-layout checkpoint
(:meth:`M3Model.save`) that :class:`m3kit.M3Encoder` and FlagEmbedding's ``BGEM3FlagModel``
load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from m3kit.finetune.config import FLAGEMBEDDING_RECIPE, FinetuneConfig, FinetuneResult
from m3kit.finetune.data import TrainingExample
from m3kit.finetune.pair_batches import PairCollator, PairTrainingModule, warn_truncated
from m3kit.finetune.positives import (
    query_positives,
    refuse_lone_positives,
    warn_negative_shortfall,
    without_query_positives,
)
from m3kit.finetune.training_loop import (
    NEW_SPARSE_WEIGHT,
    prepare_training,
    run_training,
    save_start_checkpoint,
)

__all__ = [
    "FLAGEMBEDDING_RECIPE",
    "NEW_SPARSE_WEIGHT",
    "FinetuneConfig",
    "FinetuneResult",
    "M3Finetuner",
    "save_start_checkpoint",
]

logger = logging.getLogger(__name__)


def _refuse_span_settings(cfg: FinetuneConfig) -> None:
    """Refuse the span-pooling settings in a run on query / passage rows (:meth:`M3Finetuner.fit`).

    ``span_negatives`` and ``span_overlap`` shape the windows of :meth:`M3Finetuner.fit_spans`
    only; :meth:`M3Finetuner.fit` would train as if they were not given.

    Raises:
        ValueError: Naming the setting.
    """
    given = [f"span_negatives={cfg.span_negatives}"] if cfg.span_negatives else []
    if cfg.span_overlap is not None:  # 0 too: a window overlap fit() has no windows for
        given.append(f"span_overlap={cfg.span_overlap}")
    if given:
        raise ValueError(
            f"{', '.join(given)} applies to span training (M3Finetuner.fit_spans) only: fit() "
            "trains on query / passage rows with num_negatives hard negatives; drop it, or "
            "train on SpanExamples with fit_spans"
        )


class M3Finetuner:
    """Fine-tune an M3 (or dense-only) checkpoint on query / positive / negative examples.

    Example::

        from m3kit import M3Encoder
        from m3kit.finetune import FinetuneConfig, M3Finetuner, read_jsonl

        cfg = FinetuneConfig(model="BAAI/bge-m3", output_path="out/bge-m3-ft", epochs=1)
        result = M3Finetuner(cfg).fit(read_jsonl("train.jsonl"))
        M3Encoder.from_pretrained(result.path)
    """

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config

    def fit(
        self,
        examples: Sequence[TrainingExample],
        *,
        positives: Mapping[str, Collection[str]] | None = None,
    ) -> FinetuneResult:
        """Train, save the checkpoint to ``config.output_path`` and return where it is.

        Args:
            examples: The training rows.
            positives: Every passage relevant to each query, by query text, where the rows
                carry only some of them (a query trained on its first relevant passage
                only, ``M3FinetuneEngine``'s ``use_all_docs=False``): with
                ``mask_shared_positives`` none is ever the query's negative, in-batch or
                hard. Default: the positives of the rows asking it.

        Raises:
            ValueError: No examples, a span setting, nothing to contrast any positive with
                (:func:`~m3kit.finetune.positives.refuse_lone_positives`), or a bad setting found
                before training.
            TypeError: An example is not a :class:`TrainingExample`, or ``positives`` does
                not map query texts to lists of passage texts.
        """
        cfg = self.config
        examples, relevant = self._rows(examples, positives, warn=True)
        setup = prepare_training(cfg, _passages(examples))
        module = PairTrainingModule(setup.model, cfg.loss_config(), setup.ignore_ids)
        warn_truncated(examples, setup.tokenizer, cfg, setup.prefix)
        collator = PairCollator(setup.tokenizer, cfg, setup.prefix, relevant)
        return run_training(cfg, setup, module, examples, collator)

    def save_start(
        self,
        examples: Sequence[TrainingExample],
        output_path: str | os.PathLike[str],
        *,
        positives: Mapping[str, Collection[str]] | None = None,
    ) -> Path:
        """Save the model :meth:`fit` would start from on ``examples``, before any step: the
        "before" of an evaluation.

        Unlike :func:`save_start_checkpoint` (the new heads as created), a new sparse head
        here is the one training starts from: with ``sparse_start="idf"`` (the default),
        fitted to these rows' passages (:mod:`m3kit.finetune.sparse_start`), so a report's
        start-to-trained gain is the training's alone.

        Args:
            examples: The training rows :meth:`fit` is (or was) given.
            output_path: Where to save (a fine-tune's output rules:
                :func:`~m3kit.finetune.run_checks.check_output_path`).
            positives: As :meth:`fit`'s (which passages count as the rows' negatives).

        Returns:
            The saved checkpoint's folder (with the query instruction :meth:`fit` saves:
            ``query_instruction`` when set, else the start checkpoint's).

        Raises:
            ValueError: What :meth:`fit` refuses before training (no examples, a span
                setting, nothing to contrast a positive with, a bad setting).
            TypeError: As :meth:`fit`'s.
        """
        examples, _ = self._rows(examples, positives, warn=False)
        cfg = dataclasses.replace(self.config, output_path=output_path)
        setup = prepare_training(cfg, _passages(examples))
        return setup.save(setup.model, output_path)  # (as run_training saves the trained one)

    def _rows(
        self,
        examples: Sequence[TrainingExample],
        positives: Mapping[str, Collection[str]] | None,
        *,
        warn: bool,
    ) -> tuple[list[TrainingExample], dict[str, frozenset[str]]]:
        """The rows checked as :meth:`fit` checks them (``warn``: and rows short of hard
        negatives counted in a warning), and every query's positives (those of all its rows
        and those given), masked out of the rows' negatives with ``mask_shared_positives``."""
        cfg = self.config
        examples = list(examples)
        if not examples:
            raise ValueError("no training examples")
        for i, ex in enumerate(examples):
            if not isinstance(ex, TrainingExample):
                raise TypeError(f"example {i} is a {type(ex).__name__}, not a TrainingExample")
        _refuse_span_settings(cfg)
        # a query's positives from all its rows (and those given), masked even when those
        # rows are in no batch
        relevant = query_positives(examples, also=positives)
        if cfg.mask_shared_positives:  # in every batch, not only when rows share one
            examples = without_query_positives(examples, relevant)
        if warn:
            warn_negative_shortfall(examples, cfg.num_negatives)
        refuse_lone_positives(
            examples,
            cfg.batch_size,
            cfg.num_negatives,
            mask_shared_positives=cfg.mask_shared_positives,
            positives=relevant,
        )
        return examples, relevant

    def fit_spans(self, examples: Sequence[Any]) -> FinetuneResult:
        """Late-chunking-aware training on :class:`~m3kit.finetune.span_data.SpanExample`\\ s.

        Positives (and, with ``span_negatives``, in-window negatives) are spans pooled from
        one pass over a window of the document, as late chunking pools them
        (:mod:`m3kit.finetune.span_training`); the batch's other positives are negatives.
        """
        from m3kit.finetune.span_training import fit_spans

        return fit_spans(self.config, examples)


def _passages(examples: Sequence[TrainingExample]) -> list[str]:
    """The passages the rows train on (positives and negatives): what a new sparse head is
    fitted to."""
    return [p for ex in examples for p in (*ex.pos, *ex.neg)]
