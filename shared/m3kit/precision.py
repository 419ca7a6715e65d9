"""Numeric precision of the encoder's forward pass: options, the ``auto`` choice, and setup.

Where bf16 is native, bf16 weights are the fastest exact-enough option measured (dense cosine to
fp32 above 0.9999 on real MiniLM weights); bf16-autocast is slower, and dynamic int8 changes the
vectors (cosine about 0.98). The measured speeds, per CPU, are in the README's *Speed* section
and ``benchmarks/results/encode*.md`` (kept there, not here, so they do not go stale).

So ``auto`` means bf16 weights where bf16 is native, fp16 on older GPUs, else fp32; int8 is
opt-in only.

"Native bf16" is decided by :func:`probe_bf16` from what the hardware reports (the decisions
themselves are the pure functions :func:`cpu_bf16_support` and :func:`gpu_bf16_support`):

- CPU: the ``avx512_bf16`` or ``amx_bf16`` flag in ``/proc/cpuinfo``. An AVX-512 CPU without
  them (Skylake-SP, Cascade Lake) only emulates bf16 (oneDNN still reports bf16 "supported"
  there, which is why its answer is not used). When the flags cannot be read (not Linux),
  ``torch.backends.cpu.get_cpu_capability()`` is a secondary signal that can only rule bf16 out
  (``AVX512`` does not say whether bf16 is native), so the choice is fp32. Apple Silicon and
  other Arm CPUs get fp32: m3kit has no measurement showing torch's CPU bf16 faster there
  (an Arm CPU's own ``bf16`` / ``svebf16`` flags, e.g. Graviton 3's, are named in the reason).
- GPU: compute capability >= 8.0 (Ampere and newer) of the device actually used (``cuda:1``
  asks device 1). Older GPUs (T4, V100) emulate bf16, so ``auto`` picks fp16 on them.

Pass ``dtype="bf16"`` to force bf16 anyway (a warning says it is emulated).
"""

from __future__ import annotations

import enum
import logging
import platform
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from m3kit.machine import read_cpu_flags
from m3kit.model import M3Model

__all__ = [
    "Bf16Support",
    "Precision",
    "check_precision_device",
    "cpu_bf16_support",
    "describe_precision",
    "gpu_bf16_support",
    "prepare_model",
    "probe_bf16",
    "resolve_precision",
    "resolve_training_precision",
]

logger = logging.getLogger(__name__)


