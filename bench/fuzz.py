"""Hostile records for a run's topics: malformed bytes, and well-formed events that lie.

Malformed: random bytes, truncated JSON, wrong field types, deep nesting (100,000 levels of ``[``), 900 KB
values, unknown types and schemas, empty and null values, invalid UTF-8, NaN and huge numbers. Forged (valid
per ``contracts/events.py``): events for objects, windows, stations and pairs that do not exist, keys that
escape their prefix with ``..``, keys in another run's namespace, and unicode keys. The events are built
with the contract classes, so they stay well-formed when the contract evolves.

:func:`produce` sends records like any outside client and returns where they landed, so checks can leave
them out when they count what the pipeline itself published.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from bench.checks import Offset
from contracts.events import (
    DeadLetter,
    DirectoryCommitted,
    DirectoryExpected,
    Event,
    FileCommitted,
    FileReady,
    PairCorrelated,
    PairTask,
    ProducerFinished,
    ProducerStarted,
    RawFileArrived,
    RowCorrelated,
    StacksUpdated,
)
from contracts.kafka import connection_config

KeyValue = tuple[bytes | None, bytes | None]
TOPICS = ("raw", "files", "commits", "pairs", "results", "stacks", "dlq")  # every topic a run's processes consume
NOWHERE_WINDOW = "29990101T000000Z"  # a well-formed window id no run has
GHOST = "XF.GHOST.00.HHZ"  # a well-formed SEED id no deployment has
ODD_NAMES = ("../../../etc/passwd", "..", "ünï-cødé-日本", "a/../../b", "x\u0000y", "\u202etxt.exe", "🙂")


@dataclass(frozen=True)
class Target:
    """The run under attack: its id (topic prefix and namespace), real windows and real stations."""

    run_id: str
    windows: tuple[str, ...]
    stations: tuple[str, ...]

    @property
    def ns(self) -> str:
        """The run's key namespace."""
        return f"{self.run_id}/"

    def topic(self, name: str) -> str:
        """A run topic by short name (``raw`` → ``<run id>.xcorr.raw``)."""
        return f"{self.run_id}.xcorr.{name}"


def deep_nesting(levels: int = 100_000) -> bytes:
    """Valid JSON nested ``levels`` deep: ``[[[…]]]``. A recursive decoder overflows its stack on it."""
    return b"[" * levels + b"]" * levels


def poison(target: Target) -> KeyValue:
    """The one poison record of the issue: deep nesting on the raw topic, keyed like a real station."""
    return target.stations[0].encode(), deep_nesting()


# --- forged, well-formed events ------------------------------------------------------------------------------


def forged_raw_arrivals(target: Target, n: int = 200) -> list[KeyValue]:
    """RawFileArrived for real stations and windows whose raw key is missing, escapes with ``..``, is unicode
    or lies in another namespace. Each must be dead-lettered without costing the real station its window."""
    return [_forged_raw(target, i) for i in range(n)]


def _forged_raw(target: Target, i: int) -> KeyValue:
    w, s = target.windows[i % len(target.windows)], target.stations[i % len(target.stations)]
    key = [
        f"{target.ns}raw/{w}/missing-{i}.mseed",
        f"{target.ns}raw/{w}/../../../../etc/hostname",
        f"{target.ns}raw/{w}/ünïcødé-{i}-日本.mseed",
        f"other-run/raw/{w}/{s}.mseed",
    ][i % 4]
    return _kv(s, RawFileArrived(key=key, station=s, window=w, size=1000 + i, source=key))


def forged_file_ready(target: Target, n: int = 20) -> list[KeyValue]:
    """FileReady in real window directories for products that do not exist (stations no deployment has)."""
    out = []
    for i in range(n):
        w = target.windows[i % len(target.windows)]
        directory = f"{target.ns}prep/{w}/"
        key = f"{directory}XF.G{i:03d}.00.HHZ.npz"
        out.append(_kv(directory, FileReady(directory=directory, key=key, size=1234)))
    return out


