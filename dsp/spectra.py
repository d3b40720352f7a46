"""Sub-windows, their spectra and spectral whitening: from a conditioned window to a product's spectra."""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft

from contracts.params import ProcessingParams
from dsp.conditioning import Conditioned, cosine_taper


def fft_size(params: ProcessingParams) -> int:
    """FFT length of a sub-window: the smallest 5-smooth size >= cc_len + maxlag.

    Why: the circular correlation of two cc_len-sample records wraps at lags beyond nfft - cc_len, so with
    nfft >= cc_len + maxlag every kept lag (|lag| <= maxlag) is the exact linear correlation.
    """
    return scipy.fft.next_fast_len(params.cc_len + params.maxlag, real=True)


@functools.lru_cache(maxsize=16)
def band_bins(params: ProcessingParams, nfft: int) -> tuple[int, np.ndarray]:
    """First kept bin and the spectral band weights of the kept bins.

    The weight is 1 for ``freqmin <= f <= freqmax`` and falls to 0 along cosine ramps over
    ``[freqmin*(1-r), freqmin)`` and ``(freqmax, freqmax*(1+r)]`` (capped at Nyquist). DC is never kept.

    Returns:
        ``(k0, weights)``: kept bins are ``k0 .. k0 + len(weights) - 1``; ``weights`` is read-only float64.
    """
    df = params.target_fs / nfft
    r = params.whiten_ramp_fraction
    f_lo, f_hi = params.freqmin * (1 - r), min(params.freqmax * (1 + r), params.target_fs / 2)
    k0 = max(1, math.floor(f_lo / df))
    k1 = min(math.ceil(f_hi / df), nfft // 2)
    f = np.arange(k0, k1 + 1) * df
    w = np.ones(f.size)
    low, high = f < params.freqmin, f > params.freqmax
    w[low] = 0.5 * (1 - np.cos(np.pi * np.clip((f[low] - f_lo) / (params.freqmin - f_lo), 0, 1)))
    w[high] = 0.5 * (1 + np.cos(np.pi * np.clip((f[high] - params.freqmax) / (f_hi - params.freqmax), 0, 1)))
    w.setflags(write=False)
    return k0, w


def gap_fractions(cond: Conditioned, params: ProcessingParams) -> np.ndarray:
    """Fraction of each sub-window's span that is gap (or outside the data), from the input-rate gap mask."""
    fs = cond.fs_in
    cum = np.concatenate(([0], np.cumsum(cond.gap_in)))
    n_span = params.cc_len_s * fs
    starts = np.arange(params.n_subwindows) * params.step_s - cond.offset / params.target_fs
    i0 = np.ceil(starts * fs - 1e-6).astype(np.int64)
    i1 = i0 + round(n_span)
    inside0, inside1 = np.clip(i0, 0, cond.gap_in.size), np.clip(i1, 0, cond.gap_in.size)
    outside = (i1 - i0) - (inside1 - inside0)
    return ((cum[inside1] - cum[inside0] + outside) / n_span).astype(np.float32)


def segments(cond: Conditioned, params: ProcessingParams) -> tuple[np.ndarray, float]:
    """Cut the sub-windows out of the conditioned data.

    Sub-window ``s`` should start exactly at ``window start + s*step``; the data grid is ``offset`` samples
    later, so each segment starts ``q = ceil(offset)`` samples early and must be advanced by ``frac = q -
    offset`` samples, which :func:`whitened_spectra` does exactly with a phase ramp.

    Returns:
        ``(segments [n_sub, cc_len] float64, frac)``.
    """
    offset = round(cond.offset, 9)  # float noise must not turn an exact grid into a one-sample shift
    q = math.ceil(offset)
    starts = np.arange(params.n_subwindows) * params.step - q
    padded = np.concatenate((np.zeros(q), cond.data))
    idx = (starts + q)[:, None] + np.arange(params.cc_len)[None, :]
    return padded[idx], q - offset


def whitened_spectra(segs: np.ndarray, frac: float, params: ProcessingParams, nfft: int) -> np.ndarray:
    """Demean, taper and FFT each segment, shift it by ``frac`` samples, whiten, and keep the band bins.

    Returns:
        complex64 ``[n_sub, n_bins]``; with whitening, in-band bins have unit modulus (0 where the input is
        0).
    """
    segs = (segs - segs.mean(axis=1, keepdims=True)) * cosine_taper(segs.shape[1], params.taper_fraction)
    k0, weights = band_bins(params, nfft)
    spec = scipy.fft.rfft(segs, n=nfft, axis=-1)[:, k0 : k0 + weights.size]
    if frac:
        # x(n + frac) <-> X(k) * exp(+2*pi*i*k*frac/nfft): aligns the sub-window to the window grid exactly
        spec *= np.exp(2j * np.pi * np.arange(k0, k0 + weights.size) * frac / nfft)
    if params.whiten:
        modulus = np.abs(spec)
        spec = np.divide(spec, modulus, out=np.zeros_like(spec), where=modulus > 0)
    return (spec * weights).astype(np.complex64)
