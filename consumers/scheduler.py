"""``xcorrflow worker schedule``: the pair scheduler as an exactly-once Kafka service.

It follows FileReady and DirectoryCommitted on the commits topic and publishes PairTasks (one row of the pair
matrix each, keyed ``<window>/<row>``) in the same transaction as its state records and consumed offsets
(:mod:`contracts.txn`), so a restart never emits a pair twice and never loses one.
"""

from __future__ import annotations

import logging

from confluent_kafka import Message
from prometheus_client import Counter, Gauge

from consumers.pairing import Mode, PairingCore
from contracts.events import DirectoryCommitted, EventDecodeError, FileReady, decode
from contracts.kafka import dead_letter_for
from contracts.metrics import DEAD_LETTERS, EVENTS_IN
from contracts.settings import Settings, TopicNames
from contracts.txn import Output, TransactionalLoop

log = logging.getLogger(__name__)
SERVICE = "scheduler"

PAIRS_SCHEDULED = Counter("xcorrflow_pairs_scheduled", "pairs published as tasks", ["mode"])
PENDING_WINDOWS = Gauge("xcorrflow_windows_pending", "windows whose pairs are held back (cnf, barrier)")


class PairScheduler(TransactionalLoop):
    """Turns ready files into pair tasks under the chosen mode."""

    service = SERVICE

    def __init__(
        self, settings: Settings, topics: TopicNames, mode: Mode, *, windows_expected: int | None = None
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
        self.core = PairingCore(mode, namespace=settings.key_prefix, windows_expected=windows_expected)

    def reset(self, records: list[tuple[str, bytes | None]]) -> None:
        """Rebuild the pairing state from the state topic."""
        self.core = PairingCore(self.mode, namespace=self.core.namespace, windows_expected=self.windows_expected)
        self.core.restore(records)

    def handle(self, msg: Message) -> Output:
        """FileReady → row tasks (streaming); DirectoryCommitted → a window's tasks (cnf, barrier)."""
        try:
            event = decode(msg.value())
            EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
            if isinstance(event, FileReady):
                decision = self.core.file_ready(event)
            elif isinstance(event, DirectoryCommitted):
                decision = self.core.directory_committed(event)
            else:
                raise ValueError(f"the scheduler does not accept {event.type} on the commits topic")
        except (EventDecodeError, ValueError) as exc:
            letter = dead_letter_for(msg, SERVICE, f"{type(exc).__name__}: {exc}")  # label: the class
            DEAD_LETTERS.labels(service=SERVICE, reason=letter.reason.split(":")[0][:60]).inc()
            return Output(events=[(self.topics.dlq, (msg.key() or b"").decode(errors="replace"), letter)])
        for task in decision.tasks:
            PAIRS_SCHEDULED.labels(mode=self.mode).inc(len(task.columns))
        events = [(self.topics.pairs, f"{t.window}/{t.row}", t) for t in decision.tasks]
        return Output(events=events, state=decision.state)  # type: ignore[arg-type]

    def after_commit(self) -> None:
        """Update the held-back gauge."""
        PENDING_WINDOWS.set(self.core.pending_windows)
