"""The record section: one normalised CCF per row, the picture seismologists look at first.

Rows are sorted by inter-station distance when every trace has one in its SAC header (``dist``, set by
:mod:`results.sac` when station coordinates are known), else by the lag of each trace's peak. The x axis is
lag in seconds, ``τ = arrival(B) − arrival(A)`` (DESIGN.md §6), and each trace's peak (its maximum, the
convention of the science contract) is marked.

Two renderings, chosen by the number of traces:

- up to ``wiggle_max`` traces: variable-area wiggles, one per row, labelled with the pair and its distance;
- more: an image of the normalised traces (rows in sort order, red positive, blue negative), peaks as dots,
  because 8,385 wiggles in 1,000 pixel rows are ink. The y ticks give the distance (or peak lag) of the rows
  they sit on.

Reading a folder never fails on one bad file: files that are not SAC, empty traces and traces on another lag
axis are listed in :attr:`Section.skipped` with their reason. A result hierarchy (``results.zarr``, see
:mod:`results.layout`) is read from its stacks directly (:func:`read_store_section`); above ``max_rows``
pairs, whole stack chunks spread over the pair axis are read, so the picture of 134,940 pairs costs what 2,000
do.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from obspy.geodetics import degrees2kilometers, locations2degrees
from obspy.io.sac import SACTrace
from obspy.io.sac.util import SacError

from contracts.ids import split_pair
from dsp.product import Coordinates
from dsp.seed import split_seed_id
from results.export import stack_rows, station_coordinates
from results.zarrio import array, subgroup, values

SortKey = Literal["auto", "distance", "lag"]
WIGGLE_MAX = 60
_NICE_LAGS = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000)


@dataclass(frozen=True)
class Section:
    """Traces of one lag axis, normalised to a peak absolute amplitude of 1.

    Attributes:
        names: pair names ``A__B`` (the file stems).
        data: ``[n, npts]`` normalised traces.
        lags: lag of each sample, seconds.
        distance_km: inter-station distance per trace, NaN where the header has none.
        peak_lag: lag of each trace's maximum, seconds.
        n_windows: windows stacked per trace (SAC ``user0``; 0 when unset).
        kind: stack kind of the first trace (``linear``, ``pws``, ``ccf``; SAC ``kinst``).
        skipped: ``(file name, reason)`` of every file left out.
    """

    names: list[str]
    data: np.ndarray
    lags: np.ndarray
    distance_km: np.ndarray
    peak_lag: np.ndarray
    n_windows: np.ndarray
    kind: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class PlotSummary:
    """What :func:`plot_record_section` drew."""

    output: Path
    traces: int
    sorted_by: str
    style: str
    max_lag_s: float
    skipped: list[tuple[str, str]]


@dataclass
class _Trace:
    name: str
    data: np.ndarray
    b: float
    delta: float
    dist: float
    n_windows: int
    kind: str


def read_section(folder: Path) -> Section:
    """Read every ``*.sac`` directly in ``folder`` into a :class:`Section`.

    Traces must share one lag axis (``b``, ``delta``, ``npts``); the most common one wins and the others are
    skipped with a reason, as are unreadable files and all-zero or non-finite traces.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory")
    traces, skipped = [], []
    for path in sorted(folder.glob("*.sac")):
        trace, reason = _read_one(path)
        if trace is None:
            skipped.append((path.name, reason))
        else:
            traces.append(trace)
    axes = Counter((round(t.b, 6), round(t.delta, 9), t.data.size) for t in traces)
    axis = axes.most_common(1)[0][0] if axes else (0.0, 1.0, 0)
    kept = []
    for t in traces:
        if (round(t.b, 6), round(t.delta, 9), t.data.size) == axis:
            kept.append(t)
        else:
            skipped.append((f"{t.name}.sac", f"lag axis b={t.b} delta={t.delta} npts={t.data.size} differs"))
    return _section(kept, axis, skipped)


