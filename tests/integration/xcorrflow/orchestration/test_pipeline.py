"""The whole pipeline on the real stack: the four modes agree, bad files end in the DLQ and the report, the
correlate group scales and survives kill -9, and a scheduler restart repeats and loses nothing."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import obspy
import pytest

from contracts.events import DirectoryCommitted, RowCorrelated
from contracts.settings import Settings, TopicNames
from dsp.synthetic.stations import GapSpec, SynthConfig, synthesise
from producers.ingest import Ingestor
from producers.inventory import scan_folder
from storage import open_store
from tests.integration.kafkatools import WorkerProcess, read_events
from xcorrflow.cli import main
from xcorrflow.orchestration.fleet import wait_for
from xcorrflow.orchestration.runs import delete_run

REFERENCE = {
    "XCORRFLOW_PROCESSING__CC_LEN_S": "600",
    "XCORRFLOW_PROCESSING__STEP_S": "300",
    "XCORRFLOW_PROCESSING__MAXLAG_S": "100",
}
MAXLAG = 2000  # samples at 20 Hz


@pytest.fixture(autouse=True)
def reference_params(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter sub-windows keep the runs quick; workers inherit the environment."""
    for name, value in REFERENCE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 stations x 2 h at 50/100 Hz with a gap, plus junk a new user brings along."""
    out = tmp_path_factory.mktemp("deploy")
    synthesise(SynthConfig(stations=5, hours=2, rates=(50, 100), seed=11, gaps=(GapSpec("S001", 1500, 400),)), out)
    (out / "notes.mseed").write_text("this is not MiniSEED\n")
    (out / "empty.mseed").write_bytes(b"")
    real = next(out.glob("*.mseed"))
    (out / "cut.mseed").write_bytes(real.read_bytes()[:700])
    bad = obspy.read(str(real))[0].copy()
    bad.stats.station, bad.data = "BAD", bad.data.astype(np.float32)
    bad.data[100:200] = np.nan
    bad.write(str(out / "nan.mseed"), format="MSEED")
    return out


def _truth(folder: Path) -> dict[str, int]:
    return {k: v["lag_samples"] for k, v in json.loads((folder / "truth.json").read_text())["pairs"].items()}


def _run(mode: str, inp: Path, out: Path, *, cleanup: bool = True) -> dict:  # type: ignore[type-arg]
    args = ["run", "--mode", mode, "--input", str(inp), "--output", str(out), "--timeout", "300", "--format", "both"]
    assert main(args + (["--cleanup"] if cleanup and mode != "inprocess" else [])) == 0
    return json.loads((out / "report.json").read_text())


def test_all_modes_agree_and_report_bad_files(stack: Settings, deployment: Path, tmp_path: Path) -> None:
    truth = _truth(deployment)
    modes = ("inprocess", "streaming", "cnf", "barrier")
    reports = {mode: _run(mode, deployment, tmp_path / mode, cleanup=mode != "streaming") for mode in modes}
    for mode, report in reports.items():
        assert report["pairs"] == len(truth), mode
        junk = {Path(d["source"]).name for d in report["dead_letters"]}
        assert {"notes.mseed", "empty.mseed", "cut.mseed", "nan.mseed"} <= junk, (mode, report["dead_letters"])
        assert report["first_result_s"] is not None and report["first_result_s"] <= report["makespan_s"]
    for key, lag in truth.items():
        reference = obspy.read(str(tmp_path / "inprocess" / f"{key}.sac"))[0].data
        assert int(np.argmax(reference)) - MAXLAG == lag, key
        for mode in ("streaming", "cnf", "barrier"):
            trace = obspy.read(str(tmp_path / mode / f"{key}.sac"))[0]
            assert trace.stats.sac.b == pytest.approx(-100.0) and trace.stats.delta == pytest.approx(0.05)
            np.testing.assert_allclose(trace.data, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    # the commits topic of a run holds exactly one DirectoryCommitted per window
    topics = stack.topics.with_prefix(reports["streaming"]["outputs"]["topic_prefix"])
    commits = [
        e for e in read_events(stack, topics.commits, until=lambda ev: True) if isinstance(e, DirectoryCommitted)
    ]
    assert Counter(c.directory for c in commits) == {
        f"{reports['streaming']['outputs']['namespace']}prep/{w}/": 1 for w in ("20240101T000000Z", "20240101T010000Z")
    }
    gone = delete_run(stack, open_store(stack), reports["streaming"]["outputs"]["run_id"])
    assert gone.objects > 0 and len(gone.topics) == len(topics.model_dump()) - 1, "all but the S3 event topic"
    assert not list(open_store(stack).list(reports["streaming"]["outputs"]["namespace"]))
    assert reports["cnf"]["outputs"]["cleaned_up"] and not list(
        open_store(stack).list(reports["cnf"]["outputs"]["namespace"])
    )


def _deploy(settings: Settings, topics: TopicNames, unique: str, log_dir: Path, *, correlators: int) -> dict:  # type: ignore[type-arg]
    common = ["--topic-prefix", unique, "--namespace", unique]
    rules = log_dir / "rules.yaml"
    rules.write_text('rules:\n  - {match: "prep/*/", commit: n_files, n_files: expected, fire: no_update}\n')
    workers = {
        "broker": WorkerProcess(["broker", "--rules", str(rules), "--no-reconcile", *common], log=log_dir / "b.log"),
        "scheduler": WorkerProcess(["schedule", "--mode", "streaming", *common], log=log_dir / "s.log"),
        "preprocess": WorkerProcess(["preprocess", *common], log=log_dir / "p.log"),
    }
    for i in range(correlators):
        workers[f"c{i}"] = WorkerProcess(
            ["correlate", "--worker-id", f"{unique}-{i}", *common], log=log_dir / f"c{i}.log"
        )
    for w in workers.values():
        w.start()
    for w in workers.values():
        w.wait_log("ready")
    return workers


def _expected_pairs(folder: Path) -> set[tuple[str, str, str]]:
    inv = scan_folder(folder, Settings().processing)
    return {(w, a, b) for w, chans in inv.by_window().items() for a, b in itertools.combinations(sorted(chans), 2)}


def _ingest_spread(settings: Settings, topics: TopicNames, unique: str, folder: Path, spread: float) -> None:
    ns_settings = settings.model_copy(update={"namespace": unique})
    Ingestor(ns_settings, topics, open_store(settings)).ingest_inventory(
        scan_folder(folder, settings.processing), spread_s=spread, shuffle_seed=3
    )


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 stations x 1 h: 276 pairs, enough work for a group of two correlators."""
    out = tmp_path_factory.mktemp("wide")
    synthesise(SynthConfig(stations=24, hours=1, rates=(50,), seed=5), out)
    return out


