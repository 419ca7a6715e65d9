"""m3kit.heap.keep_freed_memory: inside the block a large tensor freed and made again reuses
the process's memory (no fresh page faults); outside, and after the block, glibc unmaps it
as usual. Minor page faults are the measure: a fresh 64 MiB map faults once per page.

Each scenario runs in a fresh interpreter: how glibc serves a block depends on what the
process allocated before (free heap memory left by earlier tests serves a 64 MiB tensor
without faults), so only a clean process has a known "outside"."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from m3kit import heap
from m3kit.heap import keep_freed_memory

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt (Linux)",
)

#: The environment through which a user sets the process's malloc (m3kit.heap leaves it be).
_MALLOC_ENV = ("GLIBC_TUNABLES", "LD_PRELOAD", *heap._USER_MALLOC_ENV)

_PRELUDE = """
import json, resource, threading
import torch
from m3kit import heap
from m3kit.heap import keep_freed_memory

def faults():
    # minor page faults of writing a 64 MiB tensor after one of the same size was freed
    torch.ones(16 * 1024 * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 1024 * 1024)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def mapped():
    # bytes glibc serves from their own mmap while a 64 MiB tensor lives: 0 when the
    # heap serves it (mallinfo2, glibc >= 2.33; mallinfo's int fields before)
    import ctypes
    libc = ctypes.CDLL(None)
    info = getattr(libc, "mallinfo2", None)
    field = ctypes.c_size_t if info is not None else ctypes.c_int
    class Info(ctypes.Structure):
        _fields_ = [(name, field) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    info = info or libc.mallinfo
    info.restype = Info
    before = info().hblkhd
    tensor = torch.ones(16 * 1024 * 1024)
    return info().hblkhd - before

out = {}
"""


def _run(body: str) -> dict[str, int]:
    """Run ``body`` after :data:`_PRELUDE` in a fresh interpreter; its ``out`` dict back."""
    code = _PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    shared = str(Path(heap.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([shared, os.environ.get("PYTHONPATH", "")]))
    for name in _MALLOC_ENV:
        env.pop(name, None)  # glibc's own malloc at its defaults: the known "outside"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@glibc_only
def test_inside_the_block_freed_memory_is_reused_and_after_it_unmapped_again() -> None:
    out = _run(
        """
        out["outside"] = faults()
        with keep_freed_memory() as kept:
            out["kept"] = int(kept)
            faults()  # the heap grows once to hold it
            out["inside"] = faults()
        out["after"] = faults()
        out["holders"] = heap._holders
        """
    )
    assert out["outside"] >= 16  # over glibc's mmap limit: a fresh map (4 KiB or 2 MiB pages)
    assert out["kept"] == 1 and out["holders"] == 0
    assert out["inside"] < out["outside"] / 10
    assert out["after"] > out["outside"] / 2  # glibc's limits restored, the heap trimmed


@glibc_only
def test_memory_made_in_the_block_and_freed_after_it_goes_back_with_release_free_memory() -> None:
    out = _run(
        """
        def rss_mib():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize() // 2**20
        base = rss_mib()
        with keep_freed_memory():
            held = [torch.ones(4 * 1024 * 1024) for _ in range(64)]  # 1 GiB in the heap
            top = torch.ones(2 * 1024 * 1024)  # 8 MiB above them: the top cannot shrink
        del held
        out["freed_after"] = rss_mib() - base
        heap.release_free_memory()
        out["released"] = rss_mib() - base
        """
    )
    assert out["freed_after"] > 800  # freed, yet resident: below the heap's top
    assert out["released"] < 200


@glibc_only
def test_blocks_at_once_share_the_setting_and_the_last_one_out_restores_it() -> None:
    out = _run(
        """
        with keep_freed_memory():
            seen = []
            def other():
                with keep_freed_memory() as kept:
                    seen.append(kept)
            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
            out["other_kept"] = int(seen == [True])
            out["holders_inside"] = heap._holders
            out["still"] = mapped()  # the other block's exit did not restore glibc
        out["after"] = mapped()
        out["holders"] = heap._holders
        """
    )
    assert out["other_kept"] == 1 and out["holders_inside"] == 1 and out["holders"] == 0
    # Measured by glibc's own count of mapped bytes, not page faults: those depend on what
    # else the process's heap holds (a CI run once saw a block's faults with mmap off).
    assert out["still"] == 0
    assert out["after"] >= 64 * 2**20


@glibc_only
def test_an_error_in_the_block_still_restores_glibc() -> None:
    out = _run(
        """
        try:
            with keep_freed_memory():
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        out["holders"] = heap._holders
        out["after"] = faults()
        """
    )
    assert out["holders"] == 0 and out["after"] >= 16


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0"),
        ("MALLOC_TRIM_THRESHOLD_", "1000000"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
    ],
)
def test_a_malloc_the_user_set_is_left_as_it_is(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for other in _MALLOC_ENV:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, value)
    with keep_freed_memory() as kept:
        assert kept is False
    assert heap._holders == 0


def test_disabled_or_without_glibc_the_block_runs_with_the_c_library_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with keep_freed_memory(False) as kept:
        assert kept is False
        assert heap._holders == 0
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    with keep_freed_memory() as kept:
        assert kept is False
    assert heap._holders == 0
    heap.release_free_memory()  # nothing to call off glibc: no error
