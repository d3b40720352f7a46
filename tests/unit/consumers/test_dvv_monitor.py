"""The dv/v monitor's work on the stores (no Kafka): reference election, measuring windows as the stacker
closes them, late windows, bad input, a new reference, the table (pandas and xarray) and the CSV contract.

The world: 4 stations (6 pairs) whose CCFs are exact stretches of each pair's own wavelet sum
(:func:`tests.unit.dsp.test_dvv_methods.ccf_of`), written into real zarr arrays as the correlators and the
stacker write them (slots, then the slot index that marks a window complete).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from consumers.dvvwork import DvvWork, Elected, complete_windows, distance_km, pair_distances
from contracts.params import ProcessingParams
from contracts.settings import Settings
from dsp.dvv import DvvParams, ReferenceSpec
from dsp.product import Coordinates
from results.dvv import DvvStore, read_network, read_pairs, series_name
from results.dvvplot import plot_dvv
from results.layout import CHUNK_PAIRS
from results.stacks import StackStore
from results.windows import SlotIndex, WindowStore
from results.zarrio import open_root
from storage.memory import MemoryStore
from tests.unit.dsp.test_dvv_methods import ccf_of, wavelets
from xcorrflow.orchestration.dvvout import DvvUnavailable, check_reference, measure_inprocess, write_csvs

PROCESSING = ProcessingParams(cc_len_s=600, step_s=300, maxlag_s=100)  # 20 Hz, +-100 s: the tests' lag axis
STATIONS = ["XX.A..HHZ", "XX.B..HHZ", "XX.C..HHZ", "XX.D..HHZ"]
POSITIONS = {s: Coordinates(45.0 + 0.05 * k, 7.0 + 0.03 * k) for k, s in enumerate(STATIONS)}
WINDOWS = [f"20240101T{h:02d}0000Z" for h in range(6)]
TRUTH = dict(zip(WINDOWS, [0.0, 0.0, 0.0, -0.3, -0.3, -0.1], strict=True))
PARAMS = DvvParams(
    start_velocity_km_s=None, min_lag_s=5.0, end_lag_s=80.0, mwcs_window_s=20.0, reference=ReferenceSpec(first_k=3)
)


def pairs_of(stations: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(stations) for b in stations[i + 1 :]]


_CCFS: dict[tuple[str, float], np.ndarray] = {}


def _ccf(pair: str, dvv: float, arrivals: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The pair's CCF at ``dvv`` (computed once per module: a wavelet sum costs 0.2 s)."""
    if (pair, dvv) not in _CCFS:
        _CCFS[pair, dvv] = ccf_of(arrivals, dvv).astype(np.float32)
    return _CCFS[pair, dvv]


class World:
    """A hierarchy with stations and per-window CCFs; :meth:`close` writes a window as the stacker would."""

    def __init__(self) -> None:
        self.root = open_root("memory://")
        StackStore(self.root, PROCESSING).register(STATIONS, POSITIONS)
        self.windows = WindowStore(self.root, PROCESSING)
        self.store = MemoryStore()
        self.arrivals = {f"{a}__{b}": wavelets(k) for k, (a, b) in enumerate(pairs_of(STATIONS))}

    def ccf(self, pair: str, window: str) -> np.ndarray:
        return _ccf(pair, TRUTH[window], self.arrivals[pair])

    def close(self, window: str, override: dict[str, np.ndarray] | None = None, stations: list[str] = STATIONS) -> None:
        pairs = pairs_of(stations)
        keys = [f"{a}__{b}" for a, b in pairs]
        block = np.stack([(override or {}).get(k, self.ccf(k, window)) if k in self.arrivals else
                          _ccf("new", TRUTH[window], wavelets(99)) for k in keys]).astype(np.float32)  # fmt: skip
        self.windows.ensure(window, CHUNK_PAIRS)
        self.windows.write(window, 0, block)
        index = SlotIndex(np.arange(len(pairs)), [a for a, _ in pairs], [b for _, b in pairs],
                          np.full(len(pairs), 3, np.int32), np.full(len(pairs), np.nan))  # fmt: skip
        self.windows.write_index(window, index)

    def work(self, params: DvvParams = PARAMS) -> DvvWork:
        return DvvWork(self.root, self.root, self.store, PROCESSING, params)