def read_store_section(root: zarr.Group, *, max_rows: int = 2000) -> Section:
    """The stacks of a result hierarchy as a :class:`Section` (at most about ``max_rows`` pairs).

    Distances come from the stations group's coordinates (NaN where unknown).
    """
    group = subgroup(root, "stacks")
    if group is None:
        raise FileNotFoundError("the hierarchy holds no stacks")
    kind = str(group.attrs.get("stack", "linear"))
    linear = array(group, "linear")
    step = linear.chunks[0]
    chunks = -(-linear.shape[0] // step)
    every = max(1, -(-chunks * step // max_rows))
    traces: list[_Trace] = []
    fs = float(group.attrs["fs"])  # type: ignore[arg-type]
    positions = station_coordinates(root)
    for rows in stack_rows(root, chunk_stride=every):
        dist = _distances(rows.a, rows.b, positions)
        for i in range(len(rows.a)):
            if np.any(rows.values[i]) and np.all(np.isfinite(rows.values[i])):
                traces.append(_Trace(f"{rows.a[i]}__{rows.b[i]}", rows.values[i].astype(np.float64), 0.0, 0.0,
                                     float(dist[i]), int(rows.count[i]), kind))  # fmt: skip
    lags = values(group, "lag")
    axis = (float(lags[0]), 1.0 / fs, int(lags.size))
    return _section(traces, axis, [])


def _distances(a: list[str], b: list[str], positions: dict[str, Coordinates | None]) -> np.ndarray:
    """Great-circle distances (km) of pairs, NaN where a station's position is unknown."""
    nan = (np.nan, np.nan)
    pa = np.array([(p.latitude, p.longitude) if (p := positions.get(x)) else nan for x in a], dtype=float)
    pb = np.array([(p.latitude, p.longitude) if (p := positions.get(x)) else nan for x in b], dtype=float)
    if not len(a):
        return np.zeros(0)
    return np.asarray(degrees2kilometers(locations2degrees(pa[:, 0], pa[:, 1], pb[:, 0], pb[:, 1])))


def _read_one(path: Path) -> tuple[_Trace | None, str]:
    try:
        sac = SACTrace.read(str(path))
    except (SacError, OSError, ValueError, EOFError, struct.error, TypeError) as exc:
        return None, f"not a readable SAC file: {type(exc).__name__}: {exc}"
    data = np.asarray(sac.data, dtype=np.float64)
    if data.size < 2 or not np.all(np.isfinite(data)) or not np.any(data):
        return None, "empty, all-zero or non-finite trace"
    dist = float(sac.dist) if sac.dist is not None else math.nan
    return _Trace(path.stem, data, float(sac.b), float(sac.delta), dist, int(sac.user0 or 0), sac.kinst or ""), ""


def _section(traces: list[_Trace], axis: tuple[float, float, int], skipped: list[tuple[str, str]]) -> Section:
    b, delta, npts = axis
    data = np.array([t.data for t in traces]).reshape(len(traces), npts)
    if len(traces):
        data /= np.abs(data).max(axis=1, keepdims=True)  # all-zero traces were skipped on reading
    lags = b + delta * np.arange(npts)
    peaks = lags[np.argmax(data, axis=1)] if len(traces) else np.zeros(0)
    return Section(
        names=[t.name for t in traces],
        data=data.astype(np.float32),
        lags=lags,
        distance_km=np.array([t.dist for t in traces]),
        peak_lag=peaks,
        n_windows=np.array([t.n_windows for t in traces], dtype=int),
        kind=traces[0].kind if traces else "",
        skipped=skipped,
    )


def sort_order(section: Section, by: SortKey = "auto") -> tuple[np.ndarray, str]:
    """Row order of the section and the key used (``distance`` or ``lag``).

    ``auto`` sorts by distance when every trace has one, else by peak lag. Ties keep name order, so the
    picture is the same from run to run.

    Raises:
        ValueError: ``by="distance"`` but some trace has no distance.
    """
    has_distance = len(section) > 0 and bool(np.all(np.isfinite(section.distance_km)))
    if by == "distance" and not has_distance:
        raise ValueError("some traces have no distance in their header (no station coordinates); sort by lag")
    use = "distance" if by == "distance" or (by == "auto" and has_distance) else "lag"
    key = section.distance_km if use == "distance" else section.peak_lag
    return np.lexsort((np.array(section.names), key)), use


def auto_max_lag(section: Section) -> float:
    """A lag range that holds the peaks: a round number above 1.25 x the 99th percentile of |peak lag|."""
    full = float(np.abs(section.lags).max()) if len(section.lags) else 1.0
    if not len(section):
        return full
    wanted = 1.25 * float(np.quantile(np.abs(section.peak_lag), 0.99))
    nice = next((v for v in _NICE_LAGS if v >= wanted), full)
    return float(min(full, max(nice, 10 * float(section.lags[1] - section.lags[0]))))


def plot_record_section(
    section: Section,
    output: Path,
    *,
    sort: SortKey = "auto",
    max_lag: float | None = None,
    velocity: float | None = None,
    title: str | None = None,
    wiggle_max: int = WIGGLE_MAX,
) -> PlotSummary:
    """Draw the record section of ``section`` into a PNG.

    Args:
        section: the traces (see :func:`read_section`).
        output: PNG path; its folder is created.
        sort: ``auto``, ``distance`` or ``lag`` (see :func:`sort_order`).
        max_lag: half-width of the lag axis in seconds; :func:`auto_max_lag` when None.
        velocity: draw the moveout ``τ = ±distance / velocity`` (km/s) when rows are sorted by distance.
        title: the figure title; a summary of the section when None.
        wiggle_max: wiggles up to this many traces, an image above.

    Returns:
        What was drawn.

    Raises:
        ValueError: the section is empty, or ``sort="distance"`` without distances.
    """
    if not len(section):
        raise ValueError("no trace to plot")
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    order, by = sort_order(section, sort)
    half = max_lag or auto_max_lag(section)
    cols = np.abs(section.lags) <= half + 1e-9
    style = "wiggle" if len(section) <= wiggle_max else "image"
    n = len(section)
    height = min(14.0, 2.5 + 0.22 * n) if style == "wiggle" else 9.0
    fig, ax = plt.subplots(figsize=(11, height), dpi=150, layout="constrained")
    lags, data = section.lags[cols], section.data[order][:, cols]
    if style == "wiggle":
        _wiggles(ax, lags, data, [section.names[i] for i in order], section.distance_km[order], by)
    else:
        image = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="antialiased",
                          extent=(float(lags[0]), float(lags[-1]), n - 0.5, -0.5))  # fmt: skip
        fig.colorbar(image, ax=ax, shrink=0.6, pad=0.01, label="normalised amplitude")
    _peaks(ax, section.peak_lag[order], half, style)
    ax.axvline(0, color="0.4", lw=0.6, ls="--", zorder=2)
    if velocity and by == "distance":
        dist = section.distance_km[order]
        for sign in (-1, 1):
            ax.plot(sign * dist / velocity, np.arange(n), color="#2a9d8f", lw=1.0, ls=":", zorder=4,
                    label=f"±distance / {velocity:g} km/s" if sign > 0 else None)  # fmt: skip
    _axes(ax, section, order, by, style, half)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.85, markerscale=1.0 if style == "wiggle" else 4.0)
    ax.set_title(title or _title(section, by), fontsize=11)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)
    return PlotSummary(output, n, by, style, half, list(section.skipped))


