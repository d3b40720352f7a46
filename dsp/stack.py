"""Stacks over windows: linear and phase-weighted (Schimmel & Paulssen, 1997).

The running form (a mean and a mean unit phasor per pair, updated window by window, chunk by chunk in the
result store) is :class:`results.stacks.StackChunk`; these are the batch definitions it must agree with.

Phase-weighted stack: ``pws(t) = linear(t) * |mean_j exp(i phi_j(t))| ** nu`` with ``phi_j`` the
instantaneous phase of window j's CCF.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

STACK_FORMAT = "xcorrflow.stack"
STACK_VERSION = 1


def unit_phasors(ccfs: np.ndarray) -> np.ndarray:
    """Unit phasors ``exp(i phi)`` of the analytic signal of each row (0 where the envelope is 0).

    The analytic signal is built with a zero-padded FFT (fast size >= twice the length) so the ends of the lag
    axis do not wrap into each other.
    """
    ccfs = np.atleast_2d(ccfs)
    n = ccfs.shape[-1]
    nfft = scipy.fft.next_fast_len(2 * n)
    spec = scipy.fft.fft(ccfs, n=nfft, axis=-1)
    h = np.zeros(nfft)
    h[0] = 1
    h[1 : (nfft + 1) // 2] = 2
    if nfft % 2 == 0:
        h[nfft // 2] = 1
    analytic = scipy.fft.ifft(spec * h, axis=-1)[:, :n]
    modulus = np.abs(analytic)
    return np.divide(analytic, modulus, out=np.zeros_like(analytic), where=modulus > 0)


def stack_linear(ccfs: np.ndarray) -> np.ndarray:
    """Linear stack (mean over rows) of CCFs ``[n_windows, n_lags]``."""
    return np.asarray(ccfs, dtype=np.float64).mean(axis=0)


def stack_pws(ccfs: np.ndarray, power: float = 2.0) -> np.ndarray:
    """Phase-weighted stack of CCFs ``[n_windows, n_lags]`` with exponent ``power`` (nu)."""
    coherence = np.abs(unit_phasors(ccfs).mean(axis=0)) ** power
    return stack_linear(ccfs) * coherence
