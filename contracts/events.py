"""Wire events of xcorrflow (DESIGN.md §4): frozen, typed records serialised as JSON with a schema version.

Other tools may emit or read these, so the fields named in the issue are fixed; more are welcome. Decoding is
strict and bounded: an unknown ``type``, a wrong ``schema``, a malformed field, or a message too big, too deep or
holding NaN raises :class:`EventDecodeError`, which the workers turn into a dead letter instead of crashing; no
other exception leaves :func:`decode` for any bytes. Every event carries the ids that make it idempotent.

| event                | topic    | Kafka key           | idempotency id          |
|----------------------|----------|---------------------|-------------------------|
| RawFileArrived       | raw      | station id          | raw object key          |
| DirectoryExpected    | files    | directory           | directory               |
| FileCommitted        | files    | directory           | object key              |
| ProducerStarted      | files    | producer (broadcast to every partition)  | producer |
| ProducerFinished     | files    | producer (broadcast to every partition)  | producer |
| FileReady            | commits  | directory           | object key              |
| DirectoryCommitted   | commits  | directory           | directory               |
| PairTask             | pairs    | window/row station  | (window, row, columns)  |
| PairCorrelated       | results  | pair                | (window, pair): kept for outside readers, no longer sent |
| RowCorrelated        | results  | window/row station  | (window, row)           |
| StacksUpdated        | stacks   | window              | (window, stacked count) |
| DeadLetter           | dlq      | source key          | (topic, partition, offset) |
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from contracts.boundedjson import load_bounded_json
from contracts.errors import JsonRefused, XcorrflowError
from contracts.ids import SEED_ID_MAX_CHARS, WINDOW_ID_CHARS

SCHEMA = 1

# --- bounds of a decodable message -------------------------------------------------------------------------
# The largest legitimate event is the PairTask of the first row of a 520-station window (DESIGN.md's scale):
# 519 columns (SEED ids of at most 35 characters: ~20 KB) and the product key of all 520 stations. With keys
# of ~80 bytes, as runs make them, that is ~70 KB; even with every key at S3's 1,024-byte limit it is ~576 KB.
# 768 KiB keeps a third above that worst case, stays under Kafka's default 1 MiB message, and refuses the
# 900 KB poison records of issue 10 before any parsing.
MAX_EVENT_BYTES = 768 * 1024
# Events nest two levels: an object holding a list (columns, files) or a dict of scalars (keys, coordinates).
# Four leaves room for one more level in a later schema while staying ~250x under Python's recursion limit,
# which is what json.loads would hit otherwise.
MAX_EVENT_DEPTH = 4
# Id-like fields, bounded by what their producers can make (checked against every producer in the repo):
MAX_KEY_CHARS = 1024  # object keys and directory prefixes: S3's key limit (= storage.keys.MAX_KEY_BYTES)
MAX_NAME_CHARS = 512  # producer, worker, service: "preprocess-<hostname, at most 253>-<pid>" fits with room
MAX_TIME_CHARS = 64  # ISO 8601 times: utcnow() writes 32 characters
MAX_ETAG_CHARS = 128  # S3 etags: 32 hex digits in quotes, plus "-<parts>" for a multipart upload
MAX_TOPIC_CHARS = 249  # Kafka's own limit on a topic name
MAX_PAYLOAD_CHARS = 4096  # a dead letter quotes at most this much of the offending message (contracts.kafka)
_MAX_REASON_CHARS = 300  # decode errors quote the input; a 700 KB "type" must not become a 700 KB reason

ObjectKey = Annotated[str, StringConstraints(max_length=MAX_KEY_CHARS)]
SeedId = Annotated[str, StringConstraints(max_length=SEED_ID_MAX_CHARS)]
WindowId = Annotated[str, StringConstraints(max_length=WINDOW_ID_CHARS)]
Name = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]
Timestamp = Annotated[str, StringConstraints(max_length=MAX_TIME_CHARS)]


class EventDecodeError(XcorrflowError):
    """A message is not a valid xcorrflow event. Carries the raw bytes for the dead-letter record."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


def utcnow() -> str:
    """Current time as ISO 8601 UTC with microseconds, the form every ``*_at`` field uses."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class _Event(BaseModel):
    """Common base: frozen, unknown fields rejected, ``schema`` carried on the wire."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, strict=True)

    schema_version: Literal[1] = Field(1, alias="schema", description="wire schema version")

    def encode(self) -> bytes:
        """Serialise to compact JSON bytes."""
        return self.model_dump_json(by_alias=True).encode()