def record_section(folder: Path, output: Path, **options: Any) -> Path:
    """Read ``folder``'s stacks and draw their record section into ``output`` (what ``make demo`` calls).

    Args:
        folder: a ``*.zarr`` result hierarchy, a folder holding ``results.zarr``, or a folder of
            ``<A>__<B>.sac`` files (other files are skipped).
        output: the PNG to write.
        **options: passed to :func:`plot_record_section` (``sort``, ``max_lag``, ``velocity``, ``title``).

    Returns:
        ``output``.

    Raises:
        FileNotFoundError: ``folder`` is not a directory. ValueError: it holds no usable trace.
    """
    return plot_record_section(read_any(folder), output, **options).output


def read_any(path: Path) -> Section:
    """The section of a result hierarchy (``*.zarr``, or a folder holding ``results.zarr``) or a SAC folder.

    Raises:
        FileNotFoundError: ``path`` is neither.
    """
    from results.zarrio import open_root
    from storage.layout import RESULTS_ROOT

    hierarchy = path if path.suffix == ".zarr" else path / RESULTS_ROOT
    if (hierarchy / "stacks").is_dir():
        return read_store_section(open_root(hierarchy, read_only=True))
    return read_section(path)


def _wiggles(ax: object, lags: np.ndarray, data: np.ndarray, names: list[str], dist: np.ndarray, by: str) -> None:
    """Variable-area wiggles, row i centred on y=i, positive lobes filled (y grows downward)."""
    scale = 0.48
    for i, trace in enumerate(data):
        y = i - scale * trace
        ax.plot(lags, y, color="k", lw=0.5)  # type: ignore[attr-defined]
        ax.fill_between(lags, i, y, where=trace > 0, color="k", lw=0, interpolate=True)  # type: ignore[attr-defined]
    labels = [_short(n) + (f"  {d:.1f} km" if by == "distance" else "") for n, d in zip(names, dist, strict=True)]
    ax.set_yticks(np.arange(len(names)), labels, fontsize=6 if len(names) > 30 else 8)  # type: ignore[attr-defined]


