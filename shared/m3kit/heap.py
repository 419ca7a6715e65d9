"""Keep the memory that large tensors free inside the process while a CPU job runs (glibc).

Written by hand because no library does it in-process: glibc's ``malloc`` serves every block
above its mmap threshold (at most 32 MiB on 64-bit Linux) with a fresh ``mmap`` and unmaps it
when freed, so each large tensor a training step makes costs the kernel's page faults and
zeroing again. At 256 tokens MiniLM's attention logits for 32 passages are 100 MB a layer,
and fine-tuning on CPU spent a large share of its time there (the README's "Fine-tuning"
has the measurements). tcmalloc or jemalloc keep such blocks (``torch.backends.xeon.run_cpu``
preloads them), but only when preloaded before the process starts; glibc's own ``mallopt``
does the same for a block of code: no ``mmap`` for new blocks (so freed ones return to the
heap and are reused) and no trimming of the heap's top while it runs.

:func:`keep_freed_memory` does that for the length of a ``with`` block and then restores
glibc's limits and gives the heap's free memory back to the system (``malloc_trim``). The
cost is memory: freed blocks stay in the process, so its peak resident size is higher while
the block runs, and memory made inside the block but freed after it needs
:func:`release_free_memory` to go back. ``mallopt`` switches glibc's dynamic thresholds off
for good, so the block leaves them where they end up in a process that freed a large block:
map blocks of 32 MiB and more, trim above 64 MiB. Elsewhere (macOS, Windows, musl), and
where the user set the process's malloc, the block runs unchanged.

>>> with keep_freed_memory() as kept:
...     isinstance(kept, bool)
True
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import sys
import threading
from collections.abc import Iterator

__all__ = ["keep_freed_memory", "release_free_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536  # glibc's
# What glibc's dynamic thresholds reach once a block of 32 MiB or more was freed (the
# ceiling, and twice it for trimming): a process that trained has freed such blocks.
_MMAP_THRESHOLD_AFTER = 32 * 1024 * 1024
_TRIM_THRESHOLD_AFTER = 2 * _MMAP_THRESHOLD_AFTER
_NO_TRIM = 2**31 - 1  # mallopt takes an int
#: Environment variables that set glibc's malloc, or preload another allocator: the user's
#: choice, left alone.
_USER_MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

# glibc's settings are the process's: blocks running at once (two fits in two threads)
# share them, and the last one out restores them.
_lock = threading.Lock()
_holders = 0


def _user_malloc() -> str | None:
    """The environment variable through which the user set the process's malloc, if any."""
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # tcmalloc, jemalloc, mimalloc
        return "LD_PRELOAD"
    return next((name for name in _USER_MALLOC_ENV if name in os.environ), None)


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc with ``mallopt`` and ``malloc_trim``."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)  # the symbols the process has loaded
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def _keep(libc: ctypes.CDLL) -> bool:
    """Switch glibc to keeping freed memory; ``False``, its limits as they were, if it refuses."""
    if libc.mallopt(_M_MMAP_MAX, 0):
        if libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM):
            return True
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)  # undo the one setting that took
    logger.info("glibc refused mallopt: freed memory is unmapped as usual")
    return False


def _restore(libc: ctypes.CDLL) -> None:
    """Let glibc map large blocks again and give the heap's free memory back."""
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_AFTER)
    libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_AFTER)
    libc.malloc_trim(0)


def release_free_memory() -> None:
    """Give the heap's free memory back to the system (glibc's ``malloc_trim``; elsewhere
    nothing): for memory freed after a :func:`keep_freed_memory` block ended, which glibc
    does not return by itself when other blocks sit above it in the heap."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Inside the block, glibc reuses the memory freed tensors leave instead of unmapping it.

    Args:
        enabled: ``False`` runs the block with glibc's settings as they are.

    Yields:
        Whether the settings changed: ``False`` when disabled, when the C library is not
        glibc, or when the user set the process's malloc (``GLIBC_TUNABLES`` with
        ``glibc.malloc.*``, ``MALLOC_*_`` variables, an allocator in ``LD_PRELOAD``).
    """
    global _holders
    libc = _glibc() if enabled else None
    user = _user_malloc() if libc is not None else None
    if user is not None:
        logger.info("malloc set through %s: keep_freed_memory leaves it as it is", user)
        libc = None
    counted = False
    try:
        if libc is not None:
            with _lock:
                if _holders or _keep(libc):
                    _holders += 1
                    counted = True
        yield counted
    finally:
        if counted:
            with _lock:
                _holders -= 1
                if _holders == 0:
                    _restore(libc)  # type: ignore[arg-type]
