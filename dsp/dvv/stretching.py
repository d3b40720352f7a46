"""dv/v by stretching (Lobkis & Weaver 2003; Sens-Schönfelder & Wegler 2006): the velocity ratio that makes
the stretched reference look most like the current CCF in the coda window.

A homogeneous velocity change ``v -> v (1 + e)`` moves every arrival from ``t`` to ``t / (1 + e)``, so the
current CCF is ``cur(tau) = ref(tau (1 + e))`` on both sides of zero lag. The search runs over trial
``e`` on a grid; the correlation coefficient ``CC(e)`` between ``cur`` and ``ref(tau (1 + e))`` over the
window peaks at ``e = dv/v``; a parabola through the best grid point and its neighbours refines it. The
trial is the velocity ratio itself, so ``dv/v = e`` exactly, with no first-order ``-dt/t`` approximation.

Cost: the reference is stretched for every trial once (:func:`stretch_reference`, a cubic spline read at
``n_trials x n_window`` lags); each current CCF then costs one matrix-vector product, so a monitor keeps one
:class:`StretchedReference` per pair and reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

from contracts.dvvparams import DvvParams
from dsp.correlate import lag_axis
from dsp.dvv.coda import CodaWindow, check_ccf
from dsp.dvv.model import SIDES, Estimate, Reason, reason
from dsp.errors import DvvInputError


@dataclass(frozen=True, eq=False)
class StretchedReference:
    """A reference read at ``tau (1 + e)`` for every trial ``e``, on the causal and acausal coda windows.

    ``stretched[side]`` is ``[n_trials, n_samples]`` for ``side`` in (causal, acausal) and ``norms[side]``
    its ``sum ref_e^2`` per trial; ``masks[side]`` selects those samples of a CCF; ``energy[side]`` is the
    reference's ``sum r^2`` and ``sensitivity[side]`` its ``sum (tau r'(tau))^2`` over them (see
    :func:`stretching_error`).
    """

    trials: np.ndarray
    window: CodaWindow
    n_lags: int
    masks: dict[str, np.ndarray]
    stretched: dict[str, np.ndarray]
    norms: dict[str, np.ndarray]
    energy: dict[str, float]
    sensitivity: dict[str, float]
    fs: float
    band: tuple[float, float]


def stretch_reference(reference: np.ndarray, fs: float, window: CodaWindow, params: DvvParams) -> StretchedReference:
    """Stretch ``reference`` for every trial of the grid ``+-stretch_max_percent`` in ``stretch_step_percent``.

    Args:
        reference: the reference CCF, lags -maxlag..+maxlag at ``fs``.
        fs: sampling rate of the CCFs, Hz.
        window: the coda window (see :func:`dsp.dvv.coda.coda_window`, which keeps the stretched window
            on the lag axis).
        params: the dv/v settings.

    Returns:
        The stretched reference.

    Raises:
        DvvInputError: the reference is malformed, non-finite or all zeros.
    """
    ref = check_ccf(reference, "reference")
    lags = lag_axis(fs, (ref.size - 1) // 2)
    n = round(params.stretch_max_percent / params.stretch_step_percent)
    trials = np.arange(-n, n + 1) * params.stretch_step_percent / 100
    spline = CubicSpline(lags, ref)  # CCFs are band-limited well below Nyquist: a cubic reads them closely
    masks = {side: window.mask(lags, side) for side in ("causal", "acausal")}
    stretched = {side: spline(np.outer(1 + trials, lags[m])) for side, m in masks.items()}
    norms = {side: np.einsum("ij,ij->i", x, x) for side, x in stretched.items()}
    energy = {side: float(ref[m] @ ref[m]) for side, m in masks.items()}
    sensitivity = {side: float(np.sum((lags[m] * spline(lags[m], 1)) ** 2)) for side, m in masks.items()}
    band = (params.freqmin, params.freqmax)
    return StretchedReference(trials, window, ref.size, masks, stretched, norms, energy, sensitivity, fs, band)


def measure_stretching(stretched: StretchedReference, ccf: np.ndarray) -> dict[str, Estimate]:
    """dv/v of ``ccf`` against a stretched reference, on the causal, acausal and both coda windows.

    Args:
        stretched: the reference, stretched by :func:`stretch_reference`.
        ccf: the current CCF on the reference's lag axis.

    Returns:
        ``{side: Estimate}`` for side in causal, acausal, both: dv/v (percent, positive = faster), the
        correlation coefficient at the optimum, and the error of :func:`stretching_error`. Bad inputs give
        estimates with a reason (zero, NaN or misshapen CCF, no energy in the window, best trial at the edge
        of the grid, correlation <= 0); this function does not raise.
    """
    try:
        cur = check_ccf(ccf, "ccf", stretched.n_lags)
    except DvvInputError as exc:
        return {side: Estimate.failed(str(exc)) for side in SIDES}
    sums = {side: _Sums.of(stretched, side, cur[m]) for side, m in stretched.masks.items()}
    sums["both"] = sums["causal"] + sums["acausal"]
    return {side: _estimate(stretched, side, sums[side]) for side in SIDES}


@dataclass(frozen=True, eq=False)
class _Sums:
    """Per trial ``sum ref_e * cur`` and ``sum ref_e^2``, then ``sum cur^2``, the sample count and the
    reference's energy and sensitivity.

    Sums, not coefficients, so the two sides add up exactly into the coefficient over both windows.
    """

    dot: np.ndarray
    rr: np.ndarray
    cur2: float
    n: int
    energy: float
    sensitivity: float

    @classmethod
    def of(cls, stretched: StretchedReference, side: str, cur: np.ndarray) -> _Sums:
        """The sums of one side's window samples ``cur``."""
        ref = stretched.stretched[side]
        return cls(
            ref @ cur,
            stretched.norms[side],
            float(cur @ cur),
            cur.size,
            stretched.energy[side],
            stretched.sensitivity[side],
        )

    def __add__(self, other: _Sums) -> _Sums:
        return _Sums(
            self.dot + other.dot,
            self.rr + other.rr,
            self.cur2 + other.cur2,
            self.n + other.n,
            self.energy + other.energy,
            self.sensitivity + other.sensitivity,
        )


