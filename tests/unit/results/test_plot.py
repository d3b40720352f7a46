"""The record section: reads a folder of SAC stacks (skipping junk), sorts by distance or peak lag, draws a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from dsp.product import Coordinates
from results.plot import auto_max_lag, plot_record_section, read_section, record_section, sort_order
from results.sac import ccf_sac_bytes, write_sac
from xcorrflow.cli import main

FS, MAXLAG = 20.0, 400  # ±20 s
ORIGIN = Coordinates(45.0, 7.0)


def pulse(lag_s: float) -> np.ndarray:
    """A Ricker-like pulse peaking at ``lag_s``."""
    t = np.arange(-MAXLAG, MAXLAG + 1) / FS - lag_s
    return ((1 - 2 * (np.pi * 0.5 * t) ** 2) * np.exp(-((np.pi * 0.5 * t) ** 2))).astype(np.float32)


def write_folder(folder: Path, lags: list[float], distances_km: list[float] | None) -> list[str]:
    """One SAC per (lag, distance); station B sits due north of A at that distance. Returns the pair names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, lag in enumerate(lags):
        a, b = f"XS.A{i:03d}..HHZ", f"XS.B{i:03d}..HHZ"
        cb = Coordinates(ORIGIN.latitude + distances_km[i] / 111.195, ORIGIN.longitude) if distances_km else None
        content = ccf_sac_bytes(1.5 * pulse(lag), FS, a, b, coords_a=ORIGIN if cb else None, coords_b=cb, n_windows=3)
        write_sac(folder / f"{a}__{b}.sac", content)
        names.append(f"{a}__{b}")
    return names


def add_junk(folder: Path) -> None:
    (folder / "notes.sac").write_text("not a SAC file")
    (folder / "report.json").write_text("{}")
    (folder / "logs").mkdir()
    write_sac(
        folder / "XS.Z1..HHZ__XS.Z2..HHZ.sac", ccf_sac_bytes(np.zeros(2 * MAXLAG + 1), FS, "XS.Z1..HHZ", "XS.Z2..HHZ")
    )
    other = ccf_sac_bytes(pulse(0.0)[::2].copy(), FS / 2, "XS.Y1..HHZ", "XS.Y2..HHZ")
    write_sac(folder / "XS.Y1..HHZ__XS.Y2..HHZ.sac", other)


def test_reads_traces_and_skips_junk_with_reasons(tmp_path: Path) -> None:
    lags = [-4.0, 2.5, 7.0]
    names = write_folder(tmp_path, lags, [30.0, 10.0, 20.0])
    add_junk(tmp_path)
    section = read_section(tmp_path)
    assert section.names == names
    skipped = dict(section.skipped)
    assert set(skipped) == {"notes.sac", "XS.Z1..HHZ__XS.Z2..HHZ.sac", "XS.Y1..HHZ__XS.Y2..HHZ.sac"}
    assert "not a readable SAC" in skipped["notes.sac"] and "all-zero" in skipped["XS.Z1..HHZ__XS.Z2..HHZ.sac"]
    assert "lag axis" in skipped["XS.Y1..HHZ__XS.Y2..HHZ.sac"]
    np.testing.assert_allclose(section.peak_lag, lags, atol=1 / FS)
    np.testing.assert_allclose(section.distance_km, [30.0, 10.0, 20.0], rtol=1e-3)
    assert np.abs(section.data).max(axis=1) == pytest.approx(1.0), "each trace normalised"
    assert section.lags[0] == pytest.approx(-MAXLAG / FS) and section.lags[MAXLAG] == pytest.approx(0.0, abs=1e-6)


def test_sorted_by_distance_when_known_else_by_peak_lag(tmp_path: Path) -> None:
    lags, distances = [-4.0, 2.5, 7.0, 0.5], [30.0, 10.0, 20.0, 5.0]  # distance order differs from lag order
    write_folder(tmp_path / "with", lags, distances)
    section = read_section(tmp_path / "with")
    order, by = sort_order(section)
    assert by == "distance" and order.tolist() == [3, 1, 2, 0]
    order, by = sort_order(section, "lag")
    assert by == "lag" and order.tolist() == [0, 3, 1, 2]
    write_folder(tmp_path / "without", lags, None)
    bare = read_section(tmp_path / "without")
    order, by = sort_order(bare)
    assert by == "lag" and order.tolist() == [0, 3, 1, 2]
    with pytest.raises(ValueError, match="no distance"):
        sort_order(bare, "distance")


def test_auto_lag_range_holds_the_peaks(tmp_path: Path) -> None:
    write_folder(tmp_path, [-3.0, 1.0, 6.0], None)
    assert auto_max_lag(read_section(tmp_path)) == 10.0
    write_folder(tmp_path, [19.0], None)
    assert auto_max_lag(read_section(tmp_path)) == pytest.approx(20.0), "never beyond the traces' lags"


@pytest.mark.parametrize(("n", "style"), [(12, "wiggle"), (150, "image")])
def test_png_is_written_in_the_style_for_the_count(tmp_path: Path, n: int, style: str) -> None:
    rng = np.random.default_rng(n)
    distances = rng.uniform(1, 40, n).tolist()
    write_folder(tmp_path / "in", [d / 3.0 * rng.choice([-1, 1]) for d in distances], distances)
    out = tmp_path / "out" / "section.png"
    summary = plot_record_section(read_section(tmp_path / "in"), out, velocity=3.0)
    assert summary.style == style and summary.traces == n and summary.sorted_by == "distance"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(out)
    assert image.shape[0] > 500 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05, "not a blank canvas"


def test_plot_command_writes_the_png_and_lists_junk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_folder(tmp_path, [-2.0, 3.0], [5.0, 8.0])
    add_junk(tmp_path)
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "record_section.png").stat().st_size > 10_000
    err = capsys.readouterr().err
    assert "skipped notes.sac" in err and "2 traces (wiggle), sorted by distance" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["plot", str(empty), "--output", str(tmp_path / "x.png")]) == 1
    assert not (tmp_path / "x.png").exists()


def test_record_section_entry_point_of_the_demo(tmp_path: Path) -> None:
    write_folder(tmp_path / "in", [-1.0, 2.0, 4.0], [3.0, 6.0, 9.0])
    png = record_section(tmp_path / "in", tmp_path / "rs.png")
    assert png == tmp_path / "rs.png" and png.read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="no trace"):
        record_section(tmp_path / "none", tmp_path / "none.png")
