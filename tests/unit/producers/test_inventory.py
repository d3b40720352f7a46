"""Folder scanning: valid files grouped by (SEED id, window), junk as dead letters, station metadata."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import obspy

from contracts.params import ProcessingParams
from producers.inventory import load_stream, scan_folder


def _trace(sta: str, cha: str, start: obspy.UTCDateTime, seconds: float, fs: float = 20.0) -> obspy.Trace:
    tr = obspy.Trace(np.arange(round(seconds * fs), dtype=np.int32))
    tr.stats.update({"network": "XX", "station": sta, "location": "00", "channel": cha, "sampling_rate": fs})
    tr.stats.starttime = start
    return tr


def test_scan_groups_and_dead_letters(tmp_path: Path, params: ProcessingParams) -> None:
    t0 = obspy.UTCDateTime(2024, 1, 1)
    _trace("AAA", "HHZ", t0, 86400).write(str(tmp_path / "day.mseed"), format="MSEED")
    _trace("BBB", "HHZ", t0, 3600).write(str(tmp_path / "h0.mseed"), format="MSEED")
    _trace("BBB", "HHZ", t0 + 3600, 3600).write(str(tmp_path / "h1.mseed"), format="MSEED")
    obspy.Stream([_trace("CCC", "HHZ", t0, 600), _trace("CCC", "HHN", t0, 600)]).write(
        str(tmp_path / "mixed.mseed"), format="MSEED"
    )
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.mseed").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "stations.csv").write_text("id,latitude,longitude,elevation_m\nXX.AAA,45.0,7.0,100\n")
    (tmp_path / ".hidden").write_text("ignored")
    (tmp_path / "truth.json").write_text("{}")

    inv = scan_folder(tmp_path, params)

    assert inv.seed_ids() == ["XX.AAA.00.HHZ", "XX.BBB.00.HHZ"]
    assert len(inv.windows()) == 24
    table = inv.by_window()
    assert [Path(i.source).name for i in table["20240101T010000Z"]["XX.BBB.00.HHZ"]] == ["h1.mseed"]
    assert [Path(i.source).name for i in table["20240101T050000Z"]["XX.AAA.00.HHZ"]] == ["day.mseed"]
    reasons = {Path(d.source).name: d.reason for d in inv.dead_letters}
    assert set(reasons) == {"notes.txt", "empty.mseed", "mixed.mseed"}
    assert "MixedChannels" in reasons["mixed.mseed"] and "EmptyRecord" in reasons["empty.mseed"]
    assert inv.coordinates_of("XX.AAA.00.HHZ").latitude == 45.0
    assert inv.coordinates_of("XX.BBB.00.HHZ") is None
    assert len(load_stream(table["20240101T000000Z"]["XX.BBB.00.HHZ"])[0]) == 3600 * 20
    assert inv.warnings == ()  # h0 and h1 touch, they do not overlap: nothing to compare, nothing to say


def test_full_read_catches_bad_samples(tmp_path: Path, params: ProcessingParams) -> None:
    tr = _trace("AAA", "HHZ", obspy.UTCDateTime(2024, 1, 1), 3600)
    tr.data = tr.data.astype(np.float32)
    tr.data[5] = np.nan
    tr.write(str(tmp_path / "nan.mseed"), format="MSEED")
    assert scan_folder(tmp_path, params).dead_letters == ()  # headers alone look fine
    dead = scan_folder(tmp_path, params, headonly=False).dead_letters
    assert len(dead) == 1 and "NonFiniteSamples" in dead[0].reason


def test_synthetic_folder_scans_cleanly(synth_dir: Path, params: ProcessingParams, tmp_path: Path) -> None:
    shutil.copytree(synth_dir, tmp_path / "copy")
    inv = scan_folder(tmp_path / "copy", params)
    assert inv.dead_letters == () and len(inv.seed_ids()) == 6
    assert all(inv.coordinates_of(s) is not None for s in inv.seed_ids())
