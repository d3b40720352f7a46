"""``xcorrflow worker monitor``: dv/v of every complete window against the elected reference (issue 14).

**Why StacksUpdated, not RowCorrelated.** The monitor measures a window when the stacker says it is
``complete``: every pair of the window is then accounted for, and the stacker has written the slot index
(which pair each slot holds, which were skipped or failed). That is what a correct network point needs (all
of the window's pairs, once) and what a ``first K windows`` reference needs (windows known to be whole).
Consuming RowCorrelated would let the first rows of a window be measured before its last one, but the
monitor would then redo the stacker's bookkeeping (the directory commit, the registry, the manifests) to know
when a window is whole. The price is measuring every pair of the window after its last arrival: 4.4 ms per
pair here (stretching and MWCS, three sides). Measured on issue 14's 24-station world fed live (README): the
stacker closes a window ~0.5 s after its last raw arrival, the monitor sets its gauges ~1.7 s later (276 CCFs
read from S3, measured, written), 2.2 s in all (median), inside issue 14's 5 s. For much larger networks,
measuring each row task's pairs on RowCorrelated would leave only the last row's pairs for the end.

**Delivery: at least once, idempotent writes.** The consumer commits a message's offset only after the
window's table group is written (``enable.auto.offset.store`` off, offsets stored after the work). A crash
in between measures the window again, which writes the same values (:mod:`results.dvv`). Windows that
complete before the reference can be elected are not lost: they wait in the store, and when the reference is
elected (or at start-up) the monitor measures every complete window its series lacks.

Scaling: members of the ``monitor`` group share the partitions of the stacks topic (keyed by window); the
reference is elected once for all of them (:mod:`consumers.dvvwork`). After an election every member catches
up on the windows its series lacks, so a window may be measured twice, with the same result.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import datetime

from confluent_kafka import Consumer, Message
from prometheus_client import Counter, Gauge, Histogram

from consumers.dvvwork import DvvWork
from contracts.checkpoint import Output, StoredOffsets
from contracts.events import EventDecodeError, StacksUpdated, decode
from contracts.kafka import consumer_config, log_ready_on_first_assignment
from contracts.metrics import EVENTS_IN, LATENCY_BUCKETS
from contracts.settings import Settings, TopicNames
from dsp.dvv import NetworkPoint
from dsp.windows import window_start

log = logging.getLogger(__name__)
SERVICE = "monitor"
CATCH_UP_INTERVAL_S = 2.0  # while windows wait for the reference, the store is listed this often

DVV_PERCENT = Gauge(
    "xcorrflow_dvv_network_percent", "network dv/v of the latest window (weighted median of the pairs)", ["method"]
)
DVV_ERROR = Gauge("xcorrflow_dvv_network_error_percent", "1-sigma error of the latest network dv/v", ["method"])
DVV_WINDOW = Gauge("xcorrflow_dvv_window_start_seconds", "start (epoch s) of the window of the latest network dv/v")
DVV_LAST_LATENCY = Gauge(
    "xcorrflow_dvv_latency_last_seconds", "latest raw arrival of the last measured window -> its network dv/v set"
)
DVV_LATENCY = Histogram(
    "xcorrflow_dvv_latency_seconds", "latest raw arrival of a window -> its network dv/v set", buckets=LATENCY_BUCKETS
)
DVV_MEASURE = Histogram(
    "xcorrflow_dvv_window_seconds", "reading, measuring and writing one window's dv/v", buckets=LATENCY_BUCKETS
)
WINDOWS_MEASURED = Counter("xcorrflow_dvv_windows_measured", "windows measured against the reference")
PAIRS_FAILED = Counter("xcorrflow_dvv_measurements_failed", "pair measurements without a value", ["reason"])


class Monitor:
    """One member of the ``monitor`` consumer group; :meth:`run` loops until :meth:`stop`."""

    def __init__(self, settings: Settings, topics: TopicNames, work: DvvWork, *, group: str) -> None:
        self.topics, self.work = topics, work
        self.consumer = Consumer(consumer_config(settings, group, service=SERVICE))
        self.checkpoint = StoredOffsets(self.consumer, service=SERVICE)  # stored after the table is written
        self.gauges = DvvGauges()
        self._stop = threading.Event()
        self._caught_up = False
        self._next_look = 0.0  # monotonic time of the next look at the store while catching up

    def stop(self) -> None:
        """Return from :meth:`run` after the current window."""
        self._stop.set()

    def run(self) -> None:
        """Consume the stacks topic until stopped."""
        self.consumer.subscribe([self.topics.stacks], on_assign=log_ready_on_first_assignment(log, "monitor"))
        try:
            while not self._stop.is_set():
                self.checkpoint.step(self.checkpoint.consume(100, 0.2), self.handle)
                if not self._caught_up and time.monotonic() >= self._next_look:
                    self._next_look = time.monotonic() + CATCH_UP_INTERVAL_S
                    self.catch_up()
        finally:
            self.checkpoint.close()

    def handle(self, msg: Message) -> Output:
        """:meth:`apply` as a checkpoint step (the monitor publishes nothing on Kafka)."""
        self.apply(msg)
        return Output()

    def apply(self, msg: Message) -> None:
        """Measure the window a ``complete`` StacksUpdated names (other messages change nothing)."""
        try:
            event = decode(msg.value())
        except EventDecodeError:
            return  # the stacks topic's producer is the stacker; nothing here owns a dead letter for it
        EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
        if isinstance(event, StacksUpdated) and event.complete:
            self.window(event.window, event.last_arrival)

    def window(self, window: str, last_arrival: str = "") -> None:
        """Measure one window (or leave it waiting for the reference) and show its network point."""
        t0 = time.monotonic()
        first_election = self.work.elected is None
        done = self.work.measure(window)
        if done is None:
            log.info("window %s waits for the dv/v reference", window)
            return
        DVV_MEASURE.observe(time.monotonic() - t0)
        WINDOWS_MEASURED.inc()
        rows, network = done
        for r in rows:
            if not r.ok:
                PAIRS_FAILED.labels(reason=(r.reason or "").split(":")[0]).inc()
        self.gauges.show(window, network, last_arrival)
        if first_election:
            self._caught_up = False  # the windows that waited for the reference are measured next

    def catch_up(self) -> None:
        """Measure the complete windows the series lacks (those that waited for the reference, or a crash)."""
        if self.work.reference() is None:
            return
        for window in self.work.pending():
            if self._stop.is_set():
                return
            self.window(window)
        self._caught_up = True


class DvvGauges:
    """The dv/v gauges: the latest window's network value and error, and each window's latency."""

    def __init__(self) -> None:
        self.latest = -math.inf  # start of the latest window shown

    def show(self, window: str, network: list[NetworkPoint], last_arrival: str) -> float | None:
        """Set the gauges from a window's network points; a late window updates the latency, not the value.

        Returns:
            The latency (s from the window's last raw arrival), or None when the arrival is unknown.
        """
        latency = None
        if last_arrival:
            latency = max(0.0, time.time() - datetime.fromisoformat(last_arrival).timestamp())
            DVV_LATENCY.observe(latency)
            DVV_LAST_LATENCY.set(latency)
            log.info("dv/v %s set %.3f s after the window's last raw arrival", window, latency)
        start = window_start(window)
        if start < self.latest:
            return latency
        self.latest = start
        DVV_WINDOW.set(start)
        for p in network:
            if p.side == "both" and p.ok:
                DVV_PERCENT.labels(method=p.method).set(p.dvv_percent)
                DVV_ERROR.labels(method=p.method).set(p.err_percent)
        ok = {p.method: f"{p.dvv_percent:+.4f} +- {p.err_percent:.4f} % ({p.n_pairs} pairs)"
              for p in network if p.side == "both" and p.ok}  # fmt: skip
        log.info("dv/v %s: %s", window, ok or "no value")
        return latency
