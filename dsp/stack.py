"""Stacks over windows: linear and phase-weighted (Schimmel & Paulssen, 1997), in a running form.

A :class:`StackBank` keeps, per pair, the count, the sum of CCFs and (for the phase-weighted stack) the sum
of unit phasors of the CCFs' analytic signals. Adding a window is O(lags); the streaming stacker can update
stacks as windows complete, persist the bank with :meth:`StackBank.encode`, and resume after a restart.

Phase-weighted stack: ``pws(t) = linear(t) * |mean_j exp(i phi_j(t))| ** nu`` with ``phi_j`` the
instantaneous phase of window j's CCF.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft

from dsp import codec
from dsp.errors import CorruptProduct, DspError

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


class StackBank:
    """Running stacks of many pairs (one row per key) over windows."""

    def __init__(self, keys: Sequence[str], n_lags: int, *, phase: bool = True) -> None:
        """Create empty stacks.

        Args:
            keys: pair keys ``A__B``, one row each.
            n_lags: CCF length.
            phase: also accumulate phasors (needed for the phase-weighted stack; doubles memory).
        """
        self.keys = list(keys)
        self.index = {k: i for i, k in enumerate(self.keys)}
        # Storage has spare rows: a bank that learns its keys as windows arrive grows geometrically instead of
        # copying every row for each new pair (which made 8,385 new keys cost minutes).
        self._count = np.zeros(len(self.keys), dtype=np.int64)
        self._total = np.zeros((len(self.keys), n_lags))
        self._phasors = np.zeros((len(self.keys), n_lags), dtype=np.complex128) if phase else None

    @property
    def count(self) -> np.ndarray:
        """Windows stacked per key."""
        return self._count[: len(self.keys)]

    @property
    def total(self) -> np.ndarray:
        """Sum of the CCFs per key."""
        return self._total[: len(self.keys)]

    @property
    def phasors(self) -> np.ndarray | None:
        """Sum of the unit analytic phasors per key (None without phase stacking)."""
        return None if self._phasors is None else self._phasors[: len(self.keys)]

    def add(self, keys: Sequence[str], ccfs: np.ndarray) -> None:
        """Add one window's CCFs ``[len(keys), n_lags]``; unknown keys get new rows.

        Raises:
            DspError: the CCF length does not match the bank.
        """
        if ccfs.shape != (len(keys), self.total.shape[1]):
            raise DspError(f"CCFs of shape {ccfs.shape} do not fit a bank of {self.total.shape[1]} lags")
        self._grow([k for k in dict.fromkeys(keys) if k not in self.index])
        rows = np.array([self.index[k] for k in keys], dtype=np.int64)
        if np.unique(rows).size == rows.size:  # the usual case; np.add.at is ~20x slower than fancy +=
            self._count[rows] += 1
            self._total[rows] += ccfs
            if self._phasors is not None:
                self._phasors[rows] += unit_phasors(ccfs)
            return
        np.add.at(self._count, rows, 1)
        np.add.at(self._total, rows, ccfs)
        if self._phasors is not None:
            np.add.at(self._phasors, rows, unit_phasors(ccfs))

    def stacks(self, kind: str = "linear", power: float = 2.0, rows: np.ndarray | None = None) -> np.ndarray:
        """Linear (``kind="linear"``) or phase-weighted (``"pws"``) stacks ``[n_rows, n_lags]``, of ``rows`` only
        when given (rows with no window are zero).

        Raises:
            DspError: ``kind`` is ``"pws"`` and the bank was created without phasors.
        """
        selected = slice(None) if rows is None else rows
        count = np.maximum(self.count[selected], 1)[:, None]
        linear = self.total[selected] / count
        if kind != "pws":
            return linear
        if self.phasors is None:
            raise DspError("this stack bank keeps no phasors; create it with phase=True")
        return linear * np.abs(self.phasors[selected] / count) ** power

    def linear(self) -> np.ndarray:
        """Linear stacks ``[n_keys, n_lags]`` (rows with no window are zero)."""
        return self.stacks("linear")

    def pws(self, power: float = 2.0) -> np.ndarray:
        """Phase-weighted stacks ``[n_keys, n_lags]``.

        Raises:
            DspError: the bank was created without phasors.
        """
        return self.stacks("pws", power)

    def encode(self) -> bytes:
        """Serialise the running state (deterministic ``.npz``)."""
        arrays: dict[str, np.ndarray] = {"count": self.count, "total": self.total}
        if self.phasors is not None:
            arrays["phasors"] = self.phasors
        return codec.pack(STACK_FORMAT, STACK_VERSION, {"keys": self.keys}, arrays)

    @classmethod
    def decode(cls, data: bytes, source: str = "<stack>") -> StackBank:
        """Inverse of :meth:`encode`.

        Raises:
            CorruptProduct: damaged or inconsistent bytes.
        """
        header, arrays = codec.unpack(data, STACK_FORMAT, frozenset({STACK_VERSION}), source)
        try:
            keys, total = list(header["keys"]), arrays["total"]
            bank = cls(keys, total.shape[1], phase="phasors" in arrays)
            if arrays["count"].shape != (len(keys),) or total.shape[0] != len(keys):
                raise ValueError("keys, counts and sums disagree")
            bank.count[:], bank.total[:] = arrays["count"], total
            if bank.phasors is not None:
                bank.phasors[:] = arrays["phasors"]
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise CorruptProduct(source, f"inconsistent stack state: {exc}") from exc
        return bank

    def _grow(self, new_keys: list[str]) -> None:
        """Append rows for ``new_keys``, doubling the storage when it runs out."""
        if not new_keys:
            return
        for key in new_keys:
            self.index[key] = len(self.keys)
            self.keys.append(key)
        need = len(self.keys)
        if need <= self._count.shape[0]:
            return
        capacity = max(need, 2 * self._count.shape[0], 64)
        self._count = _resized(self._count, capacity)
        self._total = _resized(self._total, capacity)
        if self._phasors is not None:
            self._phasors = _resized(self._phasors, capacity)


def _resized(array: np.ndarray, rows: int) -> np.ndarray:
    """A copy of ``array`` with ``rows`` rows, the new ones zero."""
    out = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    out[: array.shape[0]] = array
    return out
