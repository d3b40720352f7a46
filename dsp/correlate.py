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

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.fft

from dsp.errors import IncompatibleProducts
from dsp.product import StationProduct
from dsp.seed import pair_key

T = TypeVar("T")
R = TypeVar("R")
MIN_CHUNK = 64  # smaller blocks make the per-bin matrix products too thin to be efficient
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
        chunk: pairs per batch (at most; with several workers, smaller so each thread gets ~4 batches).
        workers: threads working on chunks in parallel; None uses one.

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
        raise IncompatibleProducts(f"nfft={first.nfft} < cc_len + maxlag = {first.cc_len + maxlag}: lags would wrap")
    order = sorted(range(len(products)), key=lambda k: products[k].seed_id)
    ranked = [products[k] for k in order]  # sorted by SEED id: station index order is pair order
    rank = {k: r for r, k in enumerate(order)}
    by_bin = np.ascontiguousarray(np.stack([p.spectra for p in ranked]).transpose(2, 0, 1))
    counts = _common_counts(ranked)
    threads = workers or 1
    if threads > 1:  # enough tasks to keep every thread busy to the end (measured: +8% at N=40)
        n_pairs = len(pairs) if pairs is not None else len(ranked) * (len(ranked) - 1) // 2
        chunk = max(MIN_CHUNK, min(chunk, -(-n_pairs // (4 * threads))))
    if pairs is None:
        tasks = row_blocks(len(ranked), chunk)
    else:
        ranks = np.array([sorted((rank[i], rank[j])) for i, j in pairs], dtype=np.int64).reshape(-1, 2)
        tasks = [_Task(ranks[s : s + chunk, 0], ranks[s : s + chunk, 1]) for s in range(0, len(ranks), chunk)]

    def run(task: _Task) -> CcfBatch:
        return _batch(ranked, by_bin, counts, task, maxlag, min_common)

    # numpy's matmul and scipy's FFT release the GIL, so chunks run in parallel threads (results in order)
    yield from ordered_map(run, tasks, threads)


def correlate_row(
    row: StationProduct,
    others: Sequence[StationProduct],
    maxlag: int,
    *,
    min_common: int = 1,
    workers: int | None = None,
) -> CcfBatch:
    """Correlate one product against many of the same window: one row of the pair matrix (a row task).

    Cheaper than :func:`correlate` with explicit pairs, which builds a block of the cross-spectral matrix
    over every station the pairs touch: here each column costs one multiply-add per sub-window and bin.
    Pairs are still oriented by SEED id (A < B): for a column whose id sorts before the row's, the
    cross-spectrum is conjugated, which is the time reversal ``CCF(B,A)(tau) = CCF(A,B)(-tau)`` exactly.

    Raises:
        IncompatibleProducts: the products differ, or maxlag does not fit the FFT size.
    """
    check_compatible([row, *others])
    if row.nfft < row.cc_len + maxlag:
        raise IncompatibleProducts(f"nfft={row.nfft} < cc_len + maxlag = {row.cc_len + maxlag}: lags would wrap")
    valid = np.stack([o.valid for o in others]) if others else np.zeros((0, row.valid.size), bool)
    n_common = (valid & row.valid).sum(axis=1).astype(np.int64)
    keep = [i for i, n in enumerate(n_common) if n >= min_common]
    kept = [others[i] for i in keep]
    cross = _row_cross_spectra(row, kept)
    flip = np.array([o.seed_id < row.seed_id for o in kept], dtype=bool)
    # average over the common sub-windows as a real product over the real and imaginary parts, then conjugate the
    # flipped rows in place: bit for bit the masked copy and complex division it replaces (numpy divides a
    # complex64 by a real n as a product with the float32 1/n), at 4.1 ms instead of 25 for 519 columns
    parts = cross.view(np.float32).reshape(len(kept), 2 * cross.shape[1])
    parts *= (np.float32(1) / n_common[keep].astype(np.float32))[:, None]
    np.conjugate(cross, out=cross, where=flip[:, None])
    # the inverse FFT in blocks of columns: its full-length buffers then hold DEFAULT_CHUNK rows, not the whole
    # row task's (83 MB each at 520 columns), and each row's transform is the same as in one call
    ccfs = np.empty((len(kept), 2 * maxlag + 1), dtype=np.float32)
    for start in range(0, len(kept), DEFAULT_CHUNK):
        block = slice(start, start + DEFAULT_CHUNK)
        ccfs[block] = spectra_to_lags(cross[block], row.k0, row.nfft, maxlag, workers)
    names = tuple(_ordered(row.seed_id, o.seed_id) for o in kept)
    skipped = tuple(
        SkippedPair(*_ordered(row.seed_id, o.seed_id), f"{n} common valid sub-windows < {min_common}")
        for o, n in zip(others, n_common, strict=True)
        if n < min_common
    )
    return CcfBatch(row.window, row.fs, maxlag, names, ccfs, n_common[keep], skipped)


def _ordered(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _row_cross_spectra(row: StationProduct, others: Sequence[StationProduct]) -> np.ndarray:
    """``sum_k conj(F_row[k]) F_o[k]`` for every other product ``o`` (complex64 ``[n, n_bins]``)."""
    cross = np.zeros((len(others), row.spectra.shape[1]), dtype=np.complex64)
    if not others:
        return cross
    conj_row = row.spectra.conj()
    subs = np.flatnonzero(row.valid)  # invalid sub-windows are zero rows: skip them
    term = np.empty(row.spectra.shape[1], dtype=np.complex64)
    # one column at a time, in place: its sum stays in cache, and no [n, n_sub, n_bins] copy of the others is
    # built (2.6x faster than stacking them at 260 columns; the same additions in the same order, so the same bits)
    for out, other in zip(cross, others, strict=True):
        for k in subs:
            np.multiply(other.spectra[k], conj_row[k], out=term)
            out += term
    return cross


@dataclass(frozen=True, eq=False)
class _Task:
    """Pairs ``(ia[p], ib[p])`` (ranks, ia < ib) to correlate together; ``rows`` marks "all pairs of rows
    r0..r1-1", which lets the cross-spectra use plain slices."""

    ia: np.ndarray
    ib: np.ndarray
    rows: tuple[int, int] | None = None


def row_blocks(n: int, chunk: int) -> list[_Task]:
    """Split all pairs of ``n`` ranked stations into blocks of whole rows of about ``chunk`` pairs."""
    ia, ib = np.triu_indices(n, 1)  # row-major: the pairs of rows r0..r1-1 are one contiguous slice
    tasks, r0, start, count = [], 0, 0, 0
    for a in range(n - 1):
        count += n - 1 - a
        if count >= chunk or a == n - 2:
            tasks.append(_Task(ia[start : start + count], ib[start : start + count], (r0, a + 1)))
            r0, start, count = a + 1, start + count, 0
    return tasks


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, in order, with at most ``2 * workers`` results in flight.

    Bounding the look-ahead bounds memory: each result may be tens of MB of CCFs.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _common_counts(products: Sequence[StationProduct]) -> np.ndarray:
    """Matrix of the number of sub-windows valid in both stations of each pair."""
    valid = np.stack([p.valid for p in products]).astype(np.int64)
    return valid @ valid.T


def _batch(
    products: Sequence[StationProduct],
    by_bin: np.ndarray,
    counts: np.ndarray,
    task: _Task,
    maxlag: int,
    min_common: int,
) -> CcfBatch:
    ia, ib = task.ia, task.ib
    n_common = counts[ia, ib]
    keep = n_common >= min_common
    skipped = tuple(
        SkippedPair(products[i].seed_id, products[j].seed_id, f"{n} common valid sub-windows < {min_common}")
        for i, j, n in zip(ia[~keep], ib[~keep], n_common[~keep], strict=True)
    )
    if not keep.all():
        ia, ib, n_common = ia[keep], ib[keep], n_common[keep]
    if task.rows is not None:
        cross = cross_spectra_rows(by_bin, *task.rows)
        cross = cross if keep.all() else cross[keep]
    else:
        cross = cross_spectra(by_bin, ia, ib)
    cross /= n_common[:, None].astype(np.float32)
    first = products[0]
    ccfs = spectra_to_lags(cross, first.k0, first.nfft, maxlag, 1)
    names = tuple((products[i].seed_id, products[j].seed_id) for i, j in zip(ia, ib, strict=True))
    return CcfBatch(first.window, first.fs, maxlag, names, ccfs, n_common, skipped)


def cross_spectra_rows(by_bin: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Sub-window sums of ``conj(F_a) F_b`` for every pair ``r0 <= a < r1``, ``a < b``, row by row.

    One batched matrix product per frequency bin over the sub-window axis gives the block of the
    cross-spectral matrix with rows ``r0..r1-1`` and columns ``r0+1..``; only plain slices are taken from it
    (fancy-index gathers cost as much as the product itself).

    Args:
        by_bin: complex64 ``[n_bins, n_sta, n_sub]`` with invalid sub-windows zeroed.
        r0, r1: the row range.

    Returns:
        complex64 ``[n_pairs, n_bins]``, pairs in row-major order.
    """
    block = np.matmul(by_bin[:, r0:r1, :].conj(), by_bin[:, r0 + 1 :, :].transpose(0, 2, 1))
    return np.concatenate([block[:, a - r0, a - r0 :].T for a in range(r0, r1)])


def cross_spectra(by_bin: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Sum over sub-windows of ``conj(F_a) F_b`` for each pair (a, b) = (ia[p], ib[p]).

    All pairs of the call share one batched complex matrix product over the sub-window axis, per frequency
    bin: ``[n_bins, rows, n_sub] @ [n_bins, n_sub, cols]`` over the distinct rows ``a`` and columns ``b``
    (a block of the cross-spectral matrix), from which the requested pairs are gathered.

    Args:
        by_bin: complex64 ``[n_bins, n_sta, n_sub]`` with invalid sub-windows zeroed.
        ia, ib: station indices of each pair.

    Returns:
        complex64 ``[n_pairs, n_bins]``.
    """
    rows, row_of = np.unique(ia, return_inverse=True)
    cols, col_of = np.unique(ib, return_inverse=True)
    block = np.matmul(by_bin[:, rows, :].conj(), by_bin[:, cols, :].transpose(0, 2, 1))
    return np.ascontiguousarray(block[:, row_of, col_of].T)


def spectra_to_lags(cross: np.ndarray, k0: int, nfft: int, maxlag: int, workers: int | None) -> np.ndarray:
    """Inverse FFT of band-limited cross-spectra, keeping lags -maxlag..+maxlag (float32 ``[n, 2*maxlag+1]``).

    Only bins ``k0..`` are non-zero; ``cross`` is ``[n, n_bins]``.
    """
    full = _zero_padded(cross.shape[0], nfft // 2 + 1, k0, cross.shape[1])
    full[:, k0 : k0 + cross.shape[1]] = cross
    circ = scipy.fft.irfft(full, n=nfft, axis=-1, workers=workers)
    # circular lag -m lives at index nfft - m; nfft >= cc_len + maxlag keeps these free of wrap-around
    return np.concatenate((circ[:, nfft - maxlag :], circ[:, : maxlag + 1]), axis=1)


_scratch = threading.local()  # per-thread input buffer of the inverse FFT: its zeros are reused, not rebuilt


def _zero_padded(rows: int, width: int, k0: int, n_bins: int) -> np.ndarray:
    """A complex64 ``[rows, width]`` buffer, zero outside bins ``k0..k0+n_bins`` (those are overwritten).

    Reusing it saves allocating and zeroing ~0.1 MB per pair (about a tenth of the kernel's time).
    """
    key = (width, k0, n_bins)
    buf = getattr(_scratch, "buf", None)
    if buf is None or getattr(_scratch, "key", None) != key or buf.shape[0] < rows:
        buf = np.zeros((max(rows, DEFAULT_CHUNK), width), dtype=np.complex64)
        _scratch.buf, _scratch.key = buf, key
    return buf[:rows]


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
