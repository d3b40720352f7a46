"""Preprocessing: whitened amplitude, band, gaps, provenance, windows of long records, alignment."""

from __future__ import annotations

import numpy as np
import obspy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.params import ProcessingParams
from dsp.correlate import correlate
from dsp.preprocess import preprocess_stream, preprocess_window
from dsp.spectra import band_bins, fft_size

T0 = obspy.UTCDateTime(2024, 1, 1)
WINDOW = "20240101T000000Z"


def noise_trace(seconds: float, fs: float, seed: int, sta: str = "AAA", start: float = 0.0) -> obspy.Trace:
    tr = obspy.Trace(np.random.default_rng(seed).standard_normal(round(seconds * fs)))
    tr.stats.update({"network": "XX", "station": sta, "location": "", "channel": "HHZ", "sampling_rate": fs})
    tr.stats.starttime = T0 + start
    return tr


@settings(max_examples=8, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([20.0, 50.0, 100.0]),
    st.sampled_from(["ram", "onebit", "none"]),
)
def test_whitened_amplitude_is_one_in_band_and_tapered_outside(seed: int, fs: float, norm: str) -> None:
    params = ProcessingParams(cc_len_s=600, step_s=300, maxlag_s=100, normalization=norm)
    product = preprocess_window(obspy.Stream([noise_trace(3600, fs, seed)]), WINDOW, params)
    k0, weights = band_bins(params, product.nfft)
    f = np.arange(k0, k0 + weights.size) * params.target_fs / product.nfft
    modulus = np.abs(product.spectra[product.valid])
    in_band = (f >= params.freqmin) & (f <= params.freqmax)
    np.testing.assert_allclose(modulus[:, in_band], 1.0, atol=1e-5)
    assert np.all(modulus[:, ~in_band] <= 1 + 1e-6)
    assert f[0] < params.freqmin and f[-1] > params.freqmax  # ramps are kept, DC and high bins are not
    assert product.spectra.dtype == np.complex64 and product.nfft >= params.cc_len + params.maxlag


def test_fft_size_is_five_smooth_and_wrap_free(params: ProcessingParams) -> None:
    n = fft_size(params)
    assert n >= params.cc_len + params.maxlag
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    assert n == 1


def test_gap_marks_subwindows_invalid_not_zero_filled(params: ProcessingParams) -> None:
    first, second = noise_trace(1200, 100.0, 1), noise_trace(1800, 100.0, 2, start=1800)
    product = preprocess_window(obspy.Stream([first, second]), WINDOW, params)
    # sub-windows start every 300 s and last 600 s; the gap is [1200, 1800)
    expected_gap = [max(0, min(s + 600, 1800) - max(s, 1200)) / 600 for s in range(0, 3001, 300)]
    np.testing.assert_allclose(product.gap_fraction, expected_gap, atol=2e-3)
    assert list(product.valid) == [g <= params.max_gap_fraction for g in expected_gap]
    assert not product.spectra[~product.valid].any()


def test_provenance_lists_every_step_with_parameters(params: ProcessingParams) -> None:
    product = preprocess_window(obspy.Stream([noise_trace(3600, 50.0, 3)]), WINDOW, params, sources=["a.mseed"])
    steps = {s["step"]: s for s in product.provenance["steps"]}
    assert steps["resample"]["up"] == 2 and steps["resample"]["down"] == 5
    assert steps["bandpass"]["freqmin"] == params.freqmin and steps["normalize"]["method"] == "ram"
    assert steps["fft"]["nfft"] == product.nfft and "whiten" in steps
    assert product.provenance["sources"] == ["a.mseed"]
    assert product.provenance["params"] == params.model_dump(mode="json")


def test_a_long_record_yields_one_product_per_window(params: ProcessingParams) -> None:
    stream = obspy.Stream([noise_trace(3 * 3600 + 100, 20.0, 4)])
    results = dict(preprocess_stream(stream, params))
    assert list(results) == ["20240101T000000Z", "20240101T010000Z", "20240101T020000Z", "20240101T030000Z"]
    assert all(hasattr(r, "spectra") for r in list(results.values())[:3])
    assert type(results["20240101T030000Z"]).__name__ == "RecordTooShort"  # the 100 s tail


@pytest.mark.parametrize("offset_s", [0.0, 0.013, 0.027, 0.049])
def test_off_grid_start_times_are_aligned_exactly(params: ProcessingParams, offset_s: float) -> None:
    """A record whose samples sit between the 20 Hz grid points still correlates at the exact lag."""
    fs, delay = 200.0, 37  # B is the same record as A, 37 target samples later
    n = round(3600 * fs)
    x = np.random.default_rng(9).standard_normal(n + 2000)
    shift = round(delay / params.target_fs * fs)
    a = noise_trace(3600, fs, 0, "AAA")
    a.data = x[1000 : 1000 + n].copy()
    b = noise_trace(3600, fs, 0, "BBB", start=offset_s)
    k = round(offset_s * fs)  # b's first sample is at offset_s: it is x at that time
    b.data = x[1000 - shift + k : 1000 - shift + k + n].copy()
    prods = [preprocess_window(obspy.Stream([t]), WINDOW, params) for t in (a, b)]
    ccf = next(correlate(prods, params.maxlag)).ccfs[0]
    assert int(np.argmax(ccf)) - params.maxlag == delay


@pytest.mark.parametrize("fs", [50.0, 100.0, 200.0, 250.0, 1000.0])
def test_short_antialias_filter_is_flat_where_kept_and_stops_aliases(params: ProcessingParams, fs: float) -> None:
    from fractions import Fraction

    from scipy import signal

    from dsp.conditioning import antialias_fir

    ratio = Fraction(params.target_fs / fs).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    taps = antialias_fir(fs, up, down, params)
    assert taps is not None and taps.size % 2 == 1
    keep = params.freqmax * (1 + params.whiten_ramp_fraction)
    w, h = signal.freqz(taps, worN=np.linspace(0, fs * up / 2, 4000), fs=fs * up)
    assert np.abs(np.abs(h[w <= keep]) - 1).max() < 1e-3
    assert np.abs(h[w >= min(params.target_fs, fs) - keep]).max() < 1e-3
