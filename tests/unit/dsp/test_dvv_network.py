"""The pair table and the network series: bad inputs become reasons, late windows take their place in time,
references never mix, and the weighted median with its uncertainty."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.correlate import CcfBatch
from dsp.dvv import (
    METHODS,
    SIDES,
    DvvMeasurement,
    DvvParams,
    ReferenceSpec,
    build_reference,
    ccfs_by_window,
    detect_change,
    measure_run,
    network_point,
    network_series,
    prepare_pair,
    reference_id,
    select_reference,
    weighted_median,
)
from dsp.dvv.model import ROW_FIELDS
from dsp.errors import DspError
from dsp.windows import window_id
from tests.unit.dsp.test_dvv_methods import FS, ccf_of, wavelets

T0 = 1_700_000_000 - 1_700_000_000 % 3600
WINDOWS = [window_id(T0 + 3600 * h) for h in range(8)]
PAIRS = ["XX.A..Z__XX.B..Z", "XX.A..Z__XX.C..Z", "XX.B..Z__XX.C..Z"]
TRUTH = dict(zip(WINDOWS, [0.0, 0.0, 0.0, 0.0, -0.3, -0.3, -0.2, -0.1], strict=True))
PARAMS = DvvParams(
    start_velocity_km_s=3.0,
    min_lag_s=5.0,
    end_lag_s=80.0,
    mwcs_window_s=20.0,
    mwcs_step_s=10.0,
    reference=ReferenceSpec(first_k=4),
)
DISTANCES = {PAIRS[0]: 10.0, PAIRS[1]: 20.0, PAIRS[2]: 15.0}


@functools.cache
def _world() -> tuple[tuple[str, tuple[tuple[str, np.ndarray], ...]], ...]:
    arrivals = {p: wavelets(i) for i, p in enumerate(PAIRS)}
    return tuple((w, tuple((p, ccf_of(arrivals[p], TRUTH[w])) for p in PAIRS)) for w in WINDOWS)


def world() -> dict[str, dict[str, np.ndarray]]:
    """Every pair's exactly stretched CCF in every window, dv/v as in ``TRUTH`` (fresh dicts, shared arrays)."""
    return {w: dict(by_pair) for w, by_pair in _world()}


def rows_of(run_rows: tuple[DvvMeasurement, ...], **match: str) -> list[DvvMeasurement]:
    return [m for m in run_rows if all(getattr(m, k) == v for k, v in match.items())]


def test_run_recovers_the_schedule_in_time_order_whatever_the_arrival_order() -> None:
    ccfs = world()
    shuffled = list(ccfs.items())
    random.Random(4).shuffle(shuffled)  # late windows: the fifth arrives first, and so on
    run = measure_run(dict(shuffled), DISTANCES, FS, PARAMS)
    for method in METHODS:
        series = run.series(method, "both")
        assert [p.window for p in series] == WINDOWS
        for point in series:
            assert point.ok and point.n_pairs == 3 and point.reference == run.reference
            assert point.dvv_percent == pytest.approx(TRUTH[point.window], abs=0.01), (method, point)
    assert [(m.window, m.pair) for m in run.pairs] == sorted((m.window, m.pair) for m in run.pairs)
    assert len(run.pairs) == len(WINDOWS) * len(PAIRS) * len(METHODS) * len(SIDES)
    assert run.reference.startswith(f"first4:{WINDOWS[0]}..{WINDOWS[3]}/4#")
    assert measure_run(ccfs, DISTANCES, FS, PARAMS) == run  # same answer as the in-order run