def forged_events(target: Target, topic: str, i: int) -> KeyValue:
    """The ``i``-th well-formed lie for ``topic``: an event for something that does not exist, or whose key
    escapes its prefix or the run's namespace."""
    w = target.windows[i % len(target.windows)]
    real = target.stations[i % len(target.stations)]
    odd = ODD_NAMES[i % len(ODD_NAMES)]
    other = target.stations[(i + 1) % len(target.stations)]
    pairs = len(target.stations) * (len(target.stations) - 1) // 2
    d_ghost, d_real = f"{target.ns}prep/{NOWHERE_WINDOW}/", f"{target.ns}prep/{w}/"
    makers: dict[str, list[Callable[[], KeyValue]]] = {
        "raw": [lambda: _forged_raw(target, i)],
        "files": [
            lambda: _kv(d_ghost, DirectoryExpected(directory=d_ghost, n_files=3)),
            lambda: _kv(d_real, FileCommitted(directory=d_real, key=f"{d_real}{GHOST}.npz", size=1, producer="x")),
            lambda: _kv(d_real, FileCommitted(directory=d_real, key=f"{d_real}{odd}", size=1, producer="x")),
            lambda: _kv(odd, ProducerStarted(producer=f"chaos-{odd}")),
            lambda: _kv(odd, ProducerFinished(producer=f"chaos-{odd}")),
        ],
        "commits": [
            lambda: _kv(d_real, FileReady(directory=d_real, key=f"{d_real}{odd}")),
            lambda: _kv(d_real, FileReady(directory=d_real, key=f"other-run/prep/{w}/{real}.npz")),
            lambda: _kv(
                d_ghost, DirectoryCommitted(directory=d_ghost, files=[f"{d_ghost}{GHOST}.npz"], rule="n_files")
            ),
        ],
        "pairs": [
            lambda: _kv(w, PairTask(window=w, directory=d_real, row=GHOST, columns=[real], keys={GHOST: odd})),
            lambda: _kv(
                w, PairTask(window=w, directory=d_real, row=real, columns=[odd], keys={real: f"{d_real}{odd}"})
            ),
        ],
        "results": [
            lambda: _kv(
                real, PairCorrelated(window=w, a=real, b=GHOST, key=f"{target.ns}ccf/{w}/{odd}", n_subwindows=1)
            ),
            lambda: _kv(real, PairCorrelated(window=NOWHERE_WINDOW, a=real, b=GHOST, key=odd, n_subwindows=1)),
            # a replay of what a real task's announcement would say: the stacker must not add it twice
            lambda: _kv(w, _row(w, real, 0, [other], f"{target.ns}tasks/{w}/{real}.s0.json")),
            lambda: _kv(w, _row(w, real, 64 * (i % 5), [GHOST], f"{target.ns}tasks/{w}/{real}.s{64 * (i % 5)}.json")),
            lambda: _kv(w, _row(w, real, 0, [other], f"{target.ns}tasks/{w}/{odd}")),
            lambda: _kv(w, _row(w, real, 0, [other], f"other-run/tasks/{w}/{real}.s0.json")),
            lambda: _kv(w, _row(w, real, 10**9, [other], f"{target.ns}tasks/{w}/{real}.s1000000000.json")),
            lambda: _kv(NOWHERE_WINDOW, _row(NOWHERE_WINDOW, real, 0, [other], f"{target.ns}tasks/x.json")),
        ],
        "stacks": [  # the stacker's word, forged: every window complete with the pair count the run expects
            lambda: _kv(w, StacksUpdated(window=w, stacked=pairs, expected=pairs, complete=True)),
            lambda: _kv(w, StacksUpdated(window=w, stacked=10**6, expected=10**6, complete=True)),
            lambda: _kv(NOWHERE_WINDOW, StacksUpdated(window=NOWHERE_WINDOW, stacked=1, expected=1, complete=True)),
        ],
        "dlq": [lambda: _kv(real, _forged_dead_letter(target, w, real, i))],
    }
    choices = makers[topic]
    return choices[i % len(choices)]()


def _row(window: str, row: str, slot: int, columns: list[str], manifest: str) -> RowCorrelated:
    return RowCorrelated(window=window, row=row, slot=slot, pairs=len(columns), columns=columns, manifest=manifest)


def _forged_dead_letter(target: Target, window: str, station: str, i: int) -> DeadLetter:
    """A dead letter anyone could publish, claiming a real station-window failed to preprocess."""
    raw = RawFileArrived(key=f"{target.ns}raw/{window}/forged-{i}.mseed", station=station, window=window, size=1)
    return DeadLetter(reason="forged by chaos", service="preprocess", payload=raw.encode().decode())


def _kv(key: str, event: Event) -> KeyValue:
    return key.encode(), event.encode()


