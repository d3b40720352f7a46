"""dv/v by moving-window cross-spectral analysis (MWCS: Poupinet et al. 1984; Clarke et al. 2011).

1. Cut the reference and the current CCF into Hann-tapered windows of ``mwcs_window_s`` every
   ``mwcs_step_s`` inside the coda window, on both sides (:mod:`dsp.dvv.mwcs_windows`).
2. Per window, the delay of the current against the reference is the coherence-weighted slope of the
   cross-spectrum's phase, with Clarke et al.'s (2011) error (:func:`dsp.dvv.mwcs_windows.mwcs_delays`).
3. A homogeneous change ``v -> v (1 + e)`` gives ``dt(tau) = tau / (1 + e) - tau = b tau`` on both sides, so
   ``b`` is the weighted (``1 / error^2``) least-squares slope of the kept windows' delays against their lags
   (each window's energy centroid): through the origin on one side, with an intercept (a clock error) on
   both; and ``dv/v = -b / (1 + b)`` exactly (``~ -dt/t``).

Why the regression is solved for a root instead of fitted once: in the windows of a noisy CCF some hold no
coherent signal; their delays scatter around zero whatever the true ``b``, so a single regression is pulled
towards zero (by 60 % on hourly synthetic CCFs), and large delays wrap the phase at high frequency. So the
current CCF is read at ``tau (1 + b_k)``, which removes a trial ``b_k`` exactly; the regression of the
remaining delays gives a residual slope ``g(b_k)``, and the search finds the root ``g(b) = 0``
(:func:`_solve`). Incoherent windows scatter around zero *residual* delay, so they no longer move the root;
they only flatten ``g``, and the error is the residual slope's error divided by that gain ``-dg/db`` (and
multiplied by ``sqrt(length / step)``: overlapping windows are not independent). At the root the residual
delays are small, so the phase never wraps and the taper weighs the same wavelets in both windows.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from contracts.dvvparams import DvvParams
from dsp.dvv.coda import CodaWindow
from dsp.dvv.model import SIDES, Estimate, Reason, reason
from dsp.dvv.mwcs_windows import MovingWindows, SlopeFit, fit_delays
from dsp.errors import DvvInputError

BRACKET_STEP = 0.003  # walk step in b: far from the root the residual slope saturates, but keeps its sign
REFINE_STEPS = 2  # false-position steps inside the bracket, where the residual slope is nearly linear
MIN_GAIN = 0.05  # below this, aligning the windows barely changes their delays: they carry no signal


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
        windows = MovingWindows(reference, ccf, fs, window, params)
    except DvvInputError as exc:
        return {side: Estimate.failed(str(exc)) for side in SIDES}
    both, fits = _solve(windows, "both", params)
    return {
        "causal": _side(windows, "causal", params, fits),
        "acausal": _side(windows, "acausal", params, fits),
        "both": both,
    }


def _side(windows: MovingWindows, side: str, params: DvvParams, trials: dict[float, SlopeFit]) -> Estimate:
    """One side's estimate, from its own residual slopes at the trials of the two-sided search (the sides'
    roots lie close to the two-sided one, so no new FFT is needed); its own search when those trials do not
    bracket its root."""
    fits: dict[float, SlopeFit] = {}
    for b in sorted(trials):
        fits[b] = fit_delays(windows.delays(b), side, params)
        if fits[b].reason is not None:
            return Estimate.failed(fits[b].reason or "", fits[b].n)
    bracket = _bracket(fits)
    if bracket is None:
        return _solve(windows, side, params)[0]
    return _estimate(fits, *bracket, params)


def _solve(windows: MovingWindows, side: str, params: DvvParams) -> tuple[Estimate, dict[float, SlopeFit]]:
    """Find the ``b`` whose residual slope ``g(b)`` is zero (module doc): walk from 0 in steps of
    ``BRACKET_STEP`` towards the sign of ``g`` until it changes sign, then refine by false position.

    Why a walk: far from the root the residual delays are large, their phases wrap at high frequency and
    ``g`` flattens (it can stay at half its true size over 0.6 % of ``b``), so a Newton or secant step from 0
    stalls or diverges; the sign of ``g`` stays right, and near the root ``g`` is linear.

    Returns:
        The estimate of dv/v and the residual-slope fit at every trial ``b``.
    """
    fits: dict[float, SlopeFit] = {}

    def trial(b: float) -> SlopeFit:
        fits[b] = fit_delays(windows.delays(b), side, params)
        return fits[b]

    limit = params.stretch_max_percent / 100
    previous, b, fit = 0.0, 0.0, trial(0.0)
    direction = 1.0 if fit.slope >= 0 else -1.0
    while fit.reason is None and fit.slope * direction >= 0 and abs(b) <= limit:
        previous, b = b, round(b + direction * BRACKET_STEP, 12)  # round: trials are memo keys
        fit = trial(b)
    if fit.reason is not None:
        return Estimate.failed(fit.reason, fit.n), fits
    if abs(b) > limit and fit.slope * direction >= 0:
        why = reason(Reason.OUT_OF_RANGE, f"MWCS residual slope keeps its sign out to {100 * b:+.2g} %")
        return Estimate.failed(why, fit.n), fits
    lo, hi = sorted((previous, b))
    for _ in range(REFINE_STEPS):
        middle = _line(fits, lo, hi)[0]
        if not lo < middle < hi or trial(middle).reason is not None:
            break
        lo, hi = (middle, hi) if fits[middle].slope > 0 else (lo, middle)
    return _estimate(fits, lo, hi, params), fits


def _bracket(fits: dict[float, SlopeFit]) -> tuple[float, float] | None:
    """The closest pair of trials around a downward sign change of ``g`` (the root), or None."""
    bs = sorted(fits)
    pairs = [(lo, hi) for lo, hi in itertools.pairwise(bs) if fits[lo].slope > 0 >= fits[hi].slope]
    return min(pairs, key=lambda p: p[1] - p[0]) if pairs else None


def _line(fits: dict[float, SlopeFit], lo: float, hi: float) -> tuple[float, float]:
    """Root and gain ``-dg/db`` of the least-squares line through the trials in ``[lo, hi]``."""
    b = np.array([x for x in fits if lo <= x <= hi])
    g = np.array([fits[x].slope for x in b])
    db, dg = b - b.mean(), g - g.mean()
    gain = -float((db * dg).sum() / (db * db).sum())  # lo < hi: the spread is never zero
    return (float(b.mean() + g.mean() / gain) if gain != 0 else float(b.mean())), gain


def _estimate(fits: dict[float, SlopeFit], lo: float, hi: float, params: DvvParams) -> Estimate:
    """dv/v at the root of the line through the bracket ``[lo, hi]``, with the error of the residual slope
    nearest the root divided by the line's gain."""
    root, gain = _line(fits, lo, hi)
    if abs(root) > params.stretch_max_percent / 100:
        return Estimate.failed(reason(Reason.OUT_OF_RANGE, f"MWCS slope {100 * root:+.3g} % beyond the range"), 0)
    near = fits[min((x for x in fits if lo <= x <= hi), key=lambda x: abs(x - root))]
    # aligning a window can remove at most its whole delay: a gain above 1 is noise, and would shrink the error
    gain = min(gain, 1.0)
    if gain < MIN_GAIN:
        detail = f"aligning the {near.n} kept MWCS windows barely changes their delays (gain {gain:.2g})"
        return Estimate.failed(reason(Reason.TOO_FEW_POINTS, detail), near.n)
    # overlapping windows share samples, so n windows hold only ~n * step / length independent delays
    err_b = near.err / gain * math.sqrt(max(1.0, params.mwcs_window_s / params.mwcs_step_s))
    return Estimate(-100 * root / (1 + root), 100 * err_b / (1 + root) ** 2, near.coherence, near.n)
