"""A hostile input folder: odd names, symlinks in and out, special files, junk and overlapping channel files.

Everything is built from real MiniSEED files (ObsPy) and real symlinks, FIFOs and odd file names in tmp_path.
The rule under test: good data keeps being processed, each bad entry is a dead letter with a reason, nothing
outside the input folder is ever read, and a channel is never doubled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import obspy
import pytest

from contracts.events import DeadLetter as DeadLetterEvent
from contracts.events import decode
from contracts.params import ProcessingParams
from producers.ingest import FolderWatch
from producers.inventory import Inventory, load_stream, scan_folder, scan_metadata
from producers.overlaps import Span, find_overlaps
from producers.walk import read_input, walk_folder
from xcorrflow.cli import main

T0 = obspy.UTCDateTime(2024, 1, 1)
FS = 20.0


def _trace(
    sta: str, start: obspy.UTCDateTime = T0, seconds: float = 3600, *, fs: float = FS, seed: int = 0
) -> obspy.Trace:
    """A channel XX.<sta>.00.HHZ of random integer samples (seeded: the same seed gives the same samples)."""
    rng = np.random.default_rng(seed)
    n_before = round((start - T0) * fs)
    data = rng.integers(-5000, 5000, n_before + round(seconds * fs)).astype(np.int32)[n_before:]
    tr = obspy.Trace(data)
    tr.stats.update({"network": "XX", "station": sta, "location": "00", "channel": "HHZ", "sampling_rate": fs})
    tr.stats.starttime = start
    return tr


def _write(path: Path, *traces: obspy.Trace, encoding: str = "STEIM2") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    obspy.Stream(list(traces)).write(str(path), format="MSEED", encoding=encoding)
    return path


def _dead(inv: Inventory) -> dict[str, str]:
    return {Path(d.source).name: d.reason for d in inv.dead_letters}


def _warned(inv: Inventory) -> dict[str, str]:
    return {Path(w.source).name: w.warning for w in inv.warnings}


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A folder next to the input folder with a valid station of its own."""
    _write(tmp_path / "outside" / "far.mseed", _trace("FAR"))
    return tmp_path / "outside"


