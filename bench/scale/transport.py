"""The transport floor of a run: ``python -m bench.scale.transport --stations N`` prints one JSON line.

A run at N stations must write its per-window CCFs to the object store and read them back to stack them,
whatever the framework around it. This measures that much alone, with the pipeline's own calls:

- **put**: the window's ``ccf`` array as a run lays it out (each row of the lower triangle a task of
  ``slots_for(row)`` slots, 64-slot float32 chunks), written task by task through
  :meth:`results.windows.WindowStore.write`, the correlator's call, over the settings' S3 store;
- **get**: every slot read back through :func:`results.windows.gather`, the stacker's call, in groups of
  ``--group-slots``.

The CCFs are random (the arrays are stored uncompressed, so their values cost nothing). Everything goes
under a scratch namespace that is deleted at the end. Each phase's Unix start and end times are printed, so
that ``bench.scale`` can count the core-seconds of this process (the client) and of the S3 server over each;
science plus this floor is the least any run of this layout spends.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.scale.figures import emit
from contracts.settings import Settings
from results.layout import slots_for
from results.windows import WindowStore, gather
from results.zarrio import bucket_root, open_root
from storage import open_store

WINDOW = "20240101T000000Z"


def measure(stations: int, group_slots: int = 16384) -> dict[str, Any]:
    """Write and read back the CCF array of one window of ``stations`` stations; returns the figures."""
    settings = Settings()
    namespace = f"bench-transport-{uuid.uuid4().hex[:12]}/"
    windows = WindowStore(open_root(bucket_root(settings, namespace), settings), settings.processing)
    tasks = [slots_for(row) for row in range(1, stations)]  # row i: its i columns, padded to whole chunks
    total = sum(tasks)
    rng = np.random.default_rng(0)
    block = rng.standard_normal((max(tasks), windows.n_lags), dtype=np.float32)
    try:
        windows.ensure(WINDOW, total)  # inside: the cleanup below also takes a half-made group
        put0, slot = time.time(), 0
        for slots in tasks:
            windows.write(WINDOW, slot, block[:slots])
            slot += slots
        put1 = time.time()
        got = 0
        for start in range(0, total, group_slots):
            ccfs, bad = gather(windows, WINDOW, np.arange(start, min(start + group_slots, total)))
            if bad:
                raise RuntimeError(f"chunks {sorted(bad)} did not read back: {bad}")
            got += ccfs.shape[0]
        get1 = time.time()
    finally:
        store = open_store(settings)
        for info in list(store.list(namespace)):
            store.delete(info.key)
    return {
        "stations": stations,
        "tasks": len(tasks),
        "slots": total,
        "slots_read": got,
        "bytes": total * windows.n_lags * 4,
        "put": [put0, put1],
        "get": [put1, get1],
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and write the figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale.transport", description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, required=True, help="stations of the window (N)")
    parser.add_argument("--group-slots", type=int, default=16384, help="slots per read (default %(default)s)")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    emit(measure(args.stations, args.group_slots), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
