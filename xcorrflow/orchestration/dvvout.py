"""``xcorrflow run --dvv``: the dv/v table of a run and its two CSV files (the contract of issue 14).

``OUT/dvv_network.csv``: ``window,dvv_percent,err_percent,n_pairs``, one row per window in time order,
the network point (weighted median, both coda sides) of ``settings.dvv_csv_method``.
``OUT/dvv_pairs.csv``: ``window,dvv_percent,err_percent,n_pairs,pair,method,cc``, one row per window, pair and
method (both coda sides), ``n_pairs`` 1 when the pair has a value and 0 otherwise (its fields empty). The CSVs
keep the contract's columns exactly; why a value is missing (``reason``), every side, ``n_points`` and the
reference are in the whole table, ``results.zarr/dvv``.

Pipeline runs wait for the ``monitor`` worker to have measured every complete window; inprocess runs measure
the windows of ``OUT/results.zarr`` with the monitor's own code (:class:`consumers.dvvwork.DvvWork`) over an
in-memory pointer store, so both modes give the same table from the same CCFs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import zarr

from consumers.dvvwork import DvvWork, Elected, complete_windows
from contracts.settings import Settings
from results.dvv import DvvStore, read_network, read_pairs
from storage import ObjectStore
from storage.errors import ObjectNotFound
from storage.memory import MemoryStore
from xcorrflow.errors import CommandError

log = logging.getLogger(__name__)
NETWORK_CSV = "dvv_network.csv"
PAIRS_CSV = "dvv_pairs.csv"
NETWORK_COLUMNS = ["window", "dvv_percent", "err_percent", "n_pairs"]
PAIR_COLUMNS = ["window", "dvv_percent", "err_percent", "n_pairs", "pair", "method", "cc"]


class DvvUnavailable(CommandError):
    """The run's dv/v cannot be measured (for example a reference longer than the run)."""


def check_reference(settings: Settings, windows: int) -> None:
    """Fail before a run whose ``first K`` reference needs more windows than the run has.

    Raises:
        DvvUnavailable: with the setting to change.
    """
    spec = settings.dvv.reference
    if spec.kind == "first" and spec.first_k > windows:
        raise DvvUnavailable(
            f"--dvv: the reference takes the first {spec.first_k} windows and the run has {windows}; "
            "set XCORRFLOW_DVV__REFERENCE__FIRST_K (or dvv.reference in the config file)"
        )


def measure_inprocess(root: zarr.Group, settings: Settings) -> dict[str, Any]:
    """Measure every complete window of an inprocess run's hierarchy (CCFs, stations and table in ``root``).

    Returns:
        What was measured: the series, its reference and the window count.
    """
    work = DvvWork(root, root, MemoryStore(), settings.processing, settings.dvv)
    for window in work.pending():
        if work.measure(window) is None:
            break
    elected = work.elected
    return {"series": elected.series if elected else None, "reference": elected.reference if elected else None,
            "windows": len(DvvStore(root).measured(elected.series)) if elected else 0}  # fmt: skip


def wait_for_monitor(
    windows_root: zarr.Group, root: zarr.Group, store: ObjectStore, settings: Settings, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Wait until the monitor has measured every complete window of a pipeline run.

    Returns:
        The series, its reference, the window count, and ``missing`` (windows not measured when the wait ended).
    """
    key = DvvWork(windows_root, root, store, settings.processing, settings.dvv, settings.key_prefix).pointer_key
    deadline = time.monotonic() + timeout_s
    elected: Elected | None = None
    missing: list[str] = complete_windows(windows_root)
    while time.monotonic() < deadline:
        if elected is None:
            try:
                elected = Elected.decode(store.get(key))
            except ObjectNotFound:
                time.sleep(0.2)
                continue
        measured = DvvStore(root).measured(elected.series)
        missing = [w for w in complete_windows(windows_root) if w not in measured]
        if not missing:
            break
        time.sleep(0.2)
    if missing:
        log.warning("dv/v: %d windows not measured within %.0f s: %s", len(missing), timeout_s, missing[:5])
    return {"series": elected.series if elected else None, "reference": elected.reference if elected else None,
            "missing": missing}  # fmt: skip


def write_csvs(root: zarr.Group, output_dir: Path, method: str, series: str | None = None) -> tuple[Path, Path]:
    """Write ``dvv_network.csv`` and ``dvv_pairs.csv`` from the table of ``root`` (newest series by default).

    Raises:
        ResultsError: the hierarchy holds no dv/v series.
    """
    network = read_network(root, series)
    network = network[(network.method == method) & (network.side == "both")]
    pairs = read_pairs(root, series)
    pairs = pairs[pairs.side == "both"].copy()
    pairs["n_pairs"] = (pairs.reason == "").astype(int)
    paths = output_dir / NETWORK_CSV, output_dir / PAIRS_CSV
    _csv(network[NETWORK_COLUMNS], paths[0])
    _csv(pairs[PAIR_COLUMNS], paths[1])
    return paths


def _csv(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)