def _pairs(events: list) -> list[tuple[str, str, str, str]]:  # type: ignore[type-arg]
    """(window, a, b, worker) of every pair the RowCorrelated events announce."""
    return [
        (e.window, *sorted((e.row, c)), e.worker) for e in events if isinstance(e, RowCorrelated) for c in e.columns
    ]


def _results(stack: Settings, topics: TopicNames, n: int) -> list[tuple[str, str, str, str]]:
    events = read_events(stack, topics.results, until=lambda ev: len(_pairs(ev)) >= n, timeout=180, settle=3)
    return _pairs(events)


def test_correlate_group_splits_work_and_survives_kill_9(
    stack: Settings, topics: TopicNames, unique: str, wide: Path, tmp_path: Path
) -> None:
    workers = _deploy(stack, topics, unique, tmp_path, correlators=2)
    try:
        expected = _expected_pairs(wide)
        _ingest_spread(stack, topics, unique, wide, spread=8.0)
        seen = lambda: read_events(stack, topics.results, until=lambda ev: True, timeout=5, settle=0)  # noqa: E731
        wait_for(lambda: len(_pairs(seen())) >= 40, "some pairs are done", timeout=120, interval=0.5)
        workers["c1"].kill9()  # mid-run: its partitions move to c0 after the session timeout
        results = _results(stack, topics, len(expected))
    finally:
        for w in workers.values():
            w.stop()
    done = Counter((w, a, b) for w, a, b, _ in results)
    assert set(done) == expected, "no pair lost"
    assert max(done.values()) == 1, "no pair published twice"
    by_worker = Counter(worker for *_, worker in results)
    assert set(by_worker) == {f"{unique}-0", f"{unique}-1"}, f"both correlators did work: {by_worker}"


def test_scheduler_restart_mid_run_loses_and_repeats_nothing(
    stack: Settings, topics: TopicNames, unique: str, wide: Path, tmp_path: Path
) -> None:
    workers = _deploy(stack, topics, unique, tmp_path, correlators=1)
    try:
        expected = _expected_pairs(wide)
        _ingest_spread(stack, topics, unique, wide, spread=6.0)
        time.sleep(2.5)
        workers["scheduler"].kill9()
        time.sleep(1.0)
        workers["scheduler"] = WorkerProcess(
            ["schedule", "--mode", "streaming", "--topic-prefix", unique, "--namespace", unique],
            log=tmp_path / "s2.log",
        ).start()
        results = _results(stack, topics, len(expected))
    finally:
        for w in workers.values():
            w.stop()
    done = Counter((w, a, b) for w, a, b, _ in results)
    assert set(done) == expected and max(done.values()) == 1
    tasks = read_events(stack, topics.pairs, until=lambda ev: True, settle=1)
    pairs = Counter((t.window, *sorted((t.row, c))) for t in tasks for c in t.columns)  # type: ignore[attr-defined]
    assert max(pairs.values()) == 1, "no pair task was published twice across the restart"


def test_two_preprocess_workers_share_one_ingest(
    stack: Settings, topics: TopicNames, unique: str, wide: Path, tmp_path: Path
) -> None:
    common = ["--topic-prefix", unique, "--namespace", unique]
    workers = [WorkerProcess(["preprocess", *common], log=tmp_path / f"p{i}.log").start() for i in range(2)]
    try:
        for w in workers:
            w.wait_log("ready")
        _ingest_spread(stack, topics, unique, wide, spread=2.0)
        files = read_events(stack, topics.files, until=lambda ev: sum(e.type == "FileCommitted" for e in ev) >= 24)
    finally:
        for w in workers:
            w.stop()
    committed = [e for e in files if e.type == "FileCommitted"]
    keys = Counter(e.key for e in committed)  # type: ignore[attr-defined]
    assert len(keys) == 24 and max(keys.values()) == 1, "each raw file became exactly one product"
    assert len({e.producer for e in committed}) == 2, "both workers took a share"  # type: ignore[attr-defined]
    store = open_store(stack)
    assert sorted(o.key for o in store.list(f"{unique}/prep/")) == sorted(keys)
    for info in list(store.list(f"{unique}/")):
        store.delete(info.key)
