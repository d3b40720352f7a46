"""The network's dv/v per window: a weighted median of the pairs' measurements, with its uncertainty.

Why a median: a few pairs with a bad CCF (a glitch, a dead channel, cycle skipping) must not move the
network value; the weights ``1 / err^2`` let well-measured pairs count more. Its uncertainty is the larger
of two numbers:

- the spread of the pairs: ``sqrt(pi / 2) * 1.4826 * wMAD / sqrt(n_eff)``, the standard error of a median of
  normal data (``sqrt(pi/2) sigma / sqrt(n)``) with ``sigma`` estimated robustly from the weighted median
  absolute deviation, and ``n_eff = (sum w)^2 / sum w^2`` the effective number of pairs;
- the pairs' own errors combined, ``1 / sqrt(sum w)``, so that pairs that agree by chance (or a single pair)
  never give a zero error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dsp.dvv.model import DvvMeasurement, Reason, reason
from dsp.windows import window_start

MAD_TO_SIGMA = 1.4826  # sigma / MAD for normal data
MEDIAN_EFFICIENCY = math.sqrt(math.pi / 2)  # standard error of the median / standard error of the mean
ERR_FLOOR_PERCENT = 1e-3  # errors below 10 ppm are not credible; the floor keeps weights finite


@dataclass(frozen=True)
class NetworkPoint:
    """The network's dv/v of one window for one method and side (percent, 1-sigma error), from ``n_pairs``
    pairs measured against ``reference``; a ``reason`` and NaN numbers when there is no value."""

    window: str
    dvv_percent: float
    err_percent: float
    n_pairs: int
    method: str
    side: str
    reference: str
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when the point has a value."""
        return self.reason is None

    def row(self) -> dict[str, Any]:
        """The point as a flat dict (``reason`` is ``""`` when the value is good)."""
        out = asdict(self)
        out["reason"] = self.reason or ""
        return out


def weighted_median(values: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray) -> float:
    """The weighted median: the value at which the cumulative weight, in value order, reaches half the total
    (the midpoint of the two values around it when it lands exactly on half).

    Args:
        values: finite numbers.
        weights: non-negative weights of the same length, not all zero.

    Returns:
        The weighted median.

    Raises:
        ValueError: empty input, lengths differ, or the weights are negative or all zero.
    """
    x, w = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if x.size == 0 or x.shape != w.shape or (w < 0).any() or not w.sum() > 0:
        raise ValueError("weighted_median needs equal-length values and non-negative weights, not all zero")
    order = np.argsort(x, kind="stable")
    x, cum = x[order], np.cumsum(w[order])
    half = cum[-1] / 2
    i = int(np.searchsorted(cum, half))
    if math.isclose(cum[i], half, rel_tol=1e-12) and i + 1 < x.size:
        return float((x[i] + x[i + 1]) / 2)
    return float(x[i])


def network_point(
    measurements: Iterable[DvvMeasurement], window: str, method: str = "stretching", side: str = "both"
) -> NetworkPoint:
    """The network's dv/v of ``window`` from the pairs' measurements (others windows, methods, sides ignored).

    Args:
        measurements: pair measurements; failed ones are left out (and not counted in ``n_pairs``).
        window: the window id.
        method, side: which measurements to aggregate.

    Returns:
        The weighted median and its uncertainty (see the module doc), or a point with reason ``no_pairs``
        (no successful measurement) or ``mixed_references`` (the pairs were measured against different
        references, which must never be mixed in one value). Does not raise.
    """
    chosen = [m for m in measurements if (m.window, m.method, m.side) == (window, method, side)]
    good = [m for m in chosen if m.ok and math.isfinite(m.dvv_percent) and math.isfinite(m.err_percent)]
    refs = sorted({m.reference for m in good})
    if len(refs) > 1:
        why = reason(Reason.MIXED_REFERENCES, f"pairs measured against {len(refs)} references: {refs[:3]}")
        return NetworkPoint(window, math.nan, math.nan, 0, method, side, "", why)
    if not good:
        why = reason(Reason.NO_PAIRS, f"0 of {len(chosen)} pair measurements have a value")
        ref = chosen[0].reference if chosen else ""
        return NetworkPoint(window, math.nan, math.nan, 0, method, side, ref, why)
    dvv, err = _aggregate(np.array([m.dvv_percent for m in good]), np.array([m.err_percent for m in good]))
    return NetworkPoint(window, dvv, err, len(good), method, side, refs[0])


def _aggregate(values: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
    """Weighted median of ``values`` (weights ``1 / errors^2``) and its uncertainty (module doc)."""
    w = 1.0 / np.maximum(errors, ERR_FLOOR_PERCENT) ** 2
    median = weighted_median(values, w)
    mad = weighted_median(np.abs(values - median), w)
    n_eff = w.sum() ** 2 / (w**2).sum()
    spread = MEDIAN_EFFICIENCY * MAD_TO_SIGMA * mad / math.sqrt(n_eff)
    return median, float(max(spread, 1.0 / math.sqrt(w.sum())))


def network_series(
    measurements: Sequence[DvvMeasurement], method: str = "stretching", side: str = "both"
) -> tuple[NetworkPoint, ...]:
    """The network's dv/v of every window that has measurements, in time order (whatever order they came in).

    Raises:
        InvalidWindowId: a measurement's window id is malformed.
    """
    windows = sorted({m.window for m in measurements}, key=window_start)
    by_window: dict[str, list[DvvMeasurement]] = {w: [] for w in windows}
    for m in measurements:
        by_window[m.window].append(m)
    return tuple(network_point(by_window[w], w, method, side) for w in windows)


def detect_change(series: Sequence[NetworkPoint], baseline: Iterable[str], n_sigma: float = 3.0) -> str | None:
    """The first window after the baseline whose dv/v departs from the baseline's level by more than
    ``n_sigma`` combined standard errors.

    The level is the error-weighted mean of the baseline windows' values; a window departs when
    ``|dvv - level| > n_sigma * sqrt(err^2 + err_level^2)``.

    Args:
        series: network points in time order.
        baseline: ids of the windows that set the level (e.g. the reference windows).
        n_sigma: the threshold.

    Returns:
        The window id, or None when no later window departs (or the baseline has no value).
    """
    base = set(baseline)
    ref = [p for p in series if p.window in base and p.ok]
    if not ref:
        return None
    w = np.array([1 / max(p.err_percent, ERR_FLOOR_PERCENT) ** 2 for p in ref])
    level = float(np.sum(w * [p.dvv_percent for p in ref]) / w.sum())
    level_err = 1 / math.sqrt(w.sum())
    last_base = max(window_start(p.window) for p in ref)
    for p in series:
        late = p.ok and window_start(p.window) > last_base
        if late and abs(p.dvv_percent - level) > n_sigma * math.hypot(p.err_percent, level_err):
            return p.window
    return None
