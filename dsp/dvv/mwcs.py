"""dv/v by moving-window cross-spectral analysis (MWCS: Poupinet et al. 1984; Clarke et al. 2011).

1. Cut the reference and the current CCF into Hann-tapered windows of ``mwcs_window_s`` every
   ``mwcs_step_s`` inside the coda window, on both sides.
2. Per window, the delay ``dt`` of the current against the reference is the slope of the cross-spectrum's
   phase: ``cur(t) = ref(t - dt)`` gives ``X(f) = conj(R) C = |R|^2 exp(-2 pi i f dt)``. The phase is fitted
   through the origin against ``2 pi f`` over the band, each bin weighted by its coherence ``g`` (from spectra
   smoothed over +-``mwcs_smooth_hz``) as ``w = sqrt(g^2 / (1 - g^2))``; the slope's error follows Clarke et
   al. (2011, GJI 186, 867-882): ``e_m = sqrt(sum_j (w_j v_j / sum_i w_i v_i^2)^2 s^2)`` with ``v = 2 pi f``
   and ``s^2`` the residual variance of the phase.
3. A homogeneous change ``v -> v (1 + e)`` gives ``dt(tau) = tau / (1 + e) - tau = b tau`` on both sides, so
   ``b`` is the weighted (``1 / error^2``) least-squares slope of the kept windows' delays against their lags
   (each window's energy centroid): through the origin on one side, with an intercept (a clock error) on
   both; and ``dv/v = -b / (1 + b)`` exactly (``~ -dt/t``).
   Windows with a mean coherence below ``mwcs_min_coherence`` or a delay beyond ``mwcs_max_delay_s`` drop.

Why the regression is iterated: in a short window of a noisy CCF, some windows hold no coherent signal; their
delays scatter around zero whatever the true ``b``, so a single regression is pulled towards zero (by 60 % on
hourly synthetic CCFs), and large delays wrap the phase at high frequency. So the current CCF is read at
``tau (1 + b_k)``, which removes a trial ``b_k`` exactly; the regression of the remaining delays gives a
residual slope ``g(b_k)``, and the secant method finds the root ``g(b) = 0``. Incoherent windows scatter
around zero *residual* delay, so they no longer move the root; they only flatten ``g``, and the error is the
residual slope's error divided by that gain ``-dg/db`` (and multiplied by ``sqrt(length / step)``: overlapping
windows are not independent). At the root the residual delays are small, so the
phase never wraps and the taper weighs the same wavelets in both windows.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage, signal
from scipy.interpolate import CubicSpline

from dsp.correlate import lag_axis
from dsp.dvv.coda import CodaWindow, check_ccf
from dsp.dvv.model import SIDES, Estimate, Reason, reason
from dsp.dvv.params import DvvParams
from dsp.errors import DvvInputError

MAX_COHERENCE = 0.99  # caps the weight sqrt(g^2 / (1 - g^2)) of a perfectly coherent bin
MAX_EVALUATIONS = 6  # secant steps; the residual slope is nearly linear in b, so 3-4 usually converge
TOLERANCE = 1e-7  # |residual slope| that counts as converged (0.00001 % of dv/v)...
CONVERGED_SIGMA = 0.1  # ...or below this fraction of its own error, where a further step changes nothing
MIN_GAIN = 0.05  # below this, aligning the windows barely changes their delays: they carry no signal


@dataclass(frozen=True, eq=False)
class WindowDelays:
    """Per moving window, for the current CCF read at ``tau (1 + stretch)``: the lag (s) of the window's
    energy centroid, the delay (s) of the current against the reference, its 1-sigma error (s), and the mean
    coherence over the band."""

    lags: np.ndarray
    delays: np.ndarray
    errors: np.ndarray
    coherence: np.ndarray
    stretch: float = 0.0


@dataclass(frozen=True)
class SlopeFit:
    """Weighted slope through the origin of delay against lag (dimensionless), its 1-sigma error, the number
    of kept windows and their mean coherence; a reason when too few windows are kept."""

    slope: float
    err: float
    n: int
    coherence: float
    reason: str | None = None


def measure_mwcs(
    reference: np.ndarray, ccf: np.ndarray, fs: float, window: CodaWindow, params: DvvParams
) -> dict[str, Estimate]:
    """dv/v of ``ccf`` against ``reference`` by MWCS, on the causal, acausal and both coda windows.

    Args:
        reference: the reference CCF, lags -maxlag..+maxlag at ``fs``.
        ccf: the current CCF on the same lag axis.
        fs: sampling rate of the CCFs, Hz.
        window: the coda window.
        params: the dv/v settings.

    Returns:
        ``{side: Estimate}``: dv/v and error in percent, the mean coherence of the kept windows as ``cc`` and
        their count as ``n_points``. Bad inputs give estimates with a reason (malformed, NaN or zero CCFs, no
        window that fits, too few coherent windows, a slope outside the stretching range); this function
        does not raise.
    """
    try:
        windows = _Windows(reference, ccf, fs, window, params)
    except DvvInputError as exc:
        return {side: Estimate.failed(str(exc)) for side in SIDES}
    both, root = _solve(windows, "both", params, 0.0)
    # each side starts from the two-sided root: fewer steps, and a side that stops short stays near it
    start = root if root is not None else 0.0
    sides = {side: _solve(windows, side, params, start)[0] for side in ("causal", "acausal")}
    return {side: both if side == "both" else sides[side] for side in SIDES}


def mwcs_delays(
    reference: np.ndarray, ccf: np.ndarray, fs: float, window: CodaWindow, params: DvvParams, stretch: float = 0.0
) -> WindowDelays:
    """Delays of ``ccf`` (read at ``tau (1 + stretch)``) against ``reference`` in every moving window (steps
    1-2 of the module doc).

    Raises:
        DvvInputError: a CCF is malformed, non-finite or all zeros, or no moving window fits the coda window.
    """
    return _Windows(reference, ccf, fs, window, params).delays(stretch)


class _Windows:
    """The moving windows of one reference and current CCF, the reference's spectra computed once."""

    def __init__(self, reference: np.ndarray, ccf: np.ndarray, fs: float, window: CodaWindow, params: DvvParams):
        ref = check_ccf(reference, "reference")
        cur = check_ccf(ccf, "ccf", ref.size)
        starts = _window_starts(ref.size, fs, window, params)
        n = round(params.mwcs_window_s * fs)
        idx = starts[:, None] + np.arange(n)[None, :]
        lags = lag_axis(fs, (ref.size - 1) // 2)
        self.params, self.lags = params, lags[idx]
        self.taper = _hann(n)
        self.nfft = scipy.fft.next_fast_len(2 * n)  # zero-padded: a finer grid for the smoothing
        freqs = scipy.fft.rfftfreq(self.nfft, 1 / fs)
        self.half = max(1, round(params.mwcs_smooth_hz / (freqs[1] - freqs[0])))
        # only the band's bins, and the smoothing kernel's reach around them, are ever used
        band = np.flatnonzero((freqs >= params.mwcs_freqmin) & (freqs <= params.mwcs_freqmax))
        self.bins = slice(max(band[0] - self.half, 0), band[-1] + self.half + 1)
        self.inner = slice(band[0] - self.bins.start, band[-1] + 1 - self.bins.start)
        self.freqs = freqs[self.bins]
        self.spec_r = _spectra(ref[idx], self.taper, self.nfft)[:, self.bins]
        self.centroids = _centroids(ref[idx] * self.taper, self.lags)
        near = np.abs(lags) <= window.end_s * (1 + params.stretch_max_percent / 100) + 1.0
        self.cur = CubicSpline(lags[near], cur[near])  # only the lags a stretched window can read
        self.memo: dict[float, WindowDelays] = {}

    def delays(self, stretch: float) -> WindowDelays:
        """The windows' delays with the current CCF read at ``tau (1 + stretch)`` (remembered: the three
        sides all start at 0)."""
        if stretch not in self.memo:
            self.memo[stretch] = self._delays(stretch)
        return self.memo[stretch]

    def _delays(self, stretch: float) -> WindowDelays:
        spec_c = _spectra(self.cur(self.lags * (1 + stretch)), self.taper, self.nfft)[:, self.bins]
        delays, errors, coherence = _phase_delays(self.spec_r, spec_c, self.freqs[self.inner], self.half, self.inner)
        return WindowDelays(self.centroids, delays, errors, coherence, stretch)


def _solve(windows: _Windows, side: str, params: DvvParams, start: float) -> tuple[Estimate, float | None]:
    """Secant search from ``b = start`` for the ``b`` whose residual slope is zero (module doc).

    Returns:
        The estimate of dv/v and the root ``b`` (None when the estimate failed).
    """
    points: list[tuple[float, SlopeFit]] = []
    b = start
    for _ in range(MAX_EVALUATIONS):
        fit = fit_delays(windows.delays(b), side, params)
        if fit.reason is not None:
            return Estimate.failed(fit.reason, fit.n), None
        points.append((b, fit))
        if len(points) > 1 and abs(fit.slope) < max(TOLERANCE, CONVERGED_SIGMA * fit.err):
            break
        b = _next_trial(points)
        if abs(b) > 2 * params.stretch_max_percent / 100:
            why = reason(Reason.OUT_OF_RANGE, f"MWCS slope beyond {params.stretch_max_percent:g} %")
            return Estimate.failed(why, fit.n), None
    return _estimate(points, params)


def _next_trial(points: list[tuple[float, SlopeFit]]) -> float:
    """Next ``b``: a plain step from the first point (nudged when its residual is 0), then secant steps."""
    if len(points) == 1:
        b, fit = points[0]
        return b + (fit.slope if abs(fit.slope) > TOLERANCE else 1e-4)
    (b0, f0), (b1, f1) = points[-2], points[-1]
    if f1.slope == f0.slope:
        return b1
    return b1 - f1.slope * (b1 - b0) / (f1.slope - f0.slope)


def _estimate(points: list[tuple[float, SlopeFit]], params: DvvParams) -> tuple[Estimate, float | None]:
    """dv/v at the root (and the root), with the residual slope's error divided by the gain ``-dg/db`` of
    the last step."""
    (b0, f0), (b1, f1) = points[-2], points[-1]
    # aligning a window can remove at most its whole delay: a gain above 1 is noise, and would shrink the error
    gain = min(-(f1.slope - f0.slope) / (b1 - b0), 1.0) if b1 != b0 else 1.0
    if gain < MIN_GAIN:
        detail = f"aligning the {f1.n} kept MWCS windows barely changes their delays (gain {gain:.2g})"
        return Estimate.failed(reason(Reason.TOO_FEW_POINTS, detail), f1.n), None
    b = b1 + f1.slope / gain  # the last secant step, not evaluated: it is below the tolerance or the budget
    # overlapping windows share samples, so n windows hold only ~n * step / length independent delays
    err_b = f1.err / gain * math.sqrt(max(1.0, params.mwcs_window_s / params.mwcs_step_s))
    if abs(b) > params.stretch_max_percent / 100:
        return Estimate.failed(reason(Reason.OUT_OF_RANGE, f"MWCS slope {b:.3g} beyond the range"), f1.n), None
    return Estimate(-100 * b / (1 + b), 100 * err_b / (1 + b) ** 2, f1.coherence, f1.n), b


def _spectra(segments: np.ndarray, taper: np.ndarray, nfft: int) -> np.ndarray:
    """Spectra of demeaned, tapered rows, zero-padded to ``nfft``."""
    return scipy.fft.rfft((segments - segments.mean(axis=1, keepdims=True)) * taper, n=nfft, axis=1)


def _centroids(tapered_ref: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Lag (s) of each window's energy centroid in the tapered reference.

    Why not the window's centre: the phase slope averages the local delays ``b * tau`` over the window with
    the signal's energy as weight, so in a decaying coda it measures the delay nearer the energy centroid,
    which sits closer to zero lag than the centre.
    """
    energy = tapered_ref**2
    total = np.maximum(energy.sum(axis=1), np.finfo(float).tiny)
    return (energy * lags).sum(axis=1) / total


def _window_starts(n_lags: int, fs: float, window: CodaWindow, params: DvvParams) -> np.ndarray:
    """First sample of each moving window: causal ones inside ``[start, end]`` and their mirror images on the
    acausal side.

    Raises:
        DvvInputError: ``too_few_points`` when not one moving window fits.
    """
    maxlag, n = (n_lags - 1) // 2, round(params.mwcs_window_s * fs)
    first = maxlag + int(np.ceil(window.start_s * fs - 1e-9))
    last = maxlag + int(np.floor(window.end_s * fs + 1e-9))
    causal = np.arange(first, last - n + 2, max(1, round(params.mwcs_step_s * fs)))
    if causal.size == 0:
        span = f"[{window.start_s:.3g}, {window.end_s:g}] s"
        raise DvvInputError(Reason.TOO_FEW_POINTS, f"no {params.mwcs_window_s:g} s MWCS window fits {span}")
    acausal = 2 * maxlag - (causal + n - 1)  # mirror of the causal windows about zero lag
    return np.concatenate([acausal[::-1], causal])


def _phase_delays(
    spec_r: np.ndarray, spec_c: np.ndarray, freqs: np.ndarray, half: int, inner: slice
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delay, its error and the mean in-band coherence of each window (step 2), from spectra over the band
    widened by ``half`` bins (``inner`` selects the band, ``freqs`` its frequencies)."""
    cross = np.conj(spec_r) * spec_c
    rows = cross.shape[0]
    # one smoothing call for the four quantities: the calls, not the arithmetic, dominate at this size
    parts = np.concatenate([cross.real, cross.imag, np.abs(spec_r) ** 2, np.abs(spec_c) ** 2])
    smooth = ndimage.convolve1d(parts, _kernel(half), axis=1, mode="nearest")[:, inner]
    cross_s = smooth[:rows] + 1j * smooth[rows : 2 * rows]
    power = np.sqrt(smooth[2 * rows : 3 * rows] * smooth[3 * rows :])
    coh = np.clip(np.abs(cross_s) / np.maximum(power, np.finfo(float).tiny), 0, MAX_COHERENCE)
    nu = 2 * np.pi * freqs
    slope, err = _slope_through_origin(nu, np.angle(cross_s), np.sqrt(coh**2 / (1 - coh**2)))
    return -slope, err, coh.mean(axis=1)  # phase = -2 pi f dt


@functools.lru_cache(maxsize=8)
def _kernel(half: int) -> np.ndarray:
    """Hann smoothing kernel of ``2 half + 1`` bins with unit sum (read-only)."""
    kernel = signal.windows.hann(2 * half + 3)[1:-1]
    kernel /= kernel.sum()
    kernel.setflags(write=False)
    return kernel


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    """Hann taper of ``n`` samples (read-only)."""
    taper = signal.windows.hann(n)
    taper.setflags(write=False)
    return taper


def _slope_through_origin(nu: np.ndarray, phase: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted slope through the origin of each row of ``phase`` against ``nu``, and Clarke et al.'s error."""
    norm = (weight * nu**2).sum(axis=1)
    slope = (weight * nu * phase).sum(axis=1) / norm
    resid = phase - slope[:, None] * nu[None, :]
    var = (resid**2).sum(axis=1) / max(nu.size - 1, 1)
    err = np.sqrt((((weight * nu) / norm[:, None]) ** 2).sum(axis=1) * var)
    return slope, err


def fit_delays(delays: WindowDelays, side: str, params: DvvParams) -> SlopeFit:
    """Weighted (``1 / error^2``) least-squares slope of the kept windows' delays against their lags.

    One side: a line through the origin (no delay at zero lag). Both sides: a line with an intercept, which
    absorbs a constant shift of the whole CCF (a clock error moves both sides the same way, a velocity change
    moves them apart), so a clock error never reads as a velocity change.

    Args:
        delays: the windows' delays.
        side: causal (lags > 0), acausal (< 0) or both.
        params: the dv/v settings (coherence and delay limits, minimum window count).

    Returns:
        The fit; its error is the formal one, scaled up by ``sqrt(chi^2 / dof)`` when the delays scatter more
        than their errors say. A fit with ``too_few_points`` when fewer than ``mwcs_min_windows`` are kept.
    """
    side_mask = {"causal": delays.lags > 0, "acausal": delays.lags < 0}.get(side, np.ones(delays.lags.size, bool))
    keep = side_mask & (delays.coherence >= params.mwcs_min_coherence)
    keep &= (np.abs(delays.delays) <= params.mwcs_max_delay_s) & np.isfinite(delays.errors) & (delays.errors > 0)
    n = int(keep.sum())
    intercept = side == "both"
    if n < max(params.mwcs_min_windows, 3 if intercept else 2):
        detail = f"{n} of {int(side_mask.sum())} {side} MWCS windows kept (< {params.mwcs_min_windows})"
        return SlopeFit(np.nan, np.nan, n, np.nan, reason(Reason.TOO_FEW_POINTS, detail))
    slope, err = _weighted_line(delays.lags[keep], delays.delays[keep], 1 / delays.errors[keep] ** 2, intercept)
    return SlopeFit(slope, err, n, float(delays.coherence[keep].mean()))


def _weighted_line(t: np.ndarray, y: np.ndarray, w: np.ndarray, intercept: bool) -> tuple[float, float]:
    """Slope and its error of the weighted least-squares line ``y = a + b t`` (``a = 0`` without intercept),
    the error scaled by ``sqrt(chi^2 / dof)`` when that exceeds 1."""
    sw, st, sy, stt, sty = w.sum(), (w * t).sum(), (w * y).sum(), (w * t * t).sum(), (w * t * y).sum()
    if intercept:
        det = sw * stt - st * st
        b, a, var = (sw * sty - st * sy) / det, (stt * sy - st * sty) / det, sw / det
    else:
        b, a, var = sty / stt, 0.0, 1 / stt
    dof = t.size - (2 if intercept else 1)
    chi2 = float((w * (y - a - b * t) ** 2).sum()) / dof
    return float(b), float(np.sqrt(var * max(chi2, 1.0)))
