"""The science bound of a deployment: ``python -m bench.scale.science --input DIR`` prints one JSON line.

What any pipeline must spend at the least on N stations, measured the way ``bench/kernel.py`` measures the
kernel (plain function calls, no I/O in the timed part):

- **preprocess**: decode each channel's MiniSEED bytes and make its product (:func:`dsp.preprocess.
  preprocess_bytes`, the preprocess worker's own call), for every channel and window; the files are read into
  memory first, untimed;
- **kernel**: every pair of each window through the batched kernel (:func:`dsp.correlate.correlate`); the
  batches are dropped as they come, so memory stays at one batch.

Both with the settings of the runs (``XCORRFLOW_PROCESSING__*``) and the same allocator tuning. Core-seconds
are the process's CPU time (``time.process_time``, every thread), wall seconds ``time.perf_counter``. The kernel
runs on ``--threads`` threads (default 1: core-seconds without thread overhead).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench.scale.figures import emit
from contracts.settings import load_settings
from dsp.correlate import correlate
from dsp.errors import DspError
from dsp.preprocess import preprocess_bytes
from dsp.product import StationProduct
from producers.inventory import scan_folder
from producers.walk import read_input
from xcorrflow.orchestration.tuning import tune_allocator


def measure(input_dir: Path, threads: int = 1) -> dict[str, Any]:
    """Time preprocessing and the kernel on the deployment in ``input_dir``; returns the figures."""
    params = load_settings().processing
    tune_allocator()
    table = scan_folder(input_dir, params).by_window()
    raw = {
        (window, seed_id): [read_input(item.source) for item in items]
        for window, channels in table.items()
        for seed_id, items in channels.items()
    }
    wall0, cpu0 = time.perf_counter(), time.process_time()
    products: dict[str, list[StationProduct]] = {}
    skipped = 0
    for (window, _seed_id), blobs in sorted(raw.items()):
        try:
            products.setdefault(window, []).append(preprocess_bytes(blobs, window, params))
        except DspError:
            skipped += 1
    wall1, cpu1 = time.perf_counter(), time.process_time()
    pairs = 0
    for window_products in products.values():
        for batch in correlate(
            window_products, params.maxlag, min_common=params.min_common_subwindows, workers=threads
        ):
            pairs += len(batch.pairs)
    wall2, cpu2 = time.perf_counter(), time.process_time()
    return {
        "stations": len({seed_id for _w, seed_id in raw}),
        "windows": len(products),
        "pairs": pairs,
        "skipped_channels": skipped,
        "threads": threads,
        "preprocess_core_s": round(cpu1 - cpu0, 3),
        "preprocess_wall_s": round(wall1 - wall0, 3),
        "kernel_core_s": round(cpu2 - cpu1, 3),
        "kernel_wall_s": round(wall2 - wall1, 3),
        "core_s": round(cpu2 - cpu0, 3),
        "wall_s": round(wall2 - wall0, 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and write the figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale.science", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="folder of MiniSEED files")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here (default: stdout)")
    parser.add_argument("--threads", type=int, default=1, help="kernel threads (default %(default)s)")
    args = parser.parse_args(argv)
    emit(measure(args.input, args.threads), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
