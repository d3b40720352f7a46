"""Process-level tuning for long-running workers and benchmarks (never applied at import time).

On this kind of VM a page fault costs ~1 us per 4 KiB page, and glibc serves every allocation above its mmap
threshold (128 KiB .. 32 MiB, adaptive) with fresh pages that are returned to the kernel on free, so each
large temporary array is paid for again in page faults. Raising the mmap and trim thresholds keeps freed
memory in the heap for reuse. The bench measures the effect; entry points opt in explicitly.

Services also run their BLAS on one thread (:func:`single_threaded_blas`). numpy's OpenBLAS starts a thread per
core and, for a 360,000-sample ``np.dot`` (the detrend of every station-hour), splits the work and spin-waits
for it; with several services on a 2-core machine those threads fight each other for the cores. Measured here
(``OPENBLAS_NUM_THREADS`` 1 against the default, same process): ``detrend_valid`` 10.5 against 32-38 ms of CPU
per station-hour, ``preprocess_bytes`` 24 against 62 ms. The science bound of ``bench.scale`` already runs
single-threaded; the services scale by processes (P, C) and the correlator by its own ``--threads``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import MutableMapping, Sequence

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SERVICE_COMMANDS = frozenset({"worker"})  # long-running services, many to a machine
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


def command_of(argv: Sequence[str]) -> str | None:
    """The sub-command of an ``xcorrflow`` command line (``-v worker correlate`` → ``worker``), or None."""
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            next(args, None)  # its value
        elif not arg.startswith("-"):
            return arg
    return None


def single_threaded_blas(argv: Sequence[str], environ: MutableMapping[str, str]) -> bool:
    """For a service's command line, one BLAS/OpenMP thread unless the environment already says otherwise.

    Must run before numpy is imported (OpenBLAS reads its thread count when it loads).

    Returns:
        True when ``argv`` is a service's, whether or not a variable was already set.
    """
    if command_of(argv) not in SERVICE_COMMANDS:
        return False
    for name in BLAS_THREAD_VARS:
        environ.setdefault(name, "1")
    return True
