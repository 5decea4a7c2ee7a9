"""Freed memory kept in the process while the CPU optimizes.

Every step allocates the same large temporaries (activations, their gradients, padded copies),
and glibc returns each large block to the kernel when it is freed, so the next step pays a page
fault for every 4 KiB it touches again: 430,000 faults in 32 steps of GoogLeNet inception3a at
batch 32, a second of system time and more in a virtual machine. With mmap off and no trimming
for the block's duration, freed blocks stay in the heap and are reused (75,000 faults; 1.12x
faster at inception4c, `python benchmarks/featvis_vs_lucent.py`). On leaving, glibc's defaults
come back and the heap is trimmed. Elsewhere (not glibc, or a GPU) this does nothing."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import threading
from collections.abc import Iterator

# mallopt parameters (malloc.h) and glibc's defaults for them.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_KEEP_ALL = 2**31 - 1

_lock = threading.Lock()
_holders = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def retained_heap(active: bool = True) -> Iterator[None]:
    """Keep freed memory in the process for the block (nested and concurrent blocks share one
    setting; the last to leave restores glibc's defaults)."""
    global _holders
    libc = _glibc() if active else None
    if libc is None:
        yield
        return
    with _lock:
        if _holders == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_ALL)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
