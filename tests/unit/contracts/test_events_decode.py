"""Event decoding is bounded: any bytes give a valid event or an EventDecodeError, and never cost a worker.

The property every test here checks through :func:`_outcome`: ``decode`` either returns an event that
round-trips through its own encoding, or raises :class:`EventDecodeError` with a reason and the raw bytes.
Any other exception (RecursionError, UnicodeEncodeError, OverflowError...) fails the test.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import events
from contracts.boundedjson import nesting_depth
from contracts.events import (
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
    DeadLetter,
    DirectoryCommitted,
    DirectoryExpected,
    Event,
    EventDecodeError,
    FileCommitted,
    FileReady,
    PairCorrelated,
    PairTask,
    ProducerFinished,
    ProducerStarted,
    RawFileArrived,
    decode,
)
from contracts.ids import SEED_ID_MAX_CHARS
from storage import keys

W = "20240101T000000Z"
A, B, C = "XX.AAA.00.HHZ", "XX.BBB.00.HHZ", "XX.CCC.00.HHZ"
DIR = f"run1/prep/{W}/"

SAMPLES: list[Event] = [
    RawFileArrived(
        key=f"run1/raw/{W}/{A}.mseed",
        station=A,
        window=W,
        size=123,
        source="/data/in/a b.mseed",
        coordinates={"latitude": 45.0, "longitude": 7.5, "elevation_m": 100},
    ),
    DirectoryExpected(directory=DIR, n_files=3),
    FileCommitted(directory=DIR, key=f"{DIR}{A}.npz", size=10, producer="preprocess-host-1", etag='"abc"'),
    ProducerStarted(producer="preprocess-host-1"),
    ProducerFinished(producer="preprocess-host-1"),
    FileReady(directory=DIR, key=f"{DIR}{A}.npz", size=10),
    DirectoryCommitted(directory=DIR, files=[f"{DIR}{A}.npz", f"{DIR}{B}.npz"], rule="n_files", partial=True),
    PairTask(window=W, directory=DIR, row=A, columns=[B, C], keys={s: f"{DIR}{s}.npz" for s in (A, B, C)}),
    PairCorrelated(window=W, a=A, b=B, key=f"run1/ccf/{W}/{A}.r1.npz", n_subwindows=5, worker="correlate-1"),
    DeadLetter(reason="EmptyRecord: no bytes", service="ingest", source="/in/x.mseed", payload="{"),
]
TYPES = sorted({e.type for e in SAMPLES})
IDS = [e.type for e in SAMPLES]


def _outcome(raw: Any) -> Event | None:
    """The event ``decode`` returns (checked to round-trip), or None when it refuses with a reason."""
    try:
        event = decode(raw)
    except EventDecodeError as exc:
        assert exc.reason and str(exc) == exc.reason and len(exc.reason) <= 300
        assert exc.raw == (bytes(raw) if isinstance(raw, bytes | bytearray) else b"")
        return None
    assert decode(event.encode()) == event
    return event


def _reason(raw: Any) -> str:
    with pytest.raises(EventDecodeError) as caught:
        decode(raw)
    return caught.value.reason


def _dict(event: Event) -> dict[str, Any]:
    return json.loads(event.encode())


def _raw(data: object) -> bytes:
    return json.dumps(data).encode()


# --- what must decode --------------------------------------------------------------------------------------


@pytest.mark.parametrize("event", SAMPLES, ids=IDS)
def test_every_event_type_round_trips(event: Event) -> None:
    assert _outcome(event.encode()) == event


def _seed_id(i: int) -> str:
    """A grammar-valid SEED id of the maximal length (35 characters)."""
    return f"NETWORK{i % 10}.S{i:07d}.LOCATION.CHANNELZ"


def _longest_key(seed_id: str) -> str:
    """A valid product key of exactly S3's 1,024-byte limit: a deep namespace, then prep/<window>/<id>.npz."""
    tail = f"prep/{W}/{seed_id}.npz"
    room = keys.MAX_KEY_BYTES - len(tail)
    segments = ["n" * 199 + "/"] * (room // 200)
    namespace = "".join(segments) + "m" * (room - 200 * len(segments) - 1) + "/"
    return keys.validate_key(namespace + tail)


def test_the_largest_legitimate_event_fits_the_bounds() -> None:
    """The first row task of a 520-station window, every key at the S3 limit: the case the size bound is for."""
    ids = [_seed_id(i) for i in range(520)]
    assert all(len(s) == SEED_ID_MAX_CHARS and keys.validate_seed_id(s) for s in ids)
    task = PairTask(
        window=W,
        directory=_longest_key(ids[0]).rsplit("/", 1)[0] + "/",
        row=ids[0],
        columns=ids[1:],
        keys={s: _longest_key(s) for s in ids},
        ready_at=events.utcnow(),
        arrived_at=events.utcnow(),
    )
    raw = task.encode()
    assert all(len(k) == keys.MAX_KEY_BYTES for k in task.keys.values())
    assert 500_000 < len(raw) < MAX_EVENT_BYTES
    assert _outcome(raw) == task


def test_bounds_agree_with_the_rest_of_the_code() -> None:
    assert events.MAX_KEY_CHARS == keys.MAX_KEY_BYTES  # events carry keys that storage accepts
    assert MAX_EVENT_BYTES < 900_000  # the poison records are refused by size alone


# --- what must be refused, with a reason ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, b"", bytearray(), "{}", 42, memoryview(b"{}")], ids=repr)
def test_empty_and_non_bytes_are_refused(raw: Any) -> None:
    assert _outcome(raw) is None


@pytest.mark.parametrize("opener", ["[", "{", '{"a":', '{"schema":1,"type":"PairTask","keys":'])
def test_deep_nesting_is_refused_quickly(opener: str) -> None:
    raw = (opener * 100_000).encode()
    t0 = time.perf_counter()
    reason = _reason(raw)
    assert time.perf_counter() - t0 < 0.5, "the depth check must not parse what it refuses"
    assert "nested deeper" in reason or "bytes is more than" in reason


def test_depth_limit_is_exact() -> None:
    event = _dict(SAMPLES[0])
    event["coordinates"] = {"latitude": 1.0}  # depth 2: decodes
    assert _outcome(_raw(event)) is not None
    wrap: Any = 1
    for _ in range(MAX_EVENT_DEPTH - 1):
        wrap = [wrap]
    event["source"] = wrap  # depth MAX_EVENT_DEPTH: parsed, then refused by type
    assert "nested deeper" not in _reason(_raw(event))
    event["source"] = [wrap]  # one more: refused before parsing
    assert "nested deeper" in _reason(_raw(event))


@pytest.mark.parametrize("event", SAMPLES, ids=IDS)
def test_900_kb_values_are_refused_by_size(event: Event) -> None:
    for field, value in _dict(event).items():
        if isinstance(value, str):
            reason = _reason(_raw({**_dict(event), field: "x" * 900_000}))
            assert "more than the" in reason, field


@pytest.mark.parametrize("event", SAMPLES, ids=IDS)
def test_every_event_truncated_anywhere_is_refused(event: Event) -> None:
    raw = event.encode()
    for cut in range(len(raw)):
        assert _outcome(raw[:cut]) is None, raw[:cut]


def _wrong_values(value: object) -> list[object]:
    """JSON values of every type that a field holding ``value`` cannot take."""
    candidates: list[object] = [None, True, -3, 2.5, "text", [], {}, [1], {"k": 1}]
    if isinstance(value, bool):
        return [c for c in candidates if not isinstance(c, bool)]
    if isinstance(value, float):  # coordinates: an int is also a number
        return [c for c in candidates if not isinstance(c, int | float) or isinstance(c, bool)]
    return [c for c in candidates if type(c) is not type(value)]


@pytest.mark.parametrize("event", SAMPLES, ids=IDS)
def test_wrong_types_are_refused_for_every_field(event: Event) -> None:
    original = _dict(event)
    for field, value in original.items():
        nullable = field == "coordinates"
        for wrong in _wrong_values(value):
            if wrong is None and nullable:
                continue
            reason = _reason(_raw({**original, field: wrong}))
            assert field in reason or "schema" in reason or "tag" in reason, (field, wrong, reason)


def test_missing_fields_and_unknown_fields_are_refused() -> None:
    for event in SAMPLES:
        data = _dict(event)
        for field in [f for f in data if f not in ("schema", "type")]:
            if type(event).model_fields[field].is_required():
                assert field in _reason(_raw({k: v for k, v in data.items() if k != field}))
        assert "extra" in _reason(_raw({**data, "surprise": 1})).lower()


@pytest.mark.parametrize(
    ("field", "literal", "expected"),
    [
        ("station", b'"' + b"X" * (SEED_ID_MAX_CHARS + 1) + b'"', "station"),
        ("window", f'"{W}0"'.encode(), "window"),
        ("key", b'"' + b"k" * 1025 + b'"', "key"),
        ("arrived_at", b'"' + b"2" * 65 + b'"', "arrived_at"),
        ("size", str(2**63).encode(), "64 bits"),
        ("size", b"-1", "size"),
        ("size", b"1" + b"0" * 5000, "64 bits"),  # parsed as int, this would already cost a Python limit error
        ("size", b"1.0", "size"),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_id_fields_and_numbers_are_bounded(field: str, literal: bytes, expected: str) -> None:
    raw = _raw({**_dict(SAMPLES[0]), field: "@"}).replace(b'"@"', literal)
    assert expected in _reason(raw)


def test_largest_64_bit_size_is_accepted() -> None:
    data = {**_dict(SAMPLES[0]), "size": 2**63 - 1}
    assert _outcome(_raw(data)).size == 2**63 - 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" + b"0" * 400 + b".0"], ids=repr
)
def test_non_finite_numbers_are_refused(number: bytes) -> None:
    raw = _raw(_dict(SAMPLES[0])).replace(b'"latitude": 45.0', b'"latitude": ' + number)
    assert number[:8].decode() in raw.decode()
    assert _outcome(raw) is None


@pytest.mark.parametrize("schema", [None, True, 1.0, "1", 2, 0, [1], 10**18], ids=repr)  # True, 1.0 == 1 in Python
def test_schema_must_be_exactly_one(schema: object) -> None:
    data = _dict(SAMPLES[3])
    assert "schema" in _reason(json.dumps({**data, "schema": schema}).encode())
    del data["schema"]
    assert "schema" in _reason(_raw(data))


def test_duplicate_keys_are_refused() -> None:
    raw = b'{"schema": 1, "type": "ProducerStarted", "producer": "a", "producer": "b"}'
    assert "duplicate" in _reason(raw)


@pytest.mark.parametrize(
    ("escape", "ok"),
    [
        ("\\ud800", False),  # lone high surrogate
        ("\\udfff", False),  # lone low surrogate
        ("\\udc00\\ud800", False),  # a pair in the wrong order
        ("\\ud83d\\ude00", True),  # a valid pair: one astral character
        ("\\u00e9\\u4e2d", True),
        ("\\u0000", True),  # NUL is a valid JSON string character
    ],
)
def test_unicode_escapes(escape: str, ok: bool) -> None:
    raw = b'{"schema": 1, "type": "ProducerStarted", "producer": "p' + escape.encode() + b'"}'
    assert (_outcome(raw) is not None) is ok


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", '{"schema": 1}'.encode("utf-16"), b'{"a": "\xed\xa0\x80"}'], ids=repr)
def test_non_utf8_is_refused(raw: bytes) -> None:
    assert "UTF-8" in _reason(raw)


# --- fuzzing -------------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(raw: bytes) -> None:
    _outcome(raw)


@_FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_random_values_in_every_field(event: Event, data: st.DataObject) -> None:
    original = _dict(event)
    field = data.draw(st.sampled_from(sorted(original)))
    value = data.draw(_JSON)
    _outcome(json.dumps({**original, field: value}).encode())


@_FUZZ
@given(st.sampled_from(SAMPLES), st.text(max_size=40))
def test_unknown_types(event: Event, name: str) -> None:
    result = _outcome(_raw({**_dict(event), "type": name}))
    assert result is None or (name in TYPES and result.type == name)


@_FUZZ
@given(st.sampled_from(SAMPLES), st.text(st.characters(categories=["Cs", "L", "N", "P", "S", "Z", "C"]), max_size=30))
def test_any_unicode_including_surrogates_through_ascii_escapes(event: Event, text: str) -> None:
    """``ensure_ascii`` writes every character, lone surrogates included, as a ``\\u`` escape."""
    for field, value in _dict(event).items():
        if isinstance(value, str) and field not in ("type",):
            result = _outcome(json.dumps({**_dict(event), field: text}, ensure_ascii=True).encode())
            has_lone_surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
            assert result is None or not has_lone_surrogate


@_FUZZ
@given(st.sampled_from(SAMPLES), st.integers(min_value=-(10**40), max_value=10**40) | st.floats())
def test_huge_and_odd_numbers(event: Event, number: int | float) -> None:
    for field, value in _dict(event).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            _outcome(json.dumps({**_dict(event), field: number}).encode())


@_FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_byte_flips_and_splices(event: Event, data: st.DataObject) -> None:
    raw = bytearray(event.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at : at + data.draw(st.integers(0, 3))] = data.draw(st.binary(max_size=6))
    _outcome(bytes(raw))


@_FUZZ
@given(_JSON)
def test_the_depth_scan_is_exact_on_valid_json(value: object) -> None:
    """Strings holding brackets, quotes and backslashes must not move the count."""
    text = json.dumps(value)
    assert nesting_depth(text, 100) == _depth(value)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0