class RawFileArrived(_Event):
    """A raw MiniSEED object of one station and one window is in the store."""

    type: Literal["RawFileArrived"] = "RawFileArrived"
    key: ObjectKey = Field(description="raw object key, raw/<window>/<SEED id>.mseed")
    station: SeedId = Field(description="SEED id NET.STA.LOC.CHA")
    window: WindowId = Field(description="window id YYYYMMDDTHHMMSSZ")
    size: int = Field(ge=0, description="object size in bytes")
    arrived_at: Timestamp = Field(default_factory=utcnow, description="when ingest saw the data (ISO 8601)")
    # Not bounded on its own: ingest joins the paths of every file of a station-window here.
    source: str = Field("", description="where the data came from (local path or URL), for dead letters")
    coordinates: dict[Annotated[str, StringConstraints(max_length=32)], float] | None = Field(
        None, description="station position when known: latitude, longitude (degrees), elevation_m"
    )


class DirectoryExpected(_Event):
    """How many files a directory will hold (the ``n_files: expected`` of a rule)."""

    type: Literal["DirectoryExpected"] = "DirectoryExpected"
    directory: ObjectKey
    n_files: int = Field(ge=0)


class FileCommitted(_Event):
    """An object is durable in the store; its producer (or a bucket notification) says so."""

    type: Literal["FileCommitted"] = "FileCommitted"
    directory: ObjectKey
    key: ObjectKey
    size: int = Field(ge=0)
    producer: Name
    committed_at: Timestamp = Field(default_factory=utcnow)
    etag: Annotated[str, StringConstraints(max_length=MAX_ETAG_CHARS)] = ""
    arrived_at: Timestamp = Field("", description="arrival time of the raw data behind this file, for latency metrics")


class ProducerStarted(_Event):
    """A producer registers itself for ``on_termination`` rules. Sent to every partition of the files topic."""

    type: Literal["ProducerStarted"] = "ProducerStarted"
    producer: Name


class ProducerFinished(_Event):
    """A producer will write no more files. Sent to every partition of the files topic."""

    type: Literal["ProducerFinished"] = "ProducerFinished"
    producer: Name


class FileReady(_Event):
    """A file may be read by consumers (fire ``no_update``: at once; ``update``: at the directory commit)."""

    type: Literal["FileReady"] = "FileReady"
    directory: ObjectKey
    key: ObjectKey
    size: int = Field(0, ge=0)
    committed_at: Timestamp = ""
    arrived_at: Timestamp = ""
    ready_at: Timestamp = Field(default_factory=utcnow)


class DirectoryCommitted(_Event):
    """A directory is complete under its rule; emitted exactly once per directory."""

    type: Literal["DirectoryCommitted"] = "DirectoryCommitted"
    directory: ObjectKey
    files: list[ObjectKey] = Field(fail_fast=True)  # fail_fast: one bad item, not 390,000 error records
    rule: Literal["n_files", "on_termination", "on_file"]
    partial: bool = False
    committed_at: Timestamp = Field(default_factory=utcnow)
    first_file_at: Timestamp = ""


class PairTask(_Event):
    """Correlate one row station against a batch of column stations in one window (a row of the pair matrix)."""

    type: Literal["PairTask"] = "PairTask"
    window: WindowId
    directory: ObjectKey = Field(description="prep directory of the window")
    row: SeedId = Field(description="SEED id of the row station")
    columns: list[SeedId] = Field(
        description="SEED ids paired with the row; each pair is ordered A < B on output", fail_fast=True
    )
    keys: dict[SeedId, ObjectKey] = Field(description="product object key of every station named in the task")
    ready_at: Timestamp = Field("", description="FileReady time of the later station of the batch, for latency")
    arrived_at: Timestamp = Field("", description="raw arrival of the later station of the batch")
    slot: int = Field(-1, ge=-1, description="first slot of the task's CCFs in the window's ccf array (-1: none)")
    index: dict[SeedId, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="registry index of every station named in the task (results.layout)"
    )


class RowCorrelated(_Event):
    """A row task's CCFs are durable in the window's ccf array, and its manifest says what each slot holds."""

    type: Literal["RowCorrelated"] = "RowCorrelated"
    window: WindowId
    row: SeedId
    slot: int = Field(ge=0, description="first slot of the task in the window's ccf array")
    pairs: int = Field(ge=0, description="slots the task filled (one per column, in the task's order)")
    columns: list[SeedId] = Field(
        default_factory=list, description="the task's columns in slot order (what the manifest says is the truth)"
    )
    manifest: ObjectKey = Field(description="object key of the task manifest (pairs, common sub-windows, failures)")
    ready_at: Timestamp = Field("", description="FileReady time of the later station of the task, for latency")
    arrived_at: Timestamp = Field("", description="raw arrival of the later station of the task")
    correlated_at: Timestamp = Field(default_factory=utcnow)
    worker: Name = Field("", description="the correlator that did the work (observability)")


