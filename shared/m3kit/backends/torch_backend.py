"""PyTorch forward pass of one padded batch: the model itself, in the encoder's precision."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from m3kit.model import M3Model
from m3kit.outputs import Head
from m3kit.precision import Precision, autocast_dtype

__all__ = ["torch_forward"]


def _autocast(
    precision: Precision, device: torch.device
) -> contextlib.AbstractContextManager[object]:
    dtype = autocast_dtype(precision)
    if dtype is None:  # the weights' dtype sets the maths (fp32, bf16, fp16, int8)
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def torch_forward(
    model: M3Model,
    device: torch.device,
    precision: Precision,
    ids: np.ndarray,
    mask: np.ndarray,
    wanted: frozenset[Head],
    *,
    hidden: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``model`` on one padded batch under ``torch.inference_mode``.

    Args:
        model: The model, already on ``device`` in ``precision``.
        device: Where it runs.
        precision: Its precision (autocast ones wrap the call in ``torch.autocast``).
        ids: Token ids ``[b, t]`` int64.
        mask: Attention mask ``[b, t]`` int64.
        wanted: Heads to compute (dense always is).
        hidden: Also return the last hidden states.

    Returns:
        float32 arrays named like :class:`~m3kit.model.M3Forward`: ``dense``, and ``hidden``,
        ``sparse``, ``colbert`` when asked for.
    """
    with torch.inference_mode(), _autocast(precision, device):
        fwd = model(
            torch.from_numpy(ids).to(device),
            torch.from_numpy(mask).to(device),
            sparse=Head.SPARSE in wanted,
            colbert=Head.COLBERT in wanted,
        )
    out = {"dense": fwd.dense.float().cpu().numpy()}
    if hidden:
        out["hidden"] = fwd.hidden.float().cpu().numpy()
    if fwd.sparse is not None:
        out["sparse"] = fwd.sparse.float().cpu().numpy()
    if fwd.colbert is not None:
        out["colbert"] = fwd.colbert.float().cpu().numpy()
    return out
