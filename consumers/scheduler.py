"""``xcorrflow worker schedule``: the pair scheduler as an exactly-once Kafka service.

It follows FileReady and DirectoryCommitted on the commits topic and publishes PairTasks (one row of the pair
matrix each, keyed ``<window>/<row>``) in the same transaction as its state records and consumed offsets
(:mod:`contracts.loop`), so a restart never emits a pair twice and never loses one.

Each task comes with its slots in the window's ccf array (:mod:`results.layout`); the scheduler grows that
array before it publishes the tasks that fill it.

Events are hints, objects are the truth: a station becomes part of a window only once its product is seen in
the store (one HEAD per new station-window, when a store is given), so a FileReady or a commit naming an
object that does not exist is dead-lettered instead of turning into tasks that would fail, or worse, take the
place of the station's real product.
"""

from __future__ import annotations

import logging

from confluent_kafka import Message
from prometheus_client import Counter, Gauge

from consumers.pairing import Mode, PairingCore
from contracts.checkpoint import Output
from contracts.events import DirectoryCommitted, Event, EventDecodeError, FileReady, decode
from contracts.kafka import dead_letter
from contracts.loop import TransactionalLoop
from contracts.metrics import EVENTS_IN
from contracts.settings import Settings, TopicNames
from results.products import ProductStore
from results.windows import WindowStore
from storage import ObjectStore
from storage.errors import InvalidKey

log = logging.getLogger(__name__)
SERVICE = "scheduler"

PAIRS_SCHEDULED = Counter("xcorrflow_pairs_scheduled", "pairs published as tasks", ["mode"])
PENDING_WINDOWS = Gauge("xcorrflow_windows_pending", "windows whose pairs are held back (cnf, barrier)")


class PairScheduler(TransactionalLoop):
    """Turns ready files into pair tasks under the chosen mode."""

    service = SERVICE

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        mode: Mode,
        *,
        windows_expected: int | None = None,
        store: ObjectStore | None = None,
        windows: WindowStore | None = None,
    ) -> None:
        super().__init__(
            settings,
            group=f"xcorrflow-scheduler.{topics.commits}",
            inputs=[topics.commits],
            state_topic=topics.scheduler_state,
        )
        self.topics = topics
        self.mode: Mode = mode
        self.windows_expected = windows_expected
        self.products = ProductStore(store, settings.key_prefix) if store is not None else None
        self.windows = windows  # where the tasks' CCFs go: grown before the tasks that fill it are published
        self.core = PairingCore(
            mode,
            namespace=settings.key_prefix,
            windows_expected=windows_expected,
            task_columns=settings.task_columns,
        )

    def reset(self, records: list[tuple[str, bytes | None]]) -> None:
        """Rebuild the pairing state from the state topic."""
        self.core = PairingCore(
            self.mode,
            namespace=self.core.namespace,
            windows_expected=self.windows_expected,
            task_columns=self.core.task_columns,
        )
        self.core.restore(records)

    def handle(self, msg: Message) -> Output:
        """FileReady → row tasks (streaming); DirectoryCommitted → a window's tasks (cnf, barrier).

        Raises:
            StorageUnavailable: the store did not answer (the batch is rolled back and consumed again).
        """
        try:
            event = decode(msg.value())
            EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
            if isinstance(event, FileReady):
                decision = self.core.file_ready(event, self._exists)
            elif isinstance(event, DirectoryCommitted):
                decision = self.core.directory_committed(event, self._exists)
            else:
                raise ValueError(f"the scheduler does not accept {event.type} on the commits topic")
        except (EventDecodeError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"  # its label: the class
            return Output(events=[dead_letter(msg, SERVICE, self.topics.dlq, reason)])
        if self.windows is not None:
            for window, slots in decision.grown.items():
                self.windows.ensure(window, slots)
        for task in decision.tasks:
            PAIRS_SCHEDULED.labels(mode=self.mode).inc(len(task.columns))
        events: list[tuple[str, str, Event]] = [(self.topics.pairs, f"{t.window}/{t.row}", t) for t in decision.tasks]
        dlq = self.topics.dlq
        events += [dead_letter(msg, SERVICE, dlq, f"the commit lists {key!r}, which is not in the store", key)
                   for key in decision.refused]  # fmt: skip
        return Output(events=events, state=decision.state)

    def _exists(self, key: str) -> bool:
        if self.products is None:
            return True
        try:
            return self.products.listed(key)
        except InvalidKey:
            return False

    def after_commit(self) -> None:
        """Update the held-back gauge."""
        PENDING_WINDOWS.set(self.core.pending_windows)
