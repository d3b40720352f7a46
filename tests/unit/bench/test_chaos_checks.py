"""The chaos harness's checks can fail: a lost, shifted, doubled or extra pair, a (window, pair) announced twice,
an announced CCF absent from the store or shifted,
a bad input entry without a dead letter, a symlink that was read; and its hostile records really are hostile."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, MemoryStore

from bench import checks, fuzz
from bench.faults import FaultError, PrivateStack, ephemeral_ports, free_port_base
from bench.hostile import build_hostile, check_hostile
from contracts.events import RowCorrelated, StacksUpdated, decode

LAGS = {"A.S1..HHZ__A.S2..HHZ": 3, "A.S1..HHZ__A.S3..HHZ": -5, "A.S2..HHZ__A.S3..HHZ": 0}
MAXLAG = 100  # samples


FS = 20.0


def _store(root: Path, stacks: list[tuple[str, int, int]]) -> Path:
    """A ``results.zarr`` whose stacks group holds ``(pair, lag in samples, count)`` rows, written with plain zarr
    (not the pipeline's writer), each a spike at its lag."""
    group = zarr.open_group(LocalStore(root), mode="a", zarr_format=3).require_group("stacks")
    group.attrs["fs"] = FS
    n, lags = len(stacks), 2 * MAXLAG + 1
    linear = np.full((n, lags), 0.0, dtype=np.float32)
    for i, (_, lag, _) in enumerate(stacks):
        linear[i, MAXLAG + lag] = 1.0
    group.create_array("lag", data=np.arange(-MAXLAG, MAXLAG + 1) / FS, overwrite=True)
    group.create_array("linear", data=linear, chunks=(2, lags), overwrite=True)
    group.create_array("count", data=np.array([c for _, _, c in stacks], dtype=np.int32), overwrite=True)
    for k, name in ((0, "a"), (1, "b")):
        labels = np.array([p.split("__")[k] for p, _, _ in stacks], dtype=str)
        group.create_array(name, shape=(n,), dtype=str, overwrite=True)[:] = labels
    return root


def test_check_stacks_counts_every_way_a_pair_goes_wrong(tmp_path: Path) -> None:
    exp = checks.Expectation(LAGS, windows=2)
    root = _store(
        tmp_path / "results.zarr",
        [
            ("A.S1..HHZ__A.S2..HHZ", 3, 2),  # exact
            ("A.S1..HHZ__A.S3..HHZ", -4, 3),  # one sample off, a window counted twice
            ("A.S3..HHZ__A.S9..HHZ", 0, 2),  # a pair that must not exist
            ("A.S2..HHZ__A.S3..HHZ", 0, 0),  # a pair that was never stacked: missing
        ],
    )
    check = checks.check_stacks(root, exp)
    assert (check.expected, check.present, check.at_true_lag) == (3, 2, 1)
    assert check.missing == ["A.S2..HHZ__A.S3..HHZ"]
    assert check.off_lag == ["A.S1..HHZ__A.S3..HHZ"]
    assert check.wrong_windows == {"A.S1..HHZ__A.S3..HHZ": 3.0}
    assert check.doubled == {"A.S1..HHZ__A.S3..HHZ": 3.0}
    assert check.extra == ["A.S3..HHZ__A.S9..HHZ"]
    assert not check.exact
    assert checks.complete_stacks(root, exp) == {"A.S1..HHZ__A.S2..HHZ"}


def test_a_pair_twice_on_the_stack_axis_counts_its_windows_twice(tmp_path: Path) -> None:
    exp = checks.Expectation({"A.S1..HHZ__A.S2..HHZ": 3}, windows=2)
    root = _store(tmp_path / "r.zarr", [("A.S1..HHZ__A.S2..HHZ", 3, 2), ("A.S1..HHZ__A.S2..HHZ", 3, 2)])
    assert checks.check_stacks(root, exp).doubled == {"A.S1..HHZ__A.S2..HHZ": 4.0}


def test_no_store_means_every_pair_missing(tmp_path: Path) -> None:
    check = checks.check_stacks(tmp_path / "absent.zarr", checks.Expectation(LAGS, windows=2))
    assert check.present == 0 and len(check.missing) == 3


def test_optional_pairs_may_be_absent_or_short_but_not_shifted(tmp_path: Path) -> None:
    exp = checks.Expectation({"A.S1..HHZ__A.S2..HHZ": 3}, windows=2, optional={"A.S1..HHZ__A.S3..HHZ": -5})
    assert checks.check_stacks(_store(tmp_path / "1.zarr", [("A.S1..HHZ__A.S2..HHZ", 3, 2)]), exp).exact
    short = [("A.S1..HHZ__A.S2..HHZ", 3, 2), ("A.S1..HHZ__A.S3..HHZ", -5, 1)]
    assert checks.check_stacks(_store(tmp_path / "2.zarr", short), exp).exact
    shifted = [("A.S1..HHZ__A.S2..HHZ", 3, 2), ("A.S1..HHZ__A.S3..HHZ", 7, 1)]
    assert checks.check_stacks(_store(tmp_path / "3.zarr", shifted), exp).off_lag == ["A.S1..HHZ__A.S3..HHZ"]


def _row(window: str, row: str, slot: int, columns: list[str], at: str) -> RowCorrelated:
    return RowCorrelated(
        window=window, row=row, slot=slot, pairs=len(columns), columns=columns, manifest="m", correlated_at=at
    )


def test_the_wire_counts_duplicates_coverage_recovery_and_durable_results() -> None:
    exp = checks.Expectation(LAGS, windows=2)
    rows = [
        _row("w1", "A.S2..HHZ", 0, ["A.S1..HHZ"], "2026-01-01T00:00:01+00:00"),  # the row may sort after
        _row("w2", "A.S2..HHZ", 0, ["A.S1..HHZ"], "2026-01-01T00:00:02+00:00"),
        _row("w2", "A.S2..HHZ", 64, ["A.S1..HHZ"], "2026-01-01T00:00:05+00:00"),  # announced twice
        _row("w1", "A.S3..HHZ", 64, ["A.S1..HHZ", "A.S2..HHZ"], "2026-01-01T00:00:09+00:00"),
    ]
    records = [checks.Record(0, i, e.encode()) for i, e in enumerate(rows)]
    events = checks.correlated(records)
    assert [(e.pair, e.slot) for e in events[3:]] == [("A.S1..HHZ__A.S3..HHZ", 64), ("A.S2..HHZ__A.S3..HHZ", 65)]
    assert checks.wire_duplicates(events) == 1
    assert checks.wire_coverage(events, exp) == 4
    t3 = events[0].at + 2.0
    assert checks.recovery_s(events, t3) == 2.0
    assert checks.recovery_s(events, t3 + 60) is None
    assert {(e.window, e.pair) for e in checks.durable(events, before=t3 - 1.5)} == {("w1", "A.S1..HHZ__A.S2..HHZ")}
    assert len(checks.correlated(records, injected=[(0, 3)])) == 3


def test_stacker_recovery_is_the_next_stacks_updated() -> None:
    updates = [
        StacksUpdated(window="w1", stacked=3, updated_at="2026-01-01T00:00:01+00:00"),
        StacksUpdated(window="w1", stacked=6, updated_at="2026-01-01T00:00:04+00:00"),
    ]
    records = [checks.Record(0, i, u.encode()) for i, u in enumerate(updates)]
    assert len(checks.stacks_updated(records, injected=[(0, 0)])) == 1
    t = checks.stamp(updates[0].updated_at) + 1.0
    assert checks.stacks_recovery_s(checks.stacks_updated(records), t) == 2.0


def test_check_ccfs_finds_announced_ccfs_absent_or_shifted() -> None:
    exp = checks.Expectation(LAGS, windows=2)
    root = zarr.open_group(MemoryStore(), mode="a", zarr_format=3)
    window = root.require_group("windows/w1")
    window.attrs["fs"] = FS
    window.create_array("lag", data=np.arange(-MAXLAG, MAXLAG + 1) / FS)
    ccf = np.full((4, 2 * MAXLAG + 1), np.nan, dtype=np.float32)
    ccf[0] = ccf[1] = 0.0
    ccf[0, MAXLAG + 3] = 1.0  # A.S1__A.S2 at its lag
    ccf[1, MAXLAG + 4] = 1.0  # A.S1__A.S3 off by 9 samples; slot 2 never written
    window.create_array("ccf", data=ccf)
    rows = [
        _row("w1", "A.S1..HHZ", 0, ["A.S2..HHZ", "A.S3..HHZ", "A.S9..HHZ"], "2026-01-01T00:00:01+00:00"),
        _row("w1", "A.S2..HHZ", 2, ["A.S3..HHZ"], "2026-01-01T00:00:01+00:00"),
        _row("w2", "A.S2..HHZ", 0, ["A.S3..HHZ"], "2026-01-01T00:00:01+00:00"),  # no such window in the store
    ]
    events = checks.correlated([checks.Record(0, i, e.encode()) for i, e in enumerate(rows)])
    check = checks.check_ccfs(root, events, exp)
    assert check.checked == 4  # the pair with A.S9 is no pair of the expectation
    assert check.off_lag == ["w1 A.S1..HHZ__A.S3..HHZ"]
    assert sorted(check.absent) == ["w1 A.S2..HHZ__A.S3..HHZ", "w2 A.S2..HHZ__A.S3..HHZ"]
    assert checks.check_ccfs(None, events, exp).absent.__len__() == 4


TARGET = fuzz.Target("run-x", ("20240101T000000Z", "20240101T010000Z"), ("XF.S000.00.HHZ", "XF.S001.00.BHZ"))


@pytest.mark.parametrize("topic", fuzz.TOPICS)
def test_malformed_records_are_malformed_and_forged_ones_well_formed(topic: str) -> None:
    records = fuzz.malformed(TARGET, topic, 60)
    decoded = [checks.decode_quietly(value) for _, value in records]
    assert sum(e is None for e in decoded) >= 40, "most records must not decode"
    assert sum(len(v or b"") > 800_000 for _, v in records) == 2
    assert sum((v or b"").startswith(b"[" * 1000) for _, v in records) == 3
    for i in range(6):
        decode(fuzz.forged_events(TARGET, topic, i)[1])  # raises if a forged event is not well-formed


def test_forged_arrivals_name_real_stations_and_windows_but_no_real_object() -> None:
    for _, value in fuzz.forged_raw_arrivals(TARGET, 8) + fuzz.forged_file_ready(TARGET, 4):
        event = decode(value)
        assert event.window in TARGET.windows if hasattr(event, "window") else event.directory.startswith("run-x/")
        assert event.key not in {f"run-x/raw/{w}/{s}.mseed" for w in TARGET.windows for s in TARGET.stations}


def test_check_hostile_flags_missing_dead_letters_and_symlinks_that_were_read(tmp_path: Path) -> None:
    hostile = build_hostile(tmp_path / "in", stations=3, hours=1)
    assert len(hostile.expectation().lags) == 3
    problems = check_hostile(hostile, {"dead_letters": []})
    assert len(problems) == len(hostile.bad)
    read = [{"source": str(hostile.folder / e), "reason": "CorruptMiniSEED: not MiniSEED"} for e in hostile.bad]
    assert [p for p in check_hostile(hostile, {"dead_letters": read}) if "was read" in p] != []
    refused = [{"source": str(hostile.folder / e), "reason": "symlink points outside the input"} for e in hostile.bad]
    assert check_hostile(hostile, {"dead_letters": refused}) == []
    (hostile.outside / "written.npz").write_bytes(b"x")
    assert check_hostile(hostile, {"dead_letters": refused}) == [f"files appeared in {hostile.outside}"]


def test_a_private_stack_refuses_the_shared_one(tmp_path: Path) -> None:
    with pytest.raises(FaultError):
        PrivateStack(tmp_path, 19000).check_private()
    with pytest.raises(FaultError):
        PrivateStack(tmp_path / ".stack", 28000).check_private()
    stack = PrivateStack(tmp_path, 28000)
    stack.check_private()
    assert stack.env()["XCORRFLOW_KAFKA_BOOTSTRAP"] == "127.0.0.1:28092" == stack.settings().bootstrap_servers
    assert stack.settings().s3_address == "127.0.0.1:28000"


def test_a_private_stack_port_base_skips_held_and_ephemeral_ports() -> None:
    ephemeral = ephemeral_ports()
    base = free_port_base(ephemeral.start - 2000)
    assert not any(port in ephemeral for port in PrivateStack(Path("/x"), base).ports.values())
    with socket.socket() as held:  # as a client socket's local port would hold it
        held.bind(("127.0.0.1", base))
        assert free_port_base(base) > base, "a base whose S3 port is held is skipped"
    with pytest.raises(FaultError, match="ephemeral"):
        free_port_base(ephemeral.start, tries=2)
