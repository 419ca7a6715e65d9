"""The CPUs a process may use count its cgroup's CPU limit, which its affinity does not show.

A container limited to 2 CPUs (``docker --cpus 2``, a Kubernetes limit) on a 64-CPU host saw 64:
``EncoderPool`` started 32 CPU workers, each loading a copy of the model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from m3kit import machine
from m3kit.machine import cgroup_cpu_limit, usable_cpus


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("files", "membership", "want"),
    [
        ({"cpu.max": "200000 100000\n"}, "0::/\n", 2),  # v2, a container's namespace
        ({"cpu.max": "150000 100000\n"}, "0::/\n", 2),  # 1.5 CPUs: rounded up
        ({"cpu.max": "max 100000\n"}, "0::/\n", None),  # unlimited
        ({"app/job/cpu.max": "400000 100000\n"}, "0::/app/job\n", 4),  # v2, the process's cgroup
        # a limit above the process's own cgroup binds it too (systemd inside a container)
        ({"cpu.max": "200000 100000\n", "init/cpu.max": "max 100000\n"}, "0::/init\n", 2),
        ({"cpu.max": "800000 100000\n", "a/cpu.max": "300000 100000\n"}, "0::/a/b\n", 3),
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, "", 3),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "", None),
        ({}, "", None),  # no cgroup file system (macOS, Windows)
    ],
)
def test_the_cgroup_cpu_limit_is_read(
    tmp_path: Path, files: dict[str, str], membership: str, want: int | None
) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    for name, text in files.items():
        _write(root / name, text)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(membership, encoding="utf-8")
    assert cgroup_cpu_limit(root, proc) == want


def test_usable_cpus_is_at_most_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(machine, "cgroup_cpu_limit", lambda: 2)
    assert usable_cpus() == 2
    monkeypatch.setattr(machine, "cgroup_cpu_limit", lambda: None)
    assert usable_cpus() == 64
