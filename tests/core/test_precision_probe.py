"""The bf16 probe behind ``dtype="auto"``: the hardware decides, and the log says why."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import m3kit.precision
from m3kit import M3Encoder
from m3kit.machine import (
    RELEVANT_CPU_FLAGS,
    MachineInfo,
    describe_machine,
    parse_cpuinfo,
    read_cpu_flags,
)
from m3kit.precision import (
    Bf16Support,
    Precision,
    cpu_bf16_support,
    describe_precision,
    gpu_bf16_support,
    probe_bf16,
    resolve_precision,
    resolve_training_precision,
)

SKYLAKE_SP = {"avx", "avx2", "fma", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"}
CASCADE_LAKE = SKYLAKE_SP | {"avx512_vnni"}
COOPER_LAKE = CASCADE_LAKE | {"avx512_bf16"}
SAPPHIRE_RAPIDS = COOPER_LAKE | {"amx_tile", "amx_bf16", "amx_int8", "avx512_fp16"}
ZEN4 = CASCADE_LAKE | {"avx512_bf16"}  # AMD EPYC Genoa
ZEN3 = {"avx", "avx2", "fma"}
GRAVITON3 = {"fp", "asimd", "asimddp", "sve", "bf16", "svebf16", "i8mm"}  # "Features" line
GRAVITON2 = {"fp", "asimd", "asimddp", "atomics"}  # Neoverse N1: no bf16


@pytest.mark.parametrize(
    ("flags", "kwargs", "native", "reason"),
    [
        (SAPPHIRE_RAPIDS, {}, True, "CPU reports amx_bf16"),
        (COOPER_LAKE, {}, True, "CPU reports avx512_bf16"),
        (ZEN4, {}, True, "CPU reports avx512_bf16"),
        ({"amx_bf16"}, {}, True, "amx_bf16"),
        (CASCADE_LAKE, {}, False, "avx512f but neither avx512_bf16 nor amx_bf16: bf16 is emul"),
        (SKYLAKE_SP, {}, False, "bf16 is emulated"),
        (ZEN3, {}, False, "neither avx512_bf16 nor amx_bf16"),
        (set(), {}, False, "neither"),
        # Arm flags are read by their own names; fp32 either way until measured there
        (GRAVITON3, {"arch": "aarch64"}, False, "Arm CPU reports bf16"),
        (GRAVITON2, {"arch": "aarch64"}, False, "Arm CPU without the bf16 flag"),
        (None, {"arch": "aarch64", "torch_capability": "SVE256"}, False, "Arm CPU, flags unread"),
        (None, {"system": "Darwin", "arch": "arm64"}, False, "Apple Silicon"),
        # no flags: torch's capability can only rule bf16 out
        (None, {"torch_capability": "AVX512"}, False, "does not tell whether bf16 is native"),
        # ... but torch's own CPU probe does, where /proc/cpuinfo is missing (Windows, macOS):
        # an AMX or Zen 4 CPU there ran fp32
        (None, {"torch_capability": "AVX512", "torch_bf16": "amx_bf16"}, True, "reports amx"),
        (None, {"torch_capability": "AVX2", "torch_bf16": "amx_bf16"}, False, "no AVX-512"),
        (None, {"torch_capability": "AVX2"}, False, "no AVX-512"),
        (None, {"torch_capability": "DEFAULT"}, False, "no AVX-512"),
        (None, {}, False, "unreadable and no torch CPU capability"),
    ],
)
def test_cpu_table(
    flags: set[str] | None, kwargs: dict[str, str], native: bool, reason: str
) -> None:
    got = cpu_bf16_support(flags, **kwargs)  # type: ignore[arg-type]
    assert got.native is native
    assert reason in got.reason


@pytest.mark.parametrize(
    ("capability", "native"),
    [
        ((6, 1), False),
        ((7, 0), False),
        ((7, 5), False),
        ((8, 0), True),
        ((8, 9), True),
        ((9, 0), True),
    ],
)
def test_gpu_table(capability: tuple[int, int], native: bool) -> None:
    got = gpu_bf16_support(capability, "gpu")
    assert got.native is native
    assert f"{capability[0]}.{capability[1]}" in got.reason


def _fake_gpus(
    monkeypatch: pytest.MonkeyPatch, capabilities: dict[int, tuple[int, int]]
) -> list[int]:
    asked: list[int] = []

    def capability(index: int) -> tuple[int, int]:
        asked.append(index)
        return capabilities[index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"GPU{index}")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return asked


def test_gpu_probe_uses_the_device_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with a T4 (device 0) and an A100 (device 1): each device decides for itself."""
    asked = _fake_gpus(monkeypatch, {0: (7, 5), 1: (8, 0)})
    assert resolve_precision(Precision.AUTO, torch.device("cuda:1")) is Precision.BF16
    assert resolve_precision(Precision.AUTO, torch.device("cuda:0")) is Precision.FP16
    assert resolve_precision(Precision.AUTO, torch.device("cuda")) is Precision.FP16  # current: 0
    assert asked == [1, 0, 0]
    assert "cuda:1 (GPU1) has compute capability 8.0" in probe_bf16(torch.device("cuda:1")).reason


