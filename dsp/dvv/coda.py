"""The coda window of a pair, and the checks every CCF passes before a dv/v method sees it.

The window is symmetric: lags ``start..end`` on the causal side and ``-end..-start`` on the acausal side, with
``start = max(min_lag, distance / start_velocity)`` (a later start for a longer path, so the window follows
the direct arrival out) and a fixed ``end``. The stretching method reads the reference up to
``end * (1 + max stretch)``, so that lag must exist on the lag axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from contracts.dvvparams import DvvParams
from dsp.dvv.model import Reason
from dsp.errors import DvvInputError


@dataclass(frozen=True)
class CodaWindow:
    """Lags ``start_s <= |tau| <= end_s`` (seconds) on the causal (+), acausal (-) or both sides."""

    start_s: float
    end_s: float

    def mask(self, lags: np.ndarray, side: str) -> np.ndarray:
        """Boolean mask of the samples of ``lags`` (s) inside the window on ``side`` (causal, acausal, both)."""
        inside = (np.abs(lags) >= self.start_s) & (np.abs(lags) <= self.end_s)
        if side == "causal":
            return inside & (lags > 0)
        if side == "acausal":
            return inside & (lags < 0)
        return inside


def coda_window(distance_km: float | None, maxlag_s: float, params: DvvParams) -> CodaWindow:
    """The coda window of a pair at ``distance_km`` on a lag axis of +-``maxlag_s``.

    Args:
        distance_km: inter-station distance; only needed when ``params.start_velocity_km_s`` is set.
        maxlag_s: largest lag of the CCFs.
        params: the dv/v settings.

    Returns:
        The window.

    Raises:
        DvvInputError: ``no_distance`` (a distance is needed and unknown), ``window_outside_lags`` (the window,
            stretched by the largest trial, reaches past ``maxlag_s``), ``too_few_points`` (the window is
            shorter than ``min_window_s``, e.g. a pair so far apart that it starts after it ends).
    """
    start = params.min_lag_s
    if params.start_velocity_km_s is not None:
        if distance_km is None or not math.isfinite(distance_km) or distance_km < 0:
            raise DvvInputError(Reason.NO_DISTANCE, f"distance {distance_km!r} km: the coda start needs it")
        start = max(start, distance_km / params.start_velocity_km_s)
    reach = params.end_lag_s * (1 + params.stretch_max_percent / 100)
    if reach > maxlag_s:
        raise DvvInputError(
            Reason.WINDOW_OUTSIDE_LAGS,
            f"coda window ends at {params.end_lag_s:g} s (read up to {reach:g} s when stretched) "
            f"beyond the lag axis +-{maxlag_s:g} s",
        )
    if params.end_lag_s - start < params.min_window_s:
        raise DvvInputError(
            Reason.TOO_FEW_POINTS,
            f"coda window [{start:.3g}, {params.end_lag_s:g}] s is shorter than {params.min_window_s:g} s",
        )
    return CodaWindow(start, params.end_lag_s)


def check_ccf(ccf: np.ndarray, what: str = "ccf", n_lags: int | None = None) -> np.ndarray:
    """A CCF as float64, checked: one odd-length row (zero lag at the centre), finite, not all zeros.

    Args:
        ccf: the CCF (lags -maxlag..+maxlag).
        what: ``"ccf"`` or ``"reference"``, for the reason and its code.
        n_lags: the length it must have, when known (the reference's).

    Returns:
        The CCF as a float64 array.

    Raises:
        DvvInputError: ``shape_mismatch``, ``nonfinite_ccf``, ``zero_ccf`` or ``zero_reference``.
    """
    x = np.asarray(ccf, dtype=np.float64)
    if x.ndim != 1 or x.size % 2 == 0 or (n_lags is not None and x.size != n_lags):
        expected = f"{n_lags} lags" if n_lags is not None else "one row of odd length"
        raise DvvInputError(Reason.SHAPE_MISMATCH, f"{what} of shape {x.shape}, expected {expected}")
    if not np.isfinite(x).all():
        raise DvvInputError(Reason.NONFINITE_CCF, f"{what} has {int((~np.isfinite(x)).sum())} NaN/inf samples")
    if not x.any():
        code = Reason.ZERO_REFERENCE if what == "reference" else Reason.ZERO_CCF
        raise DvvInputError(code, f"{what} is all zeros")
    return x
