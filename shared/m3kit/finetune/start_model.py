"""The model a fine-tuning run starts from (split from :mod:`m3kit.finetune.training_loop`):
the checkpoint loaded, and a dense-only one given new sparse and ColBERT heads at their
untrained start (:func:`save_start_checkpoint` saves that model, the "before" of an
evaluation; a run may then fit the new sparse head to its passages,
:mod:`m3kit.finetune.sparse_start`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from m3kit.checkpoint import CheckpointInfo, CheckpointKind, resolve_checkpoint
from m3kit.errors import CheckpointError
from m3kit.finetune.run_checks import check_output_path
from m3kit.model import M3Model
from m3kit.outputs import ALL_HEADS, Head

__all__ = ["NEW_SPARSE_WEIGHT", "load_start", "save_start_checkpoint"]

logger = logging.getLogger(__name__)


def load_start(
    path: str | os.PathLike[str], heads: frozenset[Head], seed: int
) -> tuple[CheckpointInfo, M3Model, Any]:
    """The start model: new sparse / ColBERT heads (seeded) for a dense-only checkpoint."""
    from transformers import AutoTokenizer

    info = resolve_checkpoint(path)
    needs_heads = bool(heads - {Head.DENSE})
    torch.manual_seed(seed)
    model = M3Model.from_checkpoint(info, init_heads=needs_heads)
    if info.kind is CheckpointKind.DENSE and needs_heads:
        new = [h for h in (Head.SPARSE, Head.COLBERT) if h in heads]
        logger.info(
            "%s is dense-only: training new %s heads", info.path, " and ".join(h.value for h in new)
        )
        for left in (h for h in (Head.SPARSE, Head.COLBERT) if h not in heads):
            # an M3 checkpoint holds both heads: the one not trained is saved at its start
            logger.warning(
                "%s is dense-only and heads leaves out %s: the saved checkpoint holds a new %s "
                "head at its untrained start (%s), which an index stores and searches with by "
                "default; add it to heads to train it",
                info.path,
                left.value,
                left.value,
                "every token weighted 0.1" if left is Head.SPARSE else "the identity",
            )
        _init_new_sparse_head(model)
        _init_new_colbert_head(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(info.path))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"could not load the tokenizer from {info.path}: {e}") from e
    return info, model, tokenizer


#: Token weight of a new sparse head before training: every token counts ``0.1``, so the
#: untrained head scores plain token overlap (``0.01`` per shared token id).
NEW_SPARSE_WEIGHT = 0.1


def _init_new_sparse_head(model: M3Model) -> None:
    """Start a new sparse head at a small uniform weight (``w = 0``, ``b = 0.1``).

    A randomly initialised ``Linear(h, 1)`` gives token weights around 0.5; with the M3
    temperature (0.02) the sparse logits start in the hundreds, and the fastest way for the
    optimiser to lower that loss is to push every weight under 0: the ReLU dies and never
    recovers (measured: a tiny model's sparse nDCG@10 fell from 0.48 to 0.09, all weights
    0). A uniform small weight keeps every token active and the logits moderate.
    """
    heads = model.require_heads()
    with torch.no_grad():
        heads.sparse_linear.weight.zero_()
        heads.sparse_linear.bias.fill_(NEW_SPARSE_WEIGHT)


def _init_new_colbert_head(model: M3Model) -> None:
    """Start a new ColBERT head as the identity (``W = I``, ``b = 0``).

    The untrained head then scores MaxSim over the backbone's own (normalised) token
    states, which a sentence-transformers backbone already places meaningfully; a random
    ``Linear(h, h)`` only approximates that, and training started from it ended below the
    untrained head on held-out articles (``benchmarks/results/finetune.md``).
    """
    heads = model.require_heads()
    with torch.no_grad():
        heads.colbert_linear.weight.copy_(torch.eye(*heads.colbert_linear.weight.shape))
        heads.colbert_linear.bias.zero_()


def save_start_checkpoint(
    model: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    heads: frozenset[Head] = ALL_HEADS,
    seed: int = 42,
) -> Path:
    """Save the model before any fine-tuning, with :meth:`M3Finetuner.fit`'s new heads as they
    are created (same seed), before any data is seen.

    For a dense-only model this is the model with its new heads (sparse at a uniform token
    weight, ColBERT the identity). A run with ``sparse_start="idf"`` (the default) starts
    from another sparse head: fitted to its training passages before the first step
    (:mod:`m3kit.finetune.sparse_start`); :meth:`M3Finetuner.save_start` saves that model,
    the "before" of an evaluation whose gain is the training's alone.

    Raises:
        ValueError: An ``output_path`` a fine-tune would refuse
            (:func:`~m3kit.finetune.run_checks.check_output_path`).
    """
    check_output_path(output_path)
    info, m3, tokenizer = load_start(model, Head.parse(heads), seed)
    return m3.save(
        output_path, tokenizer, query_instruction=info.query_instruction, max_length=info.max_length
    )