@pytest.fixture()
def inp(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    return tmp_path / "in"


# --- names ---------------------------------------------------------------------------------------------------


def test_odd_names_keep_being_processed(inp: Path, params: ProcessingParams) -> None:
    names = ["with space.mseed", "ünïcødé 地震.mseed", "a..b.mseed", "x" * 240 + ".mseed", "sub dir/ü/c..d.mseed"]
    for k, name in enumerate(names):
        _write(inp / name, _trace(f"S{k}"))
    _write(inp / "S5.mseed", _trace("S5"))
    os.rename(inp / "S5.mseed", os.fsencode(inp) + b"/\xff\xfe raw.mseed")  # a name that is not UTF-8 at all
    inv = scan_folder(inp, params)
    assert inv.dead_letters == () and inv.warnings == ()
    assert inv.seed_ids() == [f"XX.S{k}.00.HHZ" for k in range(6)]
    for item in inv.items:  # every source can be read back for preprocessing
        assert len(load_stream([item])[0]) == 3600 * FS


def test_undecodable_names_reach_events_and_reports_as_text(inp: Path, params: ProcessingParams) -> None:
    (inp / os.fsdecode(b"\xff junk.mseed")).write_bytes(b"not seismic")
    [letter] = scan_folder(inp, params).dead_letters
    assert "\\xff junk.mseed" in letter.source
    event = DeadLetterEvent(reason=letter.reason, service="ingest", source=letter.source)
    assert decode(event.encode()) == event  # a raw surrogate here would fail to encode and crash ingest
    json.dumps(letter.to_dict()).encode("utf-8")


# --- symlinks and special files ------------------------------------------------------------------------------


def test_symlinks_out_of_the_folder_are_dead_letters_and_never_followed(
    inp: Path, outside: Path, params: ProcessingParams
) -> None:
    _write(inp / "good.mseed", _trace("GOOD"))
    (inp / "far-link.mseed").symlink_to(outside / "far.mseed")
    (inp / "far-dir").symlink_to(outside, target_is_directory=True)
    (inp / "hostname.mseed").symlink_to("/etc/hostname")
    (inp / "up.mseed").symlink_to("../outside/far.mseed")  # relative, through '..'
    inv = scan_folder(inp, params)
    assert inv.seed_ids() == ["XX.GOOD.00.HHZ"]
    dead = _dead(inv)
    assert set(dead) == {"far-link.mseed", "far-dir", "hostname.mseed", "up.mseed"}
    assert all("outside the input folder" in reason and "not followed" in reason for reason in dead.values())
    assert "folder" in dead["far-dir"] and "far.mseed" in dead["up.mseed"]


@pytest.mark.timeout(60)
def test_fifos_are_never_opened(inp: Path, tmp_path: Path, params: ProcessingParams) -> None:
    """Opening a FIFO for reading waits for a writer: had the scan opened one, this test would hang."""
    os.mkfifo(tmp_path / "outside-fifo")
    os.mkfifo(inp / "inside-fifo.mseed")
    (inp / "fifo-link.mseed").symlink_to(tmp_path / "outside-fifo")
    _write(inp / "good.mseed", _trace("GOOD"))
    dead = _dead(scan_folder(inp, params))
    assert set(dead) == {"inside-fifo.mseed", "fifo-link.mseed"}
    assert "not a regular file" in dead["inside-fifo.mseed"] and "outside" in dead["fifo-link.mseed"]


def test_symlinks_inside_the_folder_never_double_a_channel(inp: Path, params: ProcessingParams) -> None:
    _write(inp / "data" / "a.mseed", _trace("AAA"))
    (inp / "alias.mseed").symlink_to(inp / "data" / "a.mseed")
    (inp / "data-again").symlink_to("data", target_is_directory=True)
    (inp / "data" / "root").symlink_to("..", target_is_directory=True)  # a loop, if it were followed
    inv = scan_folder(inp, params)
    assert [Path(i.source).name for i in inv.items] == ["a.mseed"] and inv.dead_letters == ()
    warned = _warned(inv)
    assert set(warned) == {"alias.mseed", "data-again", "root"}
    assert all("inside the input folder: not followed" in w for w in warned.values())


def test_broken_and_looping_symlinks_are_dead_letters(inp: Path, params: ProcessingParams) -> None:
    (inp / "broken.mseed").symlink_to(inp / "missing.mseed")
    (inp / "loop-a").symlink_to(inp / "loop-b")
    (inp / "loop-b").symlink_to(inp / "loop-a")
    dead = _dead(scan_folder(inp, params))
    assert set(dead) == {"broken.mseed", "loop-a", "loop-b"}
    assert all("broken symlink or symlink loop" in reason for reason in dead.values())


def test_read_input_refuses_what_the_walk_would_not_return(inp: Path) -> None:
    _write(inp / "a.mseed", _trace("AAA"))
    (inp / "link.mseed").symlink_to(inp / "a.mseed")
    os.mkfifo(inp / "fifo")
    assert read_input(inp / "a.mseed")[:1]
    for path in (inp / "link.mseed", inp / "fifo"):  # e.g. swapped in between the walk and the read
        with pytest.raises(OSError):
            read_input(path)


def test_station_metadata_follows_the_same_rules(inp: Path, outside: Path, params: ProcessingParams) -> None:
    (outside / "stations.csv").write_text("id,latitude,longitude\nXX.GOOD,1.0,2.0\n")
    (inp / "stations.csv").symlink_to(outside / "stations.csv")
    (inp / "sub").mkdir()
    (inp / "sub" / "stations.csv").write_text("id,latitude,longitude\nXX.NAN,nan,2.0\n")
    _write(inp / "good.mseed", _trace("GOOD"))
    inv = scan_folder(inp, params)
    assert inv.coordinates == {} and scan_metadata(inp) == {}
    assert set(_dead(inv)) == {"stations.csv"} and len(inv.dead_letters) == 2
    assert any("finite" in d.reason for d in inv.dead_letters)


# --- bad MiniSEED ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("station", ["A__B", "A B", "S*1"])
def test_seed_ids_outside_the_grammar_are_dead_letters(inp: Path, station: str, params: ProcessingParams) -> None:
    _write(inp / "bad.mseed", _trace(station))
    _write(inp / "good.mseed", _trace("GOOD"))
    inv = scan_folder(inp, params)
    assert inv.seed_ids() == ["XX.GOOD.00.HHZ"] and "InvalidSeedId" in _dead(inv)["bad.mseed"]


def test_empty_truncated_and_junk_files_are_dead_letters(inp: Path, params: ProcessingParams) -> None:
    good = _write(inp / "good.mseed", _trace("GOOD"), encoding="INT32")
    (inp / "empty.mseed").write_bytes(b"")
    (inp / "truncated.mseed").write_bytes(good.read_bytes()[: 4096 + 100])  # a record and a bit
    (inp / "junk.mseed").write_bytes(bytes(range(256)) * 8)
    dead = _dead(scan_folder(inp, params))
    assert set(dead) == {"empty.mseed", "truncated.mseed", "junk.mseed"}
    assert "EmptyRecord" in dead["empty.mseed"] and "truncated" in dead["truncated.mseed"]
    assert "CorruptMiniSEED" in dead["junk.mseed"]


# --- overlapping files of one channel ------------------------------------------------------------------------


def test_identical_overlap_is_merged_with_a_warning(inp: Path, params: ProcessingParams) -> None:
    whole = _trace("AAA", seed=3)
    _write(inp / "first.mseed", whole.slice(T0, T0 + 2400 - 1 / FS), encoding="STEIM2")
    _write(inp / "second.mseed", whole.slice(T0 + 1200, T0 + 3600), encoding="INT32")  # same samples, other coding
    inv = scan_folder(inp, params)
    assert inv.dead_letters == () and len(inv.items) == 2
    [(source, warning)] = _warned(inv).items()
    assert source == "first.mseed" and "second.mseed" in warning and "1200 s with identical samples" in warning
    merged = load_stream(inv.items).merge(method=1)
    assert len(merged) == 1 and np.array_equal(merged[0].data, whole.data)


def test_exact_copies_are_merged_with_a_warning(inp: Path, params: ProcessingParams) -> None:
    _write(inp / "a.mseed", _trace("AAA"))
    shutil.copy(inp / "a.mseed", inp / "copy of a.mseed")
    inv = scan_folder(inp, params)
    assert inv.dead_letters == () and len(inv.items) == 2 and len(inv.warnings) == 1
    assert "3600 s with identical samples: merged" in inv.warnings[0].warning


def test_conflicting_overlap_dead_letters_both_files_naming_the_other(inp: Path, params: ProcessingParams) -> None:
    whole = _trace("AAA", seed=3)
    altered = whole.copy()
    altered.data[30_000] += 1  # one sample, inside the overlap
    _write(inp / "first.mseed", whole.slice(T0, T0 + 2400 - 1 / FS))
    _write(inp / "second.mseed", altered.slice(T0 + 1200, T0 + 3600 - 1 / FS))
    _write(inp / "later.mseed", _trace("AAA", T0 + 3600, 600, seed=3))  # touches second.mseed, no overlap
    _write(inp / "other.mseed", _trace("BBB"))
    inv = scan_folder(inp, params)
    dead = _dead(inv)
    assert set(dead) == {"first.mseed", "second.mseed"} and inv.warnings == ()
    assert "second.mseed" in dead["first.mseed"] and "first.mseed" in dead["second.mseed"]
    assert "1 of 24000 common samples differ" in dead["first.mseed"] and "neither file is used" in dead["first.mseed"]
    assert sorted(Path(i.source).name for i in inv.items) == ["later.mseed", "other.mseed"]


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (_trace("AAA", T0 + 600 + 0.5 / FS, 600, seed=3), "sample times differ by 0.500"),
        (_trace("AAA", T0 + 600, 600, fs=2 * FS, seed=3), "sampling rates differ"),
    ],
    ids=["half-sample-shift", "other-rate"],
)
def test_overlaps_on_another_grid_conflict(
    inp: Path, second: obspy.Trace, expected: str, params: ProcessingParams
) -> None:
    _write(inp / "first.mseed", _trace("AAA", seed=3))
    _write(inp / "second.mseed", second)
    dead = _dead(scan_folder(inp, params))
    assert set(dead) == {"first.mseed", "second.mseed"} and expected in dead["first.mseed"]


