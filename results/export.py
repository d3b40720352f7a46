"""Exports from a result hierarchy: per-pair SAC files of the stacks, read chunk by chunk.

``xcorrflow export --format sac`` and ``xcorrflow run --format sac|both`` write ``DIR/<A>__<B>.sac`` exactly as
the runs always did (:mod:`results.sac`: ``b = -maxlag``, ``delta = 1/fs``, coordinates in the header when the
stations group knows them, ``user0`` = windows stacked), one stack chunk in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from dsp.product import Coordinates
from results.errors import ResultsError
from results.layout import STACKS, STATIONS, WINDOWS
from results.sac import ccf_sac_bytes, write_sac
from results.zarrio import array, subgroup, values


@dataclass(frozen=True)
class StackRows:
    """Stacks of some pairs: the stack kind's values [n, lags], windows per pair, and the pairs' SEED ids."""

    values: np.ndarray
    count: np.ndarray
    a: list[str]
    b: list[str]


def stack_rows(
    root: zarr.Group, kind: str | None = None, power: float | None = None, *, chunk_stride: int = 1
) -> Iterator[StackRows]:
    """Every stack of a hierarchy, one stack chunk at a time (pairs with no window are left out).

    Args:
        root: the hierarchy.
        kind: ``linear`` or ``pws`` (default: what the stacks were made for).
        power: the pws exponent (default: the one the stacks were made with).
        chunk_stride: read every n-th chunk only (a sample of the pairs, e.g. for a picture).
    """
    group = _stacks(root)
    attrs = group.attrs.asdict()
    kind = kind or str(attrs.get("stack", "linear"))
    power = float(power if power is not None else attrs.get("pws_power", 2.0))  # type: ignore[arg-type]
    linear = array(group, "linear")
    step = linear.chunks[0]
    for start in range(0, linear.shape[0], step * chunk_stride):
        rows = slice(start, min(start + step, linear.shape[0]))
        n = values(group, "count", rows)
        keep = np.flatnonzero(n > 0)
        if keep.size == 0:
            continue
        data = values(group, "linear", rows)[keep]
        if kind == "pws":
            data = data * np.abs(values(group, "phase", rows)[keep]) ** power
        a, b = values(group, "a", rows)[keep], values(group, "b", rows)[keep]
        yield StackRows(data, n[keep], [str(x) for x in a], [str(x) for x in b])


def _stacks(root: zarr.Group) -> zarr.Group:
    group = subgroup(root, STACKS)
    if group is None:
        raise ResultsError("the hierarchy holds no stacks")
    return group


def station_coordinates(root: zarr.Group) -> dict[str, Coordinates | None]:
    """The stations group's positions (None where unknown)."""
    group = subgroup(root, STATIONS)
    if group is None:
        return {}
    names = [str(s) for s in values(group, "station")]
    lat, lon, elev = (values(group, f) for f in ("latitude", "longitude", "elevation_m"))
    return {
        name: None if np.isnan(lat[i]) else Coordinates(float(lat[i]), float(lon[i]), float(elev[i]))
        for i, name in enumerate(names)
    }


def export_sac(
    root: zarr.Group, output_dir: Path, *, final: Callable[[str, str, int], bool] | None = None, threads: int = 4
) -> int:
    """Write one SAC file per stacked pair into ``output_dir``; returns how many were written.

    Args:
        root: the hierarchy.
        output_dir: where ``<A>__<B>.sac`` go.
        final: ``final(a, b, windows)`` says whether a pair's stack is complete; only those are written (a run
            that failed keeps what is final and nothing that is not). Default: every stacked pair.
        threads: concurrent file writes.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    group = _stacks(root)
    fs, kind = float(group.attrs["fs"]), str(group.attrs.get("stack", "linear"))  # type: ignore[arg-type]
    coords = station_coordinates(root)
    written = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:  # the file system's latency, not the CPU, is the cost
        for rows in stack_rows(root):
            chosen = [i for i in range(len(rows.a)) if final is None or final(rows.a[i], rows.b[i], int(rows.count[i]))]

            def one(i: int, rows: StackRows = rows) -> None:
                a, b = rows.a[i], rows.b[i]
                content = ccf_sac_bytes(
                    rows.values[i], fs, a, b, coords_a=coords.get(a), coords_b=coords.get(b),
                    n_windows=int(rows.count[i]), kind=kind,
                )  # fmt: skip
                write_sac(output_dir / f"{a}__{b}.sac", content)

            list(pool.map(one, chosen))
            written += len(chosen)
    return written


def export_ccfs(root: zarr.Group, output_dir: Path, windows: list[str] | None = None, *, threads: int = 4) -> int:
    """Write each window's CCFs as ``output_dir/<window>/<A>__<B>.sac``; returns how many were written.

    Only windows whose slot index is written (stacked windows) can say which pair each slot holds; the others
    are left out.
    """
    group = subgroup(root, WINDOWS)
    if group is None:
        return 0
    coords = station_coordinates(root)
    written = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for window in sorted(windows or [name for name, _ in group.groups()]):
            win = subgroup(group, window)
            if win is not None and "pair_index" in win:
                written += _export_window(win, output_dir / window, coords, pool)
    return written


def _export_window(
    win: zarr.Group, folder: Path, coords: dict[str, Coordinates | None], pool: ThreadPoolExecutor
) -> int:
    """One window's CCFs with a CCF (``n_common > 0``) as SAC files, one ccf chunk of slots at a time."""
    fs, ccf = float(win.attrs["fs"]), array(win, "ccf")  # type: ignore[arg-type]
    a, b, n = (values(win, name) for name in ("a", "b", "n_common"))
    slots = np.flatnonzero(n > 0)
    folder.mkdir(parents=True, exist_ok=True)

    def one(slot: int, data: np.ndarray) -> None:
        x, y = str(a[slot]), str(b[slot])
        content = ccf_sac_bytes(data, fs, x, y, coords_a=coords.get(x), coords_b=coords.get(y), kind="ccf")
        write_sac(folder / f"{x}__{y}.sac", content)

    for start in range(0, slots.size, ccf.chunks[0]):
        part = slots[start : start + ccf.chunks[0]]
        data = np.asarray(ccf.get_orthogonal_selection((part, slice(None))))
        list(pool.map(one, part.tolist(), list(data)))
    return int(slots.size)
