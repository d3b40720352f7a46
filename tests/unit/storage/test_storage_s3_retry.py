"""S3Store against a scripted in-process HTTP server: what is retried, what is not, and what goes on the wire."""

from __future__ import annotations

import functools
import hashlib
import random
import re
import socket
from collections.abc import Iterator

import pytest
import urllib3
from minio.error import S3Error

from contracts.settings import Settings
from storage import (
    ObjectConflict,
    ObjectNotFound,
    PrefixedStore,
    RetryPolicy,
    S3Store,
    StorageBackendError,
    StorageUnavailable,
    open_store,
)
from storage._s3_wire import is_transient, multipart_etag
from storage.s3 import MIB, build_client
from tests.unit.storage.fake_s3 import FakeS3, Reply, list_page, object_headers, s3_error

ATTEMPTS = 4


@pytest.fixture
def fake() -> Iterator[FakeS3]:
    with FakeS3() as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_store(endpoint: str, sleeps: list[float], **options: object) -> S3Store:
    client = build_client(endpoint, "test-key", "test-secret", connect_timeout=1.0, read_timeout=0.5)
    policy = RetryPolicy(
        max_attempts=ATTEMPTS, base_delay=0.1, max_delay=1.0, sleep=sleeps.append, rng=random.Random(7)
    )
    options.setdefault("conditional_writes", True)
    return S3Store(client, "bucket", retry=policy, **options)  # type: ignore[arg-type]


@pytest.fixture
def store(fake: FakeS3, sleeps: list[float]) -> S3Store:
    return make_store(fake.endpoint, sleeps)


def _ok(data: bytes) -> Reply:
    return Reply(200, data, object_headers(data, hashlib.md5(data).hexdigest()))


# --- transient: retried -------------------------------------------------------------------------------------------


def test_503_slowdown_is_retried_with_growing_backoff(store: S3Store, fake: FakeS3, sleeps: list[float]) -> None:
    fake.script(s3_error(503, "SlowDown"), s3_error(503, "SlowDown"), _ok(b"payload"))
    assert store.get("k") == b"payload"
    assert [r.method for r in fake.requests] == ["GET"] * 3
    assert len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2  # equal jitter in [cap/2, cap], cap doubling


def test_500_on_put_is_retried_with_the_same_body(store: S3Store, fake: FakeS3) -> None:
    fake.script(s3_error(500, "InternalError"), Reply(200, headers={"ETag": '"abc"'}))
    info = store.put("a/b", b"body")
    assert info.etag == "abc"
    assert [(r.method, r.path, r.body) for r in fake.requests] == [("PUT", "/bucket/a/b", b"body")] * 2