def _estimate(stretched: StretchedReference, side: str, sums: _Sums) -> Estimate:
    n = sums.n
    if n < 3:
        return Estimate.failed(reason(Reason.TOO_FEW_POINTS, f"{n} samples in the {side} coda window"), n)
    if sums.cur2 == 0 or not sums.rr.all():
        return Estimate.failed(reason(Reason.ZERO_CCF, f"no energy in the {side} coda window"), n)
    curve = sums.dot / np.sqrt(sums.rr * sums.cur2)
    best = int(np.argmax(curve))
    if best in (0, curve.size - 1):
        edge = 100 * stretched.trials[best]
        return Estimate.failed(reason(Reason.OUT_OF_RANGE, f"best trial at the grid's edge ({edge:+.3g} %)"), n)
    e, cc = _vertex(stretched.trials, curve, best)
    if cc <= 0:
        return Estimate.failed(reason(Reason.LOW_CC, f"correlation coefficient {cc:.3g} <= 0"), n)
    err = stretching_error(cc, sums.energy / n, sums.sensitivity, stretched.fs, *stretched.band)
    return Estimate(100 * e, 100 * err, cc, n)


def _vertex(trials: np.ndarray, curve: np.ndarray, i: int) -> tuple[float, float]:
    """Vertex (trial, value) of the parabola through grid points ``i - 1, i, i + 1`` (uniform grid)."""
    y0, y1, y2 = curve[i - 1], curve[i], curve[i + 1]
    curvature = y0 - 2 * y1 + y2
    shift = 0.5 * (y0 - y2) / curvature if curvature < 0 else 0.0  # a flat top keeps the grid point
    step = trials[1] - trials[0]
    return float(trials[i] + shift * step), float(min(y1 - 0.25 * (y0 - y2) * shift, 1.0))


