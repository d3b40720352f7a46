"""The diffuse-field synthetic world: its dv/v schedule, its truth.json and CLI contract, and its physics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import obspy
import pytest

from contracts.errors import ConfigError
from dsp.synthetic.diffuse import DiffuseSpec, DvvChange, Medium, dvv_at, hour_spectra, to_time
from dsp.synthetic.stations import SynthConfig, synthesise
from xcorrflow.cli import main


def test_schedule_terms_add_up() -> None:
    step = DvvChange.parse("step", "12:-0.5")
    ramp = DvvChange.parse("ramp", "2:6:0.4")
    recovery = DvvChange.parse("recovery", "20:-1:2")
    schedule = (step, ramp, recovery)
    assert dvv_at(schedule, 1.0) == 0.0
    assert dvv_at(schedule, 4.0) == pytest.approx(0.2)  # half-way up the ramp
    assert dvv_at(schedule, 12.5) == pytest.approx(-0.5 + 0.4)
    assert dvv_at(schedule, 22.0) == pytest.approx(-0.5 + 0.4 - math.exp(-1))
    assert dvv_at((), 5.0) == 0.0


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("step", "12"),
        ("step", "a:b"),
        ("ramp", "6:2:0.4"),
        ("recovery", "3:-1:0"),
        ("recovery", "3:-1"),
        ("jump", "1:1"),
    ],
)
def test_bad_schedule_specs(kind: str, text: str) -> None:
    with pytest.raises(ConfigError):
        DvvChange.parse(kind, text)


def test_cli_writes_the_truth_of_every_window(tmp_path: Path) -> None:
    out = tmp_path / "world"
    argv = ["synth", str(out), "--field", "diffuse", "--stations", "3", "--hours", "3", "--rates", "20"]
    argv += ["--dvv-step", "1:-0.5", "--dvv-ramp", "1:3:0.2", "--dvv-recovery", "2:-1:0.5"]
    assert main(argv) == 0
    truth = json.loads((out / "truth.json").read_text())
    windows = sorted({f.name.split("__")[1].removesuffix(".mseed") for f in out.glob("*.mseed")})
    assert sorted(truth["dvv"]) == windows and len(windows) == 3
    # the velocity of a window is the schedule at its centre (hours 0.5, 1.5, 2.5)
    expected = [0.0, -0.5 + 0.2 * 0.25, -0.5 + 0.2 * 0.75 - math.exp(-1)]
    assert [truth["dvv"][w] for w in windows] == pytest.approx(expected)
    assert truth["field"] == "diffuse" and truth["medium"]["velocity_km_s"] > 0
    for key, pair in truth["pairs"].items():
        a, b = key.split("__")
        sa, sb = truth["stations"][a], truth["stations"][b]
        assert pair["distance_km"] == pytest.approx(math.hypot(sa["x_km"] - sb["x_km"], sa["y_km"] - sb["y_km"]))
        assert pair["arrival_s"] == pytest.approx(pair["distance_km"] / truth["medium"]["velocity_km_s"])
    assert obspy.read(str(next(out.glob("*.mseed"))))[0].stats.npts == 3600 * 20


def test_same_seed_same_world_and_plane_stays_the_default(tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        synthesise(SynthConfig(stations=2, hours=1, rates=(20,), wavefield="diffuse", seed=3), tmp_path / name)
        digests.append(sorted((f.name, f.read_bytes()) for f in (tmp_path / name).iterdir()))
    assert digests[0] == digests[1]
    assert "dvv" not in synthesise(SynthConfig(stations=2, hours=1), tmp_path / "plane")


def test_a_schedule_needs_the_diffuse_field() -> None:
    with pytest.raises(ConfigError):
        SynthConfig(stations=2, hours=1, dvv=(DvvChange("step", 0, 1.0),)).check()
    with pytest.raises(ConfigError):
        SynthConfig(stations=2, hours=1, wavefield="spherical").check()
    with pytest.raises(ConfigError):
        SynthConfig(stations=2, hours=1, rates=(4,), wavefield="diffuse").check()  # band above Nyquist


@pytest.mark.parametrize("dvv", [0.0, 1.0, -2.0])
def test_a_source_in_line_gives_the_travel_time_at_the_scheduled_velocity(dvv: float) -> None:
    """One source 50 km beyond station A on the line A-B (20 km): B hears it d/v after A."""
    medium = Medium(
        stations=np.array([[0.0, 0.0], [20.0, 0.0]]),
        sources=np.array([[-50.0, 0.0]]),
        scatterers=np.zeros((0, 2)),
        velocity_km_s=3.0,
        strength=0.0,
        band_hz=DiffuseSpec().band_hz,
    )
    spectra = hour_spectra(medium, dvv, 3600.0, np.random.default_rng(1))
    a, b = to_time(spectra, 3600 * 20)
    ccf = np.fft.irfft(np.conj(np.fft.rfft(a)) * np.fft.rfft(b))  # sum_t a(t) b(t + tau), circular
    k = int(np.argmax(ccf))
    y0, y1, y2 = ccf[k - 1], ccf[k], ccf[k + 1]
    lag = (k + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)) / 20
    assert lag == pytest.approx(20.0 / (3.0 * (1 + dvv / 100)), abs=2e-3)