@pytest.fixture
def world() -> World:
    return World()


def test_no_reference_until_k_windows_are_complete_then_the_waiting_ones_are_measured(world: World) -> None:
    work = world.work()
    for w in WINDOWS[:2]:
        world.close(w)
        assert work.measure(w) is None  # no reference can exist yet: the window waits in the store
    assert work.pending() == WINDOWS[:2]
    world.close(WINDOWS[2])
    rows, _ = work.measure(WINDOWS[2]) or ([], [])
    assert work.elected is not None and work.elected.windows == tuple(WINDOWS[:3])
    assert len(rows) == 6 * 2 * 3 and all(r.ok for r in rows)
    assert work.pending() == WINDOWS[:2]
    for w in [*work.pending(), *WINDOWS[3:5]]:
        world.close(w)
        work.measure(w)
    net = read_network(world.root)
    both = net[(net.side == "both")]
    assert list(both.window.unique()) == WINDOWS[:5]
    for method in ("stretching", "mwcs"):
        mine = both[both.method == method]
        errors = mine.dvv_percent.to_numpy() - np.array([TRUTH[w] for w in WINDOWS[:5]])
        assert np.abs(errors).max() < 0.02, (method, errors)
        assert (mine.n_pairs == 6).all() and (mine.reason == "").all()


def test_members_share_one_reference_and_a_late_window_takes_its_place_in_time(world: World) -> None:
    for w in WINDOWS[1:5]:
        world.close(w)
    first = world.work()
    first.measure(WINDOWS[4])  # elects the first 3 complete windows: hours 1-3
    assert first.elected is not None and first.elected.windows == tuple(WINDOWS[1:4])
    world.close(WINDOWS[0])  # hour 0 arrives late: it would have been among the first 3
    second = world.work()
    second.measure(WINDOWS[0])
    assert second.elected == first.elected, "the elected reference is frozen, whoever asks"
    assert Elected.decode(world.store.get(first.pointer_key)) == first.elected
    net = read_network(world.root)
    assert list(net.window.unique()) == [WINDOWS[0], WINDOWS[4]]
    late = net[(net.window == WINDOWS[0]) & (net.side == "both") & (net.method == "stretching")]
    assert abs(float(late.dvv_percent.iloc[0]) - (TRUTH[WINDOWS[0]] - TRUTH[WINDOWS[3]] / 3)) < 0.02


def test_bad_input_gives_a_reason_in_the_table_never_a_silent_zero(world: World) -> None:
    for w in WINDOWS[:3]:
        world.close(w)
    zero, nan = "XX.A..HHZ__XX.B..HHZ", "XX.A..HHZ__XX.C..HHZ"
    broken = {zero: np.zeros(4001, np.float32), nan: np.full(4001, np.nan, np.float32)}
    world.close(WINDOWS[3], broken, stations=[*STATIONS, "XX.E..HHZ"])  # E joined after the reference
    work = world.work()
    work.measure(WINDOWS[3])
    table = read_pairs(world.root)
    table = table[table.window == WINDOWS[3]].set_index("pair")
    assert table.loc[zero].reason.str.startswith("zero_ccf").all()
    # NaN CCFs: the slot is read as having no CCF when written as NaN by a correlator, or judged nonfinite
    assert nan not in table.index or table.loc[nan].reason.str.startswith("nonfinite_ccf").all()
    assert table.loc["XX.A..HHZ__XX.E..HHZ"].reason.str.startswith("no_reference").all()
    assert table.dvv_percent[table.reason != ""].isna().all()
    outside = world.work(PARAMS.model_copy(update={"end_lag_s": 100.0}))  # stretched, it reads past +-100 s
    _, network = outside.measure(WINDOWS[3]) or ([], [])
    assert all(p.reason and p.reason.startswith("no_pairs") for p in network)
    rows = read_pairs(world.root, outside.elected.series if outside.elected else None)
    with_reference = rows[~rows.pair.str.contains("XX.E")]
    assert with_reference.reason.str.startswith("window_outside_lags").all()