def test_rows_are_flat_table_rows() -> None:
    run = measure_run({w: c for w, c in list(world().items())[:5]}, DISTANCES, FS, PARAMS)
    row = run.pairs[0].row()
    assert tuple(row) == ROW_FIELDS and row["reason"] == ""
    assert {"window", "pair", "method", "side", "dvv_percent", "err_percent", "cc", "reference"} <= set(row)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (lambda c: np.zeros_like(c), "zero_ccf"),
        (lambda c: np.where(np.arange(c.size) == 100, np.nan, c), "nonfinite_ccf"),
        (lambda c: c[:-2], "shape_mismatch"),
    ],
)
def test_a_bad_ccf_gives_rows_with_a_reason_and_spares_the_others(
    bad: Callable[[np.ndarray], np.ndarray], code: str
) -> None:
    ccfs = world()
    late = WINDOWS[5]
    ccfs[late][PAIRS[1]] = bad(ccfs[late][PAIRS[1]])
    run = measure_run(ccfs, DISTANCES, FS, PARAMS)
    broken = rows_of(run.pairs, window=late, pair=PAIRS[1])
    assert len(broken) == len(METHODS) * len(SIDES)
    for m in broken:
        assert not m.ok and m.reason.startswith(code) and math.isnan(m.dvv_percent)  # no silent zero
    point = next(p for p in run.series() if p.window == late)
    assert point.ok and point.n_pairs == 2 and point.dvv_percent == pytest.approx(TRUTH[late], abs=0.01)


def test_a_pair_without_reference_and_a_window_outside_the_lags_are_reasons() -> None:
    ccfs = world()
    for w in WINDOWS[:4]:
        del ccfs[w][PAIRS[2]]  # this pair appears only after the reference windows
    far = DISTANCES | {PAIRS[0]: 400.0}  # starts at 400 km / 3 km/s = 133 s: after the fixed end
    run = measure_run(ccfs, far, FS, PARAMS)
    assert {m.reason.split(":")[0] for m in rows_of(run.pairs, pair=PAIRS[2])} == {"no_reference"}
    assert {m.reason.split(":")[0] for m in rows_of(run.pairs, pair=PAIRS[0])} == {"too_few_points"}
    outside = measure_run(ccfs, DISTANCES, FS, PARAMS.model_copy(update={"end_lag_s": 99.5}))
    assert {m.reason.split(":")[0] for m in outside.pairs} == {"window_outside_lags", "no_reference"}
    assert all(not p.ok and p.reason.startswith("no_pairs") for p in outside.series())


def test_no_distance_for_a_distance_dependent_window_is_a_reason() -> None:
    monitor = prepare_pair(PAIRS[0], None, None, FS, 4001, PARAMS, "ref-x")
    assert monitor.problem is not None and monitor.problem.startswith("no_reference")
    reference = build_reference({WINDOWS[0]: world()[WINDOWS[0]][PAIRS[0]]}, WINDOWS[:1], "ref-x")
    monitor = prepare_pair(PAIRS[0], reference, None, FS, 4001, PARAMS, "ref-x")
    rows = monitor.measure(WINDOWS[1], world()[WINDOWS[1]][PAIRS[0]])
    assert rows and all(m.reason and m.reason.startswith("no_distance") for m in rows)


def test_reference_skips_broken_windows_and_is_versioned_by_its_windows() -> None:
    ccfs = {w: world()[w][PAIRS[0]] for w in WINDOWS[:4]}
    ccfs[WINDOWS[1]] = np.full_like(ccfs[WINDOWS[1]], np.nan)
    ref = build_reference(ccfs, WINDOWS[:4], "r")
    assert ref is not None and ref.windows == (WINDOWS[0], WINDOWS[2], WINDOWS[3])
    np.testing.assert_allclose(ref.ccf, np.mean([ccfs[w] for w in ref.windows], axis=0))
    assert build_reference(ccfs, WINDOWS[4:], "r") is None
    spec = ReferenceSpec(first_k=3)
    assert select_reference(spec, reversed(WINDOWS)) == tuple(WINDOWS[:3])
    assert reference_id(spec, WINDOWS[:3]) != reference_id(spec, [WINDOWS[0], WINDOWS[2], WINDOWS[3]])
    ranged = ReferenceSpec(kind="range", start=WINDOWS[2], end=WINDOWS[4])
    assert select_reference(ranged, WINDOWS) == tuple(WINDOWS[2:5])
    with pytest.raises(ValueError):
        ReferenceSpec(kind="range", start=WINDOWS[4], end=WINDOWS[2])


def measurement(dvv: float, err: float, ref: str = "r", window: str = WINDOWS[0]) -> DvvMeasurement:
    return DvvMeasurement(window, f"p{dvv}{err}", "stretching", "both", dvv, err, 0.9, 100, ref)


