"""Forward-pass runtimes of :class:`~m3kit.encoder.M3Encoder` (token ids in, head outputs out).

The encoder owns batching, tokenisation and outputs; a runtime only runs padded batches.
``torch`` runs the model itself (:mod:`m3kit.backends.torch_backend`); ``onnx`` is ONNX Runtime
over one exported graph (:mod:`m3kit.backends.onnx_backend`, extra ``m3kit[onnx]``).
"""

from __future__ import annotations

import enum
import os
from typing import TYPE_CHECKING

import torch

from m3kit.precision import Precision

if TYPE_CHECKING:
    from m3kit.backends.onnx_backend import OnnxRunner
    from m3kit.model import M3Model

__all__ = ["EncoderBackend", "check_onnx_cache_dir", "open_onnx_runner", "resolve_backend"]


class EncoderBackend(str, enum.Enum):
    """Which runtime runs the forward pass."""

    AUTO = "auto"  # torch (see M3Encoder.from_pretrained for what measurements say)
    TORCH = "torch"
    ONNX = "onnx"  # ONNX Runtime, CPU; precision fp32 (exact) or int8 (lossy, opt-in)


def check_onnx_cache_dir(
    cache_dir: str | os.PathLike[str] | None, backend: EncoderBackend | str | None
) -> None:
    """Refuse an ONNX export folder given with ``backend="torch"`` (it would be ignored)."""
    if (
        cache_dir is not None
        and backend is not None
        and EncoderBackend(backend) is (EncoderBackend.TORCH)
    ):
        raise ValueError("onnx_cache_dir is for backend='onnx' (or 'auto'), not 'torch'")


def resolve_backend(
    backend: EncoderBackend, precision: Precision, device: torch.device
) -> EncoderBackend:
    """``AUTO`` -> torch; refuse ONNX combinations that cannot run.

    ``AUTO`` stays torch until ``benchmarks/encode.py`` shows ONNX faster on a CPU class (the
    README's speed table has the measurements); ONNX is chosen explicitly.
    """
    if backend is EncoderBackend.AUTO:
        return EncoderBackend.TORCH
    if backend is EncoderBackend.ONNX:
        if device.type != "cpu":
            raise ValueError(f"backend='onnx' runs on CPU; use backend='torch' on {device}")
        if precision not in (Precision.AUTO, Precision.FP32, Precision.INT8):
            raise ValueError(
                f"backend='onnx' runs dtype 'fp32' (exact) or 'int8' (lossy), not "
                f"{precision.value!r}; use backend='torch' for {precision.value}"
            )
    return backend


def open_onnx_runner(
    model: M3Model, precision: Precision, cache_dir: str | os.PathLike[str] | None
) -> OnnxRunner:
    """Export (or reuse) ``model``'s ONNX graph in the variant ``precision`` asks for."""
    from m3kit.backends.onnx_backend import load_onnx_runner

    variant = "int8" if precision is Precision.INT8 else "fp32"
    return load_onnx_runner(model, variant=variant, cache_dir=cache_dir)
