"""The synthetic deployment: deterministic, self-consistent truth, rates, gaps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import obspy
import pytest

from contracts.errors import ConfigError
from dsp.synthetic.stations import GapSpec, SynthConfig, synthesise
from xcorrflow.cli import main


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert main(["synth", str(tmp_path / name), "--stations", "3", "--hours", "1", "--seed", str(seed)]) == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_truth_is_consistent(truth: dict) -> None:
    stations = truth["stations"]
    assert [s["fs"] for _, s in sorted(stations.items())] == [50, 100, 200, 50, 100, 200]
    for key, pair in truth["pairs"].items():
        a, b = key.split("__")
        assert a < b
        lag = stations[b]["arrival_s"] - stations[a]["arrival_s"]
        assert pair["lag_s"] == pytest.approx(lag) and pair["lag_samples"] == round(lag * truth["target_fs"])
        assert pair["lag_samples"] / truth["target_fs"] == pytest.approx(pair["lag_s"], abs=1e-9)


def test_files_rates_and_gap(synth_dir: Path, truth: dict) -> None:
    files = sorted(synth_dir.glob("*.mseed"))
    assert len(files) == 6
    gap_station = obspy.read(str(synth_dir / "XF.S002.00.HHZ__20240101T000000Z.mseed"))
    assert len(gap_station) == 2 and gap_station[0].stats.sampling_rate == 200
    assert gap_station[1].stats.starttime - gap_station[0].stats.endtime == pytest.approx(500 + 1 / 200)
    ids = {obspy.read(str(f), headonly=True)[0].id for f in files}
    assert ids == set(truth["stations"])


def test_common_field_is_delayed_as_claimed(tmp_path: Path) -> None:
    truth = synthesise(SynthConfig(stations=2, hours=1, rates=(20,), local_noise=0.0, seed=4), tmp_path)
    a, b = sorted(truth["stations"])
    xa = obspy.read(str(tmp_path / f"{a}__20240101T000000Z.mseed"))[0].data.astype(float)
    xb = obspy.read(str(tmp_path / f"{b}__20240101T000000Z.mseed"))[0].data.astype(float)
    lag = truth["pairs"][f"{a}__{b}"]["lag_samples"]  # xb(t) = xa(t - lag)
    if lag >= 0:
        np.testing.assert_allclose(xb[lag + 100 : 5000], xa[100 : 5000 - lag], atol=1.0)
    else:
        np.testing.assert_allclose(xa[-lag + 100 : 5000], xb[100 : 5000 + lag], atol=1.0)


def test_whole_hour_gap_leaves_no_file(tmp_path: Path) -> None:
    synthesise(SynthConfig(stations=2, hours=2, gaps=(GapSpec("1", 3600, 3600),)), tmp_path)
    assert len(list(tmp_path.glob("*.mseed"))) == 3


@pytest.mark.parametrize("text", ["S1", "S1:x:3", "S1:10:-2", "S1:1:2:3"])
def test_bad_gap_specs(text: str) -> None:
    with pytest.raises(ConfigError):
        GapSpec.parse(text)


def test_truth_json_is_written(synth_dir: Path) -> None:
    assert json.loads((synth_dir / "truth.json").read_text())["generator"] == "xcorrflow synth"
