"""S3 bucket notifications: the ``Records[]`` JSON that AWS, MinIO and versitygw share.

They let producers that only write objects take part: every ObjectCreated record of a key under a rule counts
like a FileCommitted. Notifications can be lost (versitygw sends them fire-and-forget), so the broker also
reconciles by listing.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_plus

from contracts.boundedjson import load_bounded_json
from contracts.errors import JsonRefused

# A notification names one object (AWS, MinIO and versitygw send one record per message), ~1-3 KB. Anyone
# who can produce to the topic can send more, so the same bounds as events apply: refused before parsing.
MAX_NOTIFICATION_BYTES = 768 * 1024
# The deepest part, {Records[{s3{bucket{ownerIdentity{...}}}}]}, nests 6 levels; 8 leaves room for other
# servers' extras.
MAX_NOTIFICATION_DEPTH = 8


class NotificationError(ValueError):
    """The message is not a bucket notification."""


@dataclass(frozen=True)
class ObjectCreated:
    """One created object named by a notification."""

    bucket: str
    key: str
    size: int
    event_name: str


def parse_notification(raw: bytes | None) -> list[ObjectCreated]:
    """The ObjectCreated records of one notification message.

    Test events (``s3:TestEvent``, sent when the server starts) and other event kinds give an empty list.

    Raises:
        NotificationError: the message is not JSON within the bounds above, or its Records[] are malformed.
    """
    try:
        data = load_bounded_json(raw or b"", max_bytes=MAX_NOTIFICATION_BYTES, max_depth=MAX_NOTIFICATION_DEPTH)
    except JsonRefused as exc:
        raise NotificationError(exc.reason) from exc
    if not isinstance(data, dict):
        raise NotificationError("not a JSON object")
    if data.get("Event") == "s3:TestEvent" or "Records" not in data:
        if "Records" not in data and data.get("Event") != "s3:TestEvent":
            raise NotificationError("no Records[] in notification")
        return []
    records = data["Records"]
    if not isinstance(records, list):
        raise NotificationError("Records is not a list")
    return [created for record in records if (created := _created(record)) is not None]


def _created(record: object) -> ObjectCreated | None:
    try:
        name = str(record["eventName"])  # type: ignore[index]
        s3 = record["s3"]  # type: ignore[index]
        bucket = str(s3["bucket"]["name"])
        key = unquote_plus(str(s3["object"]["key"]))  # keys arrive URL-escaped, '+' for space
        size = int(s3["object"].get("size", 0) or 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise NotificationError(f"malformed record: {exc!r}") from exc
    if not name.removeprefix("s3:").startswith("ObjectCreated:"):
        return None
    return ObjectCreated(bucket=bucket, key=key, size=size, event_name=name)
