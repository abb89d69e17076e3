"""A fault-injecting HTTP proxy for S3, on 127.0.0.1 (an ephemeral port).

Clients (GDAL's ``/vsis3/``, boto3, obstore) are pointed at the proxy as
at S3 (``AWS_S3_ENDPOINT``, path-style, plain HTTP); it forwards each
request to the real server behind it (moto's, ``tests/servers.py``) and,
at ``rate``, answers with one of four faults instead:

* ``slowdown``: ``503 SlowDown`` with S3's XML error body; the server
  never sees the request;
* ``internal``: ``500 InternalError``, likewise;
* ``reset-before``: the connection is reset (TCP RST) once the request is
  read, before it is forwarded: the server never acts;
* ``reset-after``: the request is forwarded and the server acts, then the
  connection is reset instead of answering (the client never hears that
  its PUT, POST or DELETE happened). Every other GET so reset is answered
  first with its headers and half its body: a download cut short
  (counted in :attr:`FaultProxy.truncated` too).

Which requests fail is drawn from a seeded RNG (one draw per request, in
the order they arrive); the kinds are dealt from a shuffled deck, four at a
time, so each kind is injected once in every four faults. ``only`` limits
the faults to the requests it accepts (one operation, say), ``kinds`` to
some kinds. ``burst`` bounds how many times in a row the same request
(method, path, query, Range and body) is failed: a client that retries
more often than that always gets through, so a run's outcome does not
hang on a rare streak; by default it is 10, the retries of rdask's policy.

What it injected is counted per kind (:attr:`FaultProxy.counts`), as is
every request seen and every request forwarded.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KINDS = ("slowdown", "internal", "reset-before", "reset-after")

#: Hop-by-hop headers, never forwarded as they came.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
        "content-length", "expect"}

_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}


@dataclass(frozen=True)
class Request:
    """What a fault rule sees of a request."""

    method: str
    path: str  # without the query
    target: str  # with it
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names

    @property
    def operation(self) -> str:
        """The S3 operation, as far as tests need it (``UploadPart``, which
        includes UploadPartCopy, ``PutObject``, ``GetObject``,
        ``CompleteMultipartUpload``...)."""
        q, m = self.query, self.method
        if m == "PUT":
            return "UploadPart" if "partNumber" in q else ("CopyObject" if "x-amz-copy-source" in self.headers
                                                           else "PutObject")
        if m == "POST":
            if "uploads" in q:
                return "CreateMultipartUpload"
            if "uploadId" in q:
                return "CompleteMultipartUpload"
            return "DeleteObjects" if "delete" in q else "POST"
        if m == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
        if m == "HEAD":
            return "HeadBucket" if self.path.strip("/").count("/") == 0 else "HeadObject"
        if "uploads" in q:
            return "ListMultipartUploads"
        if "uploadId" in q:
            return "ListParts"
        if self.path.strip("/").count("/") == 0:
            return "ListObjects"
        return "GetObject"


class FaultProxy:
    """Forward S3 requests to ``upstream`` (``host:port``), failing some.

    Use as a context manager, or :meth:`start` / :meth:`stop`. Settings can
    change while it runs (:meth:`set`), and take effect from the next
    request.
    """

    def __init__(self, upstream: str, rate: float = 0.0, seed: int = 0, *,
                 only: Callable[[Request], bool] | None = None, burst: int = 10,
                 kinds: tuple[str, ...] = KINDS) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self.set(rate, seed, only=only, burst=burst, kinds=kinds)
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.proxy = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name="FaultProxy")

    def set(self, rate: float, seed: int = 0, *, only: Callable[[Request], bool] | None = None,
            burst: int = 10, kinds: tuple[str, ...] = KINDS) -> None:
        """New fault settings (``kinds``: the deck's), and counters from zero."""
        if not set(kinds) <= set(KINDS):
            raise ValueError(f"unknown fault kinds: {set(kinds) - set(KINDS)}")
        with self._lock:
            self.rate, self.only, self.burst, self.kinds = rate, only, burst, tuple(kinds)
            self._rng = random.Random(seed)
            self._deck: list[str] = []
            self._streak: dict[str, int] = {}
            self.counts: Counter[str] = Counter()
            #: ``(operation, "path?query range", kind)`` of every fault.
            self.log: list[tuple[str, str, str]] = []
            self.truncated = 0  # GETs whose answer was cut mid-body
            self._gets_reset = 0
            self.requests = 0  # every request read
            self.forwarded: Counter[str] = Counter()  # by operation

    @property
    def endpoint(self) -> str:
        """``host:port``, as ``AWS_S3_ENDPOINT`` wants it."""
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def faults(self) -> dict[str, int]:
        """``{kind: count}`` of what was injected, every kind listed."""
        with self._lock:
            return {k: self.counts[k] for k in KINDS}

    # -- the handler's half ------------------------------------------------

    def decide(self, request: Request, identity: str) -> str | None:
        """The fault for ``request`` (``identity``: what makes it the same
        request when retried), or None to forward it."""
        with self._lock:
            self.requests += 1
            draw = self._rng.random()  # one draw per request, whatever follows
            streak = self._streak.get(identity, 0)
            if draw >= self.rate or streak >= self.burst or (self.only is not None and not self.only(request)):
                self._streak.pop(identity, None)
                return None
            if not self._deck:
                self._deck = list(self.kinds)
                self._rng.shuffle(self._deck)
            kind = self._deck.pop()
            self._streak[identity] = streak + 1
            self.counts[kind] += 1
            self.log.append((request.operation, f"{request.target} {request.headers.get('range', '')}".strip(),
                             kind))
            return kind

    def _forwarded(self, request: Request) -> None:
        with self._lock:
            self.forwarded[request.operation] += 1

    def _cut(self) -> bool:
        """Whether this GET's answer is cut mid-body (every other one is)
        rather than never sent."""
        with self._lock:
            self._gets_reset += 1
            if self._gets_reset % 2:
                self.truncated += 1
                return True
            return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 does
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms wait between them
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def do_GET(self):
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, parts.path, self.path, parse_qs(parts.query, keep_blank_values=True),
                          headers)
        identity = hashlib.sha256(
            f"{self.command} {self.path} {headers.get('range', '')}".encode() + body).hexdigest()
        kind = proxy.decide(request, identity)
        if kind in _ERRORS:
            return self._error(*_ERRORS[kind], path=parts.path)
        if kind == "reset-before":
            return self._reset()
        status, reason, out_headers, payload = self._forward(body)
        proxy._forwarded(request)
        if kind == "reset-after":
            if self.command == "GET" and len(payload) > 1 and proxy._cut():
                self._answer(status, reason, out_headers, payload, cut=len(payload) // 2)
            return self._reset()
        self._answer(status, reason, out_headers, payload)

    def _body(self) -> bytes:
        """The request's body (``Content-Length`` or chunked)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(out)
                out.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.server.proxy.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            if self.command == "HEAD":
                out += [(k, v) for k, v in resp.getheaders() if k.lower() == "content-length"]
            return resp.status, resp.reason, out, payload
        finally:
            conn.close()

    def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes,
                cut: int | None = None) -> None:
        self.send_response_only(status, reason)
        for k, v in headers:
            self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload if cut is None else payload[:cut])
        self.wfile.flush()

    def _error(self, status: int, code: str, message: str, path: str) -> None:
        rid = random.getrandbits(64)
        payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                   f"</Message><Resource>{path}</Resource><RequestId>{rid:016X}</RequestId></Error>").encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", f"{rid:016X}")]
        self._answer(status, code, headers, payload)

    def _reset(self) -> None:
        """Drop the connection with a TCP RST (no FIN, no answer)."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The file objects hold the socket open: close them so close() is real.
        self.wfile.close()
        self.rfile.close()
        sock.close()
        self.wfile, self.rfile = io.BytesIO(), io.BytesIO()  # what the base class flushes and closes next