def stretching_error(cc: float, power: float, sensitivity: float, fs: float, freqmin: float, freqmax: float) -> float:
    """Expected rms error of a stretching dv/v (a fraction), from the reference's own coda.

    Linearising ``cur(tau) = ref(tau (1 + e)) + noise`` around the optimum gives a least-squares estimate of
    ``e`` with variance ``sigma_n^2 * k / sum (tau ref'(tau))^2``: the noise power over the reference's
    sensitivity to a stretch, ``k`` counting samples per independent noise value. With the noise power
    ``sigma_n^2 = power (1 - X^2) / X^2`` from the correlation coefficient ``X`` and
    ``k = sqrt(pi / 2) * fs * T / 2`` (``T = 1 / (freqmax - freqmin)``):

        rms(e) = sqrt((1 - X^2) / X^2 * power * sqrt(pi / 2) * fs * T / (2 * sum (tau ref'(tau))^2))

    For a coda of uniform intensity this is exactly the formula of Weaver, Hadziioannou, Larose & Campillo
    (2011; :func:`weaver_error`), whose ``k`` it borrows; for a decaying coda, where the late part of the window
    carries little signal, Weaver's closed form assumes a uniform one and understates the error (2.5x in tests
    with a 40 s decay), so the measured sensitivity replaces the window's ``w_c^2 (t2^3 - t1^3) / 3``.

    Args:
        cc: the correlation coefficient at the optimum, in (0, 1].
        power: the reference's mean square over the window (``sum ref^2 / n``).
        sensitivity: ``sum (tau ref'(tau))^2`` over the window (tau in s, ref' per s).
        fs: sampling rate of the CCFs, Hz.
        freqmin, freqmax: the CCFs' band, Hz.

    Returns:
        The error as a fraction (multiply by 100 for percent); ``inf`` when ``cc <= 0`` or the sensitivity is 0.
    """
    if cc <= 0 or sensitivity <= 0:
        return math.inf
    x = min(cc, 1.0)
    samples_per_value = math.sqrt(math.pi / 2) * fs / (2 * (freqmax - freqmin))
    return math.sqrt((1 - x * x) / (x * x) * power * samples_per_value / sensitivity)


def weaver_error(cc: float, t1: float, t2: float, freqmin: float, freqmax: float, n_sides: int = 1) -> float:
    """Expected rms error of a stretching dv/v (a fraction) after Weaver, Hadziioannou, Larose & Campillo
    (2011, "On the precision of noise correlation interferometry", GJI 185, 1384-1392), their estimate for
    a coda of band-limited noise whose decorrelation ``1 - X^2`` comes from noise:

        rms(e) = sqrt(1 - X^2) / (2 X) * sqrt(6 sqrt(pi / 2) T / (w_c^2 (t2^3 - t1^3)))

    with ``X`` the correlation coefficient, ``T = 1 / (freqmax - freqmin)`` the inverse bandwidth, ``w_c`` the
    central angular frequency and ``[t1, t2]`` the coda window (s). Two sides double the window's weight.

    Args:
        cc: the correlation coefficient at the optimum, in (0, 1].
        t1, t2: the window's lag range, s.
        freqmin, freqmax: the CCFs' band, Hz.
        n_sides: 1 for one side, 2 for both.

    Returns:
        The error as a fraction (multiply by 100 for percent); ``inf`` when ``cc <= 0``.
    """
    if cc <= 0:
        return math.inf
    x = min(cc, 1.0)
    bandwidth = 1.0 / (freqmax - freqmin)
    wc = np.pi * (freqmin + freqmax)
    span = n_sides * (t2**3 - t1**3)
    return float(math.sqrt(1 - x * x) / (2 * x) * math.sqrt(6 * math.sqrt(math.pi / 2) * bandwidth / (wc**2 * span)))
