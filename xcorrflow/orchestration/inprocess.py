"""The ``inprocess`` run mode: the whole chain in one process, no Kafka, no object store.

It is the "ideal" reference the pipeline modes are measured against, and a quick way to correlate a folder.
It writes the same result hierarchy as a pipeline run (:mod:`results.layout`), into ``OUT/results.zarr``: the
stations get registry indices in SEED order, windows are processed in time order, and in each window every
station's row (against the stations before it) is correlated, written to its slots of the window's ``ccf``
array and added to the stacks with the same code the stacker service runs (:class:`results.stacks.StackStore`).
Memory holds one window's products, one block of a row's CCFs (``Settings.block_columns``) and the few stack
chunks it touches, never N² CCFs; a window's raw samples are dropped once its products are made.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import obspy

from contracts.settings import Settings
from dsp.errors import DspError, EmptyRecord, RecordTooShort
from dsp.preprocess import preprocess_window
from dsp.product import StationProduct
from dsp.windows import window_start
from producers.inventory import DeadLetter, Inventory, RawItem, load_stream, scan_folder
from results.export import export_sac
from results.layout import pair_index, slots_for
from results.stacks import StackChunk, StackStore
from results.windows import SlotIndex, WindowStore, task_blocks
from results.zarrio import open_root
from storage.layout import RESULTS_ROOT
from xcorrflow.orchestration.progress import Progress
from xcorrflow.orchestration.report import Report


@dataclass
class _RunState:
    """Mutable bookkeeping of one run."""

    t0: float
    report: Report
    registry: dict[str, int]
    stations: set[str] = field(default_factory=set)
    cache: dict[str, obspy.Stream] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    pairs: set[int] = field(default_factory=set)  # canonical pairs with at least one window

    def mark_result(self) -> None:
        if self.report.first_result_s is None:
            self.report.first_result_s = round(time.perf_counter() - self.t0, 6)

    def tick(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - since
        return now


class StackCache:
    """The few stack chunks a run of consecutive rows touches, written back when the rows have moved past them."""

    def __init__(self, stacks: StackStore) -> None:
        self.stacks = stacks
        self.open: dict[int, StackChunk] = {}

    def add(self, pairs: np.ndarray, ccfs: np.ndarray) -> None:
        """Add CCFs of distinct canonical ``pairs`` (ascending) to the stacks."""
        size = self.stacks.chunk_pairs
        for k in np.unique(pairs // size):
            mine = pairs // size == k
            chunk = self.open.get(int(k)) or self.stacks.read(int(k))
            chunk.add(pairs[mine] - k * size, ccfs[mine])
            self.open[int(k)] = chunk
        if pairs.size:
            self.flush(below=int(pairs.min()) // size)

    def flush(self, below: int | None = None) -> None:
        """Write back the open chunks (those before chunk ``below``, or all)."""
        for k in sorted(self.open):
            if below is None or k < below:
                self.stacks.write(self.open.pop(k))


def run_inprocess(
    input_dir: Path,
    output_dir: Path,
    settings: Settings,
    progress: Progress | None = None,
    *,
    keep_ccfs: bool = True,
    workers: int | None = None,
    formats: tuple[str, ...] = ("zarr",),
) -> Report:
    """Correlate every pair of a folder of MiniSEED files into ``OUT/results.zarr`` (and SAC files).

    Args:
        input_dir: folder scanned recursively (see :func:`producers.inventory.scan_folder`).
        output_dir: receives ``results.zarr`` (stacks, and each window's CCFs when ``keep_ccfs``) and, with
            ``"sac"`` in ``formats``, ``<A>__<B>.sac`` stacks.
        settings: the settings; ``settings.processing`` drives the DSP.
        progress: a progress bar to advance (its total is grown as work becomes known), or None.
        keep_ccfs: keep each window's CCFs (they are what ``first_result_s`` measures).
        workers: threads for the kernel's inverse FFTs.
        formats: ``zarr`` and/or ``sac``.

    Returns:
        The report (the caller writes it with :func:`xcorrflow.orchestration.report.write_report`).
    """
    t0, started_at = time.perf_counter(), time.time()
    params = settings.processing
    inv = scan_folder(input_dir, params)
    output_dir.mkdir(parents=True, exist_ok=True)
    root = open_root(output_dir / RESULTS_ROOT)
    stacks = StackStore(root, params, chunk_pairs=settings.stack_chunk_pairs)
    ids = inv.seed_ids()
    stacks.register(ids, {s: inv.coordinates_of(s) for s in ids})
    report = Report(mode="inprocess", started_at=started_at, dead_letters=[d.to_dict() for d in inv.dead_letters])
    report.warnings = [w.to_dict() for w in inv.warnings]
    state = _RunState(t0, report, {s: i for i, s in enumerate(ids)})
    state.timings["scan"] = time.perf_counter() - t0
    table = inv.by_window()
    last_use = {item.source: w for w, chans in table.items() for its in chans.values() for item in its}
    if progress is not None:
        progress.set_total(sum(len(c) + len(c) * (len(c) - 1) // 2 for c in table.values()))
    windows = WindowStore(root, params)
    cache = StackCache(stacks)
    for window, channels in table.items():
        products = _preprocess(window, channels, inv, settings, state, progress, last_use)
        _correlate(window, products, windows, cache, settings, state, progress, keep_ccfs, workers)
    _finish(root, output_dir, formats, cache, state)
    report.stations, report.windows, report.pairs = len(state.stations), len(table), len(state.pairs)
    report.makespan_s = round(time.perf_counter() - t0, 6)
    report.timings_s = {k: round(v, 6) for k, v in state.timings.items()}
    report.outputs = {"results": str(output_dir / RESULTS_ROOT), "stacks": str(output_dir)}
    report.config = settings.public_dump()
    return report


def _finish(root: object, output_dir: Path, formats: tuple[str, ...], cache: StackCache, state: _RunState) -> None:
    since = time.perf_counter()
    cache.flush()
    if "sac" in formats:
        export_sac(root, output_dir)  # type: ignore[arg-type]
    state.tick("stack_write", since)


def _preprocess(
    window: str,
    channels: dict[str, list[RawItem]],
    inv: Inventory,
    settings: Settings,
    state: _RunState,
    progress: Progress | None,
    last_use: dict[str, str],
) -> list[StationProduct]:
    """Each channel's product of one window. A decoded file is dropped once the last window it serves has its
    product (a day file serves several windows); kept through correlation, every station's hour of raw samples
    was alive at once (2 MiB a station: 732 -> 1,246 MiB of run process from N = 260 to 520)."""
    params, products = settings.processing, []
    t_w0 = window_start(window, params.window_s)
    users = Counter(item.source for items in channels.values() for item in items)  # a file may hold channels
    for seed_id, items in sorted(channels.items()):
        since = time.perf_counter()
        sources = [i.source for i in items]
        try:
            stream = _window_stream(items, state, t_w0, params.window_s)
            products.append(
                preprocess_window(
                    stream, window, params, source=seed_id, coordinates=inv.coordinates_of(seed_id), sources=sources
                )
            )
            state.stations.add(seed_id)
        except (RecordTooShort, EmptyRecord) as exc:
            state.report.skipped.append({"window": window, "item": seed_id, "reason": str(exc)})
        except (DspError, OSError) as exc:
            dead = DeadLetter(",".join(sources), f"{type(exc).__name__}: {exc}")
            state.report.dead_letters.append(dead.to_dict())
        users.subtract(sources)
        for source in sources:
            if users[source] <= 0 and last_use.get(source) == window:
                state.cache.pop(source, None)
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
    windows: WindowStore,
    cache: StackCache,
    settings: Settings,
    state: _RunState,
    progress: Progress | None,
    keep_ccfs: bool,
    workers: int | None,
) -> None:
    """Every row of the window's lower triangle, in registry order: correlate, keep, stack."""
    params, since = settings.processing, time.perf_counter()
    ordered = sorted(products, key=lambda p: state.registry[p.seed_id])
    slot, index = 0, _IndexBuilder()
    for k, row in enumerate(ordered[1:], start=1):
        columns = ordered[:k]
        names = [c.seed_id for c in columns]
        pairs = np.array([pair_index(state.registry[row.seed_id], state.registry[c]) for c in names], np.int64)
        if keep_ccfs:
            windows.ensure(window, slot + slots_for(len(names)))
        blocks = task_blocks(
            row,
            names,
            {c.seed_id: c for c in columns},
            params.maxlag,
            min_common=params.min_common_subwindows,
            workers=workers,
            block_columns=settings.block_columns,
        )
        for block in blocks:
            since = state.tick("correlate", since)
            if keep_ccfs:
                windows.write(window, slot + block.offset, block.chunks)
                state.mark_result()
            counts = np.asarray(block.n_common)
            mine = pairs[block.offset : block.offset + counts.size]
            cache.add(mine[counts > 0], block.ccfs[counts > 0])
            state.pairs.update(int(p) for p in mine[counts > 0])
            index.add(slot + block.offset, row.seed_id, names[block.offset : block.offset + counts.size], mine, counts)
            state.report.skipped.extend(
                {"window": window, "item": f"{s.a}__{s.b}", "reason": s.reason} for s in block.skipped
            )
            since = state.tick("write", since)
        slot += slots_for(len(names))
        if progress is not None:
            progress.advance(len(names), f"{window} correlate")
    if keep_ccfs and slot:
        windows.write_index(window, index.build(slot))


class _IndexBuilder:
    """What each slot of a window holds, as rows are written."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, list[str], np.ndarray, np.ndarray]] = []

    def add(self, slot: int, row: str, columns: list[str], pairs: np.ndarray, counts: np.ndarray) -> None:
        self.rows.append((slot, row, columns, pairs, counts))

    def build(self, size: int) -> SlotIndex:
        pair_index_ = np.full(size, -1, np.int64)
        n_common = np.zeros(size, np.int32)
        a, b = [""] * size, [""] * size
        for slot, row, columns, pairs, counts in self.rows:
            pair_index_[slot : slot + len(columns)] = pairs
            n_common[slot : slot + len(columns)] = counts
            for k, column in enumerate(columns):
                a[slot + k], b[slot + k] = sorted((row, column))
        return SlotIndex(pair_index_, a, b, n_common, np.full(size, np.nan))
