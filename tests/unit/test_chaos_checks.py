"""The chaos harness's checks can fail: a lost, shifted, doubled or extra pair, a PairCorrelated published twice,
a bad input entry without a dead letter, a symlink that was read; and its hostile records really are hostile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from obspy.io.sac import SACTrace

from bench import checks, fuzz
from bench.faults import FaultError, PrivateStack
from bench.hostile import build_hostile, check_hostile
from contracts.events import PairCorrelated, decode

LAGS = {"A.S1..HHZ__A.S2..HHZ": 3, "A.S1..HHZ__A.S3..HHZ": -5, "A.S2..HHZ__A.S3..HHZ": 0}
MAXLAG = 100  # samples


def _stack(out: Path, pair: str, lag: int, windows: float) -> None:
    data = np.zeros(2 * MAXLAG + 1, dtype=np.float32)
    data[MAXLAG + lag] = 1.0
    SACTrace(data=data, b=-MAXLAG * 0.05, delta=0.05, user0=windows).write(str(out / f"{pair}.sac"))


def test_check_stacks_counts_every_way_a_pair_goes_wrong(tmp_path: Path) -> None:
    exp = checks.Expectation(LAGS, windows=2)
    _stack(tmp_path, "A.S1..HHZ__A.S2..HHZ", 3, 2)  # exact
    _stack(tmp_path, "A.S1..HHZ__A.S3..HHZ", -4, 3)  # one sample off, a window counted twice
    _stack(tmp_path, "A.S3..HHZ__A.S9..HHZ", 0, 2)  # a pair that must not exist
    check = checks.check_stacks(tmp_path, exp)
    assert (check.expected, check.present, check.at_true_lag) == (3, 2, 1)
    assert check.missing == ["A.S2..HHZ__A.S3..HHZ"]
    assert check.off_lag == ["A.S1..HHZ__A.S3..HHZ"]
    assert check.wrong_windows == {"A.S1..HHZ__A.S3..HHZ": 3.0}
    assert check.extra == ["A.S3..HHZ__A.S9..HHZ"]
    assert not check.exact


def test_optional_pairs_may_be_absent_or_short_but_not_shifted(tmp_path: Path) -> None:
    exp = checks.Expectation({"A.S1..HHZ__A.S2..HHZ": 3}, windows=2, optional={"A.S1..HHZ__A.S3..HHZ": -5})
    _stack(tmp_path, "A.S1..HHZ__A.S2..HHZ", 3, 2)
    assert checks.check_stacks(tmp_path, exp).exact
    _stack(tmp_path, "A.S1..HHZ__A.S3..HHZ", -5, 1)
    assert checks.check_stacks(tmp_path, exp).exact
    _stack(tmp_path, "A.S1..HHZ__A.S3..HHZ", 7, 1)
    assert checks.check_stacks(tmp_path, exp).off_lag == ["A.S1..HHZ__A.S3..HHZ"]


def _pc(window: str, pair: str, at: str) -> PairCorrelated:
    a, b = pair.split("__")
    return PairCorrelated(window=window, a=a, b=b, key="k", n_subwindows=1, correlated_at=at)


def test_the_wire_counts_duplicates_coverage_recovery_and_durable_pairs() -> None:
    exp = checks.Expectation(LAGS, windows=2)
    pair = "A.S1..HHZ__A.S2..HHZ"
    events = [
        _pc("w1", pair, "2026-01-01T00:00:01+00:00"),
        _pc("w2", pair, "2026-01-01T00:00:02+00:00"),
        _pc("w2", pair, "2026-01-01T00:00:05+00:00"),  # published twice
        _pc("w1", "A.S1..HHZ__A.S3..HHZ", "2026-01-01T00:00:09+00:00"),
    ]
    assert checks.wire_duplicates(events) == 1
    assert checks.wire_coverage(events, exp) == 3
    t3 = checks.stamp(events[0]) + 2.0
    assert checks.recovery_s(events, t3) == 2.0
    assert checks.recovery_s(events, t3 + 60) is None
    assert checks.durable_pairs(events, exp, before=t3) == {pair}
    records = [checks.Record(0, i, e.encode()) for i, e in enumerate(events)]
    assert len(checks.correlated(records, injected=[(0, 3)])) == 3


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
        PrivateStack(tmp_path / ".stack", 29000).check_private()
    stack = PrivateStack(tmp_path, 29000)
    stack.check_private()
    assert stack.env()["XCORRFLOW_KAFKA_BOOTSTRAP"] == "127.0.0.1:29092" == stack.settings().bootstrap_servers
    assert stack.settings().s3_address == "127.0.0.1:29000"
