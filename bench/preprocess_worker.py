"""``python -m bench.preprocess_worker``: what ``xcorrflow worker preprocess`` costs per station-hour, against the
DSP alone, in the same run.

Each round, on the local stack and a namespace and topic prefix of its own:

1. ``dsp``: :func:`dsp.preprocess.preprocess_bytes` over the round's MiniSEED blobs in this process (the
   settings' processing parameters, the allocator tuned as a worker's is): the science alone;
2. ``dsp+codec``: the same, plus :func:`dsp.product.encode_product` of each product;
3. ``worker``: a real ``xcorrflow worker preprocess`` process, started and ready before the clock starts; the
   raw objects are in the store, then the clock starts, N RawFileArrived events are produced, and the clock stops
   when N FileCommitted events are on the files topic. The worker's CPU (``/proc``) is counted over that span,
   as are the S3 server's and Kafka's.

``--baseline-src DIR`` adds a fourth step, ``worker-baseline``: the same worker run from another checkout's code
(``PYTHONPATH=DIR``, e.g. ``git archive <commit> | tar -x -C DIR``), so that before and after a change are measured
in the same rounds. The input is N synthetic station-hours (100 Hz white noise, STEIM2 MiniSEED, 4 KiB records,
~0.8 MB each). The order of the steps rotates from round to round; the report gives medians and the ratios worker /
dsp of wall time and of CPU per station-hour. ``--profile FILE`` also records the worker of the last round with
py-spy (``--format raw`` collapsed stacks) and prints where its samples went. Writes
``bench/results/preprocess_worker.json``. Needs the local stack (``xcorrflow stack up``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.kernel import make_trace
from bench.s3_access import server_cpu_s
from contracts.events import FileCommitted, RawFileArrived, decode
from contracts.kafka import consumer_config, produce_event, producer_config
from contracts.settings import Settings
from contracts.topics import delete_topics, ensure_topics, topic_specs
from dsp.preprocess import preprocess_bytes
from dsp.product import encode_product
from storage import ObjectStore, open_store
from storage.layout import Layout
from xcorrflow.localstack.process import read_pid_file
from xcorrflow.localstack.service import StackPaths
from xcorrflow.orchestration.fleet import WorkerProcess, process_cpu_s
from xcorrflow.orchestration.tuning import tune_allocator

RESULTS = Path(__file__).parent / "results" / "preprocess_worker.json"
WINDOW = "20240101T000000Z"
# Frames whose inclusive share of the worker's samples the profile summary reports.
PROFILE_FRAMES = (
    "preprocess_bytes",
    "encode_product",
    "_compute",
    "_preprocess",
    "stat (storage",
    "get (storage",
    "put_if_absent (storage",
    "put (storage",
    "get_many (storage",
    "_deliver",
    "flush_through_outage",
    "poll (",
    "consume (",
    "decode (contracts",
    "watch_kafka",
    "__call__ (contracts/kafka",
)


def mseed_blobs(stations: int) -> dict[str, bytes]:
    """``stations`` station-hours of 100 Hz noise as STEIM2 MiniSEED, by SEED id."""
    blobs = {}
    for i in range(stations):
        tr = make_trace(i, 100.0, 7)
        tr.data = np.round(tr.data * 1000).astype(np.int32)
        buf = io.BytesIO()
        tr.write(buf, format="MSEED", encoding="STEIM2", reclen=4096)
        blobs[tr.id] = buf.getvalue()
    return blobs


def bench_dsp(blobs: dict[str, bytes], settings: Settings, *, codec: bool) -> dict[str, float]:
    """Wall and CPU seconds of preprocessing every blob (and encoding the products when ``codec``)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for sid, blob in blobs.items():
        product = preprocess_bytes([blob], WINDOW, settings.processing, sources=[sid])
        if codec:
            encode_product(product)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


