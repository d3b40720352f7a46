"""The result hierarchy: per-window CCF slots, running stacks chunk by chunk, crash fingerprints, and what
xarray makes of it."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.params import ProcessingParams
from dsp.product import Coordinates
from dsp.stack import stack_linear, stack_pws
from results.layout import CHUNK_PAIRS, n_pairs, pair_index, slots_for, stations_of
from results.stacks import StackChunk, StackStore, apply, fingerprint
from results.windows import SlotIndex, WindowStore, gather
from results.zarrio import open_root

PARAMS = ProcessingParams(cc_len_s=600, step_s=300, maxlag_s=100)
L = 2 * PARAMS.maxlag + 1
W = "20240101T000000Z"


def test_pair_index_is_the_lower_triangle_row_by_row() -> None:
    seen = [pair_index(i, j) for i in range(1, 30) for j in range(i)]
    assert seen == list(range(n_pairs(30)))
    assert all(stations_of(pair_index(i, j)) == (i, j) for i in range(1, 60) for j in range(i))
    assert pair_index(3, 7) == pair_index(7, 3)
    with pytest.raises(ValueError):
        pair_index(4, 4)


def test_a_task_takes_whole_chunks() -> None:
    assert slots_for(1) == CHUNK_PAIRS and slots_for(CHUNK_PAIRS) == CHUNK_PAIRS
    assert slots_for(CHUNK_PAIRS + 1) == 2 * CHUNK_PAIRS and slots_for(0) == CHUNK_PAIRS


def test_window_slots_round_trip_and_pad(tmp_path: Path) -> None:
    windows = WindowStore(open_root(tmp_path / "r.zarr"), PARAMS)
    windows.ensure(W, 2 * CHUNK_PAIRS)
    rng = np.random.default_rng(1)
    first, second = rng.standard_normal((3, L)).astype(np.float32), rng.standard_normal((5, L)).astype(np.float32)
    windows.write(W, 0, first)
    windows.write(W, CHUNK_PAIRS, second)
    np.testing.assert_array_equal(windows.read(W, 0, 3), first)
    np.testing.assert_array_equal(windows.read(W, CHUNK_PAIRS, CHUNK_PAIRS + 5), second)
    assert np.isnan(windows.read(W, 3, CHUNK_PAIRS)).all(), "the rest of a task's chunk is NaN padding"
    with pytest.raises(ValueError, match="chunk"):
        windows.write(W, 5, first)


def test_a_correlator_that_opened_the_array_early_still_writes_grown_slots(tmp_path: Path) -> None:
    root = open_root(tmp_path / "r.zarr")
    scheduler, correlator = WindowStore(root, PARAMS), WindowStore(open_root(tmp_path / "r.zarr"), PARAMS)
    scheduler.ensure(W, CHUNK_PAIRS)
    correlator.write(W, 0, np.zeros((1, L), np.float32))
    scheduler.ensure(W, 3 * CHUNK_PAIRS)
    correlator.write(W, 2 * CHUNK_PAIRS, np.ones((2, L), np.float32))
    assert windows_read(tmp_path, W, 2 * CHUNK_PAIRS, 2 * CHUNK_PAIRS + 2).sum() == 2 * L


def windows_read(path: Path, window: str, start: int, stop: int) -> np.ndarray:
    return WindowStore(open_root(path / "r.zarr"), PARAMS).read(window, start, stop)


def _stacks(path: Path, stations: list[str], **params: object) -> StackStore:
    store = StackStore(open_root(path / "s.zarr"), PARAMS.model_copy(update=params), chunk_pairs=4)
    coords = {s: Coordinates(10.0 + i, 20.0, 5.0) for i, s in enumerate(stations)}
    store.register(stations, coords)
    return store


def test_gathering_slots_reads_each_chunk_once_and_a_bounded_span_per_read(tmp_path: Path) -> None:
    reads: list[tuple[int, int]] = []

    class Recording(WindowStore):
        def read(self, window: str, start: int, stop: int) -> np.ndarray:
            reads.append((start, stop))
            return super().read(window, start, stop)

    windows = Recording(open_root(tmp_path / "r.zarr"), PARAMS)
    windows.ensure(W, 12 * CHUNK_PAIRS)
    data = np.random.default_rng(3).standard_normal((12 * CHUNK_PAIRS, L)).astype(np.float32)
    windows.write(W, 0, data)
    # chunks 0-6 in one run, 9-10 in another, in a scrambled order, every slot of a chunk or just some
    slots = np.concatenate([np.arange(0, 7 * CHUNK_PAIRS), np.arange(9 * CHUNK_PAIRS, 10 * CHUNK_PAIRS + 5)])
    slots = np.random.default_rng(4).permutation(slots)
    ccfs, bad = gather(windows, W, slots, max_chunks=3)
    np.testing.assert_array_equal(ccfs, data[slots])
    assert bad == {}
    spans = sorted(reads)
    assert all(b - a <= 3 * CHUNK_PAIRS for a, b in spans), f"a read spans more than 3 chunks: {spans}"
    chunks = [c for a, b in spans for c in range(a // CHUNK_PAIRS, -(-b // CHUNK_PAIRS))]
    assert chunks == [0, 1, 2, 3, 4, 5, 6, 9, 10], "each chunk read once, none that holds no wanted slot"


def test_a_gather_names_the_chunks_it_cannot_read_and_keeps_the_others(tmp_path: Path) -> None:
    """Chunk 1 is truncated (it does not decode), chunk 2 is deleted (it reads as its NaN fill), chunk 3 holds
    one NaN CCF: each is named with its reason, and chunks 0 and 4 come back intact."""
    windows = WindowStore(open_root(tmp_path / "r.zarr"), PARAMS)
    windows.ensure(W, 5 * CHUNK_PAIRS)
    data = np.random.default_rng(5).standard_normal((5 * CHUNK_PAIRS, L)).astype(np.float32)
    data[3 * CHUNK_PAIRS + 7] = np.nan
    windows.write(W, 0, data)
    root = tmp_path / "r.zarr"
    (root / windows.chunk_path(W, 1)).write_bytes((root / windows.chunk_path(W, 1)).read_bytes()[:100])
    (root / windows.chunk_path(W, 2)).unlink()
    slots = np.arange(5 * CHUNK_PAIRS)
    ccfs, bad = gather(windows, W, slots)
    assert sorted(bad) == [1, 2, 3]
    assert bad[1].startswith("ValueError") and "NaN" in bad[2] and "NaN" in bad[3]
    good = np.r_[0:CHUNK_PAIRS, 4 * CHUNK_PAIRS : 5 * CHUNK_PAIRS]
    np.testing.assert_array_equal(ccfs[good], data[good])
    assert np.isnan(ccfs[CHUNK_PAIRS : 3 * CHUNK_PAIRS]).all()
    assert np.isnan(ccfs[3 * CHUNK_PAIRS :]).any(axis=1).sum() == 1, "only the NaN CCF of chunk 3 is lost"


def test_stacks_keep_running_means_and_counts(tmp_path: Path) -> None:
    stations = [f"XX.S{i}..HHZ" for i in range(5)]
    store = _stacks(tmp_path, stations)
    assert store.n_pairs == 10 and store.n_chunks == 3
    rng = np.random.default_rng(2)
    windows = [rng.standard_normal((10, L)).astype(np.float32) for _ in range(3)]
    for ccfs in windows:
        for k in range(store.n_chunks):
            chunk = store.read(k)
            rows = np.arange(len(chunk.count))
            chunk.add(rows, ccfs[k * 4 : k * 4 + rows.size])
            store.write(chunk)
    linear = np.concatenate([store.read(k).linear for k in range(store.n_chunks)])
    np.testing.assert_allclose(linear, np.mean(windows, axis=0), rtol=1e-5, atol=1e-6)
    assert (store.counts() == 3).all()


def test_pws_keeps_a_phase_mean(tmp_path: Path) -> None:
    store = _stacks(tmp_path, ["XX.A..HHZ", "XX.B..HHZ"], stack="pws")
    chunk = store.read(0)
    ccf = np.sin(np.linspace(0, 20, L)).astype(np.float32)[None]
    chunk.add(np.array([0]), ccf)
    chunk.add(np.array([0]), ccf)
    assert chunk.phase is not None and np.abs(chunk.phase[0]).max() == pytest.approx(1.0, rel=1e-4)


def test_a_fingerprint_tells_an_updated_chunk_from_an_old_one(tmp_path: Path) -> None:
    store = _stacks(tmp_path, ["XX.A..HHZ", "XX.B..HHZ", "XX.C..HHZ"])
    before = store.read(0)
    crcs = {n: fingerprint(a) for n, a in before.arrays().items()}
    before.add(np.array([1]), np.ones((1, L), np.float32))
    store.write(before, ("linear",))  # a crash between the linear and the count writes
    after = store.read(0)
    assert fingerprint(after.linear) != crcs["linear"] and fingerprint(after.count) == crcs["count"]
    # the CRC of the bytes themselves, so intents recorded before and after a change of how it is taken agree
    assert fingerprint(after.linear) == zlib.crc32(after.linear.tobytes())
    assert fingerprint(after.linear[:, ::2]) == zlib.crc32(np.ascontiguousarray(after.linear[:, ::2]).tobytes())


def test_a_new_station_extends_the_pair_axis_and_keeps_the_stacks(tmp_path: Path) -> None:
    store = _stacks(tmp_path, ["XX.B..HHZ", "XX.A..HHZ"])
    chunk = store.read(0)
    chunk.add(np.array([0]), np.full((1, L), 2.0, np.float32))
    store.write(chunk)
    store.register(["XX.B..HHZ", "XX.A..HHZ", "XX.C..HHZ"])
    assert store.n_pairs == 3 and store.read(0).linear[0, 0] == 2.0
    # registry B=0, A=1, C=2: pairs (1,0) A-B, (2,0) B-C, (2,1) A-C, each labelled A < B
    assert store.labels_of(0, 3) == (["XX.A..HHZ", "XX.B..HHZ", "XX.A..HHZ"], ["XX.B..HHZ", "XX.C..HHZ", "XX.C..HHZ"])
    with pytest.raises(Exception, match="prefix"):
        store.register(["XX.A..HHZ", "XX.B..HHZ"])


def test_stations_keep_their_positions_when_others_join_without_theirs(tmp_path: Path) -> None:
    """The stacker passes the positions of the joining stations only: the earlier ones must keep theirs."""
    store = StackStore(open_root(tmp_path / "s.zarr"), PARAMS)
    store.register(["XX.B..HHZ", "XX.A..HHZ"], {"XX.B..HHZ": Coordinates(45.0, 7.0), "XX.A..HHZ": None})
    store.register(["XX.B..HHZ", "XX.A..HHZ", "XX.C..HHZ"], {"XX.C..HHZ": Coordinates(46.0, 8.0)})
    group = open_root(tmp_path / "s.zarr")["stations"]
    np.testing.assert_array_equal(group["latitude"][:], [45.0, np.nan, 46.0])
    np.testing.assert_array_equal(group["longitude"][:], [7.0, np.nan, 8.0])


def test_xarray_opens_stacks_and_windows_as_labelled_datasets(tmp_path: Path) -> None:
    stations = ["XX.A..HHZ", "XX.B..HHZ", "XX.C..HHZ"]
    store = _stacks(tmp_path, stations)
    chunk = store.read(0)
    chunk.add(np.arange(3), np.ones((3, L), np.float32))
    store.write(chunk)
    ds = xr.open_zarr(tmp_path / "s.zarr", group="stacks", consolidated=False)
    assert ds.linear.dims == ("pair", "lag") and list(ds.pair.values) == ["XX.A..HHZ__XX.B..HHZ",
                                                                          "XX.A..HHZ__XX.C..HHZ",
                                                                          "XX.B..HHZ__XX.C..HHZ"]  # fmt: skip
    assert float(ds.lag[0]) == -PARAMS.maxlag_s and float(ds.lag[PARAMS.maxlag]) == 0.0
    assert ds.linear.sel(pair="XX.A..HHZ__XX.C..HHZ").values.mean() == 1.0
    windows = WindowStore(open_root(tmp_path / "s.zarr"), PARAMS)
    windows.ensure(W, CHUNK_PAIRS)
    windows.write(W, 0, np.full((2, L), 3.0, np.float32))
    index = SlotIndex(np.array([0, 1]), stations[:2], stations[1:], np.array([3, 0], np.int32), np.zeros(2))
    windows.write_index(W, index)
    win = xr.open_zarr(tmp_path / "s.zarr", group=f"windows/{W}", consolidated=False)
    assert win.ccf.dims == ("slot", "lag") and "pair" in win.coords and int(win.n_common[0]) == 3


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_a_running_chunk_equals_the_batch_stacks(seed: int, n_windows: int) -> None:
    rng = np.random.default_rng(seed)
    windows = [rng.standard_normal((2, 51)).astype(np.float32) for _ in range(n_windows)]
    chunk = StackChunk(0, np.full((2, 51), np.nan, np.float32), np.zeros(2, np.int32), np.zeros((2, 51), np.complex64))
    for w in windows:
        chunk.add(np.array([1, 0]), w[::-1])  # row order of an update must not matter
    assert chunk.phase is not None
    for row in range(2):
        series = np.array([w[row] for w in windows], dtype=np.float64)
        np.testing.assert_allclose(chunk.linear[row], stack_linear(series), rtol=1e-5, atol=1e-5)
        pws = chunk.linear[row] * np.abs(chunk.phase[row]) ** 3.0
        np.testing.assert_allclose(pws, stack_pws(series, 3.0), rtol=1e-4, atol=1e-5)
    assert list(chunk.count) == [n_windows, n_windows]


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3])  # 2 chunks x (linear, count) writes
def test_applying_a_window_again_after_a_crash_finishes_it_once(tmp_path: Path, crash_after: int) -> None:
    """A crash after any number of array writes, then a second apply from the same fingerprints: once, exactly."""
    stations = [f"XX.S{i}..HHZ" for i in range(4)]  # 6 pairs in chunks of 4: two chunks
    store = _stacks(tmp_path, stations)
    rng = np.random.default_rng(3)
    first, second = (rng.standard_normal((6, L)).astype(np.float32) for _ in range(2))
    pairs = np.arange(6)
    apply(store, pairs, first, {k: _crcs(store, k) for k in range(2)})
    crcs = {k: _crcs(store, k) for k in range(2)}
    writes: list[tuple[int, str]] = []
    real_write = store.write

    def crashing(chunk: StackChunk, names: tuple[str, ...] = ("phase", "linear", "count")) -> None:
        for name in ("linear", "count"):
            if name in names:
                if len(writes) == crash_after:
                    raise RuntimeError("kill -9")
                real_write(chunk, (name,))
                writes.append((chunk.index, name))

    store.write = crashing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        apply(store, pairs, second, crcs)
    store.write = real_write  # type: ignore[method-assign]
    apply(store, pairs, second, crcs)
    linear = np.concatenate([store.read(k).linear for k in range(2)])
    np.testing.assert_allclose(linear, (first + second) / 2, rtol=1e-5, atol=1e-6)
    assert (store.counts() == 2).all()


def _crcs(store: StackStore, k: int) -> dict[str, int]:
    return {n: fingerprint(a) for n, a in store.read(k).arrays().items()}


@pytest.mark.parametrize("rows", [[1, 2, 3], [0, 2, 3], [3, 1]], ids=["one run", "gaps", "descending"])
def test_running_means_match_the_mean_of_the_windows_added(rows: list[int]) -> None:
    rng = np.random.default_rng(3)
    chunk = StackChunk(0, np.full((5, 7), np.nan, np.float32), np.zeros(5, np.int32))
    windows = [rng.standard_normal((len(rows), 7)).astype(np.float32) for _ in range(4)]
    for ccfs in windows:
        chunk.add(np.array(rows), ccfs)
    np.testing.assert_allclose(chunk.linear[rows], np.mean(windows, axis=0), rtol=1e-6, atol=1e-6)
    untouched = [r for r in range(5) if r not in rows]
    assert np.isnan(chunk.linear[untouched]).all() and (chunk.count[untouched] == 0).all()
    assert (chunk.count[rows] == 4).all()


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_a_window_applied_in_any_pair_order_gives_the_same_stacks(tmp_path: Path, order: str) -> None:
    stations = [f"XX.S{i}..HHZ" for i in range(6)]  # 15 pairs in chunks of 4: the last chunk part-full
    store = _stacks(tmp_path, stations)
    rng = np.random.default_rng(5)
    pairs = np.array([0, 1, 2, 5, 6, 7, 8, 13, 14])  # chunks 0, 1, 2 and 3, with gaps
    ccfs = rng.standard_normal((pairs.size, L)).astype(np.float32)
    if order == "shuffled":
        perm = rng.permutation(pairs.size)
        pairs, ccfs = pairs[perm], ccfs[perm]
    assert apply(store, pairs, ccfs, {k: _crcs(store, k) for k in range(store.n_chunks)}) == 4
    linear = np.concatenate([store.read(k).linear for k in range(store.n_chunks)])
    np.testing.assert_array_equal(linear[pairs], ccfs)
    others = np.setdiff1d(np.arange(store.n_pairs), pairs)
    assert np.isnan(linear[others]).all() and (store.counts()[pairs] == 1).all()


def test_chunks_that_hold_only_the_fill_value_are_written_too(tmp_path: Path) -> None:
    """zarr would skip them after comparing each chunk with the fill value; the arrays here skip the compare."""
    windows = WindowStore(open_root(tmp_path / "r.zarr"), PARAMS)
    windows.ensure(W, 2 * CHUNK_PAIRS)
    windows.write(W, CHUNK_PAIRS, np.full((3, L), np.nan, np.float32))  # a task whose pairs were all skipped
    chunks = [p for p in (tmp_path / "r.zarr" / "windows" / W / "ccf" / "c").rglob("*") if p.is_file()]
    assert [p.parent.name for p in chunks] == ["1"], "the all-NaN chunk 1 is stored, as one PUT"
    assert np.isnan(windows.read(W, 0, 2 * CHUNK_PAIRS)).all()
