"""``xcorrflow ingest``: raw MiniSEED from a folder (or an S3 prefix) into the store, announced on Kafka.

Each (station, window) becomes one raw object ``<ns>raw/<window>/<SEED id>.mseed``: a file that lies inside
one window is uploaded byte for byte; files that span windows (day files) or share one (split hours) are cut
and merged first. Every object is announced by a RawFileArrived event (key: station) *after* it is durable,
and each window by one DirectoryExpected (its station count) on the files topic, so the commit broker knows
the CnF count. Unreadable files become dead letters with their reason; the rest goes on.

Order of one station-window: put the object (conditional, idempotent) → produce RawFileArrived. The whole run
ends with a flush, so when ``ingest`` returns every announcement is in Kafka.

Only bad input is dead-lettered. A store or broker that is briefly away is waited for (up to
``faults.s3_outage_s`` and ``faults.kafka_outage_s``); beyond that the ingest fails with the reason, and a
station-window is never reported as bad because a server was away. An object already in the store with the
same bytes is not uploaded again (a resumed run), but it is announced again: the workers ignore duplicates.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import obspy
from confluent_kafka import KafkaError, Message, Producer

from contracts.errors import TransientError
from contracts.events import DeadLetter, DirectoryExpected, RawFileArrived, utcnow
from contracts.kafka import count_dead_letter, flush_through_outage, produce_event, producer_config
from contracts.metrics import EVENTS_OUT
from contracts.settings import Settings, TopicNames
from dsp.windows import window_start
from producers.errors import ProducersError
from producers.inventory import Inventory, RawItem, is_metadata, load_stream, scan_folder, scan_metadata, scan_walk
from producers.walk import Note, Walk, read_input, shown, walk_folder
from results.products import ProductStore
from storage import ObjectStore
from storage.layout import Layout

log = logging.getLogger(__name__)
SERVICE = "ingest"


class IngestError(ProducersError):
    """The input cannot be ingested at all (missing folder, nothing readable)."""


@dataclass(frozen=True)
class RawObject:
    """One station-window of raw data, ready to upload."""

    window: str
    seed_id: str
    items: tuple[RawItem, ...]


@dataclass
class IngestReport:
    """What one ingest pass did."""

    objects: int = 0
    windows: list[str] = field(default_factory=list)
    stations: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # wall time each raw object was announced
    failed: list[tuple[str, str]] = field(default_factory=list)  # (window, SEED id) that could not be uploaded

    @property
    def last_arrival(self) -> float | None:
        """Wall time of the last raw object announced, or None before the first."""
        return self.arrivals[-1] if self.arrivals else None


def plan(inventory: Inventory) -> list[RawObject]:
    """One raw object per (window, SEED id), in time order."""
    return [
        RawObject(window, seed_id, tuple(items))
        for window, stations in inventory.by_window().items()
        for seed_id, items in sorted(stations.items())
    ]


def raw_bytes(obj: RawObject, window_s: float) -> bytes:
    """The MiniSEED bytes of one station-window: the file itself when it lies inside the window, else a cut.

    Raises:
        OSError, DspError: a file vanished or changed since it was scanned.
    """
    if len(obj.items) == 1 and obj.items[0].windows == (obj.window,):
        return read_input(obj.items[0].source)
    stream = load_stream(obj.items)
    t0 = obspy.UTCDateTime(window_start(obj.window, window_s))
    # End exclusive: the sample at t0 + window_s belongs to the next window.
    stream.trim(t0, t0 + window_s - 1e-6, nearest_sample=False)
    stream.merge(method=1)
    stream = stream.split()  # masked gaps cannot be written; keep the segments
    if not stream:
        raise OSError(f"no samples of {obj.seed_id} fall inside window {obj.window}")
    buf = io.BytesIO()
    stream.write(buf, format="MSEED")
    return buf.getvalue()


class Ingestor:
    """Uploads raw objects and announces them."""

    def __init__(self, settings: Settings, topics: TopicNames, store: ObjectStore) -> None:
        self.settings = settings
        self.topics = topics
        self.layout = Layout(settings.key_prefix)
        self.products = ProductStore(store, settings.key_prefix)
        self.producer = Producer(producer_config(settings, on_delivery=self._on_delivery))
        self._undelivered: list[KafkaError] = []

    def ingest_inventory(
        self,
        inventory: Inventory,
        *,
        spread_s: float = 0.0,
        shuffle_seed: int | None = None,
        expected: int | None = None,
        on_object: Callable[[RawObject], None] | None = None,
        report: IngestReport | None = None,
    ) -> IngestReport:
        """Upload and announce everything an inventory holds.

        Args:
            inventory: the scanned input.
            spread_s: spread the arrivals evenly over this many seconds (a live feed); 0 = as fast as possible.
            shuffle_seed: arrival order shuffled with this seed (None: time, then station order).
            expected: station count to announce per window (default: the stations that window has).
            on_object: called after each object is announced (progress).
            report: filled in as the ingest goes (another thread may watch it); a new one when omitted.

        Raises:
            TransientError: the store stayed away longer than ``faults.s3_outage_s``.
            IngestError, DependencyUnavailable: announcements could not be delivered to Kafka.
        """
        report = report if report is not None else IngestReport()
        report.windows, report.stations = inventory.windows(), inventory.seed_ids()
        for letter in inventory.dead_letters:
            self._dead_letter(letter.source, letter.reason, report)
        objects = plan(inventory)
        self._announce_windows(objects, expected)
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(objects)
        coordinates = {s: inventory.coordinates_of(s) for s in report.stations}
        for obj, due in zip(objects, _schedule(len(objects), spread_s), strict=True):
            delay = due - time.monotonic()
            if delay > 0:
                self.producer.poll(0)
                time.sleep(delay)
            self._ingest_one(obj, coordinates.get(obj.seed_id), report)
            if on_object is not None:
                on_object(obj)
        self.flush()
        return report

    def _announce_windows(self, objects: list[RawObject], expected: int | None) -> None:
        counts: dict[str, int] = {}
        for obj in objects:
            counts[obj.window] = counts.get(obj.window, 0) + 1
        for window, count in sorted(counts.items()):
            directory = self.layout.product_dir(window)
            event = DirectoryExpected(directory=directory, n_files=expected or count)
            produce_event(self.producer, self.topics.files, directory, event)
            EVENTS_OUT.labels(service=SERVICE, type=event.type).inc()

    def _ingest_one(self, obj: RawObject, coords: object, report: IngestReport) -> None:
        """Upload and announce one station-window; bad data becomes a dead letter.

        Raises:
            TransientError: the store stayed away longer than ``faults.s3_outage_s`` (never dead-lettered).
        """
        sources = ", ".join(shown(item.source) for item in obj.items)
        key = self.layout.raw(obj.window, obj.seed_id)
        try:
            data = raw_bytes(obj, self.settings.processing.window_s)
            if not self._stored(obj.window, obj.seed_id, data):
                self.products.put_raw(obj.window, obj.seed_id, data)
        except TransientError:
            raise
        except Exception as exc:  # one station-window never sinks the ingest; the reason goes to the DLQ
            self._dead_letter(sources, f"{type(exc).__name__}: {exc}", report)
            report.failed.append((obj.window, obj.seed_id))
            return
        now = time.time()
        report.arrivals.append(now)
        report.objects += 1
        event = RawFileArrived(
            key=key,
            station=obj.seed_id,
            window=obj.window,
            size=len(data),
            source=sources,
            arrived_at=utcnow(),
            coordinates=coords.to_dict() if coords is not None else None,  # type: ignore[attr-defined]
        )
        produce_event(self.producer, self.topics.raw, obj.seed_id, event)
        EVENTS_OUT.labels(service=SERVICE, type=event.type).inc()

    def _dead_letter(self, source: str, reason: str, report: IngestReport) -> None:
        letter = DeadLetter(reason=reason, service=SERVICE, source=source)
        report.dead_letters.append(letter)
        count_dead_letter(letter)
        produce_event(self.producer, self.topics.dlq, source[:200], letter)

    def _stored(self, window: str, station: str, data: bytes) -> bool:
        """True when the store holds this station-window's raw data at this size (an earlier attempt's upload)."""
        from storage.errors import ObjectNotFound

        try:
            return self.products.raw_info(window, station).size == len(data)
        except ObjectNotFound:
            return False

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._undelivered.append(err)

    def flush(self) -> None:
        """Wait until every announcement is acknowledged by Kafka, through a broker outage.

        Raises:
            IngestError: some messages failed for good.
            DependencyUnavailable: the broker stayed away longer than ``faults.kafka_outage_s``.
        """
        flush_through_outage(self.producer, "ingest announcements")
        if self._undelivered:
            raise IngestError(f"{len(self._undelivered)} announcements failed: {self._undelivered[0].str()}")


def _schedule(n: int, spread_s: float) -> Iterator[float]:
    """Monotonic due times of n arrivals spread evenly over ``spread_s`` seconds from now."""
    t0 = time.monotonic()
    step = spread_s / max(n - 1, 1) if spread_s > 0 else 0.0
    return (t0 + i * step for i in range(n))


def ingest_folder(
    settings: Settings, topics: TopicNames, store: ObjectStore, folder: str | Path, **options: object
) -> IngestReport:
    """Scan ``folder`` and ingest it (see :meth:`Ingestor.ingest_inventory` for the options).

    Raises:
        IngestError: the folder does not exist.
    """
    path = Path(folder)
    if not path.is_dir():
        raise IngestError(f"input folder {folder} does not exist or is not a directory")
    inventory = scan_folder(path, settings.processing)
    return Ingestor(settings, topics, store).ingest_inventory(inventory, **options)  # type: ignore[arg-type]


def follow_folder(
    settings: Settings,
    topics: TopicNames,
    store: ObjectStore,
    folder: str | Path,
    *,
    stop: Callable[[], bool],
    poll_s: float = 2.0,
    expected: int | None = None,
) -> Iterator[IngestReport]:
    """Keep watching ``folder``: a file is ingested once, when its size has not changed for one poll.

    The folder is walked by the rules of :func:`producers.walk.walk_folder` (no symlink followed; links out of
    the folder and non-regular files are dead-lettered, once). Overlapping files of one channel are judged
    within a pass; a later file that overlaps an ingested one with other samples meets a conditional write
    that refuses it. Station metadata (stations.csv, StationXML) is re-read on every pass.

    Yields:
        One report per pass that found new files or new refused entries.
    """
    root = Path(folder)
    watch = FolderWatch(root)
    ingestor = Ingestor(settings, topics, store)
    while not stop():
        new = watch.poll()
        if new.files or new.refused:
            yield ingestor.ingest_inventory(_scan_new(new, root, settings), expected=expected)
        time.sleep(poll_s)


class FolderWatch:
    """What is new in a followed folder at each poll: files whose size held still, entries newly refused."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sizes: dict[Path, int] = {}
        self.done: set[Path] = set()
        self.noted: set[Note] = set()

    def poll(self) -> Walk:
        """Walk the folder once.

        Returns:
            The files not yet returned whose size is the same as at the previous poll, and the refused and
            skipped entries not yet returned (a folder that cannot be walked right now gives nothing).
        """
        try:
            walk = walk_folder(self.root)
        except OSError as exc:
            log.warning("cannot walk %s: %s", shown(self.root), exc)
            return Walk(())
        stable = tuple(e for e in walk.files if e.path not in self.done and self.sizes.get(e.path) == e.size)
        self.sizes = {e.path: e.size for e in walk.files}
        self.done.update(e.path for e in stable)
        refused = tuple(n for n in walk.refused if n not in self.noted)
        skipped = tuple(n for n in walk.skipped if n not in self.noted)
        self.noted.update(refused + skipped)
        return Walk(stable, refused, skipped)


def _scan_new(new: Walk, root: Path, settings: Settings) -> Inventory:
    """An inventory of what one poll found; coordinates come from all of the folder's station metadata."""
    data = Walk(tuple(e for e in new.files if not is_metadata(e.path)), new.refused, new.skipped)
    return dataclasses.replace(scan_walk(data, settings.processing), coordinates=scan_metadata(root))
