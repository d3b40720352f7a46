"""S3 bucket notifications are parsed within the same bounds as events: a poison record is one dead letter."""

from __future__ import annotations

import json
import time

import pytest

from commit_broker.notifications import MAX_NOTIFICATION_BYTES, NotificationError, parse_notification

RECORD = {
    "eventName": "s3:ObjectCreated:Put",
    "userIdentity": {"principalId": "xcorrflow"},
    "s3": {
        "bucket": {"name": "xcorrflow", "ownerIdentity": {"principalId": "xcorrflow"}},
        "object": {"key": "run1/prep/20240101T000000Z/XX.A..HHZ.npz", "size": 42},
    },
}


def test_a_real_notification_parses() -> None:
    [created] = parse_notification(json.dumps({"Records": [RECORD]}).encode())
    assert (created.bucket, created.key, created.size) == ("xcorrflow", RECORD["s3"]["object"]["key"], 42)  # type: ignore[index]


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"Records":' * 100_000,
        b'{"Records": [' + b" " * MAX_NOTIFICATION_BYTES + b"]}",
        b'{"Records": [{"s3": {"object": {"size": NaN}}}]}',
        b'{"Records": [], "Records": []}',
        b"\xff\xfe",
    ],
    ids=lambda r: repr(r[:24]),
)
def test_hostile_notifications_are_refused_quickly(raw: bytes) -> None:
    t0 = time.perf_counter()
    with pytest.raises(NotificationError):
        parse_notification(raw)
    assert time.perf_counter() - t0 < 0.5