def _corrupt_steim(path: Path) -> None:
    """Scramble the compressed frames of one record: headers stay valid, decoding the samples fails."""
    raw = bytearray(path.read_bytes())
    for k in range(3 * 512 + 72, 3 * 512 + 200):
        raw[k] ^= 0x5A
    path.write_bytes(bytes(raw))


def test_only_overlapping_files_are_decoded(inp: Path, params: ProcessingParams) -> None:
    """A file whose samples cannot be decoded passes a header-only scan when nothing overlaps it: the common
    case reads headers only. Give it an overlapping twin and it is decoded, and dead-lettered."""
    lone = _write(inp / "lone.mseed", _trace("AAA", seed=1))
    _corrupt_steim(lone)
    assert scan_folder(inp, params).dead_letters == ()
    shutil.copy(lone, inp / "twin.mseed")
    dead = _dead(scan_folder(inp, params))
    assert set(dead) == {"lone.mseed", "twin.mseed"} and "CorruptMiniSEED" in dead["lone.mseed"]


def test_find_overlaps_on_headers() -> None:
    spans = [Span("A", 0, 10), Span("A", 10, 20), Span("B", 5, 15), Span("A", 5, 12), Span("A", 30, 40)]
    found = {(o.i, o.j, o.seconds) for o in find_overlaps(spans)}
    assert found == {(0, 3, 5), (3, 1, 2)}  # touching ends and other channels do not overlap