def test_a_new_reference_starts_a_new_series_and_leaves_the_old_one_alone(world: World) -> None:
    for w in WINDOWS[:5]:
        world.close(w)
    old = world.work()
    for w in WINDOWS[:5]:
        old.measure(w)
    before = read_network(world.root, old.elected.series if old.elected else None)
    new = world.work(PARAMS.model_copy(update={"reference": ReferenceSpec(first_k=4)}))
    new.measure(WINDOWS[4])
    assert old.elected and new.elected and new.elected.series != old.elected.series
    assert DvvStore(world.root).series() == [old.elected.series, new.elected.series]
    pd.testing.assert_frame_equal(read_network(world.root, old.elected.series), before)
    assert set(read_network(world.root).reference) == {new.elected.reference}, "the newest series by default"
    assert series_name(old.elected.reference, PARAMS) != series_name(old.elected.reference, new.params.model_copy(
        update={"mwcs_window_s": 30.0}))  # fmt: skip


def test_the_table_opens_in_xarray_and_the_csvs_follow_the_contract(world: World, tmp_path: Path) -> None:
    root = zarr.open_group(zarr.storage.LocalStore(tmp_path / "results.zarr"), mode="a", zarr_format=3)
    StackStore(root, PROCESSING).register(STATIONS, POSITIONS)
    world.root, world.windows = root, WindowStore(root, PROCESSING)
    for w in reversed(WINDOWS):  # every window late but the last
        world.close(w)
    settings = Settings(processing=PROCESSING, dvv=PARAMS)
    measured = measure_inprocess(root, settings)
    assert measured["windows"] == len(WINDOWS)
    series = measured["series"]
    ds = xr.open_zarr(tmp_path / "results.zarr", group=f"dvv/{series}/windows/{WINDOWS[3]}", consolidated=False)
    assert ds.dvv_percent.dims == ("pair", "dvv_method", "side") and ds.sizes["pair"] == 6
    assert float(ds.network_dvv_percent.sel(dvv_method="stretching", side="both")) == pytest.approx(-0.3, abs=0.02)
    whole = read_pairs(root).set_index(["window", "pair", "method", "side"]).to_xarray()
    assert whole.dvv_percent.shape == (6, 6, 2, 3)
    network_csv, pairs_csv = write_csvs(root, tmp_path, "stretching")
    net = pd.read_csv(network_csv, keep_default_na=False)
    assert list(net.columns) == ["window", "dvv_percent", "err_percent", "n_pairs"]
    assert list(net.window) == WINDOWS and (net.n_pairs == 6).all()
    pairs = pd.read_csv(pairs_csv, keep_default_na=False)
    assert list(pairs.columns) == ["window", "dvv_percent", "err_percent", "n_pairs", "pair", "method", "cc"]
    assert len(pairs) == 6 * 6 * 2 and list(pairs.window.unique()) == WINDOWS
    summary = plot_dvv(root, tmp_path / "dvv.png")
    assert (tmp_path / "dvv.png").stat().st_size > 10_000 and "6 windows" in summary


def test_a_run_too_short_for_its_reference_is_refused_before_it_starts() -> None:
    with pytest.raises(DvvUnavailable, match="first 24 windows"):
        check_reference(Settings(), windows=6)
    check_reference(Settings(dvv=PARAMS), windows=3)


def test_distances_come_from_the_stations_group(world: World) -> None:
    d = pair_distances(world.root)
    assert set(d) == {f"{a}__{b}" for a, b in pairs_of(STATIONS)}
    assert d["XX.A..HHZ__XX.B..HHZ"] == pytest.approx(distance_km(45.0, 7.0, 45.05, 7.03))
    assert distance_km(0, 0, 0, 1) == pytest.approx(111.19, abs=0.01)
    assert complete_windows(world.root) == []


