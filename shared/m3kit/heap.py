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
glibc's default limits and gives the heap's free memory back to the system
(``malloc_trim``). The cost is memory: freed blocks stay in the process, so its peak
resident size is higher while the block runs. glibc's dynamic mmap threshold stays at the
value it had reached (``mallopt`` switches its adjustment off).
Elsewhere (macOS, Windows, musl) the block runs unchanged.

>>> with keep_freed_memory() as kept:
...     isinstance(kept, bool)
True
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import platform
import sys
import threading
from collections.abc import Iterator

__all__ = ["keep_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h) and glibc's defaults for the two this module changes
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_NO_TRIM = 2**31 - 1  # mallopt takes an int

# glibc's settings are the process's: blocks running at once (two fits in two threads)
# share them, and the last one out restores them.
_lock = threading.Lock()
_holders = 0


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


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Inside the block, glibc reuses the memory freed tensors leave instead of unmapping it.

    Args:
        enabled: ``False`` runs the block with glibc's settings as they are.

    Yields:
        Whether the settings changed: ``False`` when disabled or the C library is not glibc.
    """
    global _holders
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    with _lock:
        if _holders == 0 and not (
            libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)
        ):
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            logger.info("glibc refused mallopt: freed memory is unmapped as usual")
            libc = None
        else:
            _holders += 1
    if libc is None:
        yield False
        return
    try:
        yield True
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