# --- following a folder ----------------------------------------------------------------------------------------


def test_folder_watch_walks_by_the_same_rules(inp: Path, outside: Path) -> None:
    watch = FolderWatch(inp)
    _write(inp / "a.mseed", _trace("AAA"))
    (inp / "far.mseed").symlink_to(outside / "far.mseed")
    (inp / "alias.mseed").symlink_to(inp / "a.mseed")
    first = watch.poll()
    assert first.files == () and [n.path.name for n in first.refused] == ["far.mseed"]
    assert [n.path.name for n in first.skipped] == ["alias.mseed"]
    second = watch.poll()  # a.mseed kept its size for one poll: now it is stable; notes are not repeated
    assert [e.path.name for e in second.files] == ["a.mseed"] and second.refused == second.skipped == ()
    assert watch.poll().files == ()


def test_walk_of_a_missing_folder_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        walk_folder(tmp_path / "missing")
    assert FolderWatch(tmp_path / "missing").poll().files == ()  # following: wait for it to appear


# --- end to end ------------------------------------------------------------------------------------------------

REFERENCE_ENV = {
    "XCORRFLOW_PROCESSING__CC_LEN_S": "600",
    "XCORRFLOW_PROCESSING__STEP_S": "300",
    "XCORRFLOW_PROCESSING__MAXLAG_S": "100",
}
W = "20240101T000000Z"