# --- malformed bytes ----------------------------------------------------------------------------------------


def malformed(target: Target, topic: str, n: int, seed: int = 0) -> list[KeyValue]:
    """``n`` mixed records for ``topic``: mostly malformed, a fifth forged; at most 3 deeply nested and 2 of
    900 KB per topic (they are large)."""
    rng = random.Random(f"{seed}-{topic}")
    kinds: list[Callable[[random.Random, int], bytes | None]] = [
        _random_bytes,
        _truncated,
        _wrong_type,
        _odd_json,
        lambda r, i: forged_events(target, topic, i)[1],
    ]
    out: list[KeyValue] = [(_key(rng, target), deep_nesting()) for _ in range(min(3, n))]
    out += [(_key(rng, target), _huge(rng, i)) for i in range(min(2, n - len(out)))]
    out += [(_key(rng, target), kinds[i % len(kinds)](rng, i)) for i in range(n - len(out))]
    rng.shuffle(out)
    return out


def _key(rng: random.Random, target: Target) -> bytes | None:
    return rng.choice([None, b"", target.stations[0].encode(), "ünï/../x".encode(), rng.randbytes(12)])


def _random_bytes(rng: random.Random, _i: int) -> bytes:
    return rng.randbytes(rng.randint(1, 2000))


def _sample_event(i: int) -> dict[str, object]:
    events = [
        RawFileArrived(key="raw/20240101T000000Z/XF.S000.00.HHZ.mseed", station="XF.S000.00.HHZ", window="w", size=1),
        FileCommitted(directory="prep/w/", key="prep/w/x.npz", size=1, producer="p"),
        PairTask(window="w", directory="prep/w/", row="A", columns=["B"], keys={"A": "a", "B": "b"}),
        PairCorrelated(window="w", a="A", b="B", key="ccf/w/A__B.npz", n_subwindows=1),
    ]
    data: dict[str, object] = json.loads(events[i % len(events)].encode())
    return data


def _truncated(rng: random.Random, i: int) -> bytes:
    full = json.dumps(_sample_event(i)).encode()
    return full[: rng.randint(1, len(full) - 1)]


def _wrong_type(rng: random.Random, i: int) -> bytes:
    data = _sample_event(i)
    field = rng.choice([k for k in data if k not in ("schema", "type")])
    data[field] = rng.choice([123, -1, "x", [], {}, None, True, 1e308, ["a", 1], {"$ne": 1}])
    return json.dumps(data).encode()


def _odd_json(rng: random.Random, i: int) -> bytes | None:
    data = _sample_event(i)
    choices: list[bytes | None] = [
        None,
        b"",
        b"42",
        b'"a string"',
        b"null",
        b"[]",
        b'{"schema": 1, "type": "NoSuchEvent"}',
        json.dumps({**data, "schema": 2}).encode(),
        json.dumps({**data, "schema": "1"}).encode(),
        json.dumps({**data, "surprise": True}).encode(),
        json.dumps(data).encode().replace(b'"size": 1', b'"size": NaN'),
        json.dumps(data).encode().replace(b'"schema": 1', b'"schema": 1' + b"0" * 500),
        b'{"schema": 1, "type": "RawFileArrived", "type": "PairTask"}',
        b"\xff\xfe\x00{" + rng.randbytes(20),
        ("{" * 5000).encode(),
    ]
    return rng.choice(choices)


def _huge(rng: random.Random, i: int) -> bytes:
    """About 900 KB: a valid event with a giant field, or noise."""
    if i % 2:
        return rng.randbytes(900_000)
    return json.dumps({**_sample_event(i), "source": "x" * 900_000}).encode()


# --- producing ------------------------------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, records: list[KeyValue], timeout: float = 60.0) -> list[Offset]:
    """Produce records like an outside client (plain idempotent producer, no transaction).

    Returns:
        (partition, offset) of every record that landed.

    Raises:
        RuntimeError: a record was refused or not delivered within ``timeout``.
    """
    landed: list[Offset] = []
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            landed.append((msg.partition() or 0, msg.offset() or 0))
        else:
            failed.append(str(err))

    producer = Producer({**connection_config(bootstrap), "enable.idempotence": True, "linger.ms": 20, "log_level": 0})
    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(timeout)
    if failed or left:
        raise RuntimeError(f"{topic}: {len(failed)} records refused ({failed[:1]}), {left} undelivered")
    return landed
