"""Cross-correlation of station products: the batched kernel and a literal reference.

Contract (DESIGN.md §6): for SEED ids A < B, ``CCF(A,B)(tau) = sum_t A(t) B(t + tau)``, i.e. ``conj(F_A) F_B``
in frequency, so the peak sits at ``tau = arrival(B) - arrival(A)``. Lags run from -maxlag to +maxlag samples
with zero lag at the centre sample. A pair averages cross-spectra over the sub-windows valid in *both*
stations.

How the kernel is fast: spectra are computed once per station (the products); invalid sub-windows are zero
rows, so the masked sum over sub-windows is a plain sum, computed for many pairs at once as one small complex
matrix product per frequency bin (a cross-spectral matrix over the sub-window axis); the average is formed in
the frequency domain, so each pair costs a single inverse FFT; only the band bins are multiplied, in
complex64.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from dsp.errors import IncompatibleProducts
from dsp.product import StationProduct
from dsp.seed import pair_key

DEFAULT_CHUNK = 256  # pairs per inverse-FFT batch: bounds memory (chunk * nfft * 4 bytes) and feeds progress


@dataclass(frozen=True)
class SkippedPair:
    """A pair that was not correlated, and why."""

    a: str
    b: str
    reason: str


@dataclass(frozen=True, eq=False)
class CcfBatch:
    """CCFs of some pairs of one window: ``ccfs[i]`` belongs to ``pairs[i]`` (A < B), lags -maxlag..maxlag."""

    window: str
    fs: float
    maxlag: int
    pairs: tuple[tuple[str, str], ...]
    ccfs: np.ndarray
    n_common: np.ndarray
    skipped: tuple[SkippedPair, ...] = ()

    @property
    def keys(self) -> list[str]:
        """Pair keys ``A__B`` in row order."""
        return [pair_key(a, b) for a, b in self.pairs]


def lag_axis(fs: float, maxlag: int) -> np.ndarray:
    """Lag of each CCF sample in seconds: ``-maxlag/fs .. +maxlag/fs``, zero at index ``maxlag``."""
    return np.arange(-maxlag, maxlag + 1) / fs


def check_compatible(products: Sequence[StationProduct]) -> None:
    """Ensure all products share window, rate, FFT size, bins and sub-window layout, with distinct SEED ids.

    Raises:
        IncompatibleProducts: they do not.
    """
    grids = {p.grid() for p in products}
    if len(grids) > 1:
        raise IncompatibleProducts(f"products differ in window/grid: {sorted(map(str, grids))[:3]}")
    ids = [p.seed_id for p in products]
    if len(set(ids)) != len(ids):
        raise IncompatibleProducts("the same SEED id appears twice")


def all_pairs(products: Sequence[StationProduct]) -> list[tuple[int, int]]:
    """Index pairs (i, j) of every pair with ``seed_id[i] < seed_id[j]``, row by row."""
    order = sorted(range(len(products)), key=lambda i: products[i].seed_id)
    return [(order[x], order[y]) for x in range(len(order)) for y in range(x + 1, len(order))]


def correlate(
    products: Sequence[StationProduct],
    maxlag: int,
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    min_common: int = 1,
    chunk: int = DEFAULT_CHUNK,
    workers: int | None = None,
) -> Iterator[CcfBatch]:
    """Correlate pairs of products of one window, yielding one batch per chunk of pairs.

    Args:
        products: compatible products (see :func:`check_compatible`).
        maxlag: largest kept lag in samples; must satisfy ``nfft >= cc_len + maxlag``.
        pairs: index pairs to correlate; each is reoriented so the smaller SEED id is A. Default: all pairs.
        min_common: pairs with fewer sub-windows valid in both stations are skipped (reported in ``skipped``).
        chunk: pairs per batch.
        workers: threads for the inverse FFT (scipy ``workers``); None uses one.

    Yields:
        :class:`CcfBatch` objects in pair order.

    Raises:
        IncompatibleProducts: the products differ, or maxlag does not fit the FFT size.
    """
    check_compatible(products)
    if not products:
        return
    first = products[0]
    if first.nfft < first.cc_len + maxlag:
        raise IncompatibleProducts(
            f"nfft={first.nfft} < cc_len + maxlag = {first.cc_len + maxlag}: lags would wrap"
        )
    todo = _oriented(products, all_pairs(products) if pairs is None else pairs)
    spectra = np.stack([p.spectra for p in products], axis=1)  # [n_sub, n_sta, n_bins]
    counts = _common_counts(products)
    for start in range(0, len(todo), chunk):
        yield _batch(products, spectra, counts, todo[start : start + chunk], maxlag, min_common, workers)


def _oriented(products: Sequence[StationProduct], pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Reorient pairs so products[i].seed_id < products[j].seed_id (the sign contract depends on it)."""
    return [(i, j) if products[i].seed_id < products[j].seed_id else (j, i) for i, j in pairs]