class StacksUpdated(_Event):
    """The stacker added (part of) a window to the stacks; ``complete`` once every pair of the window is in."""

    type: Literal["StacksUpdated"] = "StacksUpdated"
    window: WindowId
    stacked: int = Field(ge=0, description="pairs of the window in the stacks")
    skipped: int = Field(0, ge=0, description="pairs of the window with no CCF (no common valid sub-window)")
    failed: int = Field(0, ge=0, description="pairs of the window that could not be correlated (see the DLQ)")
    expected: int = Field(-1, ge=-1, description="pairs of the window (-1 until its directory commits)")
    complete: bool = False
    updated_at: Timestamp = Field(default_factory=utcnow)
    last_arrival: Timestamp = Field(
        "", description="latest raw arrival behind the window's tasks seen by this stacker ('' after a restart)"
    )


class PairCorrelated(_Event):
    """A pair's CCF of one window is durable at ``key``."""

    type: Literal["PairCorrelated"] = "PairCorrelated"
    window: WindowId
    a: SeedId
    b: SeedId
    key: ObjectKey
    n_subwindows: int = Field(ge=0, description="sub-windows averaged (0: skipped, see reason)")
    skipped: str = Field("", description="why no CCF was written (e.g. no common valid sub-window)")
    correlated_at: Timestamp = Field(default_factory=utcnow)
    worker: Name = Field("", description="the correlator that did the work (observability)")


class DeadLetter(_Event):
    """Something that could not be processed, with its reason and where it came from."""

    type: Literal["DeadLetter"] = "DeadLetter"
    reason: str
    service: Name
    source_topic: Annotated[str, StringConstraints(max_length=MAX_TOPIC_CHARS)] = ""
    source_partition: int = -1
    source_offset: int = -1
    # Not bounded on its own: ingest names every file of a station-window here.
    source: str = Field("", description="object key or path the failure is about, when known")
    payload: Annotated[str, StringConstraints(max_length=MAX_PAYLOAD_CHARS)] = Field(
        "", description="the offending message, decoded as UTF-8 with replacement"
    )
    failed_at: Timestamp = Field(default_factory=utcnow)


Event = Annotated[
    RawFileArrived
    | DirectoryExpected
    | FileCommitted
    | ProducerStarted
    | ProducerFinished
    | FileReady
    | DirectoryCommitted
    | PairTask
    | PairCorrelated
    | RowCorrelated
    | StacksUpdated
    | DeadLetter,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def decode(raw: bytes | None) -> Event:
    """Decode one message value strictly, within the bounds above, before any recursion.

    Args:
        raw: the Kafka message value.

    Returns:
        The typed event.

    Raises:
        EventDecodeError: for any input that is not a valid event (empty, too big, too deep, not UTF-8 JSON,
            NaN or 64-bit overflow, unknown type or schema, missing, malformed or too long fields). Nothing
            else is raised, whatever the bytes.
    """
    kept = bytes(raw) if isinstance(raw, bytes | bytearray) else b""
    if not raw:
        raise EventDecodeError("empty message", kept)
    try:
        data = load_bounded_json(raw, max_bytes=MAX_EVENT_BYTES, max_depth=MAX_EVENT_DEPTH)
    except JsonRefused as exc:
        raise EventDecodeError(exc.reason, kept) from exc
    if not isinstance(data, dict):
        raise EventDecodeError("not a JSON object", kept)
    if "schema" not in data:
        raise EventDecodeError("missing 'schema' field", kept)
    schema = data["schema"]
    if type(schema) is not int or schema != SCHEMA:  # type(): true and 1.0 equal 1 but are not schema 1
        raise EventDecodeError(_shorten(f"unsupported schema {schema!r} (this build reads {SCHEMA})"), kept)
    try:
        event: Event = _ADAPTER.validate_python(data)
        return event
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise EventDecodeError(_shorten(f"invalid event: {where}: {first['msg']}"), kept) from exc


def _shorten(text: str) -> str:
    """``text`` cut to a readable reason: decode errors may quote an input of hundreds of kilobytes."""
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."
