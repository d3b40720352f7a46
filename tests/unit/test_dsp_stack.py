"""Linear and phase-weighted stacks, batch and running forms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.errors import DspError
from dsp.stack import StackBank, stack_linear, stack_pws, unit_phasors


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


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_running_bank_equals_batch_stacks(seed: int, n_windows: int) -> None:
    rng = np.random.default_rng(seed)
    keys = ["A.A..Z__B.B..Z", "A.A..Z__C.C..Z"]
    windows = [rng.standard_normal((2, 51)) for _ in range(n_windows)]
    bank = StackBank(keys, 51)
    for w in windows:
        bank.add(keys[::-1], w[::-1])  # row order of an update must not matter
    for row in range(2):
        series = np.array([w[row] for w in windows])
        np.testing.assert_allclose(bank.linear()[row], stack_linear(series), atol=1e-12)
        np.testing.assert_allclose(bank.pws(3.0)[row], stack_pws(series, 3.0), atol=1e-12)
    assert list(bank.count) == [n_windows, n_windows]


def test_bank_without_phase_refuses_pws_and_checks_shapes() -> None:
    bank = StackBank(["A.A..Z__B.B..Z"], 5, phase=False)
    with pytest.raises(DspError):
        bank.pws()
    with pytest.raises(DspError):
        bank.add(["A.A..Z__B.B..Z"], np.zeros((1, 6)))


def test_duplicate_keys_in_one_update_are_both_counted() -> None:
    bank = StackBank(["A.A..Z__B.B..Z"], 3, phase=False)
    bank.add(["A.A..Z__B.B..Z", "A.A..Z__B.B..Z"], np.array([[1.0, 2, 3], [3.0, 2, 1]]))
    assert bank.count[0] == 2
    np.testing.assert_allclose(bank.linear()[0], [2.0, 2.0, 2.0])
