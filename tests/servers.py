"""Test servers on 127.0.0.1 (port 0): a range-honouring HTTP file server that
counts what it serves, and moto's S3 server.

``RangeServer`` serves a directory like a static web host or a COG bucket:

* ``Range: bytes=a-b`` -> 206 with ``Content-Range``; ``a-`` and ``-n`` too;
  several ranges (``bytes=a-b,c-d``, what GDAL sends with
  ``GDAL_HTTP_MULTIRANGE=YES``) -> 206 ``multipart/byteranges``;
  an unsatisfiable range -> 416;
* ``HEAD`` -> headers only; a missing file -> 404;
* ``/forbidden/...`` -> 403; ``/slow/...`` sleeps ``slow_seconds`` before
  answering (longer than a client's timeout), then serves the file under the
  rest of the path.

Every request is counted per path (thread-safe): requests, body bytes sent,
and the ``Range`` header, so tests can bound what a read cost.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class PathStats:
    requests: int = 0
    bytes: int = 0  # body bytes sent
    ranges: list[str] = field(default_factory=list)  # Range header of each GET ("" = whole file)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as CDNs and S3 do
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    # -- helpers ---------------------------------------------------------
    def _serve(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.owner._seen(path, self.headers.get("Authorization"))
        if path.startswith("/forbidden/"):
            return self._error(403, path, head)
        file = path
        if path.startswith("/slow/"):
            # Interruptible, so stopping the server does not wait for sleepers.
            if self.server.owner._stopping.wait(self.server.owner.slow_seconds):
                return
            file = path[len("/slow"):]
        local = os.path.normpath(os.path.join(self.server.owner.root, file.lstrip("/")))
        if not local.startswith(self.server.owner.root) or not os.path.isfile(local):
            return self._error(404, path, head)
        size = os.path.getsize(local)
        spec = self.headers.get("Range")
        ranges = _parse_range(spec, size) if spec else None
        if spec and ranges is None:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return self.server.owner._count(path, 0, spec, head)
        with open(local, "rb") as fh:
            if not ranges:
                body = fh.read() if not head else b""
                self.send_response(200)
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Content-Length", str(size))
            elif len(ranges) == 1:
                a, b = ranges[0]
                fh.seek(a)
                body = fh.read(b - a + 1) if not head else b""
                self.send_response(206)
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Content-Range", f"bytes {a}-{b}/{size}")
                self.send_header("Content-Length", str(b - a + 1))
            else:
                boundary = uuid.uuid4().hex
                parts = []
                for a, b in ranges:
                    fh.seek(a)
                    parts.append(
                        f"--{boundary}\r\nContent-Type: image/tiff\r\n"
                        f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n".encode()
                        + fh.read(b - a + 1) + b"\r\n"
                    )
                parts.append(f"--{boundary}--\r\n".encode())
                payload = b"".join(parts)
                body = payload if not head else b""
                self.send_response(206)
                self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
                self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        sent = 0
        try:
            # In pieces, counting what really went out: a client may hang up
            # once it has what it wants (GDAL does, after a range-less GET).
            for i in range(0, len(body), 65536):
                self.wfile.write(body[i : i + 65536])
                sent += len(body[i : i + 65536])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        self.server.owner._count(path, sent, spec or "", head)

    def _error(self, code: int, path: str, head: bool) -> None:
        body = f"{code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self.server.owner._count(path, 0 if head else len(body), self.headers.get("Range") or "", head)


def _parse_range(spec: str, size: int) -> list[tuple[int, int]] | None:
    """``bytes=a-b,c-,-n`` -> inclusive ``[(a, b), ...]`` clipped to the file,
    or None if no range is satisfiable (or the header is malformed)."""
    unit, _, sets = spec.partition("=")
    if unit.strip() != "bytes":
        return None
    out = []
    for item in sets.split(","):
        first, _, last = item.strip().partition("-")
        try:
            if first == "":
                n = int(last)
                a, b = max(0, size - n), size - 1
            else:
                a = int(first)
                b = min(int(last), size - 1) if last else size - 1
        except ValueError:
            return None
        if a <= b and a < size:
            out.append((a, b))
    return out or None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: RangeServer


class RangeServer:
    """Serve ``root`` over HTTP on 127.0.0.1 with range support and counters."""

    def __init__(self, root: str | os.PathLike, slow_seconds: float = 5.0) -> None:
        self.root = os.path.realpath(os.fspath(root))
        self.slow_seconds = slow_seconds
        self._lock = threading.Lock()
        self._stats: dict[str, PathStats] = defaultdict(PathStats)
        self._auth: list[str] = []
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="RangeServer")

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str = "", userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}/{path.lstrip('/')}"

    def start(self) -> RangeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- counters ----------------------------------------------------------
    def _seen(self, path: str, auth: str | None) -> None:
        if auth:
            with self._lock:
                self._auth.append(auth)

    def _count(self, path: str, nbytes: int, spec: str, head: bool) -> None:
        with self._lock:
            st = self._stats[path]
            st.requests += 1
            st.bytes += nbytes
            st.ranges.append(("HEAD " if head else "") + spec)

    def stats(self, path: str) -> PathStats:
        """A copy of the counters of ``path`` (as requested, e.g. ``/cog.tif``)."""
        with self._lock:
            st = self._stats.get("/" + path.lstrip("/"), PathStats())
            return PathStats(st.requests, st.bytes, list(st.ranges))

    def total(self) -> PathStats:
        with self._lock:
            return PathStats(sum(s.requests for s in self._stats.values()),
                             sum(s.bytes for s in self._stats.values()),
                             [r for s in self._stats.values() for r in s.ranges])

    def auth_headers(self) -> list[str]:
        with self._lock:
            return list(self._auth)

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()
            self._auth.clear()


#: The bucket every S3 test starts from, empty (see ``conftest.s3``).
BUCKET = "rdask-test"

#: The fake secret key of the test S3 server: distinctive, so a leak into a
#: message, log, key or tag cannot hide in other text.
SECRET = "Zq9-SECRET-xW7v-never-print-4471"


class S3Server:
    """moto's S3 server on 127.0.0.1 (an ephemeral port), in this process.

    ``env`` is what a process needs to use it through GDAL (``/vsis3/``),
    boto3 and rdask: fake credentials plus GDAL's endpoint settings.
    """

    ACCESS_KEY = "testing"

    def __init__(self, secret: str = "testing-secret-value") -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

        self.secret = secret
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def start(self) -> S3Server:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def port(self) -> int:
        return self._server.get_host_and_port()[1]

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_S3_ENDPOINT": self.endpoint,
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=f"http://{self.endpoint}", region_name="us-east-1",
            aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.secret,
        )

    def reset(self) -> None:
        """Forget every bucket and object."""
        import urllib.request

        req = urllib.request.Request(f"http://{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()

    def enforce_auth(self, on: bool) -> None:
        """Make moto check credentials against its (empty) IAM: any key is then
        refused with 403 InvalidAccessKeyId. Off again restores accept-all."""
        import urllib.request

        body = b"0" if on else b"inf"
        # text/plain: a form content type would leave moto an empty body.
        req = urllib.request.Request(f"http://{self.endpoint}/moto-api/reset-auth", data=body,
                                     method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).close()


def use_s3(server: S3Server, monkeypatch, tmp_path, bucket: str) -> S3Server:
    """Point this process's environment (inherited by spawned workers and
    CLI runs) at ``server`` with the credentials only there (no AWS profile,
    no instance metadata), keep ``$TMPDIR`` (where S3 outputs stage files
    and journals) in ``tmp_path``, and start from one empty ``bucket``."""
    import tempfile

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    staging = tmp_path / "tmpdir"
    staging.mkdir()
    monkeypatch.setenv("TMPDIR", str(staging))
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    server.reset()
    server.client().create_bucket(Bucket=bucket)
    return server


def wait_for(pred, timeout: float = 10.0, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return pred()