def test_forced_bf16_on_an_emulating_gpu_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_gpus(monkeypatch, {0: (7, 0)})
    with caplog.at_level(logging.WARNING, logger="m3kit.precision"):
        assert resolve_precision(Precision.BF16, torch.device("cuda:0")) is Precision.BF16
    assert "compute capability 7.0 < 8.0" in caplog.text and "emulated" in caplog.text


def test_forced_bf16_on_an_emulating_cpu_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        m3kit.precision, "probe_bf16", lambda device: cpu_bf16_support(CASCADE_LAKE)
    )
    with caplog.at_level(logging.WARNING, logger="m3kit.precision"):
        assert resolve_precision(Precision.BF16, torch.device("cpu")) is Precision.BF16
    assert "avx512f but neither avx512_bf16 nor amx_bf16" in caplog.text


def test_parse_cpuinfo_x86_and_arm() -> None:
    x86 = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx512f avx512_bf16\n\n"
    x86 += "processor\t: 1\nmodel name\t: Intel Xeon\nflags\t\t: fpu\n"
    assert parse_cpuinfo(x86) == ("Intel Xeon", frozenset({"fpu", "avx512f", "avx512_bf16"}))
    arm = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd bf16\nCPU part\t: 0xd40\n"
    assert parse_cpuinfo(arm) == ("", frozenset({"fp", "asimd", "bf16"}))


def test_parse_cpuinfo_names_the_x86_family_and_model() -> None:
    """A VM's "AMD EPYC" is Zen 3, 4 or 5: the family and model numbers of the first CPU say
    which (benchmark results named only "AMD EPYC", and a Zen 5 was taken for a Zen 4)."""
    cpu = "processor\t: {}\ncpu family\t: {}\nmodel\t\t: {}\nmodel name\t: AMD EPYC\n\n"
    text = cpu.format(0, 26, 2) + cpu.format(1, 25, 17)
    assert parse_cpuinfo(text)[0] == "AMD EPYC (family 26, model 2)"
    assert parse_cpuinfo(cpu.format(0, 25, 1).replace("AMD EPYC", ""))[0] == ""


# -- the real probe on this machine -----------------------------------------------------------
def _proc_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo (not Linux)")
    for line in cpuinfo.read_text(encoding="utf-8").splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    pytest.skip("/proc/cpuinfo lists no flags")


