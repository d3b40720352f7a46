"""``xcorrflow run --mode inprocess`` end to end on a folder a new user might bring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import obspy
import pytest
import xarray as xr

from xcorrflow.cli import main

REFERENCE_ENV = {
    "XCORRFLOW_PROCESSING__CC_LEN_S": "600",
    "XCORRFLOW_PROCESSING__STEP_S": "300",
    "XCORRFLOW_PROCESSING__MAXLAG_S": "100",
}


@pytest.fixture()
def reference_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in REFERENCE_ENV.items():
        monkeypatch.setenv(k, v)


def test_folder_with_mixed_rates_gap_and_junk(
    synth_dir: Path, truth: dict, tmp_path: Path, reference_env: None
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(synth_dir, inp)
    (inp / "README.txt").write_text("not seismic data")
    (inp / "broken.mseed").write_bytes((inp / "XF.S001.00.HHZ__20240101T000000Z.mseed").read_bytes()[:5000])

    assert main(["run", "--mode", "inprocess", "--input", str(inp), "--output", str(out), "--format", "both"]) == 0

    report = json.loads((out / "report.json").read_text())
    for key in ("mode", "stations", "windows", "pairs", "first_result_s", "makespan_s", "dead_letters"):
        assert key in report
    assert (report["mode"], report["stations"], report["windows"], report["pairs"]) == ("inprocess", 6, 1, 15)
    assert 0 < report["first_result_s"] <= report["makespan_s"]
    assert {Path(d["source"]).name for d in report["dead_letters"]} == {"README.txt", "broken.mseed"}
    assert report["config"]["processing"]["cc_len_s"] == 600 and report["config"]["s3_secret_key"] == "**********"
    for key, pair in truth["pairs"].items():
        tr = obspy.read(str(out / f"{key}.sac"))[0]
        sac = tr.stats.sac
        assert sac.b == pytest.approx(-100.0) and tr.stats.delta == pytest.approx(0.05) and tr.stats.npts == 4001
        assert int(np.argmax(tr.data)) - 2000 == pair["lag_samples"], key
        assert sac.e == pytest.approx(100.0) and sac.depmax == pytest.approx(float(tr.data.max()))
        assert sac.user0 == 1 and sac.dist > 0
        a, b = key.split("__")
        assert sac.evla == pytest.approx(truth["stations"][a]["latitude"], abs=1e-5)
        assert sac.stla == pytest.approx(truth["stations"][b]["latitude"], abs=1e-5)
        assert sac.kevnm == a and sac.kstnm == b.split(".")[1]
    ccfs = xr.open_zarr(out / "results.zarr", group="windows/20240101T000000Z", consolidated=False)
    held = {str(p) for p in ccfs.pair.values if p}
    assert held == set(truth["pairs"]), "the window's CCFs are kept, each slot labelled with its pair"


@pytest.mark.parametrize("mode", ["streaming", "cnf", "barrier"])
def test_pipeline_modes_say_they_need_the_stack(
    mode: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XCORRFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("XCORRFLOW_S3_ENDPOINT", "127.0.0.1:9")
    assert main(["run", "--mode", mode, "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "kafka" in err and "make up" in err


def test_phase_weighted_stack_mode(
    synth_dir: Path, truth: dict, tmp_path: Path, reference_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XCORRFLOW_PROCESSING__STACK", "pws")
    out = tmp_path / "out"
    args = ["run", "--mode", "inprocess", "--input", str(synth_dir), "--output", str(out), "--no-ccfs", "--format"]
    assert main([*args, "both"]) == 0
    assert not (out / "results.zarr" / "windows").exists()
    for key, pair in list(truth["pairs"].items())[:5]:
        tr = obspy.read(str(out / f"{key}.sac"))[0]
        assert tr.stats.sac.kinst == "pws" and int(np.argmax(tr.data)) - 2000 == pair["lag_samples"]


def test_raw_files_are_decoded_once_and_not_held_through_correlation(
    synth_dir: Path, tmp_path: Path, reference_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xcorrflow.orchestration import inprocess

    decoded: list[str] = []
    held_at_correlation: list[int] = []
    load, correlate = inprocess.load_stream, inprocess._correlate

    def counting_load(items):  # type: ignore[no-untyped-def]
        items = list(items)
        decoded.extend(i.source for i in items)
        return load(items)

    def watching_correlate(window, products, windows, cache, settings, state, *rest):  # type: ignore[no-untyped-def]
        held_at_correlation.append(len(state.cache))
        return correlate(window, products, windows, cache, settings, state, *rest)

    monkeypatch.setattr(inprocess, "load_stream", counting_load)
    monkeypatch.setattr(inprocess, "_correlate", watching_correlate)
    out = tmp_path / "out"
    assert main(["run", "--mode", "inprocess", "--input", str(synth_dir), "--output", str(out)]) == 0

    assert len(decoded) == len(set(decoded)) == 6, decoded
    assert held_at_correlation == [0], "a window's raw samples are dropped once its products are made"
