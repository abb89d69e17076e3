"""glibc's allocator tuned for chunk-sized buffers, in this process."""

from __future__ import annotations

import ctypes
import ctypes.util

from rdask.config import MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_malloc() -> bool:
    """Keep glibc from mmap'ing and unmapping every chunk-sized buffer.

    Each chunk allocates a few MB for pixels and tiles; above glibc's mmap
    threshold (and with ``distributed``'s nanny default of trimming above
    64 KB) every such buffer is a fresh mapping whose page faults serialise
    the threads on the process's memory-map lock. Raising both thresholds
    lets freed chunks be reused. Returns False where ``mallopt`` is missing
    (not glibc).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    except (OSError, AttributeError):
        return False
    return bool(ok)
