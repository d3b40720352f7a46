"""Linear and phase-weighted stacks, batch and running forms."""

from __future__ import annotations

import numpy as np

from dsp.stack import stack_linear, stack_pws, unit_phasors


def wavelet(n: int = 401, at: int = 250) -> np.ndarray:
    t = np.arange(n) - at
    return np.exp(-0.5 * (t / 4.0) ** 2) * np.cos(0.8 * t)


def test_pws_of_identical_traces_is_the_linear_stack() -> None:
    ccfs = np.tile(wavelet(), (5, 1))
    np.testing.assert_allclose(stack_pws(ccfs), stack_linear(ccfs), atol=1e-9)


def test_pws_suppresses_incoherent_noise_more_than_linear() -> None:
    rng = np.random.default_rng(1)
    ccfs = wavelet() + 0.5 * rng.standard_normal((40, 401))
    lin, pws = stack_linear(ccfs), stack_pws(ccfs, 2.0)
    off = np.r_[0:150, 350:401]
    snr = lambda s: np.abs(s[240:260]).max() / np.sqrt(np.mean(s[off] ** 2))  # noqa: E731
    assert snr(pws) > 2 * snr(lin)


def test_unit_phasors_have_unit_modulus() -> None:
    p = unit_phasors(wavelet()[None, :] + 0.01)
    np.testing.assert_allclose(np.abs(p), 1.0, atol=1e-9)
