"""``xcorrflow worker latency``: the end-to-end station latency, raw arrival → all pairs of the station done.

No other service sees both ends: the broker knows arrivals, the correlators each know some pairs. This one
reads the commits topic (FileReady carries the raw arrival; DirectoryCommitted the station count) and the
results topic (RowCorrelated: a row task's pairs), both ``read_committed``, and observes
``xcorrflow_station_latency_seconds``
once per station and window (:mod:`consumers.stationdone` does the bookkeeping).

It only observes: it writes nothing, and a message it cannot decode is left to the services that own the
topics to dead-letter. One member per namespace (it must see every partition). Its state is in memory and its
offsets are committed as it goes, so a restart forgets the windows in flight (their stations are not
observed) and a new group starts at the end of the topics rather than replaying history.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from confluent_kafka import Consumer, Message
from prometheus_client import Gauge, Histogram

from consumers.stationdone import StationTracker
from contracts.checkpoint import Output, StoredOffsets
from contracts.events import DirectoryCommitted, Event, EventDecodeError, FileReady, RowCorrelated, decode
from contracts.kafka import consumer_config, log_ready_on_first_assignment
from contracts.metrics import EVENTS_IN, LATENCY_BUCKETS
from contracts.settings import Settings, TopicNames
from storage.layout import PRODUCT_EXT, Layout

log = logging.getLogger(__name__)
SERVICE = "latency"

# A station waits for the window's last station, so this latency spans a window's arrival spread: up to an hour.
STATION_BUCKETS = (*LATENCY_BUCKETS, 900, 1800, 3600)
STATION_LATENCY = Histogram(
    "xcorrflow_station_latency_seconds",
    "raw arrival of a station → the last of its pairs in the window correlated",
    buckets=STATION_BUCKETS,
)
WINDOWS_TRACKED = Gauge("xcorrflow_latency_windows_tracked", "windows with a station not yet done")


class LatencyTracker:
    """The one member of a namespace's ``latency`` consumer group."""

    def __init__(self, settings: Settings, topics: TopicNames, *, group: str) -> None:
        self.topics = topics
        self.ns = settings.key_prefix
        config = consumer_config(settings, group, service=SERVICE)
        self.consumer = Consumer({**config, "auto.offset.reset": "latest"})  # a new group: no history replay
        self.checkpoint = StoredOffsets(self.consumer, service=SERVICE)  # auto-committed: the state is in memory
        self.tracker = StationTracker()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Return from :meth:`run` after the current batch."""
        self._stop.set()

    def run(self) -> None:
        """Consume the commits and results topics until stopped."""
        on_assign = log_ready_on_first_assignment(log, "latency tracker")
        self.consumer.subscribe([self.topics.commits, self.topics.results], on_assign=on_assign)
        try:
            while not self._stop.is_set():
                self.checkpoint.step(self.checkpoint.consume(500, 0.2), self.handle)
                WINDOWS_TRACKED.set(self.tracker.windows)
        finally:
            self.checkpoint.close()

    def handle(self, msg: Message) -> Output:
        """:meth:`apply` as a checkpoint step (the tracker publishes nothing on Kafka)."""
        self.apply(msg)
        return Output()

    def apply(self, msg: Message) -> list[float]:
        """Feed one message to the tracker and observe the latencies it completes; returns them."""
        try:
            event = decode(msg.value())
        except EventDecodeError:
            return []  # the topic's own consumers dead-letter it
        EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
        try:
            latencies = self.latencies_of(event)
        except ValueError:  # a malformed timestamp: nothing to measure
            return []
        for seconds in latencies:
            STATION_LATENCY.observe(seconds)
        return latencies

    def latencies_of(self, event: Event) -> list[float]:
        """The station latencies ``event`` completes (events of other namespaces complete none)."""
        if isinstance(event, FileReady):
            place = self._window_station(event.key)
            if place is None or not event.arrived_at:
                return []
            return self.tracker.ready(place[0], place[1], _epoch(event.arrived_at))
        if isinstance(event, DirectoryCommitted):
            window = self._window_of(event.directory)
            return [] if window is None else self.tracker.committed(window, len(event.files))
        if isinstance(event, RowCorrelated) and self.layout.is_manifest(event.manifest):
            return self.tracker.task_done(
                event.window, event.manifest, event.row, event.columns, _epoch(event.correlated_at)
            )
        return []

    @property
    def layout(self) -> Layout:
        """The keys of this member's namespace."""
        return Layout(self.ns)

    def _window_of(self, directory: str) -> str | None:
        """``<ns>prep/<window>/`` → window; None for other directories."""
        try:
            return self.layout.parse_product_dir(directory)
        except ValueError:
            return None

    def _window_station(self, key: str) -> tuple[str, str] | None:
        """``<ns>prep/<window>/<station>.npz`` → (window, station); None for other keys."""
        try:
            _, window, station = self.layout.parse_product(key, ext=PRODUCT_EXT)
        except ValueError:
            return None
        return window, station


def _epoch(iso: str) -> float:
    """ISO 8601 → epoch seconds."""
    return datetime.fromisoformat(iso).timestamp()
