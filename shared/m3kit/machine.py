"""What machine a measurement ran on: CPU model and flags, torch, threads, GPUs.

Benchmarks write :func:`describe_machine` into their results so that a number always comes
with the hardware that produced it, and the precision probe (:mod:`m3kit.precision`) reads
its CPU flags through :func:`read_cpu_flags`.

>>> info = describe_machine()
>>> info.torch_threads >= 1 and "torch" in info.markdown()
True
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "RELEVANT_CPU_FLAGS",
    "CpuFlags",
    "GpuInfo",
    "MachineInfo",
    "cgroup_cpu_limit",
    "checked_device",
    "describe_machine",
    "parsed_device",
    "read_cpu_flags",
    "usable_cpus",
]

logger = logging.getLogger(__name__)

#: CPU flags that decide how fast the encoder runs (as Linux spells them in /proc/cpuinfo:
#: x86's ``flags``, then Arm's ``Features``: dot products, int8 and bf16 matrix multiply, SVE).
RELEVANT_CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "svebf16",
)

_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuFlags:
    """The CPU model and feature flags the operating system reports.

    Attributes:
        model: CPU model name (``platform.processor()`` when the OS names none).
        flags: Every flag of the first CPU in ``/proc/cpuinfo`` (x86 ``flags`` or Arm
            ``Features``), or None when they could not be read (not Linux, no access).
        source: Where the flags came from (``"/proc/cpuinfo"`` or ``"unavailable"``).
    """

    model: str
    flags: frozenset[str] | None
    source: str


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str] | None]:
    """Model name and flags of the first CPU listed in a ``/proc/cpuinfo`` text.

    On x86 the name is followed by the CPU's family and model numbers: a virtual machine often
    names its CPU only "AMD EPYC", which is Zen 3, 4 or 5 (family 25 model 1 / 17, family 26),
    CPUs whose bf16 and AVX-512 speeds differ.

    >>> model, flags = parse_cpuinfo("model name\\t: Xeon\\nflags\\t\\t: fpu avx2 avx512f\\n")
    >>> model, sorted(flags)
    ('Xeon', ['avx2', 'avx512f', 'fpu'])
    >>> parse_cpuinfo("cpu family\\t: 26\\nmodel\\t\\t: 2\\nmodel name\\t: AMD EPYC\\n")
    ('AMD EPYC (family 26, model 2)', None)
    >>> parse_cpuinfo("processor : 0\\n")
    ('', None)
    """
    fields: dict[str, str] = {}
    flags: frozenset[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("model name", "cpu family", "model") and not fields.get(key):
            fields[key] = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags = frozenset(value.split())
    model = fields.get("model name", "")
    if model and "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']}, model {fields['model']})"
    return model, flags


@functools.lru_cache(maxsize=1)
def read_cpu_flags() -> CpuFlags:
    """Read the CPU model and flags once per process (``/proc/cpuinfo`` on Linux)."""
    model, flags, source = "", None, "unavailable"
    try:
        model, flags = parse_cpuinfo(_CPUINFO.read_text(encoding="utf-8", errors="replace"))
        if flags is not None:
            source = str(_CPUINFO)
    except OSError as e:  # not Linux, or /proc hidden: the caller falls back and says so
        logger.debug("could not read %s: %s", _CPUINFO, e)
    return CpuFlags(model=model or platform.processor() or "unknown", flags=flags, source=source)


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA (or ROCm) device as torch sees it."""

    index: int
    name: str
    capability: tuple[int, int]
    memory_gib: float
    bf16_native: bool
    bf16_reason: str


@dataclass(frozen=True)
class MachineInfo:
    """A machine as a benchmark header describes it (see :func:`describe_machine`).

    Attributes:
        cpu_model: CPU model name.
        cpu_flags: The relevant flags (:data:`RELEVANT_CPU_FLAGS`) the CPU has.
        cpu_flags_source: Where the flags came from (``"unavailable"`` off Linux).
        logical_cpus: CPUs this process may run on.
        system: ``platform.platform()``.
        arch: ``platform.machine()``.
        python: Python version.
        torch_version: ``torch.__version__``.
        transformers_version: Installed transformers version (None when missing).
        torch_threads: ``torch.get_num_threads()``.
        torch_cpu_capability: ``torch.backends.cpu.get_cpu_capability()``.
        cpu_bf16_native: Whether ``dtype="auto"`` picks bf16 on this CPU.
        cpu_bf16_reason: Why (what the probe saw).
        gpus: Visible CUDA devices.
    """

    cpu_model: str
    cpu_flags: tuple[str, ...]
    cpu_flags_source: str
    logical_cpus: int
    system: str
    arch: str
    python: str
    torch_version: str
    transformers_version: str | None
    torch_threads: int
    torch_cpu_capability: str
    cpu_bf16_native: bool
    cpu_bf16_reason: str
    gpus: tuple[GpuInfo, ...]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); :meth:`from_dict` reads it back."""
        return json.loads(json.dumps(asdict(self)))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineInfo:
        """Rebuild a :class:`MachineInfo` from :meth:`as_dict` (e.g. a results file's header)."""
        gpus = tuple(
            GpuInfo(**{**g, "capability": tuple(g["capability"])}) for g in data.get("gpus", ())
        )
        return cls(**{**data, "cpu_flags": tuple(data["cpu_flags"]), "gpus": gpus})

    def markdown(self) -> str:
        """A few markdown lines for a results file's header."""
        flags = " ".join(self.cpu_flags) or "none of " + ", ".join(RELEVANT_CPU_FLAGS)
        lines = [
            f"- Machine: {self.cpu_model} ({self.arch}), {self.logical_cpus} logical CPUs, "
            f"{self.system}",
            f"- CPU flags ({self.cpu_flags_source}): {flags}",
            f"- torch {self.torch_version} ({self.torch_threads} threads, CPU capability "
            f"{self.torch_cpu_capability}), transformers {self.transformers_version or '-'}, "
            f"Python {self.python}",
            f"- bf16 on CPU: {'native' if self.cpu_bf16_native else 'not native'} "
            f"({self.cpu_bf16_reason})",
        ]
        for gpu in self.gpus:
            lines.append(
                f"- GPU {gpu.index}: {gpu.name}, compute capability "
                f"{gpu.capability[0]}.{gpu.capability[1]}, {gpu.memory_gib:.0f} GiB, bf16 "
                f"{'native' if gpu.bf16_native else 'not native'}"
            )
        if not self.gpus:
            lines.append("- GPU: none")
        return "\n".join(lines)


def parsed_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device`` (whether or not it runs here).

    Raises:
        ValueError: Not a device name torch reads.
    """
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device {device!r} is not a device torch knows (e.g. 'cpu', 'cuda', 'cuda:1', 'mps')"
        ) from None


def checked_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device``, refused before a model loads when it cannot run here.

    >>> checked_device("cpu")
    device(type='cpu')
    >>> checked_device("gpu")
    Traceback (most recent call last):
    ...
    ValueError: device 'gpu' is not a device torch knows (e.g. 'cpu', 'cuda', 'cuda:1', 'mps')

    Raises:
        ValueError: Not a device name torch reads, or a CUDA device where CUDA is not
            available (no GPU, or a CPU-only torch) or that does not exist.
    """
    parsed = parsed_device(device)
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r}: CUDA is not available here (no GPU, or torch "
                f"{torch.__version__} was built without CUDA); use device 'cpu'"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r}: Apple's MPS is not available here")
    return parsed


