"""Numeric precision of the encoder's forward pass: options, the ``auto`` choice, and setup.

Measured with ``python benchmarks/encode.py --repeats 2`` on 2 shared AMD EPYC cores with
AVX-512 BF16 (32 SQuAD passages of 256 tokens; ranges over two full runs; latest results in
``benchmarks/results/encode.md``):

=================  ===========================  ==================  =====================
precision          BGE-M3 shape, 3 heads:       MiniLM (real        MiniLM dense cosine
                   speed vs fp32 (vs FlagEmb.)  weights) vs fp32    to fp32 (min / mean)
=================  ===========================  ==================  =====================
bf16 (weights)     3.3-3.6x (5.9-6.3x)          1.8-1.95x           0.99993 / 0.99995
bf16-autocast      2.7-3.0x (4.9-5.1x)          1.4-1.8x            0.99998 / 0.99998
int8 (dynamic)     3.2x (6.2x), one run         2.0x                0.980 / 0.985 (lossy)
=================  ===========================  ==================  =====================

So ``auto`` means bf16 weights on CPUs with native bf16 (and on GPUs); int8 is opt-in only.
"""

from __future__ import annotations

import enum
import logging
import warnings

import torch
from torch import nn

from m3kit.model import M3Model

__all__ = ["Precision", "describe_precision", "prepare_model", "resolve_precision"]

logger = logging.getLogger(__name__)


class Precision(str, enum.Enum):
    """Numeric precision of the forward pass (outputs are always float32).

    ``AUTO`` picks ``BF16`` on CPUs with native bf16 kernels (AVX-512 BF16 or AMX) and on GPUs
    that support it, ``FP16`` on other GPUs, else ``FP32``.
    """

    AUTO = "auto"
    FP32 = "fp32"  # float32 weights and maths: bit-for-bit FlagEmbedding's CPU results
    BF16 = "bf16"  # weights cast to bfloat16 (layer norm and softmax still accumulate in fp32)
    FP16 = "fp16"  # weights cast to float16 (GPU only)
    BF16_AUTOCAST = "bf16-autocast"  # float32 weights kept, matmuls in bf16 under autocast
    INT8 = "int8"  # CPU only: backbone Linear layers dynamically quantised to int8 (lossy)


_DTYPE_ALIASES = {
    "float32": Precision.FP32,
    "bfloat16": Precision.BF16,
    "float16": Precision.FP16,
    "bf16_autocast": Precision.BF16_AUTOCAST,
    "qint8": Precision.INT8,
}

_TORCH_DTYPES = {
    torch.float32: Precision.FP32,
    torch.bfloat16: Precision.BF16,
    torch.float16: Precision.FP16,
    torch.qint8: Precision.INT8,
}


def precision_from(dtype: Precision | str | torch.dtype | None) -> Precision:
    """Parse a user's ``dtype`` argument (enum, name, alias or ``torch.dtype``)."""
    if dtype is None:
        return Precision.AUTO
    if isinstance(dtype, torch.dtype):
        if dtype not in _TORCH_DTYPES:
            raise ValueError(f"unsupported dtype {dtype}; use float32, bfloat16, float16 or qint8")
        return _TORCH_DTYPES[dtype]
    if isinstance(dtype, Precision):
        return dtype
    name = str(dtype).lower()
    if name in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[name]
    try:
        return Precision(name)
    except ValueError:
        options = ", ".join(repr(p.value) for p in Precision)
        raise ValueError(f"unknown dtype {dtype!r}; use one of {options}") from None


def cpu_has_native_bf16() -> bool:
    """True when oneDNN reports native bf16 kernels (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - very old torch builds
        return False


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """Turn ``AUTO`` into a concrete precision for ``device``; refuse impossible combinations."""
    if precision is Precision.AUTO:
        if device.type == "cuda":
            return Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP16
        if device.type == "cpu" and cpu_has_native_bf16():
            return Precision.BF16
        return Precision.FP32
    if precision is Precision.FP16 and device.type == "cpu":
        raise ValueError("fp16 is not supported on CPU; use bf16 (or fp32)")
    if precision is Precision.INT8 and device.type != "cpu":
        raise ValueError(f"int8 dynamic quantisation runs on CPU only, not on {device.type}")
    bf16 = precision in (Precision.BF16, Precision.BF16_AUTOCAST)
    if bf16 and device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning(
            "this CPU has no native bf16 kernels (AVX-512 BF16 / AMX): %s is emulated and "
            "likely slower than fp32",
            precision.value,
        )
    return precision


def prepare_model(model: M3Model, precision: Precision) -> M3Model:
    """Put ``model`` (already on its device, in eval mode) in ``precision``, in place.

    ``BF16`` / ``FP16`` cast every parameter; ``INT8`` swaps the backbone's ``nn.Linear``
    layers for dynamically quantised ones (int8 weights with per-channel scales, activations
    quantised per batch; the heads stay float32); ``FP32`` and
    ``BF16_AUTOCAST`` leave float32 weights untouched.
    """
    if precision is Precision.BF16:
        model.to(torch.bfloat16)
    elif precision is Precision.FP16:
        model.to(torch.float16)
    elif precision is Precision.INT8:
        with warnings.catch_warnings():  # torch.ao announces its move to torchao; it still works
            warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
            # per-output-channel weight scales: on MiniLM's real weights the dense cosine to
            # fp32 is 0.98 this way against 0.89 with torch's per-tensor default, at equal speed
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            torch.ao.quantization.quantize_dynamic(
                model.backbone, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
            )
    elif precision is Precision.AUTO:
        raise ValueError("resolve the precision before preparing the model")
    return model


def autocast_dtype(precision: Precision) -> torch.dtype | None:
    """The autocast dtype for ``precision``, or None when the weights already set the maths."""
    return torch.bfloat16 if precision is Precision.BF16_AUTOCAST else None


def describe_precision(precision: Precision, device: torch.device) -> str:
    """One line for the load-time log: what runs in which precision and why."""
    if precision is Precision.FP32:
        return "fp32 (float32 weights)"
    if precision is Precision.BF16:
        why = (
            "native bf16 kernels"
            if device.type != "cpu" or cpu_has_native_bf16()
            else "emulated bf16"
        )
        return f"bf16 (weights cast to bfloat16; {why})"
    if precision is Precision.FP16:
        return "fp16 (weights cast to float16)"
    if precision is Precision.BF16_AUTOCAST:
        return "bf16-autocast (float32 weights, bf16 matmuls)"
    return "int8 (dynamic int8 Linear layers in the backbone; lossy)"
