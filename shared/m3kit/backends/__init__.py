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

    AUTO = "auto"  # torch; ONNX for int8 on CPU (see resolve_backend)
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
    """``AUTO`` -> torch, except ``int8`` on CPU -> ONNX; refuse ONNX combinations that cannot
    run.

    ``AUTO`` stays torch until ``benchmarks/encode.py`` shows ONNX faster on a CPU class (the
    README's speed table has the measurements). ``int8`` is the exception: torch's dynamic int8
    fails the quality guard of ``benchmarks/quality_paths.py`` (ColBERT and fused nDCG@10 more
    than 0.5 points under fp32) where ONNX Runtime's passes, so asking for int8 gets ONNX's
    unless ``backend="torch"`` is given.

    Raises:
        MissingExtraError: ``int8`` with ``AUTO`` on CPU without onnxruntime installed (the
            message names the extra and ``backend="torch"``).
    """
    if backend is EncoderBackend.AUTO:
        if precision is Precision.INT8 and device.type == "cpu":
            import importlib.util

            if importlib.util.find_spec("onnxruntime") is None:
                from m3kit.errors import MissingExtraError

                raise MissingExtraError(
                    "dtype='int8' runs ONNX Runtime's int8 (torch's dynamic int8 fails the "
                    "quality guard); install it with pip install 'm3kit[onnx]', or pass "
                    "backend='torch' for torch's int8"
                )
            return EncoderBackend.ONNX
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
