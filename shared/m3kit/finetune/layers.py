"""Changes to a backbone's layers before training: attention dropout, frozen bottom layers.

Split from :mod:`m3kit.finetune.training_loop` (which imports both from here).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from torch import nn

__all__ = ["attention_dropouts", "freeze_bottom_layers", "set_attention_dropout"]

logger = logging.getLogger(__name__)


def set_attention_dropout(backbone: nn.Module, p: float) -> int:
    """Set the dropout on attention probabilities of every attention layer to ``p``.

    Only the modules' dropout changes, not ``backbone.config``, so a checkpoint saved
    afterwards keeps its own value. Attention layers are found by their ``query``, ``key``
    and ``value`` children and their ``dropout`` (BERT, XLM-R, RoBERTa, ...); hidden-state
    dropouts stay as they are.

    Returns:
        How many attention layers were changed.

    Raises:
        ValueError: The backbone has no such attention layer (say, another architecture).
    """
    changed = 0
    for dropout in attention_dropouts(backbone):
        dropout.p = p
        changed += 1
    if not changed:
        raise ValueError(
            f"attention_dropout: {type(backbone).__name__} has no attention layer with "
            "query / key / value and a dropout; leave attention_dropout=None for this model"
        )
    logger.info("attention dropout set to %s in %d layers", p, changed)
    return changed


def attention_dropouts(backbone: nn.Module) -> Iterator[nn.Dropout]:
    """The dropouts on attention probabilities of ``backbone``: the ``nn.Dropout`` named
    ``dropout`` of every module with ``query``, ``key`` and ``value`` children (BERT, XLM-R,
    RoBERTa, ...)."""
    for module in backbone.modules():
        children = {name for name, _ in module.named_children()}
        dropout = getattr(module, "dropout", None)
        if {"query", "key", "value"} <= children and isinstance(dropout, nn.Dropout):
            yield dropout


def freeze_bottom_layers(backbone: nn.Module, n: int) -> int:
    """Fix the token embeddings and the first ``n`` transformer layers of ``backbone``.

    Backpropagation then stops above them, so a step costs less: their forward pass runs,
    their backward pass does not. Layers are the backbone's ``encoder.layer`` list (BERT,
    XLM-R, RoBERTa, ...).

    Returns:
        How many parameters were frozen.

    Raises:
        ValueError: ``n`` is not below the number of layers, or the backbone has no
            ``embeddings`` and ``encoder.layer``.
    """
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    embeddings = getattr(backbone, "embeddings", None)
    if not isinstance(layers, nn.ModuleList) or not isinstance(embeddings, nn.Module):
        raise ValueError(
            f"frozen_layers: {type(backbone).__name__} has no embeddings and encoder.layer "
            "list; leave frozen_layers=0 for this model"
        )
    if not 0 <= n < len(layers):
        raise ValueError(
            f"frozen_layers must be in [0, {len(layers) - 1}] for this {len(layers)}-layer "
            f"model, got {n}"
        )
    frozen = 0
    for module in [embeddings, *layers[:n]]:
        for param in module.parameters():
            param.requires_grad_(False)
            frozen += param.numel()
    logger.info("froze the embeddings and the first %d layers (%d parameters)", n, frozen)
    return frozen
