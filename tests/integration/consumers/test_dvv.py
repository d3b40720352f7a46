"""``xcorrflow run --dvv`` on the real stack: a small diffuse world with a velocity step, checked against its truth.

8 stations x 5 h of ``xcorrflow synth --field diffuse --dvv-step 3:-0.5`` go through a streaming run with the
monitor worker; the reference is the first 3 windows (hours 0-2, before the step). Then:

- ``dvv_network.csv`` has one row per window in time order, every pair measured, and ``dvv_pairs.csv`` one
  row per window, pair and method (issue 14's contract);
- every window's network dv/v is within issue 14's +-0.05 % of the truth. The issue sets it for 24 stations
  (276 pairs); this world of 28 pairs (seed 14) meets it too, 0.011 % at most when written. A world of 6
  stations (15 pairs, seed 3) was seen 0.2 % off in single windows after the step: a weighted median of few
  pairs scatters more, so a smaller world would need a wider tolerance;
- the step is detected (3 sigma from the reference level) in the first window after it, by both methods;
- an inprocess run of the same folder gives the same table to 1e-6 %: both modes measure with the same code
  on the same CCFs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from contracts.settings import Settings
from dsp.dvv import NetworkPoint, detect_change
from dsp.synthetic.diffuse import DvvChange
from dsp.synthetic.stations import SynthConfig, synthesise
from xcorrflow.cli import main

STATIONS, HOURS, STEP_HOUR, STEP = 8, 5, 3, -0.5
DVV_ENV = {
    "XCORRFLOW_DVV__REFERENCE__FIRST_K": str(STEP_HOUR),
    "XCORRFLOW_DVV__START_VELOCITY_KM_S": "2.4",  # 0.8 x the medium's 3 km/s: the coda after the direct wave
    "XCORRFLOW_DVV__END_LAG_S": "80",
    "XCORRFLOW_DVV__MWCS_WINDOW_S": "30",
}
TOLERANCE_PERCENT = 0.05  # issue 14


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("dvv") / "data"
    step = DvvChange.parse("step", f"{STEP_HOUR}:{STEP}")
    synthesise(SynthConfig(stations=STATIONS, hours=HOURS, rates=(20,), seed=14, wavefield="diffuse", dvv=(step,)),
               data)  # fmt: skip
    return data


def _run(data: Path, out: Path, *mode: str) -> None:
    with pytest.MonkeyPatch.context() as env:
        for name, value in DVV_ENV.items():
            env.setenv(name, value)
        assert main(["run", "--dvv", "--input", str(data), "--output", str(out), *mode]) == 0


def test_streaming_dvv_follows_the_truth_and_matches_inprocess(stack: Settings, world: Path, tmp_path: Path) -> None:
    _run(world, tmp_path / "stream", "--timeout", "600", "--cleanup")
    _run(world, tmp_path / "inprocess", "--mode", "inprocess")
    truth = json.loads((world / "truth.json").read_text())["dvv"]
    windows = sorted(truth)
    reference = windows[:STEP_HOUR]
    level = sum(truth[w] for w in reference) / len(reference)  # dv/v is measured against the reference
    network = pd.read_csv(tmp_path / "stream" / "dvv_network.csv", keep_default_na=False)
    assert list(network.columns) == ["window", "dvv_percent", "err_percent", "n_pairs"]
    assert list(network.window) == windows and (network.n_pairs == STATIONS * (STATIONS - 1) // 2).all()
    pairs = pd.read_csv(tmp_path / "stream" / "dvv_pairs.csv", keep_default_na=False)
    assert list(pairs.columns) == ["window", "dvv_percent", "err_percent", "n_pairs", "pair", "method", "cc"]
    assert len(pairs) == len(windows) * 28 * 2 and list(pairs.window.unique()) == windows
    for row in network.itertuples():
        error = row.dvv_percent - (truth[row.window] - level)
        print(f"{row.window} {row.dvv_percent:+.4f} +- {row.err_percent:.4f} % truth {truth[row.window] - level:+.3f}")
        assert abs(error) <= TOLERANCE_PERCENT, row
    report = json.loads((tmp_path / "stream" / "report.json").read_text())
    assert report["outputs"]["dvv"]["missing"] == [] and report["outputs"]["dvv"]["reference"].startswith("first3:")
    from results.dvv import read_network
    from results.zarrio import open_root

    table = read_network(open_root(tmp_path / "stream" / "results.zarr", read_only=True))
    for method in ("stretching", "mwcs"):
        both = table[(table.method == method) & (table.side == "both")]
        series = tuple(NetworkPoint(r.window, r.dvv_percent, r.err_percent, r.n_pairs, method, "both", r.reference)
                       for r in both.itertuples())  # fmt: skip
        assert detect_change(series, reference) == windows[STEP_HOUR], method
    inprocess = pd.read_csv(tmp_path / "inprocess" / "dvv_network.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(inprocess, network, atol=1e-6)