class Round:
    """One worker round: its own namespace and topics, a worker process, the raw objects in the store."""

    def __init__(
        self, settings: Settings, store: ObjectStore, blobs: dict[str, bytes], log_dir: Path, source: Path | None = None
    ) -> None:
        self.source = source  # another checkout's code for the worker process (PYTHONPATH), e.g. the baseline
        self.prefix = f"bpw{uuid.uuid4().hex[:10]}"
        self.settings = settings.model_copy(update={"namespace": self.prefix})
        self.topics = settings.topics.with_prefix(self.prefix)
        self.store, self.blobs, self.log_dir = store, blobs, log_dir
        self.ns = self.settings.key_prefix

    def __enter__(self) -> Round:
        ensure_topics(self.settings.bootstrap_servers, topic_specs(self.settings, self.topics))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda item: self.store.put(self._raw(item[0]), item[1]), self.blobs.items()))
        args = ["preprocess", "--topic-prefix", self.prefix, "--namespace", self.prefix]
        env = {"PYTHONPATH": str(self.source)} if self.source else None
        self.worker = WorkerProcess(args, env=env, log=self.log_dir / f"{self.prefix}.log").start()
        self.worker.wait_log("ready", timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        names = [t for t in self.topics.model_dump().values() if t.startswith(f"{self.prefix}.")]
        delete_topics(self.settings.bootstrap_servers, names)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self.store.delete, [info.key for info in self.store.list(self.prefix)]))

    def _raw(self, sid: str) -> str:
        return Layout(self.ns).raw(WINDOW, sid)

    def run(self, pids: dict[str, int], profile: Path | None) -> dict[str, float]:
        """Announce every raw object and wait for every FileCommitted; wall and CPU seconds of each process."""
        consumer = self._files_consumer()
        producer = self._producer()
        spy = _py_spy(self.worker.pid, profile) if profile else None
        cpu0 = self._cpu(pids)
        t0 = time.perf_counter()
        for sid, blob in self.blobs.items():
            event = RawFileArrived(key=self._raw(sid), station=sid, window=WINDOW, size=len(blob))
            produce_event(producer, self.topics.raw, sid, event)
        producer.flush(30)
        self._wait_committed(consumer, len(self.blobs), deadline=time.monotonic() + 600)
        wall = time.perf_counter() - t0
        cpu1 = self._cpu(pids)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        consumer.close()
        return {"wall_s": wall, **{f"{name}_cpu_s": cpu1[name] - cpu0[name] for name in cpu0}}

    def _cpu(self, pids: dict[str, int]) -> dict[str, float]:
        found = {"worker": process_cpu_s(self.worker.pid) or 0.0}
        found |= {name: server_cpu_s(pid) for name, pid in pids.items()}
        return found

    def _producer(self) -> Any:
        from confluent_kafka import Producer

        return Producer(producer_config(self.settings))

    def _files_consumer(self) -> Any:
        from confluent_kafka import Consumer

        consumer = Consumer(consumer_config(self.settings, f"{self.prefix}.bench"))
        assigned: list[bool] = []
        consumer.subscribe([self.topics.files], on_assign=lambda _c, _p: assigned.append(True))
        while not assigned:
            consumer.poll(0.1)
        return consumer

    def _wait_committed(self, consumer: Any, expected: int, deadline: float) -> None:
        keys: set[str] = set()
        while len(keys) < expected:
            if time.monotonic() > deadline or not self.worker.alive():
                raise SystemExit(
                    f"only {len(keys)} of {expected} FileCommitted; worker log:\n{self.worker.log_text()[-3000:]}"
                )
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    event = decode(msg.value())
                    if isinstance(event, FileCommitted):
                        keys.add(event.key)


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` (raw collapsed stacks at 250 Hz) until it gets SIGINT."""
    spy_bin = Path(sys.executable).parent / "py-spy"
    args = [str(spy_bin), "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", str(out), "--nonblocking"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches before the clock starts
    return proc


def profile_summary(path: Path, frames: Sequence[str] = PROFILE_FRAMES) -> dict[str, Any]:
    """Inclusive share of the samples of each frame of interest, and the top self-time frames."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        parts = stack.split(";")
        own[parts[-1]] += count
        for frame in frames:
            if any(frame in part for part in parts):
                inclusive[frame] += count
    share = {frame: round(inclusive[frame] / total, 3) for frame in frames if inclusive[frame]}
    top = [(name, round(n / total, 3)) for name, n in own.most_common(25)]
    return {"samples": total, "inclusive_share": share, "top_self": top}


def stack_pids(settings: Settings) -> dict[str, int]:
    """Pids of the stack's S3 server and Kafka (their CPU is counted over each worker run)."""
    paths = StackPaths.from_settings(settings)
    pids = {}
    for name in ("s3", "kafka"):
        record = read_pid_file(paths.pid_file(name))
        if record is not None:
            pids[name] = record.pid
    return pids


def summarise(rounds: list[dict[str, Any]], stations: int) -> dict[str, Any]:
    """Medians per station-hour and the worker/dsp ratios."""

    def med(step: str, field: str) -> float:
        return statistics.median(r[step][field] for r in rounds) / stations * 1e3  # ms per station-hour

    out: dict[str, Any] = {
        "dsp_ms_per_station_hour": {"wall": med("dsp", "wall_s"), "cpu": med("dsp", "cpu_s")},
        "dsp_codec_ms_per_station_hour": {"wall": med("dsp+codec", "wall_s"), "cpu": med("dsp+codec", "cpu_s")},
        "worker_ms_per_station_hour": {"wall": med("worker", "wall_s"), "cpu": med("worker", "worker_cpu_s")},
        "s3_server_ms_per_station_hour": med("worker", "s3_cpu_s") if "s3_cpu_s" in rounds[0]["worker"] else None,
        "kafka_ms_per_station_hour": med("worker", "kafka_cpu_s") if "kafka_cpu_s" in rounds[0]["worker"] else None,
    }
    for step in [s for s in ("worker", "worker-baseline") if s in rounds[0]]:
        ratios = [r[step]["wall_s"] / r["dsp"]["wall_s"] for r in rounds]
        cpu_ratios = [r[step]["worker_cpu_s"] / r["dsp"]["cpu_s"] for r in rounds]
        out[f"ratio_{step}_over_dsp"] = {"wall": statistics.median(ratios), "cpu": statistics.median(cpu_ratios)}
        if step == "worker-baseline":
            out["worker_baseline_ms_per_station_hour"] = {"wall": med(step, "wall_s"), "cpu": med(step, "worker_cpu_s")}
    out["station_hours_per_s"] = {
        "dsp": stations / statistics.median(r["dsp"]["wall_s"] for r in rounds),
        "worker": stations / statistics.median(r["worker"]["wall_s"] for r in rounds),
    }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rounds, print the summary and write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.preprocess_worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=130, help="station-hours per round (default 130)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the last round's worker into FILE")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also run, each round, a worker from this checkout's code (e.g. a worktree of the commit before a "
        "change): the step 'worker-baseline', measured in the same rounds",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output (default %(default)s)")
    args = parser.parse_args(argv)
    settings = Settings()
    tune_allocator()  # as run_service does for the worker
    store = open_store(settings)
    pids = stack_pids(settings)
    blobs = mseed_blobs(args.stations)
    bench_dsp(dict(list(blobs.items())[:4]), settings, codec=True)  # warm-up: imports, FFT plans
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pw-") as tmp:
        for rnd in range(args.rounds):
            profile = args.profile if args.profile and rnd == args.rounds - 1 else None
            result: dict[str, Any] = {}
            steps = ["dsp", "dsp+codec", "worker"] + (["worker-baseline"] if args.baseline_src else [])
            for step in steps[rnd % len(steps) :] + steps[: rnd % len(steps)]:
                if step.startswith("worker"):
                    source = args.baseline_src if step == "worker-baseline" else None
                    with Round(settings, store, blobs, Path(tmp), source) as run:
                        result[step] = run.run(pids, profile if step == "worker" else None)
                else:
                    result[step] = bench_dsp(blobs, settings, codec=step == "dsp+codec")
            rounds.append(result)
            print(f"round {rnd}: " + json.dumps({k: {f: round(v, 3) for f, v in d.items()} for k, d in result.items()}))
    summary = summarise(rounds, args.stations)
    results: dict[str, Any] = {
        "stations": args.stations,
        "window": WINDOW,
        "input": "100 Hz white noise, STEIM2 MiniSEED, 4 KiB records",
        "processing": settings.processing.model_dump(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "rounds": rounds,
        "summary": summary,
    }
    if args.profile and args.profile.exists():
        results["profile"] = profile_summary(args.profile)
    print(json.dumps(results["summary"], indent=1))
    if "profile" in results:
        print(json.dumps(results["profile"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