def test_the_gauges_show_the_latest_window_and_a_late_one_only_moves_the_latency() -> None:
    from datetime import UTC, datetime, timedelta

    from prometheus_client import REGISTRY

    from consumers.monitor import DvvGauges
    from dsp.dvv import NetworkPoint

    def point(window: str, dvv: float, method: str = "stretching") -> NetworkPoint:
        return NetworkPoint(window, dvv, 0.01, 6, method, "both", "ref")

    def gauge(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    gauges = DvvGauges()
    arrived = (datetime.now(UTC) - timedelta(seconds=2)).isoformat()
    latency = gauges.show(WINDOWS[3], [point(WINDOWS[3], -0.3), point(WINDOWS[3], -0.28, "mwcs")], arrived)
    assert latency is not None and 2 <= latency < 10
    assert gauge("xcorrflow_dvv_network_percent", method="stretching") == -0.3
    assert gauge("xcorrflow_dvv_network_percent", method="mwcs") == -0.28
    assert gauge("xcorrflow_dvv_latency_last_seconds") == pytest.approx(latency)
    gauges.show(WINDOWS[1], [point(WINDOWS[1], 0.0)], "")  # late: measured, but not the latest value
    assert gauge("xcorrflow_dvv_network_percent", method="stretching") == -0.3
    failed = NetworkPoint(WINDOWS[4], float("nan"), float("nan"), 0, "stretching", "both", "ref", "no_pairs: none")
    gauges.show(WINDOWS[4], [failed], "")  # a window without a value leaves the last value shown
    assert gauge("xcorrflow_dvv_network_percent", method="stretching") == -0.3
    assert gauge("xcorrflow_dvv_window_start_seconds") == pytest.approx(1704081600.0)


def test_measuring_a_window_again_writes_the_same_table(world: World) -> None:
    """What a monitor restarted after a crash does (its offset was not stored): the same rows, not two sets."""
    for w in WINDOWS[:5]:
        world.close(w)
    params = PARAMS.model_copy(update={"reference": ReferenceSpec(first_k=4)})  # a stack of unequal CCFs
    world.work(params).measure(WINDOWS[4])
    before = read_pairs(world.root)
    again = world.work(params)  # a new process: the reference comes back from the pointer and the stored stack
    again.measure(WINDOWS[4])
    pd.testing.assert_frame_equal(read_pairs(world.root), before, check_exact=True)
    assert len(DvvStore(world.root).series()) == 1


def test_a_range_reference_waits_for_its_windows_or_for_time_to_move_past_it(world: World) -> None:
    spec = ReferenceSpec(kind="range", start=WINDOWS[1], end=WINDOWS[3])
    work = world.work(PARAMS.model_copy(update={"reference": spec}))
    world.close(WINDOWS[1])
    world.close(WINDOWS[2])
    assert work.reference() is None, "hour 3 of the range may still come"
    world.close(WINDOWS[5])  # data after the range: hour 3 never came, the range is what exists of it
    elected = work.reference()
    assert elected is not None and elected.windows == (WINDOWS[1], WINDOWS[2])
    assert elected.reference.startswith(f"range{WINDOWS[1]}..{WINDOWS[3]}:")
    whole = world.work(PARAMS.model_copy(update={"reference": ReferenceSpec(kind="range", start=WINDOWS[0],
                                                                            end=WINDOWS[1])}))  # fmt: skip
    world.windows.ensure(WINDOWS[0], CHUNK_PAIRS)  # hour 0 exists and is not complete yet: it is waited for
    assert whole.reference() is None
    world.close(WINDOWS[0])
    assert whole.reference() is not None and whole.elected and whole.elected.windows == tuple(WINDOWS[:2])


def test_a_pair_without_a_position_says_so_and_is_measured_once_the_position_is_known(world: World) -> None:
    stations = world.root["stations"]
    stations["latitude"][3] = np.nan  # XX.D..HHZ: position unknown
    for w in WINDOWS[:4]:
        world.close(w)
    work = world.work(PARAMS.model_copy(update={"start_velocity_km_s": 3.0}))  # the coda starts at d / v
    work.measure(WINDOWS[3])
    table = read_pairs(world.root)
    d_pairs = table[table.pair.str.contains("XX.D")]
    assert len(d_pairs) == 3 * 6 and d_pairs.reason.str.startswith("no_distance").all()
    assert (table[~table.pair.str.contains("XX.D")].reason == "").all()
    stations["latitude"][3] = POSITIONS["XX.D..HHZ"].latitude
    world.close(WINDOWS[4])
    work.measure(WINDOWS[4])
    table = read_pairs(world.root)
    assert (table[table.window == WINDOWS[4]].reason == "").all()
