"""Process-level tuning for long-running workers and benchmarks (never applied at import time).

On this kind of VM a page fault costs ~1 us per 4 KiB page, and glibc serves every allocation above its mmap
threshold (128 KiB .. 32 MiB, adaptive) with fresh pages that are returned to the kernel on free, so each
large temporary array is paid for again in page faults. Raising the mmap and trim thresholds keeps freed
memory in the heap for reuse. The bench measures the effect; entry points opt in explicitly.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def tune_allocator(mmap_threshold: int = 512 * 2**20, trim_threshold: int = 1024 * 2**20) -> bool:
    """Ask glibc to keep freed large blocks for reuse instead of unmapping them.

    Args:
        mmap_threshold: allocations above this size still get their own mapping (bytes; glibc caps it).
        trim_threshold: free memory at the top of the heap beyond this is returned to the kernel (bytes).

    Returns:
        True when both settings were applied (glibc), False elsewhere (no effect, no error).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
