"""Issue 14's targets on the synthetic world, measured through the real DSP chain in-process.

24 stations x 24 h of the diffuse field (``xcorrflow synth --field diffuse``) with a -0.5 % velocity step at
hour 12 go through ``run_inprocess`` with the default processing (preprocessing, whitening, correlation);
the per-window CCFs it writes are measured by :func:`dsp.dvv.measure_run` against the stack of the 12 windows
before the step, on coda windows that start after the direct wave (distance / 0.8 v) and end at 80 s.
Every expectation comes from the synth's ``truth.json``. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage, signal

from consumers.dvvwork import complete_windows, window_ccfs
from contracts.settings import Settings
from dsp.dvv import DvvParams, DvvRun, NetworkPoint, ReferenceSpec, detect_change, measure_run
from dsp.synthetic.diffuse import DvvChange
from dsp.synthetic.stations import SynthConfig, synthesise
from results.zarrio import open_root
from xcorrflow.orchestration.inprocess import run_inprocess

HEAVY_ENV = "XCORRFLOW_HEAVY_TESTS"
# 24 stations x 24 h costs 1.5-4 minutes of synth and DSP: opt-in, so that `make test` stays within its budget
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get(HEAVY_ENV), reason=f"issue 14's 24 x 24 h world: set {HEAVY_ENV}=1"),
]

STATIONS, HOURS, STEP_HOUR, STEP_PERCENT = 24, 24, 12, -0.5
TOLERANCE_PERCENT = 0.05  # issue 14: every window's network dv/v within +-0.05 % of the truth


@dataclass(frozen=True)
class World:
    truth: dict[str, Any]
    run: DvvRun
    ccfs: dict[str, dict[str, np.ndarray]]
    fs: float
    expected: dict[str, float]
    reference: tuple[str, ...]
    timings: dict[str, float]


def load_ccfs(out: Path) -> tuple[dict[str, dict[str, np.ndarray]], float]:
    """The run's per-window CCFs (``results.zarr/windows``) as ``{window: {pair: ccf}}`` and their rate."""
    root = open_root(out / "results.zarr", read_only=True)
    return {w: window_ccfs(root, w) for w in complete_windows(root)}, Settings().processing.target_fs


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("dvv_world")
    t0 = time.perf_counter()
    step = DvvChange.parse("step", f"{STEP_HOUR}:{STEP_PERCENT}")
    cfg = SynthConfig(stations=STATIONS, hours=HOURS, rates=(20,), seed=14, wavefield="diffuse", dvv=(step,))
    truth = synthesise(cfg, root / "data")
    t1 = time.perf_counter()
    run_inprocess(root / "data", root / "run", Settings())
    t2 = time.perf_counter()
    ccfs, fs = load_ccfs(root / "run")
    distances = {key: pair["distance_km"] for key, pair in truth["pairs"].items()}
    params = DvvParams(
        start_velocity_km_s=0.8 * truth["medium"]["velocity_km_s"],  # the coda after the direct wave
        min_lag_s=5.0,
        end_lag_s=80.0,
        mwcs_window_s=30.0,
        mwcs_step_s=10.0,
        reference=ReferenceSpec(first_k=STEP_HOUR),
    )
    run = measure_run(ccfs, distances, fs, params)
    t3 = time.perf_counter()
    windows = sorted(truth["dvv"])
    reference = tuple(windows[:STEP_HOUR])
    level = float(np.mean([truth["dvv"][w] for w in reference]))  # dv/v is measured against the reference
    expected = {w: truth["dvv"][w] - level for w in windows}
    timings = {"synth_s": t1 - t0, "dsp_s": t2 - t1, "dvv_s": t3 - t2}
    return World(truth, run, ccfs, fs, expected, reference, timings)


def errors_vs_truth(world: World, method: str) -> dict[str, float]:
    return {p.window: p.dvv_percent - world.expected[p.window] for p in world.run.series(method, "both")}


def test_every_window_within_the_target_of_the_truth(world: World) -> None:
    print(f"\ntimings: { {k: round(v, 1) for k, v in world.timings.items()} }")
    for method in ("stretching", "mwcs"):
        series = world.run.series(method, "both")
        assert [p.window for p in series] == sorted(world.expected)
        errors = errors_vs_truth(world, method)
        worst = max(errors, key=lambda w: abs(errors[w]))
        print(f"{method}: max |dv/v - truth| = {abs(errors[worst]):.4f} % at {worst}")
        for p in series:
            truth = world.expected[p.window]
            print(f"  {p.window} {p.dvv_percent:+.4f} +- {p.err_percent:.4f} % (truth {truth:+.2f}) n={p.n_pairs}")
        for p in series:
            assert p.ok and p.n_pairs >= 0.75 * STATIONS * (STATIONS - 1) / 2, p
            assert abs(errors[p.window]) <= TOLERANCE_PERCENT, (method, p)


