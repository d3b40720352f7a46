"""Stretching and MWCS against CCFs whose stretch is known exactly, and the coda window.

The test CCF is a sum of Gabor wavelets at random lags on both sides, with a decaying envelope. A velocity
change ``e`` moves every arrival from ``T`` to ``T / (1 + e)``: the current CCF is the same sum evaluated at
``tau (1 + e)``, an exact stretch with no interpolation, so the truth of each test is ``e`` itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from dsp.correlate import lag_axis
from dsp.dvv import (
    CodaWindow,
    DvvParams,
    coda_window,
    measure_mwcs,
    measure_stretching,
    mwcs_delays,
    stretch_reference,
    weaver_error,
)
from dsp.errors import DvvInputError

FS, MAXLAG = 20.0, 2000  # +-100 s
LAGS = lag_axis(FS, MAXLAG)
PARAMS = DvvParams(start_velocity_km_s=None, min_lag_s=5.0, end_lag_s=80.0, mwcs_window_s=20.0, mwcs_step_s=10.0)
WINDOW = CodaWindow(5.0, 80.0)


def wavelets(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrival lags (s), amplitudes (a coda decaying over 40 s) and carrier frequencies (Hz)."""
    rng = np.random.default_rng(seed)
    lags = rng.uniform(-100, 100, n)
    return lags, rng.standard_normal(n) * np.exp(-np.abs(lags) / 40), rng.uniform(0.2, 1.6, n)


def ccf_of(arrivals: tuple[np.ndarray, np.ndarray, np.ndarray], dvv_percent: float) -> np.ndarray:
    """The CCF of a medium whose velocity changed by ``dvv_percent``: every arrival at ``T / (1 + e)``."""
    t, a, f = arrivals
    tau = LAGS[:, None] * (1 + dvv_percent / 100) - t[None, :]
    return (a * np.exp(-0.5 * (tau * f / 0.8) ** 2) * np.cos(2 * np.pi * f * tau)).sum(axis=1)


def band_noise(rng: np.random.Generator, rms: float) -> np.ndarray:
    sos = signal.butter(4, [0.1, 2.0], "bandpass", fs=FS, output="sos")
    x = signal.sosfiltfilt(sos, rng.standard_normal(LAGS.size))
    return rms * x / x.std()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), dvv=st.floats(-0.9, 0.9))
def test_stretching_recovers_an_exact_stretch(seed: int, dvv: float) -> None:
    arrivals = wavelets(seed)
    stretched = stretch_reference(ccf_of(arrivals, 0.0), FS, WINDOW, PARAMS)
    result = measure_stretching(stretched, ccf_of(arrivals, dvv))
    for side, est in result.items():
        assert est.ok, est.reason
        assert est.dvv_percent == pytest.approx(dvv, abs=2e-3), side
        assert est.cc > 0.999 and est.err_percent >= 0


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), dvv=st.floats(-0.9, 0.9))
def test_mwcs_recovers_an_exact_stretch(seed: int, dvv: float) -> None:
    arrivals = wavelets(seed)
    result = measure_mwcs(ccf_of(arrivals, 0.0), ccf_of(arrivals, dvv), FS, WINDOW, PARAMS)
    for side, est in result.items():
        assert est.ok, est.reason
        assert est.dvv_percent == pytest.approx(dvv, abs=5e-3), side