@pytest.mark.parametrize(
    "failure",
    [
        s3_error(502, "BadGateway"),
        s3_error(504, "GatewayTimeout"),
        s3_error(503, "ServiceUnavailable"),
        s3_error(400, "RequestTimeout"),
        Reply(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"}),
        Reply(drop=True),
        Reply(stall=1.5, body=b"too late"),  # beyond the 0.5 s read timeout
    ],
    ids=["502", "504", "503", "RequestTimeout", "html-502", "dropped-connection", "read-timeout"],
)
def test_transient_failures_are_retried(store: S3Store, fake: FakeS3, failure: Reply) -> None:
    fake.script(failure, _ok(b"fine"))
    assert store.get("k") == b"fine"
    assert len(fake.requests) == 2


def test_persistent_503_exhausts_the_attempts(store: S3Store, fake: FakeS3, sleeps: list[float]) -> None:
    fake.script(*[s3_error(503, "ServiceUnavailable")] * ATTEMPTS)
    with pytest.raises(StorageUnavailable) as caught:
        store.get("w/k")
    error = caught.value
    assert (error.operation, error.key, error.attempts) == ("get", "w/k", ATTEMPTS)
    assert isinstance(error.cause, S3Error) and error.cause.code == "ServiceUnavailable"
    assert error.__cause__ is error.cause
    assert len(fake.requests) == ATTEMPTS and len(sleeps) == ATTEMPTS - 1


def test_refused_connection_gives_storage_unavailable(sleeps: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    store = make_store(f"127.0.0.1:{port}", sleeps)
    with pytest.raises(StorageUnavailable) as caught:
        store.stat("k")
    assert caught.value.attempts == ATTEMPTS
    assert isinstance(caught.value.cause, urllib3.exceptions.NewConnectionError)


# --- permanent: not retried ------------------------------------------------------------------------------------


def test_403_is_not_retried(store: S3Store, fake: FakeS3, sleeps: list[float]) -> None:
    fake.script(s3_error(403, "AccessDenied"))
    with pytest.raises(StorageBackendError) as caught:
        store.get("k")
    assert (caught.value.code, caught.value.operation) == ("AccessDenied", "get")
    assert len(fake.requests) == 1 and sleeps == []


def test_404_is_object_not_found_without_retry(store: S3Store, fake: FakeS3, sleeps: list[float]) -> None:
    fake.script(Reply(404), s3_error(404, "NoSuchKey"))  # HEAD answers carry no body
    with pytest.raises(ObjectNotFound):
        store.stat("k")
    with pytest.raises(ObjectNotFound):
        store.get("k")
    assert len(fake.requests) == 2 and sleeps == []


def test_classification_table() -> None:
    def s3(status: int, code: str) -> S3Error:
        return S3Error(urllib3.HTTPResponse(status=status), code, "m", "/r", "id", "host")

    transient = [s3(503, "SlowDown"), s3(500, "InternalError"), s3(503, "ServiceUnavailable"), s3(429, "TooMany")]
    permanent = [s3(403, "AccessDenied"), s3(404, "NoSuchKey"), s3(412, "PreconditionFailed"), s3(400, "BadDigest")]
    assert all(is_transient(exc) for exc in transient)
    assert not any(is_transient(exc) for exc in permanent)
    assert is_transient(urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"))  # type: ignore[arg-type]
    assert not is_transient(urllib3.exceptions.SSLError("bad certificate"))
    assert not is_transient(ValueError("a bug is not an outage"))


def test_retry_policy_bounds() -> None:
    policy = RetryPolicy(base_delay=0.25, max_delay=8.0, rng=random.Random(1))
    for retry in range(1, 12):
        cap = min(8.0, 0.25 * 2 ** (retry - 1))
        assert cap / 2 <= policy.delay(retry) <= cap
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# --- conditional writes on the wire -----------------------------------------------------------------------------


def test_put_if_absent_sends_if_none_match_and_resolves_412(store: S3Store, fake: FakeS3) -> None:
    data = b"same bytes"
    fake.script(
        s3_error(412, "PreconditionFailed"), Reply(200, headers=object_headers(data, hashlib.md5(data).hexdigest()))
    )
    outcome = store.put_if_absent("ccf/w/p.npz", data, metadata={"pair": "x"})
    assert outcome.created is False
    put = fake.requests[0]
    assert put.method == "PUT" and put.headers.get("If-None-Match") == "*"
    assert put.headers.get("x-amz-meta-pair") == "x"
    assert not any(name.lower() == "x-amz-meta-if-none-match" for name in put.headers)  # the minio pitfall
    assert fake.requests[1].method == "HEAD"


def test_put_if_absent_412_with_other_bytes_conflicts(store: S3Store, fake: FakeS3) -> None:
    other = b"other bytes"
    fake.script(
        s3_error(412, "PreconditionFailed"), Reply(200, headers=object_headers(other, hashlib.md5(other).hexdigest()))
    )
    with pytest.raises(ObjectConflict):
        store.put_if_absent("k", b"mine bytes!")


def test_put_if_absent_412_without_an_object_repairs_the_key(
    store: S3Store, fake: FakeS3, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # versitygw's sidecar backend killed between its ETag write and its link refuses the key for ever while
    # HEAD finds nothing: the write must repair it, not fail a good task.
    monkeypatch.setattr(store, "_stat_winner", functools.partial(store._stat_winner, attempts=3, pause_s=0.0))
    fake.script(
        s3_error(412, "PreconditionFailed"), Reply(404), Reply(404), Reply(404), Reply(200, headers={"ETag": '"e"'})
    )
    outcome = store.put_if_absent("prep/w/s.npz", b"station bytes")
    assert outcome.created is True and outcome.info.etag == "e"
    assert [r.method for r in fake.requests] == ["PUT", "HEAD", "HEAD", "HEAD", "PUT"]
    assert fake.requests[0].headers.get("If-None-Match") == "*"
    assert "If-None-Match" not in fake.requests[-1].headers
    assert fake.requests[-1].body == b"station bytes"
    assert "holds no object under it" in caplog.text


def test_probe_falls_back_to_stat_then_put_when_the_header_is_ignored(
    fake: FakeS3, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(fake.endpoint, sleeps, conditional_writes=None)
    fake.script(
        Reply(200, headers={"ETag": '"p"'}),  # probe write 1
        Reply(200, headers={"ETag": '"p"'}),  # probe write 2 succeeds too: If-None-Match was ignored
        Reply(204),  # probe cleanup
        Reply(404),  # fallback: HEAD first
        Reply(200, headers={"ETag": '"x"'}),  # then a plain PUT
    )
    assert store.put_if_absent("k", b"data").created is True
    assert store.conditional_writes is False
    assert "ignores If-None-Match" in caplog.text
    probe = fake.requests[0]
    # top level: no shared directory for another probe's DELETE to remove under it (a versitygw race)
    assert re.fullmatch(r"/bucket/\.xcorrflow-probe-[0-9a-f]{32}", probe.path), probe.path
    assert probe.headers.get("If-None-Match") == "*"
    assert [r.method for r in fake.requests] == ["PUT", "PUT", "DELETE", "HEAD", "PUT"]
    assert "If-None-Match" not in fake.requests[-1].headers


def test_probe_detects_support(fake: FakeS3, sleeps: list[float]) -> None:
    store = make_store(fake.endpoint, sleeps, conditional_writes=None)
    fake.script(Reply(200, headers={"ETag": '"p"'}), s3_error(412, "PreconditionFailed"), Reply(204))
    assert store.conditional_writes is True
    assert store.conditional_writes is True  # probed once only
    assert len(fake.requests) == 3


# --- multipart -------------------------------------------------------------------------------------------------


def _mp_store(fake: FakeS3, sleeps: list[float]) -> S3Store:
    return make_store(fake.endpoint, sleeps, part_size=5 * MIB, multipart_threshold=5 * MIB)


def _created(upload_id: str = "up-1") -> Reply:
    body = f"<InitiateMultipartUploadResult><UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>"
    return Reply(200, body.encode(), {"Content-Type": "application/xml"})


def test_conditional_multipart_retries_a_part_and_completes_conditionally(fake: FakeS3, sleeps: list[float]) -> None:
    store = _mp_store(fake, sleeps)
    data = bytes(11 * MIB)
    parts = [data[: 5 * MIB], data[5 * MIB : 10 * MIB], data[10 * MIB :]]
    expected = multipart_etag([hashlib.md5(p).digest() for p in parts])
    done = f"<CompleteMultipartUploadResult><ETag>&quot;{expected}&quot;</ETag></CompleteMultipartUploadResult>"
    fake.script(
        Reply(404),  # big body: look before uploading
        _created(),
        Reply(200, headers={"ETag": f'"{hashlib.md5(parts[0]).hexdigest()}"'}),
        s3_error(503, "SlowDown"),  # part 2, first try
        Reply(200, headers={"ETag": f'"{hashlib.md5(parts[1]).hexdigest()}"'}),
        Reply(200, headers={"ETag": f'"{hashlib.md5(parts[2]).hexdigest()}"'}),
        Reply(200, done.encode(), {"Content-Type": "application/xml"}),
    )
    outcome = store.put_if_absent("big", data)
    assert outcome.created is True and outcome.info.etag == expected and expected.endswith("-3")
    methods = [(r.method, r.query.get("partNumber")) for r in fake.requests]
    assert methods == [
        ("HEAD", None),
        ("POST", None),
        ("PUT", "1"),
        ("PUT", "2"),
        ("PUT", "2"),
        ("PUT", "3"),
        ("POST", None),
    ]
    complete = fake.requests[-1]
    assert complete.query["uploadId"] == "up-1" and complete.headers.get("If-None-Match") == "*"
    assert complete.body.count(b"<Part>") == 3


def test_a_failed_multipart_upload_is_aborted(fake: FakeS3, sleeps: list[float]) -> None:
    store = _mp_store(fake, sleeps)
    fake.script(_created("up-9"), Reply(200, headers={"ETag": '"p1"'}), s3_error(403, "AccessDenied"), Reply(204))
    with pytest.raises(StorageBackendError):
        store.put("big", bytes(11 * MIB))
    abort = fake.requests[-1]
    assert (abort.method, abort.query.get("uploadId")) == ("DELETE", "up-9")


# --- listing and bucket --------------------------------------------------------------------------------------


def test_listing_resumes_after_the_last_key_on_a_transient_failure(store: S3Store, fake: FakeS3) -> None:
    fake.script(list_page(["a/1"], next_token="tok"), s3_error(503, "SlowDown"), list_page(["a/2"]))
    assert [info.key for info in store.list("a")] == ["a/1", "a/2"]
    resumed = fake.requests[-1].query
    assert resumed.get("start-after") == "a/1" and "continuation-token" not in resumed
    assert fake.requests[0].query["prefix"] == "a/"


def test_ensure_bucket_creates_it_and_tolerates_a_race(store: S3Store, fake: FakeS3) -> None:
    fake.script(Reply(404), Reply(200), Reply(404), s3_error(409, "BucketAlreadyOwnedByYou"))
    store.ensure_bucket()
    store.ensure_bucket()
    assert [(r.method, r.path) for r in fake.requests] == [("HEAD", "/bucket"), ("PUT", "/bucket")] * 2


def test_open_store_s3_url_uses_the_settings_endpoint(fake: FakeS3) -> None:
    fake.script(Reply(200))  # HEAD bucket
    settings = Settings(s3_endpoint=fake.endpoint)
    view = open_store("s3://other-bucket/runs/r1", settings=settings)
    assert isinstance(view, PrefixedStore) and view.prefix == "runs/r1/"
    assert isinstance(view.inner, S3Store) and view.inner.bucket == "other-bucket"
    assert (fake.requests[0].method, fake.requests[0].path) == ("HEAD", "/other-bucket")
    assert "xcorrflow-local-secret" not in repr(view)