def test_real_probe_agrees_with_proc_cpuinfo(
    tiny_m3_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flags = _proc_flags()
    expected = bool(flags & {"avx512_bf16", "amx_bf16"})
    probe = probe_bf16(torch.device("cpu"))
    assert probe.native is expected, (probe, sorted(flags & {"avx512f", "avx512_bf16", "amx_bf16"}))
    assert read_cpu_flags().flags == frozenset(flags)
    auto = resolve_precision(Precision.AUTO, torch.device("cpu"))
    assert auto is (Precision.BF16 if expected else Precision.FP32)

    # the load-time log line says what was detected and why
    with caplog.at_level(logging.INFO, logger="m3kit.encoder"):
        enc = M3Encoder.from_pretrained(tiny_m3_path, device="cpu")
    assert enc.precision is auto
    line = next(r.getMessage() for r in caplog.records if r.name == "m3kit.encoder")
    verdict = "native" if expected else "not native"
    assert f"bf16 {verdict}: {probe.reason}" in line
    assert describe_precision(auto, torch.device("cpu")) in line


def test_describe_machine_matches_this_machine() -> None:
    flags = _proc_flags()
    info = describe_machine()
    assert set(info.cpu_flags) == flags & set(RELEVANT_CPU_FLAGS)
    assert info.cpu_flags_source == "/proc/cpuinfo"
    assert info.cpu_bf16_native is probe_bf16(torch.device("cpu")).native
    assert info.torch_version == torch.__version__
    assert info.torch_threads == torch.get_num_threads()
    assert info.gpus == () or torch.cuda.is_available()
    as_dict = info.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict  # JSON-ready
    assert as_dict["cpu_flags"] == list(info.cpu_flags)
    assert MachineInfo.from_dict(as_dict) == info
    md = info.markdown()
    assert info.cpu_model in md and f"torch {torch.__version__}" in md
    assert ("bf16 on CPU: native" if info.cpu_bf16_native else "bf16 on CPU: not native") in md


def test_describe_machine_names_arm_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Graviton 3's benchmark header lists its own bf16 / SVE / dot-product flags, not
    "none of avx2, fma, ..." (x86 names only), and says why auto stays fp32 there."""
    import m3kit.machine
    from m3kit.machine import CpuFlags

    fake = CpuFlags(model="Graviton3", flags=frozenset(GRAVITON3), source="test")
    monkeypatch.setattr(m3kit.machine, "read_cpu_flags", lambda: fake)
    monkeypatch.setattr(m3kit.precision, "read_cpu_flags", lambda: fake)
    monkeypatch.setattr(m3kit.precision.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(m3kit.precision.platform, "system", lambda: "Linux")
    info = describe_machine()
    assert {"bf16", "svebf16", "sve", "i8mm", "asimddp"} <= set(info.cpu_flags)
    assert not info.cpu_bf16_native and "Arm CPU reports bf16" in info.cpu_bf16_reason
    assert "none of" not in info.markdown()


def test_bf16_support_is_a_frozen_value() -> None:
    support = Bf16Support(True, "x")
    with pytest.raises(AttributeError):
        support.native = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("device", "native", "want"),
    [
        ("cpu", True, "bf16"),
        ("cpu", False, "fp32"),
        ("cuda", True, "bf16"),
        ("cuda", False, "fp16"),
    ],
)
def test_training_precision_auto_follows_the_probe(
    monkeypatch: pytest.MonkeyPatch, device: str, native: bool, want: str
) -> None:
    monkeypatch.setattr(m3kit.precision, "probe_bf16", lambda d: Bf16Support(native, "test"))
    assert resolve_training_precision("auto", torch.device(device)) == want
    assert resolve_training_precision("fp32", torch.device(device)) == "fp32"  # explicit kept


def test_training_precision_refuses_what_cannot_run() -> None:
    with pytest.raises(ValueError, match="fp16 training needs a GPU"):
        resolve_training_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_training_precision("int8", torch.device("cpu"))


@pytest.mark.parametrize(
    ("flags", "dtype", "reduce_range"),
    [
        (ZEN3, torch.float32, True),  # AVX2 only: bf16 emulated, no VNNI
        (CASCADE_LAKE, torch.float32, False),  # AVX-512 + VNNI, bf16 emulated
        (ZEN4, torch.bfloat16, False),
        (SAPPHIRE_RAPIDS, torch.bfloat16, False),  # AMX
    ],
)
def test_auto_choices_follow_faked_cpu_flags(
    flags: set[str],
    dtype: torch.dtype,
    reduce_range: bool,
    tiny_m3_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every automatic choice reads the CPU through read_cpu_flags: faking it (not this
    machine's CPU) gives each CPU class its precision and its int8 weight range."""
    from m3kit.backends import onnx_backend
    from m3kit.machine import CpuFlags

    fake = CpuFlags(model="faked", flags=frozenset(flags), source="test")
    monkeypatch.setattr(m3kit.precision, "read_cpu_flags", lambda: fake)
    monkeypatch.setattr(m3kit.precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(m3kit.precision.platform, "system", lambda: "Linux")
    monkeypatch.setattr(onnx_backend, "read_cpu_flags", lambda: fake)
    monkeypatch.setattr(onnx_backend.platform, "machine", lambda: "x86_64")
    enc = M3Encoder.from_pretrained(tiny_m3_path, device="cpu")
    assert enc.precision is (Precision.BF16 if dtype == torch.bfloat16 else Precision.FP32)
    assert {p.dtype for p in enc.model.parameters()} == {dtype}
    assert resolve_training_precision("auto", torch.device("cpu")) == (
        "bf16" if dtype == torch.bfloat16 else "fp32"
    )
    assert onnx_backend._this_cpu_int8_scheme().reduce_range is reduce_range


def test_int8_without_a_device_runs_on_the_cpu_of_a_cuda_machine(
    tiny_m3_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """int8 (dynamic quantisation) runs on CPU only: with no device given it picks the CPU,
    not the GPU it would then refuse; an explicit GPU with int8 stays an error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    encoder = M3Encoder.from_pretrained(tiny_m3_path, dtype="int8")
    assert encoder.device == torch.device("cpu") and encoder.precision is Precision.INT8
    assert encoder.encode(["int8 on the CPU"]).dense.shape == (1, 32)
    with pytest.raises(ValueError, match="int8 dynamic quantisation runs on CPU only, not on cuda"):
        M3Encoder.from_pretrained(tiny_m3_path, dtype="int8", device="cuda")


def test_torch_s_probe_is_read_only_without_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import m3kit.precision as precision
    from m3kit.machine import CpuFlags

    monkeypatch.setattr(precision, "read_cpu_flags", lambda: CpuFlags("x", None, "unavailable"))
    monkeypatch.setattr(precision, "torch_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(precision.platform, "system", lambda: "Windows")
    monkeypatch.setattr(precision.platform, "machine", lambda: "AMD64")
    monkeypatch.setattr(precision, "_torch_bf16_probe", lambda: "avx512_bf16")
    assert precision.probe_bf16(torch.device("cpu")).native
    monkeypatch.setattr(precision, "_torch_bf16_probe", lambda: None)
    assert not precision.probe_bf16(torch.device("cpu")).native