def first_change(world: World) -> str:
    """The first window whose true dv/v differs from the reference level."""
    return next(w for w in sorted(world.expected) if w not in world.reference and abs(world.expected[w]) > 0)


def test_step_is_detected_in_the_first_window_after_it(world: World) -> None:
    for method in ("stretching", "mwcs"):
        assert detect_change(world.run.series(method, "both"), world.reference) == first_change(world), method


def step_of(series: tuple[NetworkPoint, ...], before: set[str], after: set[str]) -> tuple[float, float]:
    """The step (mean after - mean before) and its error. The windows share one reference, so their errors
    are not independent: each mean keeps the rms of its windows' errors instead of dividing it by sqrt(n)."""
    pre = [p for p in series if p.window in before]
    post = [p for p in series if p.window in after]
    size = np.mean([p.dvv_percent for p in post]) - np.mean([p.dvv_percent for p in pre])
    err = np.hypot(
        np.sqrt(np.mean([p.err_percent**2 for p in post])), np.sqrt(np.mean([p.err_percent**2 for p in pre]))
    )
    return float(size), float(err)


def test_stretching_and_mwcs_agree_within_their_errors_on_the_step(world: World) -> None:
    """The step (mean after - mean before) agrees within 2 sigma; so does the first window after it."""
    before = set(world.reference)
    after = {w for w, v in world.expected.items() if w >= first_change(world)}
    s, s_err = step_of(world.run.series("stretching", "both"), before, after)
    m, m_err = step_of(world.run.series("mwcs", "both"), before, after)
    print(f"\nstep: stretching {s:+.4f} +- {s_err:.4f} %, MWCS {m:+.4f} +- {m_err:.4f} % (truth {STEP_PERCENT:+.2f})")
    assert abs(s - m) <= 2 * np.hypot(s_err, m_err)
    first = first_change(world)
    ps, pm = (next(p for p in world.run.series(k, "both") if p.window == first) for k in ("stretching", "mwcs"))
    assert abs(ps.dvv_percent - pm.dvv_percent) <= 2 * np.hypot(ps.err_percent, pm.err_percent)


def test_record_section_is_symmetric_with_arrivals_at_distance_over_velocity(world: World) -> None:
    """The stack of the windows before the step, as a record section: summing every pair's envelope at lags
    +-d/v' peaks at the medium's velocity (the V), the direct arrivals stand out on both sides, and the
    envelopes of the two sides look alike (the sources surround the array)."""
    pairs = sorted(world.truth["pairs"])
    stack = np.array([np.mean([world.ccfs[w][k] for w in world.reference], axis=0) for k in pairs])
    envelope = np.abs(signal.hilbert(stack, axis=1))
    centre, rows = stack.shape[1] // 2, np.arange(len(pairs))
    distance = np.array([world.truth["pairs"][k]["distance_km"] for k in pairs])
    velocity = world.truth["medium"]["velocity_km_s"]

    def at(v: float, side: int) -> np.ndarray:  # each pair's envelope at lag side * d / v
        return envelope[rows, centre + side * np.rint(distance / v * world.fs).astype(int)]

    trials = velocity * np.linspace(0.7, 1.3, 121)
    best = trials[
        int(np.argmax([(at(v, -1) / envelope.max(axis=1) + at(v, 1) / envelope.max(axis=1)).sum() for v in trials]))
    ]
    background = np.median(envelope[:, centre - int(100 * world.fs) : centre + int(100 * world.fs)], axis=1)
    direct = {side: np.median(at(velocity, side) / background) for side in (-1, 1)}
    n = int(80 * world.fs)
    smooth = lambda x: ndimage.uniform_filter1d(x, int(2 * world.fs), axis=1)  # noqa: E731
    causal, acausal = smooth(envelope[:, centre + 1 : centre + 1 + n]), smooth(envelope[:, centre - 1 :: -1][:, :n])
    symmetry = np.median([np.corrcoef(c, a)[0, 1] for c, a in zip(causal, acausal, strict=True)])
    print(f"\nrecord section: beam at {best:.3f} km/s (medium {velocity}), symmetry {symmetry:.2f}")
    print(f"direct arrival / background envelope, acausal and causal: {direct[-1]:.1f}, {direct[1]:.1f}")
    assert best == pytest.approx(velocity, rel=0.02)
    assert min(direct.values()) > 5
    assert symmetry > 0.7
