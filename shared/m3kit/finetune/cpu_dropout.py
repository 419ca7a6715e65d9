"""Dropout for training on CPU with a cheaper random mask, in attention and hidden states.

Written by hand because no library offers it: PyTorch's CPU dropout (``bernoulli_``, also
inside ``scaled_dot_product_attention``'s plain kernel, which it runs whenever attention
dropout is on) draws one random number per element, one at a time. On the fine-tuning
benchmark's steps (MiniLM, 80 sequences of <= 128 tokens) that was 23 % of a step's CPU time
(``torch.profiler``, Xeon with AMX, bf16). :func:`keep_mask` takes 16 random bits per element
out of 64-bit draws instead (about 11x faster for the attention probabilities' 12.6M
elements), for the same dropout: each element is kept with probability
``1 - round(p * 65536) / 65536`` (``p`` to within 1e-5), independently.

:func:`cpu_dropout` puts it into a transformers backbone for the length of a training run:
its hidden-state ``nn.Dropout`` modules become :class:`MaskDropout` and its attention runs
:func:`attention_with_dropout`: softmax of ``q k^T`` with this mask's dropout, times ``v``, in
the inputs' dtype. The dropout is the same in distribution, not bit for bit: other random
draws, so a run is not bit-identical to one with PyTorch's dropout at the same seed; kept values
(in attention: the product of the kept probabilities with ``v``, the smaller tensor) are scaled
by ``1 / (1 - p)`` in float32 (PyTorch's CPU dropout rounds that factor to the
tensor's dtype: 1.109375 for bf16 at ``p = 0.1``, as against 1.1111, so kept bf16 activations
are now 0.16 % larger, as on CUDA); and attention logits may differ in the last bit (the
query is scaled, where PyTorch scales ``q`` and ``k`` each by the square root).

Under bf16 / fp16 autocast the attention stays in half precision, as transformers' eager
attention computes it under CPU autocast (logits, softmax output and the dropout mask's
product in bf16; the softmax itself sums in float32 inside PyTorch's kernel). PyTorch's plain
kernel, which it runs whenever attention dropout is on, converts half-precision inputs to
float32 instead, which at passages of 256 tokens made attention most of a bf16 training step
(``benchmarks/results/finetune_bf16_attention.md``). Its error against float32 attention is
that of half-precision logits (about 2x the error of PyTorch's fused bf16 kernel, which keeps
float32 logits but cannot drop attention probabilities).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from m3kit.finetune.layers import attention_dropouts

__all__ = ["MaskDropout", "attention_with_dropout", "cpu_dropout", "keep_mask", "mask_dropout"]

logger = logging.getLogger(__name__)

#: The name :func:`cpu_dropout` registers :func:`attention_with_dropout` under in
#: transformers' ``AttentionInterface`` (and the eager additive mask under the same name).
ATTENTION_NAME = "m3kit_cpu_dropout"
_LEVELS = 1 << 16  # random levels per element: 16 bits
#: Attention arguments :func:`attention_with_dropout` refuses (decoder-only features).
_UNSUPPORTED = ("softcap", "position_bias", "sliding_window", "s_aux")


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """A boolean mask of ``shape``, each element ``True`` (kept) with probability ``1 - p``.

    ``p`` is rounded to a multiple of 2**-16. On CPU the bits come from numpy's SFC64
    seeded by one draw from torch's default generator, elsewhere from torch's generator, so
    ``torch.manual_seed`` makes it repeat either way.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> m = keep_mask((1000, 1000), 0.1, torch.device("cpu"))
    >>> m.dtype, m.shape, round(1 - m.float().mean().item(), 2)
    (torch.bool, torch.Size([1000, 1000]), 0.1)
    """
    n = math.prod(shape)
    words_needed = (n + 3) // 4
    if device.type == "cpu":
        # numpy's SFC64 makes 64-bit words 2-3x faster than torch.randint on CPU (25M
        # elements: 24 vs 56 ms, Xeon); seeded from torch's generator, so
        # torch.manual_seed still repeats the masks
        seed = int(torch.randint(0, 1 << 62, (), dtype=torch.int64).item())
        raw = np.random.SFC64(seed).random_raw(words_needed)
        words = torch.from_numpy(raw.view(np.int64))
    else:
        words = torch.randint(
            -(1 << 63), (1 << 63) - 1, (words_needed,), dtype=torch.int64, device=device
        )
    levels = words.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    return levels >= round(p * _LEVELS) - _LEVELS // 2


class _MaskDropout(torch.autograd.Function):
    """``x`` with the elements :func:`keep_mask` drops zeroed and the rest scaled by
    ``1 / (1 - p)``; the backward pass uses the same mask (kept as booleans)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float, scaled: bool) -> torch.Tensor:
        keep = keep_mask(x.shape, p, x.device)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p) if scaled else None
        kept = torch.where(keep, x, 0)
        return kept if ctx.scale is None else kept.mul_(ctx.scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        kept = torch.where(keep, grad, 0)
        return (kept if ctx.scale is None else kept.mul_(ctx.scale)), None, None


def mask_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout of ``x`` with :func:`keep_mask` (``x`` itself when not training or ``p == 0``).

    >>> import torch
    >>> y = mask_dropout(torch.ones(10_000), 0.5)
    >>> sorted(set(y.tolist()))
    [0.0, 2.0]
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:  # as torch: everything dropped
        return x * 0.0
    out: torch.Tensor = _MaskDropout.apply(x, p, True)
    return out


class MaskDropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask with :func:`keep_mask` (same ``p``, same scaling)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return mask_dropout(input, self.p, self.training)


def attention_with_dropout(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention for transformers' ``AttentionInterface``: softmax of ``q k^T * scaling +
    mask``, :func:`mask_dropout` on the probabilities, times ``v``, all in the inputs' dtype
    (half-precision inputs stay half precision: the module docstring says why).

    ``attention_mask`` is additive (transformers' eager mask) or boolean (``True``: attend).
    Returns the output as ``(batch, tokens, heads, head_dim)`` and no attention weights, as
    the SDPA path does.

    Raises:
        ValueError: A causal layer, grouped key / value heads or attention options this
            encoder-only arithmetic does not apply (``softcap``, ``position_bias``, ...).
    """
    unsupported = sorted(k for k, v in kwargs.items() if k in _UNSUPPORTED and v is not None)
    if getattr(module, "is_causal", False) or key.shape[1] != query.shape[1] or unsupported:
        raise ValueError(
            f"{ATTENTION_NAME} covers bidirectional attention with as many key / value heads "
            f"as query heads and no {', '.join(_UNSUPPORTED)}; {type(module).__name__} needs "
            "another attention implementation"
        )
    dtype = query.dtype
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    with torch.autocast(query.device.type, enabled=False):
        # the scale on the query and the mask added in place: each a pass over the logits
        # fewer, forward and backward (the query is tokens / head_dim the logits' size)
        weights = torch.matmul(query * scaling, key.transpose(-2, -1))
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            weights.masked_fill_(~attention_mask, torch.finfo(weights.dtype).min)
        elif attention_mask is not None:
            weights.add_(attention_mask.clamp(min=torch.finfo(dtype).min).to(dtype))
        probs = torch.softmax(weights, dim=-1)
        if module.training and 0.0 < dropout < 1.0:
            # dropped probabilities zeroed; the 1 / (1 - p) goes on the product, which is
            # head_dim / tokens the size (one pass over the probabilities fewer each way)
            kept: torch.Tensor = _MaskDropout.apply(probs, dropout, False)
            out = torch.matmul(kept, value) * (1.0 / (1.0 - dropout))
        else:
            out = torch.matmul(mask_dropout(probs, dropout, module.training), value)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    """Register :func:`attention_with_dropout` with transformers (idempotent, own name)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION_NAME, attention_with_dropout)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


@contextlib.contextmanager
def cpu_dropout(backbone: nn.Module) -> Iterator[bool]:
    """Train ``backbone`` with :func:`keep_mask` dropout inside the block, then restore it.

    Swaps every plain ``nn.Dropout`` for a :class:`MaskDropout` of the same ``p`` and, when
    the backbone dispatches attention through transformers' ``AttentionInterface`` (BERT,
    XLM-R, ...), its attention implementation for :func:`attention_with_dropout`. Both are
    put back on exit, so a checkpoint saved afterwards is unchanged. Yields whether the
    attention was switched: not when no attention layer drops anything (PyTorch's fused
    kernels are faster then), nor for a backbone that cannot switch (it keeps PyTorch's
    attention dropout).
    """
    swapped: list[tuple[nn.Module, str, nn.Dropout]] = []
    before = getattr(getattr(backbone, "config", None), "_attn_implementation", None)
    can_switch = getattr(backbone, "_can_set_attn_implementation", None)
    # Without attention dropout PyTorch's fused kernels are faster: leave the attention.
    dropping = any(dropout.p > 0 for dropout in attention_dropouts(backbone))
    switched = dropping and can_switch is not None and bool(can_switch())
    try:
        for parent in list(backbone.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Dropout:
                    mask = MaskDropout(child.p, child.inplace).train(child.training)
                    setattr(parent, name, mask)
                    swapped.append((parent, name, child))
        if switched:
            _register()
            backbone.set_attn_implementation(ATTENTION_NAME)  # type: ignore[operator]
        elif dropping:
            logger.info(
                "%s keeps PyTorch's attention dropout (its attention implementation is fixed)",
                type(backbone).__name__,
            )
        yield switched
    finally:
        for parent, name, child in swapped:  # first: nothing below can stop it
            setattr(parent, name, child)
        if switched:
            backbone.set_attn_implementation(before)  # type: ignore[operator]