class Precision(str, enum.Enum):
    """Numeric precision of the forward pass (outputs are always float32).

    ``AUTO`` picks ``BF16`` on CPUs with native bf16 (AVX-512 BF16 or AMX) and on GPUs of
    compute capability 8.0 or more, ``FP16`` on older GPUs, else ``FP32`` (see
    :func:`probe_bf16`).
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


@dataclass(frozen=True)
class Bf16Support:
    """Whether a device runs bf16 natively, and what the probe saw to decide it."""

    native: bool
    reason: str


_NATIVE_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_support(
    flags: Iterable[str] | None,
    *,
    torch_capability: str | None = None,
    torch_bf16: str | None = None,
    system: str = "Linux",
    arch: str = "x86_64",
) -> Bf16Support:
    """Decide native CPU bf16 from the CPU's flags (pure; :func:`probe_bf16` feeds it).

    Args:
        flags: The CPU flags (``/proc/cpuinfo``), or None when they could not be read.
        torch_capability: ``torch.backends.cpu.get_cpu_capability()``: used only without flags,
            and only to rule bf16 out.
        torch_bf16: Without flags, on an AVX-512 x86 CPU: the bf16 instructions torch's own
            CPU probe reports (``"amx_bf16"``, ``"avx512_bf16"``; ``None``: none, or no probe:
            :func:`_torch_bf16_probe`). Windows and macOS have no ``/proc/cpuinfo``: an AMX or
            Zen 4 CPU there ran fp32, about half as fast.
        system: ``platform.system()``.
        arch: ``platform.machine()``.

    >>> cpu_bf16_support({"avx512f", "avx512_bf16"}).native
    True
    >>> cpu_bf16_support({"avx2", "avx512f", "avx512_vnni"}).native   # Cascade Lake
    False
    """
    if system == "Darwin" and arch in ("arm64", "aarch64"):
        return Bf16Support(
            False,
            "Apple Silicon: m3kit has no measurement showing torch's CPU bf16 faster than "
            "fp32 there",
        )
    if arch.lower() in ("aarch64", "arm64"):
        return _arm_bf16_support(flags)
    if flags is not None:
        present = frozenset(flags)
        for flag in _NATIVE_CPU_FLAGS:
            if flag in present:
                return Bf16Support(True, f"CPU reports {flag}")
        if "avx512f" in present:
            return Bf16Support(
                False, "CPU reports avx512f but neither avx512_bf16 nor amx_bf16: bf16 is emulated"
            )
        return Bf16Support(False, "CPU reports neither avx512_bf16 nor amx_bf16")
    if not torch_capability:
        return Bf16Support(
            False, "CPU flags unreadable and no torch CPU capability: bf16 not known native"
        )
    seen = f"CPU flags unreadable; torch reports CPU capability {torch_capability}"
    if torch_capability.upper() != "AVX512":
        return Bf16Support(False, f"{seen}: no AVX-512, so neither avx512_bf16 nor amx_bf16")
    if torch_bf16:
        return Bf16Support(True, f"{seen}, and its CPU probe reports {torch_bf16}")
    return Bf16Support(False, f"{seen}, which does not tell whether bf16 is native")


def _torch_bf16_probe() -> str | None:
    """The native bf16 instructions torch's own CPU probe reports (cpuinfo, read without
    ``/proc``), ``None`` when none or when this torch has no such probe (a private API: any
    failure is "none", never an error)."""
    try:
        import torch.cpu as tcpu

        if tcpu._is_amx_tile_supported():  # type: ignore[attr-defined]
            return "amx_bf16"
        if tcpu._is_avx512_bf16_supported():  # type: ignore[attr-defined]
            return "avx512_bf16"
    except Exception:  # (private: absent or changed in another torch)
        return None
    return None


def _arm_bf16_support(flags: Iterable[str] | None) -> Bf16Support:
    """Linux Arm CPUs (Graviton, Ampere, Grace): fp32, with the CPU's own flags named.

    Arm spells its bf16 instructions ``bf16`` (BFDOT / BFMMLA) and ``svebf16`` in the
    ``Features`` line; they are reported, but ``auto`` stays fp32 until a measurement shows
    torch's Arm bf16 kernels faster than fp32 there.
    """
    no_measurement = "m3kit has no measurement showing torch's CPU bf16 faster than fp32 there"
    if flags is None:
        return Bf16Support(False, f"Arm CPU, flags unreadable: {no_measurement}")
    present = sorted(frozenset(flags) & {"bf16", "svebf16"})
    if present:
        return Bf16Support(False, f"Arm CPU reports {'/'.join(present)}, but {no_measurement}")
    return Bf16Support(False, "Arm CPU without the bf16 flag: bf16 is emulated")


def gpu_bf16_support(capability: tuple[int, int], name: str = "GPU") -> Bf16Support:
    """Decide native GPU bf16 from the compute capability (pure; 8.0 = Ampere and newer).

    >>> gpu_bf16_support((7, 5), "Tesla T4")
    Bf16Support(native=False, reason='Tesla T4 has compute capability 7.5 < 8.0: bf16 is emulated')
    """
    major, minor = capability
    if (major, minor) >= (8, 0):
        return Bf16Support(True, f"{name} has compute capability {major}.{minor} >= 8.0")
    return Bf16Support(
        False, f"{name} has compute capability {major}.{minor} < 8.0: bf16 is emulated"
    )


def torch_cpu_capability() -> str | None:
    """``torch.backends.cpu.get_cpu_capability()``, or None on builds without it."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # pragma: no cover - old torch builds
        return None


def probe_bf16(device: torch.device) -> Bf16Support:
    """Probe whether ``device`` (the one the encoder will use) runs bf16 natively."""
    if device.type == "cpu":
        cpu = read_cpu_flags()
        return cpu_bf16_support(
            cpu.flags,
            torch_capability=torch_cpu_capability(),
            torch_bf16=_torch_bf16_probe() if cpu.flags is None else None,
            system=platform.system(),
            arch=platform.machine(),
        )
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        return gpu_bf16_support(tuple(torch.cuda.get_device_capability(index)), name)  # type: ignore[arg-type]
    return Bf16Support(False, f"no bf16 probe for {device.type} devices")