def _hostile_copy(synth_dir: Path, inp: Path, outside: Path) -> dict[str, str]:
    """The synthetic deployment under odd names plus every bad case; returns bad entry name -> reason keyword."""
    src = {p.name.split("__")[0].split(".")[1]: p for p in synth_dir.glob("*.mseed")}
    shutil.copy(synth_dir / "stations.csv", inp / "stations.csv")
    shutil.copy(src["S000"], _parent(inp / "with space ü.mseed"))
    shutil.copy(src["S001"], _parent(inp / "sub dir" / "a..b.mseed"))
    shutil.copy(src["S002"], _parent(inp / ("L" * 240 + ".mseed")))
    with open(os.fsencode(inp) + b"/\xff\xfe.mseed", "wb") as fh:  # a name that is not UTF-8
        fh.write(src["S003"].read_bytes())
    shutil.copy(src["S004"], _parent(inp / "x" / "y" / "地震.mseed"))
    shutil.copy(src["S004"], _parent(inp / "backup" / "copy of S004.mseed"))  # identical: merged
    s005 = obspy.read(str(src["S005"]))  # two overlapping halves: merged back exactly
    _write(inp / "S005 part 1.mseed", *s005.slice(T0, T0 + 2400 - 1e-3).traces)
    _write(inp / "S005 part 2.mseed", *s005.slice(T0 + 1200, T0 + 3600).traces)
    (inp / "alias.mseed").symlink_to(inp / "x" / "y" / "地震.mseed")
    _write(outside / "S777.mseed", _trace("S777", fs=50.0))
    (inp / "far.mseed").symlink_to(outside / "S777.mseed")
    (inp / "far-dir").symlink_to(outside, target_is_directory=True)
    (inp / "hostname.mseed").symlink_to("/etc/hostname")
    (inp / "broken.mseed").symlink_to(inp / "nothing-here")
    os.mkfifo(inp / "fifo.mseed")
    (inp / "empty.mseed").write_bytes(b"")
    (inp / "truncated.mseed").write_bytes(src["S004"].read_bytes()[:5000])
    (inp / "notes.txt").write_text("not seismic data")
    _write(inp / "bad id.mseed", _trace("A__B", fs=50.0))
    conflict = _trace("S999", fs=50.0, seed=9)
    altered = conflict.copy()
    altered.data[100_000] += 7
    _write(inp / "S999 a.mseed", conflict.slice(T0, T0 + 2400))
    _write(inp / "S999 b.mseed", altered.slice(T0 + 1200, T0 + 3600))
    return {
        "far.mseed": "outside",
        "far-dir": "outside",
        "hostname.mseed": "outside",
        "broken.mseed": "broken symlink",
        "fifo.mseed": "not a regular file",
        "empty.mseed": "EmptyRecord",
        "truncated.mseed": "truncated",
        "notes.txt": "CorruptMiniSEED",
        "bad id.mseed": "InvalidSeedId",
        "S999 a.mseed": "S999 b.mseed",
        "S999 b.mseed": "S999 a.mseed",
    }


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.timeout(300)
def test_inprocess_run_over_a_hostile_folder(
    synth_dir: Path, truth: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in REFERENCE_ENV.items():
        monkeypatch.setenv(k, v)
    inp, out, outside = tmp_path / "in", tmp_path / "out", tmp_path / "outside"
    inp.mkdir()
    outside.mkdir()
    bad = _hostile_copy(synth_dir, inp, outside)

    assert main(["run", "--mode", "inprocess", "--input", str(inp), "--output", str(out), "--format", "both"]) == 0

    report = json.loads((out / "report.json").read_text())
    dead = {Path(d["source"]).name: d["reason"] for d in report["dead_letters"]}
    assert set(dead) == set(bad)
    for name, keyword in bad.items():
        assert keyword in dead[name], (name, dead[name])
    warned = {Path(w["source"]).name: w["warning"] for w in report["warnings"]}
    assert set(warned) == {"alias.mseed", "S005 part 1.mseed", "copy of S004.mseed"}
    assert "地震.mseed" in warned["copy of S004.mseed"] and "S005 part 2.mseed" in warned["S005 part 1.mseed"]
    assert (report["stations"], report["windows"], report["pairs"]) == (6, 1, 15)
    assert sorted(p.name for p in out.glob("*.sac")) == sorted(f"{key}.sac" for key in truth["pairs"])
    for key, pair in truth["pairs"].items():
        tr = obspy.read(str(out / f"{key}.sac"))[0]
        assert int(np.argmax(tr.data)) - 2000 == pair["lag_samples"], key
        assert tr.stats.sac.user0 == 1
