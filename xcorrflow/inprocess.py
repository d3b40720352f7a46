"""The ``inprocess`` run mode: the whole chain in one process, no Kafka, no object store.

It is the "ideal" reference the pipeline modes are measured against, and a quick way to correlate a folder.
Windows are processed in time order: preprocess every channel of the window into products, correlate all
pairs of the window with the batched kernel, persist the window's CCFs (``OUT/ccf/<window>.npz``, one batch
file per window), and update the running stacks; at the end one SAC stack per pair is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import obspy

from contracts.settings import Settings
from dsp.ccf import CCF_EXT, encode_ccfs
from dsp.correlate import CcfBatch, correlate
from dsp.errors import DspError, EmptyRecord, RecordTooShort
from dsp.preprocess import preprocess_window
from dsp.product import StationProduct
from dsp.seed import pair_key, parse_pair_key
from dsp.stack import StackBank
from dsp.windows import window_start
from producers.inventory import DeadLetter, Inventory, RawItem, load_stream, scan_folder
from producers.walk import shown
from xcorrflow.progress import Progress
from xcorrflow.report import Report
from xcorrflow.sac import ccf_sac_bytes, write_sac


@dataclass
class _RunState:
    """Mutable bookkeeping of one run."""

    t0: float
    report: Report
    bank: StackBank
    stations: set[str] = field(default_factory=set)
    cache: dict[str, obspy.Stream] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    expected_pairs: dict[str, int] = field(default_factory=dict)

    def mark_result(self) -> None:
        if self.report.first_result_s is None:
            self.report.first_result_s = round(time.perf_counter() - self.t0, 6)

    def tick(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - since
        return now


def run_inprocess(
    input_dir: Path,
    output_dir: Path,
    settings: Settings,
    progress: Progress | None = None,
    *,
    keep_ccfs: bool = True,
    workers: int | None = None,
) -> Report:
    """Correlate every pair of a folder of MiniSEED files and write SAC stacks.

    Args:
        input_dir: folder scanned recursively (see :func:`producers.inventory.scan_folder`).
        output_dir: receives ``<A>__<B>.sac`` stacks and ``ccf/<window>.npz`` (when ``keep_ccfs``).
        settings: the settings; ``settings.processing`` drives the DSP.
        progress: a progress bar to advance (its total is grown as work becomes known), or None.
        keep_ccfs: persist each window's CCFs (this is also what ``first_result_s`` measures).
        workers: threads for the kernel's inverse FFTs.

    Returns:
        The report (the caller writes it with :func:`xcorrflow.report.write_report`).
    """
    t0, started_at = time.perf_counter(), time.time()
    params = settings.processing
    inv = scan_folder(input_dir, params)
    output_dir.mkdir(parents=True, exist_ok=True)
    ids = inv.seed_ids()
    keys = [pair_key(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]
    report = Report(
        mode="inprocess",
        started_at=started_at,
        dead_letters=[d.to_dict() for d in inv.dead_letters],
        warnings=[w.to_dict() for w in inv.warnings],
    )
    state = _RunState(t0, report, StackBank(keys, 2 * params.maxlag + 1, phase=params.stack == "pws"))
    state.timings["scan"] = time.perf_counter() - t0
    table = inv.by_window()
    last_use = {item.source: w for w, chans in table.items() for its in chans.values() for item in its}
    state.expected_pairs = {w: len(c) * (len(c) - 1) // 2 for w, c in table.items()}
    if progress is not None:
        progress.set_total(sum(len(c) for c in table.values()) + sum(state.expected_pairs.values()))
    for window, channels in table.items():
        products = _preprocess(window, channels, inv, settings, state, progress)
        _correlate(window, products, output_dir, settings, state, progress, keep_ccfs, workers)
        for source in [s for s, w in last_use.items() if w == window]:
            state.cache.pop(source, None)  # day files serve several windows; drop them after their last one
    _write_stacks(output_dir, inv, settings, state)
    report.stations, report.windows = len(state.stations), len(table)
    report.pairs = int((state.bank.count > 0).sum())
    report.makespan_s = round(time.perf_counter() - t0, 6)
    report.timings_s = {k: round(v, 6) for k, v in state.timings.items()}
    report.outputs = {"stacks": str(output_dir), "ccfs": str(output_dir / "ccf") if keep_ccfs else None}
    report.config = settings.public_dump()
    return report


def _preprocess(
    window: str,
    channels: dict[str, list[RawItem]],
    inv: Inventory,
    settings: Settings,
    state: _RunState,
    progress: Progress | None,
) -> list[StationProduct]:
    params, products = settings.processing, []
    t_w0 = window_start(window, params.window_s)
    for seed_id, items in sorted(channels.items()):
        since = time.perf_counter()
        sources = [i.source for i in items]
        try:
            stream = _window_stream(items, state, t_w0, params.window_s)
            products.append(
                preprocess_window(
                    stream,
                    window,
                    params,
                    source=seed_id,
                    coordinates=inv.coordinates_of(seed_id),
                    sources=sources,
                )
            )
            state.stations.add(seed_id)
        except (RecordTooShort, EmptyRecord) as exc:
            state.report.skipped.append({"window": window, "item": seed_id, "reason": str(exc)})
        except (DspError, OSError) as exc:
            dead = DeadLetter(",".join(shown(s) for s in sources), f"{type(exc).__name__}: {exc}")
            state.report.dead_letters.append(dead.to_dict())
        state.tick("preprocess", since)
        if progress is not None:
            progress.advance(1, f"{window} preprocess {seed_id}")
    return products


def _window_stream(items: list[RawItem], state: _RunState, t_w0: float, window_s: float) -> obspy.Stream:
    """The traces of one channel around one window; decoded files are cached until their last window."""
    stream = obspy.Stream()
    for item in items:
        if item.source not in state.cache:
            state.cache[item.source] = load_stream([item])
        stream += state.cache[item.source]
    margin = 1.0  # a second either side: place_on_grid picks the exact samples
    return stream.slice(obspy.UTCDateTime(t_w0 - margin), obspy.UTCDateTime(t_w0 + window_s + margin))


def _correlate(
    window: str,
    products: list[StationProduct],
    output_dir: Path,
    settings: Settings,
    state: _RunState,
    progress: Progress | None,
    keep_ccfs: bool,
    workers: int | None,
) -> None:
    params = settings.processing
    since = time.perf_counter()
    batches: list[CcfBatch] = []
    for batch in correlate(products, params.maxlag, min_common=params.min_common_subwindows, workers=workers):
        state.bank.add(batch.keys, batch.ccfs)
        state.report.skipped.extend(
            {"window": window, "item": pair_key(s.a, s.b), "reason": s.reason} for s in batch.skipped
        )
        batches.append(batch)
        if progress is not None:
            progress.advance(len(batch.pairs) + len(batch.skipped), f"{window} correlate")
    if progress is not None:  # pairs of channels that produced no product are done too
        n = len(products)
        expected = state.expected_pairs.pop(window, 0)
        progress.advance(max(expected - n * (n - 1) // 2, 0))
    since = state.tick("correlate", since)
    if keep_ccfs and batches:
        _persist_window(output_dir / "ccf" / f"{window}{CCF_EXT}", batches)
        state.mark_result()
        state.tick("write", since)


def _persist_window(path: Path, batches: list[CcfBatch]) -> None:
    """Write one window's CCF batches as a single batch file (atomic rename)."""
    first = batches[0]
    merged = CcfBatch(
        first.window,
        first.fs,
        first.maxlag,
        tuple(p for b in batches for p in b.pairs),
        np.concatenate([b.ccfs for b in batches]),
        np.concatenate([b.n_common for b in batches]),
        tuple(s for b in batches for s in b.skipped),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(encode_ccfs(merged))
    tmp.replace(path)


def _write_stacks(output_dir: Path, inv: Inventory, settings: Settings, state: _RunState) -> None:
    params, since = settings.processing, time.perf_counter()
    bank = state.bank
    stacks = bank.stacks(params.stack, params.pws_power)
    for row, key in enumerate(bank.keys):
        if bank.count[row] == 0:
            continue
        a, b = parse_pair_key(key)
        content = ccf_sac_bytes(
            stacks[row],
            params.target_fs,
            a,
            b,
            coords_a=inv.coordinates_of(a),
            coords_b=inv.coordinates_of(b),
            n_windows=int(bank.count[row]),
            kind=params.stack,
        )
        write_sac(output_dir / f"{key}.sac", content)
        state.mark_result()
    state.tick("stack_write", since)