def test_network_point_is_robust_and_never_mixes_references() -> None:
    good = [measurement(-0.5 + 0.01 * k, 0.05) for k in range(-3, 4)]
    point = network_point([*good, measurement(3.0, 0.05)], WINDOWS[0])  # one wild pair
    assert point.dvv_percent == pytest.approx(-0.5, abs=0.011) and point.n_pairs == 8
    single = network_point([measurement(0.2, 0.07)], WINDOWS[0])
    assert (single.dvv_percent, single.err_percent) == (0.2, pytest.approx(0.07))  # its own error, not zero
    mixed = network_point([measurement(0.1, 0.05, "a"), measurement(0.1, 0.05, "b")], WINDOWS[0])
    assert not mixed.ok and mixed.reason.startswith("mixed_references") and math.isnan(mixed.dvv_percent)
    failed = DvvMeasurement(WINDOWS[0], "p", "stretching", "both", math.nan, math.nan, math.nan, 0, "r", "zero_ccf")
    empty = network_point([failed], WINDOWS[0])
    assert not empty.ok and empty.reason.startswith("no_pairs") and empty.n_pairs == 0


def test_network_error_shrinks_with_the_number_of_agreeing_pairs() -> None:
    rng = np.random.default_rng(2)
    errs = []
    for n in (4, 16, 64):
        rows = [measurement(float(v), 0.05) for v in rng.normal(-0.3, 0.05, n)]
        errs.append(network_point(rows, WINDOWS[0]).err_percent)
    assert errs[0] > errs[1] > errs[2] >= 0.05 / math.sqrt(64) - 1e-12


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(0.1, 10)), min_size=1, max_size=30), st.floats(0.1, 100))
def test_weighted_median_properties(pairs: list[tuple[float, float]], scale: float) -> None:
    values, weights = zip(*pairs, strict=True)
    m = weighted_median(values, weights)
    assert min(values) <= m <= max(values)
    assert weighted_median(values, [w * scale for w in weights]) == pytest.approx(m)
    order = list(range(len(values)))
    random.Random(len(values)).shuffle(order)
    assert weighted_median([values[i] for i in order], [weights[i] for i in order]) == pytest.approx(m)
    below = sum(w for v, w in pairs if v < m)
    assert below <= sum(weights) / 2 + 1e-9  # at most half the weight lies below the median
    if len(values) % 2 == 1:
        assert weighted_median(values, [1.0] * len(values)) == pytest.approx(float(np.median(values)))


def test_weighted_median_rejects_bad_weights() -> None:
    with pytest.raises(ValueError):
        weighted_median([], [])
    with pytest.raises(ValueError):
        weighted_median([1.0], [0.0])


def test_detect_change_finds_the_first_departure_after_the_baseline() -> None:
    rows = [measurement(TRUTH[w] + 0.001 * k, 0.02, window=w) for w in WINDOWS for k in range(-2, 3)]
    series = network_series(list(reversed(rows)))
    assert [p.window for p in series] == WINDOWS
    assert detect_change(series, WINDOWS[:4]) == WINDOWS[4]
    assert detect_change(series[:4], WINDOWS[:4]) is None
    assert detect_change(series, []) is None


def test_ccfs_by_window_merges_batches_of_a_window_and_refuses_mixed_rates() -> None:
    ccf = np.zeros((1, 5), dtype=np.float32)
    a = CcfBatch(WINDOWS[1], FS, 2, (("XX.A..Z", "XX.B..Z"),), ccf, np.ones(1, dtype=np.int64))
    b = CcfBatch(WINDOWS[1], FS, 2, (("XX.A..Z", "XX.C..Z"),), ccf + 1, np.ones(1, dtype=np.int64))
    c = CcfBatch(WINDOWS[0], FS, 2, (("XX.A..Z", "XX.B..Z"),), ccf + 2, np.ones(1, dtype=np.int64))
    by_window, fs = ccfs_by_window([a, c, b])
    assert fs == FS and sorted(by_window) == WINDOWS[:2]
    assert sorted(by_window[WINDOWS[1]]) == [PAIRS[0], PAIRS[1]] and by_window[WINDOWS[0]][PAIRS[0]][0] == 2
    assert ccfs_by_window([]) == ({}, 0.0)
    with pytest.raises(DspError):
        ccfs_by_window([a, CcfBatch(WINDOWS[2], 2 * FS, 2, a.pairs, ccf, a.n_common)])