def _common_counts(products: Sequence[StationProduct]) -> np.ndarray:
    """Matrix of the number of sub-windows valid in both stations of each pair."""
    valid = np.stack([p.valid for p in products]).astype(np.int64)
    return valid @ valid.T


def _batch(
    products: Sequence[StationProduct],
    spectra: np.ndarray,
    counts: np.ndarray,
    pairs: list[tuple[int, int]],
    maxlag: int,
    min_common: int,
    workers: int | None,
) -> CcfBatch:
    ia, ib = np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64)
    n_common = counts[ia, ib]
    keep = n_common >= min_common
    skipped = tuple(
        SkippedPair(products[i].seed_id, products[j].seed_id, f"{n} common valid sub-windows < {min_common}")
        for i, j, n in zip(ia[~keep], ib[~keep], n_common[~keep], strict=True)
    )
    ia, ib, n_common = ia[keep], ib[keep], n_common[keep]
    cross = cross_spectra(spectra, ia, ib) / n_common[:, None].astype(np.float32)
    first = products[0]
    ccfs = spectra_to_lags(cross, first.k0, first.nfft, maxlag, workers)
    names = tuple((products[i].seed_id, products[j].seed_id) for i, j in zip(ia, ib, strict=True))
    return CcfBatch(first.window, first.fs, maxlag, names, ccfs, n_common, skipped)


def cross_spectra(spectra: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Sum over sub-windows of ``conj(F_a) F_b`` for each pair (a, b) = (ia[p], ib[p]).

    Pairs are grouped by their row ``a``; per row, one batched complex matrix product over the sub-window axis
    handles all its partners: ``[n_bins, 1, n_sub] @ [n_bins, n_sub, m]``.

    Args:
        spectra: complex64 ``[n_sub, n_sta, n_bins]`` with invalid sub-windows zeroed.
        ia, ib: station indices of each pair.

    Returns:
        complex64 ``[n_pairs, n_bins]``.
    """
    out = np.empty((ia.size, spectra.shape[2]), dtype=np.complex64)
    by_bin = np.ascontiguousarray(spectra.transpose(2, 0, 1))  # [n_bins, n_sub, n_sta]
    for a in np.unique(ia):
        rows = np.flatnonzero(ia == a)
        left = by_bin[:, :, a].conj()[:, None, :]  # [n_bins, 1, n_sub]
        out[rows] = np.matmul(left, by_bin[:, :, ib[rows]])[:, 0, :].T
    return out


def spectra_to_lags(cross: np.ndarray, k0: int, nfft: int, maxlag: int, workers: int | None) -> np.ndarray:
    """Inverse FFT of band-limited cross-spectra, keeping lags -maxlag..+maxlag (float32 ``[n, 2*maxlag+1]``).

    Only bins ``k0..`` are non-zero; ``cross`` is ``[n, n_bins]``.
    """
    full = np.zeros((cross.shape[0], nfft // 2 + 1), dtype=np.complex64)
    full[:, k0 : k0 + cross.shape[1]] = cross
    circ = scipy.fft.irfft(full, n=nfft, axis=-1, workers=workers)
    # circular lag -m lives at index nfft - m; nfft >= cc_len + maxlag keeps these free of wrap-around
    return np.concatenate((circ[:, nfft - maxlag :], circ[:, : maxlag + 1]), axis=1)


def correlate_pair_reference(a: StationProduct, b: StationProduct, maxlag: int) -> np.ndarray:
    """Literal float64 reference: per common valid sub-window, full inverse FFT of ``conj(F_a) F_b``, then
    mean.

    Slow on purpose (no batching, no frequency-domain averaging); tests compare the kernel against it.

    Returns:
        float64 ``[2*maxlag + 1]``; all zeros when no sub-window is valid in both.
    """
    check_compatible([a, b])
    out = np.zeros(2 * maxlag + 1)
    common = np.flatnonzero(a.valid & b.valid)
    for s in common:
        fa, fb = (np.zeros(a.nfft // 2 + 1, dtype=np.complex128) for _ in range(2))
        fa[a.k0 : a.k0 + a.spectra.shape[1]] = a.spectra[s]
        fb[b.k0 : b.k0 + b.spectra.shape[1]] = b.spectra[s]
        circ = np.fft.irfft(np.conj(fa) * fb, n=a.nfft)
        out += np.concatenate((circ[a.nfft - maxlag :], circ[: maxlag + 1]))
    return out / max(common.size, 1)
