"""The dv/v time series as a PNG: the network point of each method with its error bar, over the pairs' values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from dsp.windows import window_start
from results.dvv import DVV, DvvStore, read_network, read_pairs

METHOD_COLOURS = {"stretching": "tab:blue", "mwcs": "tab:orange"}


def plot_dvv(root: zarr.Group, output: Path, *, series: str | None = None, truth: Path | None = None) -> str:
    """Draw the series of ``root``'s dv/v table into ``output``.

    Args:
        root: the result hierarchy.
        output: the PNG path.
        series: the series to draw (default: the newest).
        truth: a synth ``truth.json``; its dv/v, relative to the mean over the reference windows, is drawn too.

    Returns:
        A one-line summary.

    Raises:
        ResultsError: no such series.
        ValueError: the series has no window.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    network = read_network(root, series)
    network = network[network.side == "both"]
    if network.empty:
        raise ValueError("the dv/v series has no measured window")
    pairs = read_pairs(root, series)
    pairs = pairs[(pairs.side == "both") & (pairs.reason == "")]
    hours = _hours(network.window)
    fig, ax = plt.subplots(figsize=(11, 5), constrained_layout=True)
    for k, (method, colour) in enumerate(METHOD_COLOURS.items()):
        mine = pairs[pairs.method == method]
        x = _hours(mine.window, origin=hours.origin) + (k - 0.5) * 0.15
        ax.plot(x, mine.dvv_percent, ".", ms=2, color=colour, alpha=0.25, label=f"{method}: pairs")
        net = network[network.method == method]
        ax.errorbar(
            _hours(net.window, origin=hours.origin), net.dvv_percent, yerr=net.err_percent, fmt="o-", ms=4,
            capsize=3, color=colour, label=f"{method}: network (weighted median, 1 sigma)",
        )  # fmt: skip
    if truth is not None:
        name = DvvStore(root).pick(series)
        listed = root[f"{DVV}/{name}"].attrs.get("windows", [])
        reference = [str(w) for w in listed] if isinstance(listed, list) else []
        _draw_truth(ax, truth, reference, hours.origin)
    ax.axhline(0, color="0.6", lw=0.8)
    spread = network.dvv_percent.abs().max() + network.err_percent.max()
    if np.isfinite(spread):
        ax.set_ylim(-3 * spread, 3 * spread)  # the network's range; outlying pairs run off the axes
    ax.set_xlabel(f"hours since {network.window.iloc[0]}")
    ax.set_ylabel("dv/v (%)")
    ax.set_title(f"dv/v against {network.reference.iloc[0]}", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    windows = network.window.nunique()
    return f"{windows} windows, {pairs.pair.nunique()} pairs, {len(METHOD_COLOURS)} methods -> {output}"


class _Hours(np.ndarray):
    origin: float


def _hours(windows: pd.Series, origin: float | None = None) -> _Hours:
    starts = np.array([window_start(w) for w in windows], dtype=np.float64)
    base = float(starts.min()) if origin is None and starts.size else (origin or 0.0)
    out = ((starts - base) / 3600.0).view(_Hours)
    out.origin = base
    return out


def _draw_truth(ax: object, truth: Path, reference: list[str], origin: float) -> None:
    """The true dv/v of the windows, shifted to the mean over the reference's windows (what is measured)."""
    true = json.loads(truth.read_text()).get("dvv", {})
    windows = sorted(true, key=window_start)
    ref = [w for w in reference if w in true]
    level = float(np.mean([true[w] for w in ref])) if ref else 0.0
    x = _hours(pd.Series(windows), origin=origin)
    ax.step(x, [true[w] - level for w in windows], where="mid", color="k", lw=1, label="truth")  # type: ignore[attr-defined]
