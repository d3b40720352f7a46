"""MWCS, per moving window: the delay of the current CCF against the reference and its error (Clarke et
al. 2011), and the weighted line of those delays against lag. :mod:`dsp.dvv.mwcs` turns them into dv/v.

Per window, ``cur(t) = ref(t - dt)`` gives ``X(f) = conj(R) C = |R|^2 exp(-2 pi i f dt)``: the delay is the
slope of the cross-spectrum's phase against ``2 pi f``, fitted through the origin over the band, each bin
weighted by its coherence ``g`` (from spectra smoothed over +-``mwcs_smooth_hz``) as
``w = sqrt(g^2 / (1 - g^2))``; the slope's error follows Clarke et al. (2011, GJI 186, 867-882):
``e_m = sqrt(sum_j (w_j v_j / sum_i w_i v_i^2)^2 s^2)`` with ``v = 2 pi f`` and ``s^2`` the residual
variance of the phase. The current CCF can be read at ``tau (1 + stretch)`` first, which removes a trial
velocity change exactly (what the search of :mod:`dsp.dvv.mwcs` does).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage, signal

from contracts.dvvparams import DvvParams
from dsp.correlate import lag_axis
from dsp.dvv.coda import CodaWindow, check_ccf
from dsp.dvv.model import Reason, reason
from dsp.errors import DvvInputError

MAX_COHERENCE = 0.99  # caps the weight sqrt(g^2 / (1 - g^2)) of a perfectly coherent bin
OVERSAMPLE = 8  # linear interpolation error at 2.5 Hz on a 160 Hz grid: < 0.03 % of the amplitude


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


def mwcs_delays(
    reference: np.ndarray, ccf: np.ndarray, fs: float, window: CodaWindow, params: DvvParams, stretch: float = 0.0
) -> WindowDelays:
    """Delays of ``ccf`` (read at ``tau (1 + stretch)``) against ``reference`` in every moving window (steps
    1-2 of the module doc).

    Raises:
        DvvInputError: a CCF is malformed, non-finite or all zeros, or no moving window fits the coda window.
    """
    return MovingWindows(reference, ccf, fs, window, params).delays(stretch)


class MovingWindows:
    """The moving windows of one reference and current CCF, the reference's spectra computed once.

    Raises (on construction):
        DvvInputError: a CCF is malformed, non-finite or all zeros, or no moving window fits the coda window.
    """

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
        # the current CCF, 8x oversampled (polyphase, zero-phase) over the lags a stretched window can read:
        # linear interpolation on it is as close as a cubic spline on the original and ~10x faster to read
        near = np.flatnonzero(np.abs(lags) <= window.end_s * (1 + params.stretch_max_percent / 100) + 1.0)
        self.fine = signal.resample_poly(cur[near], OVERSAMPLE, 1)
        self.fine_lags = lags[near[0]] + np.arange(self.fine.size) / (fs * OVERSAMPLE)
        self.memo: dict[float, WindowDelays] = {}

    def delays(self, stretch: float) -> WindowDelays:
        """The windows' delays with the current CCF read at ``tau (1 + stretch)`` (remembered: the three
        sides all start at 0)."""
        if stretch not in self.memo:
            self.memo[stretch] = self._delays(stretch)
        return self.memo[stretch]

    def _delays(self, stretch: float) -> WindowDelays:
        read = np.interp(self.lags * (1 + stretch), self.fine_lags, self.fine)
        spec_c = _spectra(read, self.taper, self.nfft)[:, self.bins]
        delays, errors, coherence = _phase_delays(self.spec_r, spec_c, self.freqs[self.inner], self.half, self.inner)
        return WindowDelays(self.centroids, delays, errors, coherence, stretch)


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
