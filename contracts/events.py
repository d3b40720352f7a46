"""Wire events of xcorrflow (DESIGN.md §4): frozen, typed records serialised as JSON with a schema version.

Other tools may emit or read these, so the fields named in the issue are fixed; more are welcome. Decoding is
strict: an unknown ``type``, a wrong ``schema`` or a malformed field raises :class:`EventDecodeError`, which the
workers turn into a dead letter instead of crashing. Every event carries the ids that make it idempotent.

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
| PairCorrelated       | results  | pair                | (window, pair)          |
| DeadLetter           | dlq      | source key          | (topic, partition, offset) |
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from contracts.errors import XcorrflowError

SCHEMA = 1


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
    key: str = Field(description="raw object key, raw/<window>/<SEED id>.mseed")
    station: str = Field(description="SEED id NET.STA.LOC.CHA")
    window: str = Field(description="window id YYYYMMDDTHHMMSSZ")
    size: int = Field(ge=0, description="object size in bytes")
    arrived_at: str = Field(default_factory=utcnow, description="when ingest saw the data (ISO 8601)")
    source: str = Field("", description="where the data came from (local path or URL), for dead letters")
    coordinates: dict[str, float] | None = Field(
        None, description="station position when known: latitude, longitude (degrees), elevation_m"
    )


class DirectoryExpected(_Event):
    """How many files a directory will hold (the ``n_files: expected`` of a rule)."""

    type: Literal["DirectoryExpected"] = "DirectoryExpected"
    directory: str
    n_files: int = Field(ge=0)


class FileCommitted(_Event):
    """An object is durable in the store; its producer (or a bucket notification) says so."""

    type: Literal["FileCommitted"] = "FileCommitted"
    directory: str
    key: str
    size: int = Field(ge=0)
    producer: str
    committed_at: str = Field(default_factory=utcnow)
    etag: str = ""
    arrived_at: str = Field("", description="arrival time of the raw data behind this file, for latency metrics")


class ProducerStarted(_Event):
    """A producer registers itself for ``on_termination`` rules. Sent to every partition of the files topic."""

    type: Literal["ProducerStarted"] = "ProducerStarted"
    producer: str


class ProducerFinished(_Event):
    """A producer will write no more files. Sent to every partition of the files topic."""

    type: Literal["ProducerFinished"] = "ProducerFinished"
    producer: str


class FileReady(_Event):
    """A file may be read by consumers (fire ``no_update``: at once; ``update``: at the directory commit)."""

    type: Literal["FileReady"] = "FileReady"
    directory: str
    key: str
    size: int = Field(0, ge=0)
    committed_at: str = ""
    arrived_at: str = ""
    ready_at: str = Field(default_factory=utcnow)


class DirectoryCommitted(_Event):
    """A directory is complete under its rule; emitted exactly once per directory."""

    type: Literal["DirectoryCommitted"] = "DirectoryCommitted"
    directory: str
    files: list[str]
    rule: Literal["n_files", "on_termination", "on_file"]
    partial: bool = False
    committed_at: str = Field(default_factory=utcnow)
    first_file_at: str = ""


class PairTask(_Event):
    """Correlate one row station against a batch of column stations in one window (a row of the pair matrix)."""

    type: Literal["PairTask"] = "PairTask"
    window: str
    directory: str = Field(description="prep directory of the window")
    row: str = Field(description="SEED id of the row station")
    columns: list[str] = Field(description="SEED ids paired with the row; each pair is ordered A < B on output")
    keys: dict[str, str] = Field(description="product object key of every station named in the task")
    ready_at: str = Field("", description="FileReady time of the later station of the batch, for latency")
    arrived_at: str = Field("", description="raw arrival of the later station of the batch")


class PairCorrelated(_Event):
    """A pair's CCF of one window is durable at ``key``."""

    type: Literal["PairCorrelated"] = "PairCorrelated"
    window: str
    a: str
    b: str
    key: str
    n_subwindows: int = Field(ge=0, description="sub-windows averaged (0: skipped, see reason)")
    skipped: str = Field("", description="why no CCF was written (e.g. no common valid sub-window)")
    correlated_at: str = Field(default_factory=utcnow)
    worker: str = Field("", description="the correlator that did the work (observability)")


class DeadLetter(_Event):
    """Something that could not be processed, with its reason and where it came from."""

    type: Literal["DeadLetter"] = "DeadLetter"
    reason: str
    service: str
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    source: str = Field("", description="object key or path the failure is about, when known")
    payload: str = Field("", description="the offending message, decoded as UTF-8 with replacement")
    failed_at: str = Field(default_factory=utcnow)


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
    | DeadLetter,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def decode(raw: bytes | None) -> Event:
    """Decode one message value strictly.

    Args:
        raw: the Kafka message value.

    Returns:
        The typed event.

    Raises:
        EventDecodeError: empty, not JSON, unknown type or schema, missing or malformed fields.
    """
    if not raw:
        raise EventDecodeError("empty message", raw or b"")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventDecodeError(f"not JSON: {exc}", raw) from exc
    if not isinstance(data, dict):
        raise EventDecodeError("not a JSON object", raw)
    if "schema" not in data:
        raise EventDecodeError("missing 'schema' field", raw)
    if data["schema"] != SCHEMA:
        raise EventDecodeError(f"unsupported schema {data['schema']!r} (this build reads {SCHEMA})", raw)
    try:
        event: Event = _ADAPTER.validate_python(data)
        return event
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise EventDecodeError(f"invalid event: {where}: {first['msg']}", raw) from exc
