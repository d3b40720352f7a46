"""The dv/v table in a result hierarchy: ``dvv/<series>/``, one series per reference, one group per window.

```
results.zarr/dvv/<series>/                  attrs: reference id, its windows, the dv/v parameters
  reference/  ccf (pair, lag) float32, pair (pair,) str, lag (lag,)     the stored reference of every pair
  windows/<window id>/                      attrs: window, start, measured_at, complete (written last)
    dvv_percent, err_percent, cc (pair, method, side) float64; n_points (pair, method, side) int32
    reason (pair, method, side) str         "" when the value is good, "<code>: <detail>" otherwise
    network_dvv_percent, network_err_percent (method, side) float64; network_n_pairs (method, side) int32
    network_reason (method, side) str
    pair (pair,), method (method,), side (side,) str
```

**Series.** A series name is made of the reference id (its spec and exact windows, see
:func:`dsp.dvv.reference_id`) and a digest of the measurement parameters, so a change of reference or of
parameters starts a new series and never mixes with the old one.

**Writers and crash semantics.** A window's group is a deterministic function of the window's CCFs (immutable
once the stacker closed the window) and the series' reference: writing it again writes the same values, so
a monitor that crashes half-way and measures the window again leaves the same table. ``complete`` is set
after the arrays, and readers skip windows without it.

**Readers.** :func:`read_pairs` and :func:`read_network` give pandas tables in time order (a late window takes
its place by its start time); ``xarray.open_zarr(root, group="dvv/<series>/windows/<window>")`` opens one
window as a labelled (pair, method, side) dataset, and ``read_pairs(...).set_index([...]).to_xarray()`` the
whole series.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import zarr

from dsp.dvv import METHODS, SIDES, DvvMeasurement, DvvParams, NetworkPoint, Reference
from dsp.windows import window_start
from results.errors import ResultsError
from results.zarrio import require, subgroup, values

DVV = "dvv"
PAIR_FIELDS = ("dvv_percent", "err_percent", "cc")
NETWORK_FIELDS = ("dvv_percent", "err_percent")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def series_name(reference_id: str, params: DvvParams) -> str:
    """The path-safe name of the series of ``reference_id`` measured with ``params`` (reference spec aside:
    the id already names it), e.g. ``first12-20240101T000000Z-20240101T110000Z-12-1a2b3c4d.p5e6f7a8b``."""
    measured = params.model_dump_json(exclude={"reference"})
    digest = hashlib.blake2b(measured.encode(), digest_size=4).hexdigest()
    slug = _SAFE.sub("-", reference_id.replace("..", "-")).strip("-")
    return f"{slug}.p{digest}"


class DvvStore:
    """The ``dvv/`` group of one result hierarchy."""

    def __init__(self, root: zarr.Group) -> None:
        self.root = root

    def _series(self, series: str, *, create: bool = False) -> zarr.Group | None:
        path = f"{DVV}/{series}"
        return self.root.require_group(path) if create else subgroup(self.root, path)

    # --- the reference -------------------------------------------------------------------------------------
    def write_reference(self, series: str, references: dict[str, Reference], lags: np.ndarray, attrs: dict) -> None:
        """Store every pair's reference CCF of ``series`` (idempotent: the same windows give the same stack).

        Args:
            series: the series name.
            references: the reference of each pair that has one (pairs without one are not stored).
            lags: the lag axis, s.
            attrs: what the series is (reference id, windows, parameters), kept as its attributes.
        """
        group = self._series(series, create=True)
        assert group is not None
        group.attrs.update(attrs)
        ref = group.require_group("reference")
        pairs = sorted(references)
        data = np.stack([references[p].ccf for p in pairs]).astype(np.float32) if pairs else np.zeros((0, lags.size))
        _put(ref, "ccf", data.astype(np.float32), ("pair", "lag"))
        _put(ref, "pair", np.array(pairs, dtype=object), ("pair",))
        _put(ref, "lag", np.asarray(lags, np.float64), ("lag",))

    def read_reference(self, series: str) -> dict[str, np.ndarray]:
        """The stored reference CCFs of ``series`` by pair ({} when it is not stored)."""
        group = self._series(series)
        ref = subgroup(group, "reference") if group is not None else None
        if ref is None or "pair" not in ref or "ccf" not in ref:
            return {}
        pairs = [str(p) for p in values(ref, "pair")]
        ccfs = values(ref, "ccf").astype(np.float64)
        return dict(zip(pairs, ccfs, strict=True))

    # --- windows -------------------------------------------------------------------------------------------
    def write_window(
        self,
        series: str,
        window: str,
        rows: Sequence[DvvMeasurement],
        network: Sequence[NetworkPoint],
    ) -> None:
        """Write one window's rows (every pair, method and side) and its network points, then mark it complete.

        Raises:
            ResultsError: a row is of another window.
        """
        if any(r.window != window for r in rows) or any(p.window != window for p in network):
            raise ResultsError(f"rows of other windows given for window {window}")
        group = self.root.require_group(f"{DVV}/{series}/windows/{window}")
        pairs = sorted({r.pair for r in rows})
        where = {p: i for i, p in enumerate(pairs)}
        shape = (len(pairs), len(METHODS), len(SIDES))
        cube = {name: np.full(shape, np.nan) for name in PAIR_FIELDS}
        n_points = np.zeros(shape, np.int32)
        reason = np.full(shape, "", dtype=object)
        for r in rows:
            at = (where[r.pair], METHODS.index(r.method), SIDES.index(r.side))
            for name in PAIR_FIELDS:
                cube[name][at] = getattr(r, name)
            n_points[at], reason[at] = r.n_points, r.reason or ""
        dims = ("pair", "dvv_method", "side")
        for name, data in cube.items():
            _put(group, name, data, dims)
        _put(group, "n_points", n_points, dims)
        _put(group, "reason", reason, dims)
        self._write_network(group, network)
        _put(group, "pair", np.array(pairs, dtype=object), ("pair",))
        _put(group, "dvv_method", np.array(METHODS, dtype=object), ("dvv_method",))
        _put(group, "side", np.array(SIDES, dtype=object), ("side",))
        group.attrs.update(
            {"window": window, "start": window_start(window), "measured_at": time.time(), "complete": True}
        )

    def _write_network(self, group: zarr.Group, network: Sequence[NetworkPoint]) -> None:
        shape = (len(METHODS), len(SIDES))
        numbers = {name: np.full(shape, np.nan) for name in NETWORK_FIELDS}
        n_pairs = np.zeros(shape, np.int32)
        reason = np.full(shape, "no_pairs: not measured", dtype=object)
        for p in network:
            at = (METHODS.index(p.method), SIDES.index(p.side))
            for name in NETWORK_FIELDS:
                numbers[name][at] = getattr(p, name)
            n_pairs[at], reason[at] = p.n_pairs, p.reason or ""
        for name, data in numbers.items():
            _put(group, f"network_{name}", data, ("dvv_method", "side"))
        _put(group, "network_n_pairs", n_pairs, ("dvv_method", "side"))
        _put(group, "network_reason", reason, ("dvv_method", "side"))

    def measured(self, series: str) -> set[str]:
        """Windows of ``series`` whose group is complete."""
        group = self._series(series)
        windows = subgroup(group, "windows") if group is not None else None
        if windows is None:
            return set()
        return {name for name, g in windows.groups() if g.attrs.get("complete")}

    def series(self) -> list[str]:
        """The series of the hierarchy, oldest first (by the time their reference was elected)."""
        top = subgroup(self.root, DVV)
        if top is None:
            return []
        found = [(g.attrs.get("elected_at", math.inf), name) for name, g in top.groups()]
        return [name for _, name in sorted(found)]

    def pick(self, series: str | None = None) -> str:
        """``series``, or the newest one.

        Raises:
            ResultsError: there is no such series, or none at all.
        """
        names = self.series()
        if series is None:
            if not names:
                raise ResultsError("the hierarchy holds no dv/v series")
            return names[-1]
        if series not in names:
            raise ResultsError(f"no dv/v series {series!r}; there are {names}")
        return series


def _put(group: zarr.Group, name: str, data: np.ndarray, dims: tuple[str, ...]) -> None:
    """Write ``data`` as array ``name`` of ``group`` (replaced when its shape changed)."""
    is_text = data.dtype == object
    found = group.get(name)
    if isinstance(found, zarr.Array) and found.shape != data.shape:
        del group[name]
    target = require(
        group,
        name,
        shape=data.shape,
        chunks=tuple(max(n, 1) for n in data.shape),
        dtype=str if is_text else data.dtype,
        dimension_names=dims,
        **({} if is_text else {"fill_value": np.nan if data.dtype.kind == "f" else 0}),
    )
    if data.size:
        target[...] = data


def _series(root: zarr.Group, series: str | None) -> tuple[str, list[tuple[str, zarr.Group]]]:
    """A series' reference window and its complete window groups in time order (the newest series by default).

    Raises:
        ResultsError: no such series.
    """
    name = DvvStore(root).pick(series)
    reference = str(subgroup(root, f"{DVV}/{name}").attrs.get("reference", ""))  # type: ignore[union-attr]
    group = subgroup(root, f"{DVV}/{name}/windows")
    if group is None:
        return reference, []
    found = [(window, g) for window, g in group.groups() if g.attrs.get("complete")]
    return reference, sorted(found, key=lambda item: window_start(item[0]))


def read_pairs(root: zarr.Group, series: str | None = None) -> pd.DataFrame:
    """The pair x window table of a series (the newest by default) in time order, then pair, method, side.

    Columns: window, pair, method, side, dvv_percent, err_percent, cc, n_points, reference, reason.

    Raises:
        ResultsError: no such series.
    """
    reference, windows = _series(root, series)
    frames = []
    for window, g in windows:
        pairs = [str(p) for p in values(g, "pair")]
        index = pd.MultiIndex.from_product([pairs, METHODS, SIDES], names=["pair", "method", "side"])
        cells: dict[str, Any] = {f: values(g, f).ravel() for f in (*PAIR_FIELDS, "n_points", "reason")}
        frame = pd.DataFrame(cells, index=index).reset_index()
        frame.insert(0, "window", window)
        frames.append(frame)
    columns = ["window", "pair", "method", "side", *PAIR_FIELDS, "n_points", "reference", "reason"]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    out["reference"] = reference
    return out[columns]


def read_network(root: zarr.Group, series: str | None = None) -> pd.DataFrame:
    """The network points of a series in time order, then method and side.

    Columns: window, method, side, dvv_percent, err_percent, n_pairs, reference, reason.

    Raises:
        ResultsError: no such series.
    """
    reference, windows = _series(root, series)
    rows = []
    for window, g in windows:
        found = {f: values(g, f"network_{f}") for f in (*NETWORK_FIELDS, "n_pairs", "reason")}
        for i, method in enumerate(METHODS):
            for j, side in enumerate(SIDES):
                cells = {k: v[i, j] for k, v in found.items()}
                rows.append({"window": window, "method": method, "side": side, **cells})
    columns = ["window", "method", "side", *NETWORK_FIELDS, "n_pairs", "reference", "reason"]
    out = pd.DataFrame(rows, columns=[c for c in columns if c != "reference"])
    out["reference"] = reference
    return out[columns]