def usable_cpus() -> int:
    """Logical CPUs this process may run on: its affinity (a container's cpuset, ``taskset``,
    a batch scheduler's allocation), not every CPU of the host (``os.cpu_count()``), and at
    most its cgroup's CPU limit (``docker --cpus``, a Kubernetes limit: :func:`cgroup_cpu_limit`),
    which the affinity does not show: a container limited to 2 CPUs on a 64-CPU host started
    32 pool workers, each with a copy of the model.

    >>> usable_cpus() >= 1
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, limit)) if limit is not None else cpus


def cgroup_cpu_limit(
    root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> int | None:
    """The CPUs this process's cgroup CPU quota allows, rounded up (``None``: no quota, or none
    readable: not Linux, no cgroup file system).

    cgroup v2: ``cpu.max`` (``"<quota> <period>"``, ``"max ..."`` unlimited) of the process's
    cgroup (``0::<path>`` in ``membership``) or, in a container's namespace, of ``root``;
    cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: unlimited).
    """
    try:
        lines = membership.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    own = next((line[3:] for line in lines if line.startswith("0::")), "")
    # the process's cgroup and every one above it: the smallest quota binds (a container's
    # limit sits on its root, the process in a child with "max": systemd in a container)
    folder = root / own.strip("/")
    limits: list[int] = []
    seen_v2 = False
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text(encoding="utf-8").split()[:2]
            seen_v2 = True
            cpus = None if quota == "max" else _cpus(quota, period)
            if cpus is not None:
                limits.append(cpus)
        except (OSError, ValueError):
            pass
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    if seen_v2:
        return min(limits) if limits else None
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota = (folder / "cpu.cfs_quota_us").read_text(encoding="utf-8").strip()
            period = (folder / "cpu.cfs_period_us").read_text(encoding="utf-8").strip()
        except OSError:
            continue
        return None if quota.startswith("-") else _cpus(quota, period)
    return None


def _cpus(quota: str, period: str) -> int | None:
    """``ceil(quota / period)``, at least 1 (``None``: not numbers)."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return max(1, -(-q // p)) if q > 0 and p > 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _gpus() -> tuple[GpuInfo, ...]:
    from m3kit.precision import gpu_bf16_support

    if not torch.cuda.is_available():
        return ()
    out = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        capability = (int(props.major), int(props.minor))
        probe = gpu_bf16_support(capability, props.name)
        out.append(
            GpuInfo(
                index=index,
                name=props.name,
                capability=capability,
                memory_gib=props.total_memory / 2**30,
                bf16_native=probe.native,
                bf16_reason=probe.reason,
            )
        )
    return tuple(out)


def describe_machine() -> MachineInfo:
    """Describe this machine: CPU, flags, torch and its threads, GPUs, the bf16 choice."""
    from m3kit.precision import probe_bf16, torch_cpu_capability

    cpu = read_cpu_flags()
    probe = probe_bf16(torch.device("cpu"))
    present = cpu.flags or frozenset()
    return MachineInfo(
        cpu_model=cpu.model,
        cpu_flags=tuple(f for f in RELEVANT_CPU_FLAGS if f in present),
        cpu_flags_source=cpu.source,
        logical_cpus=usable_cpus(),
        system=platform.platform(),
        arch=platform.machine(),
        python=sys.version.split()[0],
        torch_version=str(torch.__version__),
        transformers_version=_version("transformers"),
        torch_threads=torch.get_num_threads(),
        torch_cpu_capability=torch_cpu_capability() or "unknown",
        cpu_bf16_native=probe.native,
        cpu_bf16_reason=probe.reason,
        gpus=_gpus(),
    )
