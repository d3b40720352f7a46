"""In-process dv/v of a run: pair CCFs per window in, the pair table and the network series out.

A :class:`PairMonitor` holds what one pair needs (its coda window and its reference, stretched once); its
:meth:`PairMonitor.measure` turns one window's CCF into table rows and never raises, which is what a
streaming monitor calls as CCFs arrive. :func:`measure_run` does the same for a whole run held in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from contracts.dvvparams import DvvParams
from dsp.correlate import CcfBatch
from dsp.dvv.coda import CodaWindow, coda_window
from dsp.dvv.model import METHODS, SIDES, DvvMeasurement, Estimate, Reason, reason
from dsp.dvv.mwcs import measure_mwcs
from dsp.dvv.network import NetworkPoint, network_series
from dsp.dvv.reference import Reference, build_reference, reference_id, select_reference
from dsp.dvv.stretching import StretchedReference, measure_stretching, stretch_reference
from dsp.errors import DspError, DvvInputError
from dsp.windows import window_start


@dataclass(frozen=True, eq=False)
class PairMonitor:
    """Everything needed to measure one pair against one reference; ``problem`` says why it cannot be."""

    pair: str
    reference_id: str
    fs: float
    params: DvvParams
    reference: Reference | None = None
    window: CodaWindow | None = None
    stretched: StretchedReference | None = None
    problem: str | None = None

    def measure(self, window: str, ccf: np.ndarray) -> list[DvvMeasurement]:
        """Rows for ``window``'s CCF: stretching and MWCS on the causal, acausal and both sides.

        Never raises: a CCF or a pair that cannot be measured gives rows with a reason.
        """
        if self.problem is not None or self.reference is None or self.window is None or self.stretched is None:
            why = self.problem or reason(Reason.NO_REFERENCE, "not prepared")
            results = {m: {s: Estimate.failed(why) for s in SIDES} for m in METHODS}
        else:
            results = {
                "stretching": measure_stretching(self.stretched, ccf),
                "mwcs": measure_mwcs(self.reference.ccf, ccf, self.fs, self.window, self.params),
            }
        return [
            DvvMeasurement.of(est, window=window, pair=self.pair, method=m, side=s, reference=self.reference_id)
            for m, by_side in results.items()
            for s, est in by_side.items()
        ]


def prepare_pair(
    pair: str,
    reference: Reference | None,
    distance_km: float | None,
    fs: float,
    n_lags: int,
    params: DvvParams,
    reference_id: str = "",
) -> PairMonitor:
    """A pair's monitor: its coda window and its reference stretched for every trial.

    Args:
        pair: the pair key ``A__B``.
        reference: the pair's reference, or None when it has none yet.
        distance_km: inter-station distance (for the coda start), or None when unknown.
        fs: sampling rate of the CCFs, Hz.
        n_lags: length of the CCFs (``2 * maxlag + 1``).
        params: the dv/v settings.
        reference_id: the reference's id, when ``reference`` is None (its own id otherwise).

    Returns:
        The monitor; its ``problem`` holds the reason when nothing can be measured (no reference, no
        distance, a coda window outside the lags, a bad reference). Does not raise.
    """
    ref_id = reference.id if reference is not None else reference_id
    if reference is None:
        why = reason(Reason.NO_REFERENCE, f"no usable CCF of {pair} in the reference windows ({ref_id})")
        return PairMonitor(pair, ref_id, fs, params, problem=why)
    maxlag_s = (n_lags - 1) // 2 / fs
    try:
        window = coda_window(distance_km, maxlag_s, params)
        stretched = stretch_reference(reference.ccf, fs, window, params)
    except DvvInputError as exc:
        return PairMonitor(pair, ref_id, fs, params, reference, problem=str(exc))
    return PairMonitor(pair, ref_id, fs, params, reference, window, stretched)


@dataclass(frozen=True)
class DvvRun:
    """The dv/v of a run: the pair table (rows in time, then pair order), the network points of every method
    and side (time order), and the reference's id."""

    reference: str
    pairs: tuple[DvvMeasurement, ...]
    network: tuple[NetworkPoint, ...]

    def series(self, method: str = "stretching", side: str = "both") -> tuple[NetworkPoint, ...]:
        """The network series of one method and side, in time order."""
        return tuple(p for p in self.network if (p.method, p.side) == (method, side))


def measure_run(
    ccfs: Mapping[str, Mapping[str, np.ndarray]],
    distances: Mapping[str, float | None],
    fs: float,
    params: DvvParams,
) -> DvvRun:
    """dv/v of every pair and window of a run, and the network series, against the reference of ``params``.

    Args:
        ccfs: ``{window id: {pair key: CCF}}`` in any order (a late window is placed by its time); every CCF
            has the same length, lags -maxlag..+maxlag at ``fs``.
        distances: inter-station distance (km) by pair key; missing or None when unknown.
        fs: sampling rate of the CCFs, Hz.
        params: the dv/v settings, with the reference spec.

    Returns:
        The run's table and network series. Bad CCFs, pairs without a reference and windows outside the
        lags give rows with a reason; they never stop the others.

    Raises:
        InvalidWindowId: a window id is malformed (the windows could not be put in time order).
    """
    windows = sorted(ccfs, key=window_start)
    ref_windows = select_reference(params.reference, windows)
    ref_id = reference_id(params.reference, ref_windows)
    pairs = sorted({p for by_pair in ccfs.values() for p in by_pair})
    n_lags = _n_lags(ccfs)
    rows: list[DvvMeasurement] = []
    for pair in pairs:
        series = {w: ccfs[w][pair] for w in windows if pair in ccfs[w]}
        reference = build_reference(series, ref_windows, ref_id, n_lags)
        monitor = prepare_pair(pair, reference, distances.get(pair), fs, n_lags, params, ref_id)
        for w, ccf in series.items():
            rows.extend(monitor.measure(w, ccf))
    rows.sort(key=lambda m: (window_start(m.window), m.pair))
    network = tuple(p for m in METHODS for s in SIDES for p in network_series(rows, m, s))
    return DvvRun(ref_id, tuple(rows), network)


def ccfs_by_window(batches: Iterable[CcfBatch]) -> tuple[dict[str, dict[str, np.ndarray]], float]:
    """The input of :func:`measure_run` from CCF batches (any order; a window may come in several batches).

    Returns:
        ``({window: {pair key: CCF}}, fs)``; fs is 0 when there is no batch.

    Raises:
        DspError: the batches disagree on the sampling rate.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    rates = set()
    for batch in batches:
        out.setdefault(batch.window, {}).update(zip(batch.keys, batch.ccfs, strict=True))
        rates.add(batch.fs)
    if len(rates) > 1:
        raise DspError(f"CCF batches at several sampling rates: {sorted(rates)}")
    return out, rates.pop() if rates else 0.0


def _n_lags(ccfs: Mapping[str, Mapping[str, np.ndarray]]) -> int:
    """The most common CCF length of the run (a CCF of another length is reported by its measurement)."""
    sizes = [np.asarray(c).size for by_pair in ccfs.values() for c in by_pair.values()]
    if not sizes:
        return 0
    values, counts = np.unique(sizes, return_counts=True)
    return int(values[np.argmax(counts)])
