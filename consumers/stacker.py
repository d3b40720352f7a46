"""``xcorrflow worker stack``: RowCorrelated in, running stacks in the results store, StacksUpdated out.

One stacker per namespace (a fenced singleton, like the commit broker): it consumes the results topic (one
RowCorrelated per row task) and the commits topic (DirectoryCommitted says which stations a window has), reads
each task's manifest (:mod:`results.manifest`: the objects, not the events, say what a slot holds), and adds
each window to the stacks group by group (:mod:`consumers.stackplan`): a group is a range of canonical pairs
whose stack chunks fit ``stack_memory_mb``. A window's group is stacked once every expected pair in it has
arrived, so stacking streams behind correlation instead of waiting for the window's last pair; once every
pair of a window is accounted for, the stacker writes the window's slot index (which pair each slot holds).

**Exactly once, across kill -9** (:mod:`results.stacks`). Per (window, group) the order is:

1. read the group's stack chunks and record an *intent* (the window, the pairs to add, each chunk's CRC) in a
   transaction on the compacted state topic;
2. write each chunk's arrays, phase, linear, then count (an object PUT is atomic);
3. in one transaction: the window's stacked pairs, the intent's tombstone, a StacksUpdated event.

After a crash the intent is finished first: a chunk array whose CRC still matches the intent gets the window,
one whose CRC moved already has it. Consumed offsets ride with these transactions (or the next tick), and the
state topic holds per window only the expected stations and a bitmap of stacked pairs; the tasks are re-read
from their manifests at start-up.

Memory: the stacks in memory are one group (``stack_memory_mb`` / 2) plus that group's CCFs of one window, read
16 chunks at a time (the whole group in one read took as much again twice: 2.4 GiB at N = 260, barrier).
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
from confluent_kafka import Message
from prometheus_client import Counter, Gauge, Histogram

from consumers.stackplan import WindowPlan, groups
from contracts.checkpoint import Output
from contracts.errors import TransientError
from contracts.events import (
    DeadLetter,
    DirectoryCommitted,
    Event,
    EventDecodeError,
    RowCorrelated,
    StacksUpdated,
    decode,
)
from contracts.kafka import count_dead_letter, dead_letter
from contracts.loop import TransactionalLoop
from contracts.metrics import EVENTS_IN, LATENCY_BUCKETS
from contracts.settings import Settings, TopicNames
from dsp.errors import DspError
from dsp.product import Coordinates
from results.manifest import TaskManifest
from results.products import ProductStore
from results.stacks import StackChunk, StackStore, apply, fingerprint
from results.windows import WindowStore, gather
from storage import ObjectStore
from storage.errors import InvalidKey, ObjectNotFound, StorageError
from storage.layout import Layout

log = logging.getLogger(__name__)
SERVICE = "stack"

PAIRS_STACKED = Counter("xcorrflow_pair_windows_stacked", "(window, pair) CCFs added to the stacks")
WINDOWS_STACKED = Counter("xcorrflow_windows_stacked", "windows whose every pair is accounted for in the stacks")
GROUP_SECONDS = Histogram(
    "xcorrflow_stack_group_seconds", "adding one window to one group of stack chunks", buckets=LATENCY_BUCKETS
)
WINDOWS_OPEN = Gauge("xcorrflow_stack_windows_open", "windows with pairs not yet in the stacks")


class Stacker(TransactionalLoop):
    """The stacker service; :meth:`run` loops until :meth:`stop`."""

    service = SERVICE

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        store: ObjectStore,
        windows: WindowStore,
        stacks: StackStore,
        *,
        memory_mb: int = 1024,
    ) -> None:
        super().__init__(
            settings,
            group=f"xcorrflow-stacker.{topics.results}",
            inputs=[topics.results, topics.commits],
            state_topic=topics.stacker_state,
        )
        self.topics, self.windows, self.stacks = topics, windows, stacks
        self.ns = settings.key_prefix
        self.layout = Layout(self.ns)  # the keys of the events it checks
        self.products = ProductStore(store, self.ns)
        row_bytes = windows.n_lags * (12 if stacks.phase else 4)
        per_group = max(1, memory_mb * 2**20 // (2 * row_bytes * stacks.chunk_pairs))  # stacks + the CCFs added
        self.group_pairs = per_group * stacks.chunk_pairs
        self.plans: dict[str, WindowPlan] = {}
        self.registry: dict[str, int] = {}
        self.intents: dict[str, dict[str, object]] = {}
        self.arrivals: dict[str, str] = {}  # latest raw arrival per window (observability only: not in the state)
        self.positions: dict[str, Coordinates] = {}  # station positions the task manifests gave
        self._registered = len(stacks.stations())  # stations whose pairs the stack arrays already hold
        self._changed = True  # something happened since work() last found nothing to do

    # --- state ---------------------------------------------------------------------------------------------
    def reset(self, records: list[tuple[str, bytes | None]]) -> None:
        """Rebuild the plans from the state records, and their tasks from the manifests in the store."""
        self.plans, self.registry, self.intents = {}, {}, {}
        for key, value in records:
            kind, _, name = key.partition(":")
            if value is None:
                continue
            if kind == "w":
                self.plans[name] = WindowPlan.from_record(name, value)
            elif kind == "r":
                self.registry[name] = int(json.loads(value))
            elif kind == "i":
                self.intents[name] = json.loads(value)
        for plan in self.plans.values():
            if not plan.done or plan.window in self.intents:
                self._reload_tasks(plan)
        self._changed = True

    def _reload_tasks(self, plan: WindowPlan) -> None:
        for manifest in self.products.manifests(plan.window):
            plan.add_task(manifest)
            self._note_positions(manifest)

    def _note_positions(self, manifest: TaskManifest) -> None:
        for station, position in manifest.coordinates.items():
            if station not in self.positions:
                self.positions[station] = Coordinates.from_dict(position)

    # --- events --------------------------------------------------------------------------------------------
    def handle(self, msg: Message) -> Output:
        """A RowCorrelated (read its manifest) or a DirectoryCommitted (the window's stations).

        Raises:
            TransientError: the store did not answer (the batch is rolled back and consumed again).
        """
        try:
            event = decode(msg.value())
            EVENTS_IN.labels(service=SERVICE, type=event.type).inc()
            if isinstance(event, RowCorrelated):
                out = self._row(event)
            elif isinstance(event, DirectoryCommitted):
                out = self._committed(event)
            else:
                return Output()
        except TransientError:
            raise
        except (EventDecodeError, ValueError, StorageError) as exc:
            return Output(events=[dead_letter(msg, SERVICE, self.topics.dlq, f"{type(exc).__name__}: {exc}")])
        self._changed = True
        return out

    def _row(self, event: RowCorrelated) -> Output:
        key = self.layout.manifest(event.window, event.row, event.slot)
        if event.manifest != key:
            raise ValueError(f"a RowCorrelated of {event.row} in {event.window} names {event.manifest!r}, not {key!r}")
        manifest = self.products.manifest(event.window, event.row, event.slot)
        if (manifest.window, manifest.row, manifest.slot) != (event.window, event.row, event.slot):
            raise ValueError(f"manifest {key} is not the task the event names")
        out = Output()
        for station, index in manifest.index.items():
            known = self.registry.get(station)
            if known is None:
                self.registry[station] = index
                out.state.append((f"r:{station}", json.dumps(index).encode()))
            elif known != index:
                raise ValueError(f"manifest {key} gives {station} index {index}; the registry says {known}")
        if event.arrived_at > self.arrivals.get(event.window, ""):  # ISO 8601 UTC strings order as times
            self.arrivals[event.window] = event.arrived_at
        self._note_positions(manifest)
        plan = self.plans.setdefault(event.window, WindowPlan(event.window))
        if plan.add_task(manifest):
            out.state.append((f"w:{plan.window}", plan.record()))  # a window seen only through its tasks
        return out

    def _committed(self, event: DirectoryCommitted) -> Output:
        if not self.layout.in_products(event.directory):
            return Output()
        window = self.layout.parse_product_dir(event.directory)
        # as the scheduler does, a listed file counts only once its product is in the store: a forged commit
        # listing objects that do not exist must not make the window wait for pairs that will never come
        stations = sorted(self.layout.parse_product(key).station for key in event.files if self.products.listed(key))
        plan = self.plans.setdefault(window, WindowPlan(window))
        plan.set_expected(stations)
        return Output(state=[(f"w:{window}", plan.record())])

    # --- stacking ------------------------------------------------------------------------------------------
    def work(self) -> bool:
        """Finish an intent left by a crash, else stack one ready (window, group), else close a finished window.

        Returns:
            True when it did one of these (there may be more), False when nothing was ready.
        """
        for window in list(self.intents):
            self._finish(window, self.intents[window])
            return True
        if not self._changed:
            return False
        self._register()
        for plan in sorted(self.plans.values(), key=lambda p: p.window):
            for start, stop in groups(self.stacks.n_pairs, self.group_pairs):
                if plan.ready(start, stop, self.registry):
                    self._stack(plan, start, stop)
                    return True
            if not plan.done and plan.complete(self.registry):
                self._close(plan)
                return True
        self._changed = False
        WINDOWS_OPEN.set(sum(1 for p in self.plans.values() if not p.done))
        return False

    def _register(self) -> None:
        """Grow the stacks to the registered stations (the contiguous prefix of registry indices)."""
        by_index = {i: s for s, i in self.registry.items()}
        stations: list[str] = []
        while len(stations) in by_index:
            stations.append(by_index[len(stations)])
        if len(stations) > self._registered:
            self.stacks.register(stations, self._coordinates(stations[self._registered :]))
            self._registered = len(stations)

    def _coordinates(self, stations: list[str]) -> dict[str, Coordinates | None]:
        """Station positions, as the task manifests gave them; else from one product of each (a station whose
        manifests were all read before a restart, or written by an older correlator)."""
        coords: dict[str, Coordinates | None] = {}
        for station in stations:
            coords[station] = self.positions.get(station)
            if coords[station] is not None:
                continue
            for plan in self.plans.values():
                try:
                    coords[station] = self.products.get(plan.window, station).coordinates
                    break
                except (ObjectNotFound, InvalidKey, DspError):
                    continue
        return coords

    def _stack(self, plan: WindowPlan, start: int, stop: int) -> None:
        pairs, slots = plan.todo(start, stop)
        ccfs, bad = self._gather(plan.window, slots)
        if bad:
            lost = np.isnan(ccfs).any(axis=1)  # a chunk that does not decode reads as NaN too
            if not self._unreadable(plan, pairs[lost], bad):
                return  # rolled back: the next turn reads again
            pairs, slots, ccfs = pairs[~lost], slots[~lost], ccfs[~lost]
            if pairs.size == 0:
                return
        chunks = {int(k): self.stacks.read(int(k)) for k in np.unique(pairs // self.stacks.chunk_pairs)}
        crcs = {str(k): {n: fingerprint(a) for n, a in c.arrays().items()} for k, c in chunks.items()}
        intent: dict[str, object] = {"todo": pairs.tolist(), "slots": slots.tolist(), "crcs": crcs}
        record = (f"i:{plan.window}", json.dumps(intent).encode())
        if not self.transact(lambda: Output(state=[record])):
            return  # rolled back: the state was rebuilt from Kafka, the next turn decides again
        log.info("stacking window %s, pairs %d-%d: %d CCFs into %d chunks", plan.window, start, stop - 1,
                 pairs.size, len(chunks))  # fmt: skip
        self.intents[plan.window] = intent
        self._finish(plan.window, intent, chunks, ccfs)

    def _unreadable(self, plan: WindowPlan, lost: np.ndarray, bad: dict[int, str]) -> bool:
        """Announced CCFs that cannot be read: those pairs count as failed (the run reports them missing, the
        window still completes), with one dead letter per chunk naming it and why; False if rolled back."""
        chunk = self.windows.chunk_pairs
        events: list[tuple[str, str, Event]] = []
        for k, reason in sorted(bad.items()):
            letter = DeadLetter(
                reason=f"UnreadableChunk: {reason}",
                service=SERVICE,
                source=f"{self.windows.chunk_path(plan.window, k)} (slots {k * chunk}-{(k + 1) * chunk - 1})",
            )
            count_dead_letter(letter)
            log.warning("stacker: window %s chunk %d unreadable; its pairs count as failed", plan.window, k)
            events.append((self.topics.dlq, plan.window, letter))
        plan.mark_unreadable(lost)
        self._changed = True
        state: list[tuple[str, bytes | None]] = [(f"w:{plan.window}", plan.record())]
        return self.transact(lambda: Output(events=events, state=state))

    def _finish(
        self,
        window: str,
        intent: dict[str, object],
        chunks: dict[int, StackChunk] | None = None,
        ccfs: np.ndarray | None = None,
    ) -> None:
        """Apply an intent (fresh, or left by a crash): write what the chunks do not hold yet, then commit.

        Args:
            chunks: the chunks as read when the intent was recorded (a fresh intent); read again otherwise.
            ccfs: the intent's CCFs, as read before it was recorded; read again otherwise.
        """
        t0 = time.monotonic()
        todo = np.asarray(intent["todo"], dtype=np.int64)
        if ccfs is None:
            ccfs, bad = self._gather(window, np.asarray(intent["slots"], dtype=np.int64))
            if bad:  # read before the intent was recorded: the store changed under us
                raise StorageError(f"window {window}: chunks {sorted(bad)} of a recorded intent are unreadable")
        crcs: dict[str, dict[str, int]] = intent["crcs"]  # type: ignore[assignment]
        apply(self.stacks, todo, ccfs, {int(k): v for k, v in crcs.items()}, chunks)
        plan = self.plans[window]
        plan.include(todo)
        self._changed = True
        PAIRS_STACKED.inc(len(todo))
        GROUP_SECONDS.observe(time.monotonic() - t0)
        self._commit_window(plan, tombstone=True)

    def _gather(self, window: str, slots: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        """The CCFs in ``slots`` of a window and its unreadable chunks (:func:`results.windows.gather`: bounded
        reads, each chunk once)."""
        return gather(self.windows, window, slots)

    def _close(self, plan: WindowPlan) -> None:
        """Every pair of the window is accounted for: write its slot index and mark it done."""
        if plan.tasks:  # a window of fewer than two stations has no pairs, and no array
            self.windows.write_index(plan.window, plan.slot_index(self.registry))
        plan.done = True
        self._changed = True
        WINDOWS_STACKED.inc()
        self._commit_window(plan, tombstone=False)
        self.arrivals.pop(plan.window, None)
        log.info("window %s stacked: %s", plan.window, plan.accounted(self.registry))

    def _commit_window(self, plan: WindowPlan, *, tombstone: bool) -> None:
        stacked, skipped, failed, expected = plan.accounted(self.registry)
        update = StacksUpdated(
            window=plan.window,
            stacked=stacked,
            skipped=skipped,
            failed=failed,
            expected=expected,
            complete=plan.done,
            last_arrival=self.arrivals.get(plan.window, ""),
        )
        state: list[tuple[str, bytes | None]] = [(f"w:{plan.window}", plan.record())]
        if tombstone:
            state.append((f"i:{plan.window}", None))
        events: list[tuple[str, str, Event]] = [(self.topics.stacks, plan.window, update)]
        if self.transact(lambda: Output(events=events, state=state)):
            self.intents.pop(plan.window, None)
