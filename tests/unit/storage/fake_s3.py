"""A scripted, in-process HTTP server that answers like S3, for testing retries without a real server.

Each incoming request is recorded and answered with the next scripted :class:`Reply`; a :class:`Reply` can also
drop the connection or stall past the client's read timeout. An unscripted request gets a 418, which no retry
policy treats as transient, so a test that sends more requests than it expected fails loudly.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Reply:
    """One scripted answer. ``drop`` closes the connection without answering; ``stall`` delays the answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    stall: float = 0.0


@dataclass
class Seen:
    """One recorded request."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


def s3_error(status: int, code: str, message: str = "scripted error") -> Reply:
    """An S3 XML error answer."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>/bucket/key</Resource>"
        "<RequestId>req-1</RequestId><HostId>host-1</HostId></Error>"
    ).encode()
    return Reply(status, body, {"Content-Type": "application/xml"})


def object_headers(data: bytes, etag: str, **extra: str) -> dict[str, str]:
    """Headers of a GET/HEAD answer for an object."""
    return {
        "ETag": f'"{etag}"',
        "Content-Length": str(len(data)),
        "Last-Modified": formatdate(usegmt=True),
        "Content-Type": "application/octet-stream",
        **extra,
    }


def list_page(keys: list[str], *, next_token: str | None = None) -> Reply:
    """A ListObjectsV2 page; truncated when ``next_token`` is given."""
    contents = "".join(
        f"<Contents><Key>{key}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
        f'<ETag>"e-{key}"</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>'
        for key in keys
    )
    truncated = f"<IsTruncated>true</IsTruncated><NextContinuationToken>{next_token}</NextContinuationToken>"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>bucket</Name><Prefix></Prefix><KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys>"
        f"{truncated if next_token else '<IsTruncated>false</IsTruncated>'}{contents}</ListBucketResult>"
    ).encode()
    return Reply(200, body, {"Content-Type": "application/xml"})


class FakeS3:
    """Start with ``with FakeS3() as fake:``; script with :meth:`script`; inspect :attr:`requests`."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def endpoint(self) -> str:
        """``host:port`` of the server."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def script(self, *replies: Reply) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self.replies.extend(replies)

    def next_reply(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            return self.replies.popleft() if self.replies else s3_error(418, "UnscriptedRequest")

    def __enter__(self) -> FakeS3:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        seen = Seen(
            self.command, url.path, dict(parse_qsl(url.query, keep_blank_values=True)), dict(self.headers), body
        )
        reply = self.server.fake.next_reply(seen)  # type: ignore[attr-defined]
        try:
            if reply.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            time.sleep(reply.stall)
            self.send_response(reply.status)
            headers = {"Content-Length": str(len(reply.body))} | reply.headers
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True  # the client gave up (read timeout): nothing to answer

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""