def test_sign_convention_faster_medium_means_earlier_arrivals_and_positive_dvv() -> None:
    lone = (np.array([-40.0, 40.0]), np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    envelope = np.abs(signal.hilbert(ccf_of(lone, +0.5)))
    peaks = sorted(LAGS[np.argsort(envelope)[-2:]])
    assert peaks == pytest.approx([-40 / 1.005, 40 / 1.005], abs=0.5 / FS)  # earlier on both sides
    arrivals = wavelets(3)
    faster = ccf_of(arrivals, +0.5)
    stretched = stretch_reference(ccf_of(arrivals, 0.0), FS, WINDOW, PARAMS)
    assert measure_stretching(stretched, faster)["both"].dvv_percent > 0.4
    assert measure_mwcs(ccf_of(arrivals, 0.0), faster, FS, WINDOW, PARAMS)["both"].dvv_percent > 0.4


def test_a_clock_shift_is_a_delay_in_every_window_and_cancels_between_the_sides() -> None:
    arrivals = wavelets(5)
    ref = ccf_of(arrivals, 0.0)
    later = np.interp(LAGS - 0.1, LAGS, ref)  # cur(t) = ref(t - 0.1 s): exact, 0.1 s is two samples
    delays = mwcs_delays(ref, later, FS, WINDOW, PARAMS)
    # one read, no alignment: the taper common to both windows pulls each delay a few % towards zero
    np.testing.assert_allclose(delays.delays, 0.1, rtol=0.05)
    assert set(np.sign(delays.lags)) == {-1.0, 1.0}
    result = measure_mwcs(ref, later, FS, WINDOW, PARAMS)
    assert abs(result["both"].dvv_percent) < 0.02  # a clock error is not a velocity change...
    assert result["causal"].dvv_percent < -0.1 < 0.1 < result["acausal"].dvv_percent  # ...unless one side


@pytest.mark.parametrize("seed", [11, 12])
def test_noisy_ccfs_stay_within_the_reported_errors(seed: int) -> None:
    """Reference and current with independent noise: both methods within 3 sigma of the truth, both sides."""
    rng = np.random.default_rng(seed)
    arrivals, dvv = wavelets(seed), -0.4
    clean = ccf_of(arrivals, 0.0)
    rms = 1.5 * clean[np.abs(LAGS) > 40].std()  # noise above the late coda
    ref, cur = clean + band_noise(rng, rms / 3), ccf_of(arrivals, dvv) + band_noise(rng, rms)
    results = {
        "stretching": measure_stretching(stretch_reference(ref, FS, WINDOW, PARAMS), cur),
        "mwcs": measure_mwcs(ref, cur, FS, WINDOW, PARAMS),
    }
    for method, by_side in results.items():
        for side, est in by_side.items():
            assert est.ok, (method, side, est.reason)
            assert abs(est.dvv_percent - dvv) <= 3 * est.err_percent, (method, side, est)
            assert 0 < est.err_percent < 0.2


def test_weaver_error_behaves_like_the_formula() -> None:
    base = weaver_error(0.8, 10, 50, 0.1, 1.0)
    assert weaver_error(0.95, 10, 50, 0.1, 1.0) < base < weaver_error(0.5, 10, 50, 0.1, 1.0)
    assert weaver_error(1.0, 10, 50, 0.1, 1.0) == 0.0
    assert weaver_error(0.8, 10, 50, 0.1, 1.0, n_sides=2) == pytest.approx(base / math.sqrt(2))
    # rms(e) ~ (t2^3 - t1^3)^-1/2 and ~ 1/w_c at a fixed bandwidth
    assert weaver_error(0.8, 0, 100, 0.1, 1.0) == pytest.approx(weaver_error(0.8, 0, 50, 0.1, 1.0) / math.sqrt(8))
    assert weaver_error(0.8, 10, 50, 1.1, 2.0) == pytest.approx(base * 1.1 / 3.1)
    assert weaver_error(0.0, 10, 50, 0.1, 1.0) == math.inf


class TestCodaWindow:
    def test_starts_at_distance_over_velocity_or_the_minimum_lag(self) -> None:
        params = DvvParams(start_velocity_km_s=2.0, min_lag_s=5.0, end_lag_s=60.0)
        assert coda_window(40.0, 100.0, params) == CodaWindow(20.0, 60.0)
        assert coda_window(4.0, 100.0, params) == CodaWindow(5.0, 60.0)

    def test_static_window_needs_no_distance(self) -> None:
        assert coda_window(None, 100.0, PARAMS) == CodaWindow(5.0, 80.0)

    @pytest.mark.parametrize(
        ("distance", "maxlag", "code"),
        [(None, 100.0, "no_distance"), (math.nan, 100.0, "no_distance"), (10.0, 60.0, "window_outside_lags")],
    )
    def test_bad_windows_raise_with_a_reason_code(self, distance: float | None, maxlag: float, code: str) -> None:
        params = DvvParams(start_velocity_km_s=2.0, end_lag_s=60.0)
        with pytest.raises(DvvInputError) as info:
            coda_window(distance, maxlag, params)
        assert info.value.code == code

    def test_a_pair_too_far_for_the_fixed_end_is_too_short(self) -> None:
        with pytest.raises(DvvInputError) as info:
            coda_window(130.0, 100.0, DvvParams(start_velocity_km_s=2.0, end_lag_s=60.0))
        assert info.value.code == "too_few_points"

    def test_masks_select_each_side(self) -> None:
        window = CodaWindow(5.0, 10.0)
        causal, acausal, both = (window.mask(LAGS, s) for s in ("causal", "acausal", "both"))
        assert LAGS[causal].min() == 5.0 and LAGS[causal].max() == 10.0
        np.testing.assert_array_equal(LAGS[acausal], -LAGS[causal][::-1])
        assert both.sum() == causal.sum() + acausal.sum()


def test_params_reject_inconsistent_settings() -> None:
    with pytest.raises(ValueError):
        DvvParams(min_lag_s=30.0, end_lag_s=20.0)
    with pytest.raises(ValueError):
        DvvParams(freqmin=2.0, freqmax=1.0)
    with pytest.raises(ValueError):
        DvvParams(mwcs_window_s=5.0, mwcs_freqmin=0.1)  # less than a period of the lowest frequency