def _peaks(ax: object, peaks: np.ndarray, half: float, style: str) -> None:
    """Mark each trace's peak: a triangle above a wiggle, a dot on an image row (sized to the row height)."""
    rows = np.arange(peaks.size)
    shown = np.abs(peaks) <= half
    if style == "wiggle":
        ax.scatter(peaks[shown], rows[shown] - 0.5, s=16, marker="v", color="#e63946", edgecolors="k",  # type: ignore[attr-defined]
                   linewidths=0.4, zorder=3, label="peak")  # fmt: skip
        return
    size = float(np.clip(1500.0 / peaks.size, 0.5, 9.0))  # ~the row height in points squared
    ax.scatter(peaks[shown], rows[shown], s=size, marker="o", color="k", linewidths=0, alpha=0.8, zorder=3,  # type: ignore[attr-defined]
               label="peak")  # fmt: skip


def _axes(ax: object, section: Section, order: np.ndarray, by: str, style: str, half: float) -> None:
    n = len(section)
    ax.set_xlim(-half, half)  # type: ignore[attr-defined]
    ax.set_ylim(n - 0.5, -0.5 - (0.6 if style == "wiggle" else 0))  # type: ignore[attr-defined]
    ax.set_xlabel("lag τ (s)    τ > 0: B after A    (pair A__B, A < B)")  # type: ignore[attr-defined]
    if style == "image":
        ticks = np.unique(np.linspace(0, n - 1, min(n, 11)).round().astype(int))
        values = section.distance_km[order][ticks] if by == "distance" else section.peak_lag[order][ticks]
        unit = "km" if by == "distance" else "s"
        ax.set_yticks(ticks, [f"{v:.1f} {unit}" for v in values])  # type: ignore[attr-defined]
    what = "inter-station distance" if by == "distance" else "lag of the peak"
    ax.set_ylabel(f"one row per pair, sorted by {what}")  # type: ignore[attr-defined]


def _title(section: Section, by: str) -> str:
    windows = sorted(set(section.n_windows.tolist()))
    span = f"{windows[0]}" if len(windows) == 1 else f"{windows[0]}–{windows[-1]}"
    kind = section.kind or "stack"
    return f"Record section: {len(section)} pairs, {kind} over {span} window(s), sorted by {by}"


def _short(name: str) -> str:
    """``NET.STA.LOC.CHA__NET.STA.LOC.CHA`` → ``STA–STA`` (the whole name when it is not a pair name)."""
    pair = split_pair(name)
    if pair is None:
        return name
    return "–".join(split_seed_id(seed_id)[1] for seed_id in pair)
