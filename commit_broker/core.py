"""The commit broker's decision logic, free of Kafka: events and object sightings in, effects out.

:class:`CommitCore` keeps one record per file and per directory, applies the rules, and returns
:class:`Effects`: the events to publish and the state records to persist. The service (service.py) writes both
in one Kafka transaction together with the consumed offsets, which is what makes every decision exactly-once.
Everything here is deterministic given the inputs and ``now``, so it is unit-tested without a broker.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from commit_broker.errors import StateError
from commit_broker.rules import Rule, RuleSet
from contracts.events import (
    DirectoryCommitted,
    DirectoryExpected,
    Event,
    FileCommitted,
    FileReady,
    ProducerFinished,
    ProducerStarted,
    utcnow,
)

ANY_PARTITION = -1


@dataclass
class FileRecord:
    """A distinct committed object."""

    key: str
    directory: str
    size: int
    producer: str
    committed_at: str
    arrived_at: str
    seq: int  # arrival order within the broker's whole history


@dataclass
class DirectoryRecord:
    """What the broker knows of one directory."""

    directory: str
    partition: int = ANY_PARTITION
    expected: int | None = None
    first_seen: float | None = None
    committed: bool = False
    partial: bool = False
    committed_at: str = ""
    producers: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # not persisted here: rebuilt from the file records


@dataclass
class Effects:
    """What one step decided: events to publish (keyed by directory) and state records to persist."""

    ready: list[FileReady] = field(default_factory=list)
    commits: list[DirectoryCommitted] = field(default_factory=list)
    state: list[tuple[str, bytes | None]] = field(default_factory=list)
    ignored: str = ""  # why an input changed nothing (duplicate, no matching rule...), for metrics and logs
    commit_latencies: list[tuple[str, float]] = field(default_factory=list)  # (rule, seconds first file → commit)

    @property
    def events(self) -> list[FileReady | DirectoryCommitted]:
        """Events in publication order: every FileReady of a directory before its DirectoryCommitted."""
        ordered: list[FileReady | DirectoryCommitted] = []
        for commit in self.commits:
            ordered += [r for r in self.ready if r.directory == commit.directory]
            ordered.append(commit)
        committed = {c.directory for c in self.commits}
        return [r for r in self.ready if r.directory not in committed] + ordered

    def merge(self, other: Effects) -> None:
        """Append the effects of another step."""
        self.ready += other.ready
        self.commits += other.commits
        self.state += other.state
        self.commit_latencies += other.commit_latencies


class CommitCore:
    """Applies a :class:`RuleSet` to file events. Not thread-safe; one instance per broker."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.files: dict[str, FileRecord] = {}
        self.dirs: dict[str, DirectoryRecord] = {}
        self.producers: dict[tuple[str, int], str] = {}  # (producer, partition) -> "started" | "finished"
        self._seq = 0
        for directory, _rule in rules.on_file_directories():
            self.dirs.setdefault(directory, DirectoryRecord(directory))

    # --- restore -------------------------------------------------------------------------------------------
    def restore(self, records: Iterable[tuple[str, bytes | None]]) -> None:
        """Rebuild the state from persisted records (latest value per key; None deletes).

        Raises:
            StateError: a record cannot be decoded.
        """
        for key, value in records:
            try:
                self._restore_one(key, value)
            except (ValueError, KeyError, TypeError) as exc:
                raise StateError(f"cannot restore state record {key!r}: {exc}") from exc
        for d in self.dirs.values():
            d.files = []
        for rec in sorted(self.files.values(), key=lambda f: f.seq):
            self._dir(rec.directory).files.append(rec.key)
        self._seq = max((f.seq for f in self.files.values()), default=0)

    def _restore_one(self, key: str, value: bytes | None) -> None:
        kind, _, name = key.partition(":")
        if kind == "f":
            if value is None:
                self.files.pop(name, None)
            else:
                self.files[name] = FileRecord(**json.loads(value))
        elif kind == "d":
            if value is None:
                self.dirs.pop(name, None)
            else:
                self.dirs[name] = DirectoryRecord(**json.loads(value))
        elif kind == "p":
            producer, _, partition = name.rpartition("@")
            if value is None:
                self.producers.pop((producer, int(partition)), None)
            else:
                self.producers[(producer, int(partition))] = json.loads(value)["status"]
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    # --- inputs --------------------------------------------------------------------------------------------
    def handle(self, event: Event, now: float, partition: int = ANY_PARTITION) -> Effects:
        """Apply one event from the files topic.

        Args:
            event: DirectoryExpected, FileCommitted, ProducerStarted or ProducerFinished.
            now: wall-clock seconds (deadlines and latencies).
            partition: the files-topic partition it came from (ordering scope of on_termination).

        Raises:
            ValueError: an event the broker does not accept, or a file whose directory no rule matches;
                the service dead-letters it with this message.
        """
        if isinstance(event, FileCommitted):
            return self.file_committed(event, now, partition)
        if isinstance(event, DirectoryExpected):
            return self._expected(event, now, partition)
        if isinstance(event, ProducerStarted | ProducerFinished):
            return self._producer(event, now, partition)
        raise ValueError(f"the commit broker does not accept {event.type} on the files topic")

    def file_committed(self, event: FileCommitted, now: float, partition: int = ANY_PARTITION) -> Effects:
        """Count a committed file once, announce it under its rule, and commit its directory when complete."""
        rule = self._rule_of(event.directory)
        if not event.key.startswith(event.directory) or event.key == event.directory:
            raise ValueError(f"key {event.key!r} is not inside directory {event.directory!r}")
        effects = Effects()
        if event.key in self.files:
            effects.ignored = "duplicate"
            return effects
        d = self._touch(event.directory, now, partition, effects)
        self._seq += 1
        rec = FileRecord(
            event.key, event.directory, event.size, event.producer, event.committed_at, event.arrived_at, self._seq
        )
        self.files[rec.key] = rec
        d.files.append(rec.key)
        effects.state.append((f"f:{rec.key}", _dump(rec)))
        if event.producer not in d.producers:
            d.producers.append(event.producer)
            effects.state.append(self._dir_record(d))
        if rule.fires_each_file or d.committed:
            effects.ready.append(self._ready(rec))
        self._evaluate(d, rule, now, effects)
        return effects

    def object_seen(self, key: str, size: int, producer: str, now: float) -> Effects:
        """An object appeared in the store (bucket notification or listing): treat it as a FileCommitted.

        Objects outside every rule are ignored.
        """
        found = self.rules.directory_of(key)
        if found is None:
            return Effects(ignored="no rule")
        directory, _rule = found
        event = FileCommitted(directory=directory, key=key, size=size, producer=producer)
        return self.file_committed(event, now)

    def tick(self, now: float) -> Effects:
        """Commit directories whose deadline has passed, as partial."""
        effects = Effects()
        for d in list(self.dirs.values()):
            rule = self.rules.rule_for(d.directory)
            if d.committed or rule is None or rule.deadline is None or d.first_seen is None:
                continue
            if now - d.first_seen >= rule.deadline and rule.commits_directory:
                self._commit(d, rule, d.files, partial=True, now=now, effects=effects)
        return effects

    # --- rules ---------------------------------------------------------------------------------------------
    def _expected(self, event: DirectoryExpected, now: float, partition: int) -> Effects:
        rule = self._rule_of(event.directory)
        effects = Effects()
        d = self._touch(event.directory, now, partition, effects)
        if d.expected == event.n_files:
            effects.ignored = "duplicate"
            return effects
        d.expected = event.n_files
        effects.state.append(self._dir_record(d))
        self._evaluate(d, rule, now, effects)
        return effects

    def _producer(self, event: ProducerStarted | ProducerFinished, now: float, partition: int) -> Effects:
        status = "finished" if isinstance(event, ProducerFinished) else "started"
        effects = Effects()
        current = self.producers.get((event.producer, partition))
        if current == status or current == "finished":
            effects.ignored = "duplicate"
            return effects
        self.producers[(event.producer, partition)] = status
        effects.state.append((f"p:{event.producer}@{partition}", json.dumps({"status": status}).encode()))
        for d in list(self.dirs.values()):
            rule = self.rules.rule_for(d.directory)
            if rule is not None and rule.commit == "on_termination":
                self._evaluate(d, rule, now, effects)
        return effects

    def _evaluate(self, d: DirectoryRecord, rule: Rule, now: float, effects: Effects) -> None:
        """Commit ``d`` if its rule is satisfied, then anything whose on_file dependencies became satisfied."""
        if d.committed:
            return
        if rule.commit == "n_files":
            n = rule.n_files if isinstance(rule.n_files, int) else d.expected
            if n is not None and len(d.files) >= n:
                self._commit(d, rule, d.files[:n], partial=False, now=now, effects=effects)
        elif rule.commit == "on_termination" and self._all_finished(d):
            self._commit(d, rule, d.files, partial=False, now=now, effects=effects)
        self._evaluate_on_file(now, effects)

    def _evaluate_on_file(self, now: float, effects: Effects) -> None:
        changed = True
        while changed:  # a commit can satisfy another on_file rule in turn
            changed = False
            for directory, rule in self.rules.on_file_directories():
                d = self._dir(directory)
                if not d.committed and all(self._dependency_met(dep) for dep in rule.on_file):
                    self._commit(d, rule, d.files, partial=False, now=now, effects=effects)
                    changed = True

    def _dependency_met(self, dependency: str) -> bool:
        if dependency.endswith("/"):
            d = self.dirs.get(dependency)
            return d is not None and d.committed
        return dependency in self.files

    def _all_finished(self, d: DirectoryRecord) -> bool:
        registered = {p for (p, _part) in self.producers} | set(d.producers)
        if not registered:
            return False
        scopes = (d.partition,) if d.partition != ANY_PARTITION else None
        for producer in registered:
            statuses = [
                s for (p, part), s in self.producers.items() if p == producer and (not scopes or part in scopes)
            ]
            if "finished" not in statuses:
                return False
        return True

    def _commit(
        self, d: DirectoryRecord, rule: Rule, files: list[str], *, partial: bool, now: float, effects: Effects
    ) -> None:
        listed = list(files)
        if not rule.fires_each_file:
            # fire=update held every file back until now; files beyond an n_files count are late but usable.
            chosen = set(listed)
            late = [k for k in d.files if k not in chosen]
            effects.ready += [self._ready(self.files[k]) for k in listed + late]
        d.committed, d.partial, d.committed_at = True, partial, utcnow()
        first = _iso(d.first_seen) if d.first_seen is not None else ""
        effects.commits.append(
            DirectoryCommitted(
                directory=d.directory,
                files=listed,
                rule=rule.commit,  # type: ignore[arg-type]  # on_close never reaches _commit
                partial=partial,
                committed_at=d.committed_at,
                first_file_at=first,
            )
        )
        effects.state.append(self._dir_record(d))
        if d.first_seen is not None:
            effects.commit_latencies.append((rule.commit, max(0.0, now - d.first_seen)))

    # --- helpers -------------------------------------------------------------------------------------------
    def _rule_of(self, directory: str) -> Rule:
        rule = self.rules.rule_for(directory)
        if rule is None:
            raise ValueError(f"no rule matches directory {directory!r}")
        return rule

    def _dir(self, directory: str) -> DirectoryRecord:
        return self.dirs.setdefault(directory, DirectoryRecord(directory))

    def _touch(self, directory: str, now: float, partition: int, effects: Effects) -> DirectoryRecord:
        d = self._dir(directory)
        if d.first_seen is None:
            d.first_seen = now
            d.partition = partition
            effects.state.append(self._dir_record(d))
        return d

    def _dir_record(self, d: DirectoryRecord) -> tuple[str, bytes]:
        data = asdict(d)
        data.pop("files")
        return f"d:{d.directory}", json.dumps(data).encode()

    def _ready(self, rec: FileRecord) -> FileReady:
        return FileReady(
            directory=rec.directory,
            key=rec.key,
            size=rec.size,
            committed_at=rec.committed_at,
            arrived_at=rec.arrived_at,
        )

    @property
    def next_deadline(self) -> float:
        """Earliest deadline (epoch s) among open directories whose rule has one; +inf when there is none.

        The broker commits a directory at its deadline, so a value in the past means the broker is behind.
        """
        deadlines = [
            d.first_seen + r.deadline
            for d in self.dirs.values()
            if not d.committed
            and d.first_seen is not None
            and (r := self.rules.rule_for(d.directory)) is not None
            and r.commits_directory
            and r.deadline is not None
        ]
        return min(deadlines, default=math.inf)

    @property
    def open_directories(self) -> int:
        """Directories with events but no commit yet (on_close directories never commit and are not counted)."""
        return sum(
            1
            for d in self.dirs.values()
            if not d.committed
            and d.first_seen is not None
            and (r := self.rules.rule_for(d.directory)) is not None
            and r.commits_directory
        )


def _dump(rec: FileRecord) -> bytes:
    return json.dumps(asdict(rec)).encode()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")
