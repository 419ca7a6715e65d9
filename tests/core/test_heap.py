"""m3kit.heap.keep_freed_memory: inside the block a large tensor freed and made again reuses
the process's memory (no fresh page faults); outside, and after the block, glibc unmaps it
as usual. Minor page faults are the measure: a fresh 64 MiB map faults once per 4 KiB page."""

from __future__ import annotations

import platform
import resource
import sys
import threading

import pytest
import torch

from m3kit import heap
from m3kit.heap import keep_freed_memory

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt (Linux)",
)

_MIB_64 = 16 * 1024 * 1024  # float32 elements


def _faults_of_a_second_tensor() -> int:
    """Minor page faults of writing a 64 MiB tensor after one of the same size was freed."""
    torch.ones(_MIB_64)  # made and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(_MIB_64)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc_only
def test_inside_the_block_freed_memory_is_reused_and_after_it_unmapped_again() -> None:
    assert heap._holders == 0
    outside = _faults_of_a_second_tensor()
    assert outside > 1000  # 64 MiB over glibc's mmap limit: a fresh map, page by page
    with keep_freed_memory() as kept:
        assert kept is True
        _faults_of_a_second_tensor()  # the heap grows once to hold it
        inside = _faults_of_a_second_tensor()
    after = _faults_of_a_second_tensor()
    assert inside < outside / 10
    assert after > outside / 2  # glibc's limits restored
    assert heap._holders == 0


@glibc_only
def test_blocks_at_once_share_the_setting_and_the_last_one_out_restores_it() -> None:
    inner_done = threading.Event()
    with keep_freed_memory():
        seen: list[bool] = []

        def other() -> None:
            with keep_freed_memory() as kept:
                seen.append(kept)
            inner_done.set()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert inner_done.is_set() and seen == [True]
        _faults_of_a_second_tensor()
        still = _faults_of_a_second_tensor()  # the other block's exit did not restore it
        assert heap._holders == 1
    assert still < _faults_of_a_second_tensor() / 10
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


@glibc_only
def test_an_error_in_the_block_still_restores_glibc() -> None:
    with pytest.raises(RuntimeError, match="boom"), keep_freed_memory():
        raise RuntimeError("boom")
    assert heap._holders == 0
    assert _faults_of_a_second_tensor() > 1000