def check_precision_device(precision: Precision, device_type: str) -> None:
    """Refuse a precision that devices of ``device_type`` (``"cpu"``, ``"cuda"``) cannot run.

    Raises:
        ValueError: fp16 on a CPU, or int8 (dynamic quantisation) off a CPU.
    """
    if precision is Precision.FP16 and device_type == "cpu":
        raise ValueError("fp16 is not supported on CPU; use bf16 (or fp32)")
    if precision is Precision.INT8 and device_type != "cpu":
        raise ValueError(f"int8 dynamic quantisation runs on CPU only, not on {device_type}")


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """Turn ``AUTO`` into a concrete precision for ``device``; refuse impossible combinations."""
    if precision is Precision.AUTO:
        if device.type not in ("cpu", "cuda"):
            return Precision.FP32
        native = probe_bf16(device).native
        if device.type == "cuda":
            return Precision.BF16 if native else Precision.FP16
        return Precision.BF16 if native else Precision.FP32
    check_precision_device(precision, device.type)
    if precision in (Precision.BF16, Precision.BF16_AUTOCAST) and device.type in ("cpu", "cuda"):
        probe = probe_bf16(device)
        if not probe.native:
            logger.warning(
                "%s on %s without native bf16 (%s): it is emulated and likely slower than %s",
                precision.value,
                device,
                probe.reason,
                "fp16" if device.type == "cuda" else "fp32",
            )
    return precision


#: Mixed precision a fine-tuning run may use (autocast; float32 master weights throughout).
TRAINING_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_training_precision(precision: str, device: torch.device) -> str:
    """The autocast of a fine-tuning run: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``"auto"`` picks bf16 where :func:`probe_bf16` finds it native (CPUs with AVX-512 BF16 or
    AMX, GPUs of compute capability 8.0+), fp16 on older GPUs, else fp32: bf16 autocast on a
    CPU that only emulates bf16 is slower than fp32. An explicit choice is kept (fp16 on CPU
    is refused: torch has no CPU fp16 autocast worth using).
    """
    if precision not in TRAINING_PRECISIONS:
        options = ", ".join(repr(p) for p in TRAINING_PRECISIONS)
        raise ValueError(f"precision must be one of {options}, not {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 training needs a GPU; use bf16 (or fp32) on CPU")
    if precision != "auto":
        return precision
    if device.type not in ("cpu", "cuda"):
        return "fp32"
    probe = probe_bf16(device)
    logger.info("training precision auto on %s: bf16 %s (%s)", device, probe.native, probe.reason)
    if probe.native:
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def prepare_model(model: M3Model, precision: Precision) -> M3Model:
    """Put ``model`` (already on its device, in eval mode) in ``precision``, in place.

    ``BF16`` / ``FP16`` cast every parameter; ``INT8`` swaps the backbone's ``nn.Linear``
    layers for dynamically quantised ones (int8 weights with per-channel scales, activations
    quantised per batch; the heads stay float32); ``FP32`` and
    ``BF16_AUTOCAST`` leave float32 weights untouched.

    Raises:
        ValueError: ``FP32``, ``BF16_AUTOCAST`` or ``INT8`` asked of a model that no longer
            holds float32 weights (another encoder cast it to bf16 / fp16 in place, or, but
            for ``INT8``, quantised it): it would run those weights under the name asked for.
    """
    if precision in (Precision.FP32, Precision.BF16_AUTOCAST, Precision.INT8):
        held = _not_float32(model, quantised_ok=precision is Precision.INT8)
        if held:
            raise ValueError(
                f"precision {precision.value!r} needs float32 weights; this model holds "
                f"{held} (an encoder with dtype 'bf16', 'fp16' or 'int8' changes the model it "
                "is given in place, and 'auto' picks bf16 where bf16 is native). Load the "
                "checkpoint again (M3Encoder.from_pretrained(path, dtype=...)) or give a "
                "float32 model"
            )
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
    """One line for the load-time log: what runs in which precision, what was detected, why."""
    if precision is Precision.FP32:
        what = "fp32 (float32 weights"
    elif precision is Precision.BF16:
        what = "bf16 (weights cast to bfloat16"
    elif precision is Precision.FP16:
        what = "fp16 (weights cast to float16"
    elif precision is Precision.BF16_AUTOCAST:
        what = "bf16-autocast (float32 weights, bf16 matmuls"
    else:
        what = "int8 (dynamic int8 Linear layers in the backbone; lossy"
    if device.type not in ("cpu", "cuda"):
        return what + ")"
    probe = probe_bf16(device)
    return f"{what}; bf16 {'native' if probe.native else 'not native'}: {probe.reason})"


def _not_float32(model: nn.Module, *, quantised_ok: bool = False) -> str | None:
    """What ``model`` holds other than float32 weights, in words (``None``: float32 only)."""
    dtypes = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    quantised = not quantised_ok and any(
        type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules()
    )
    if not dtypes and not quantised:
        return None
    held = ", ".join(dtypes) + (" weights" if dtypes else "")
    if quantised:
        held += (" and " if dtypes else "") + "torch int8 (quantised) layers"
    return held
