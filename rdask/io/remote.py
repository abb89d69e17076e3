"""Remote inputs: URLs, GDAL's network defaults, clear errors.

Inputs (``https://``, ``s3://``, any ``/vsi...`` path) are read by GDAL
itself; rdask adds network defaults (with :mod:`rdask.cloud.s3`'s retry
policy) and carries them, with the S3 endpoint settings, inside every task
as plain data. Credentials are never carried: each process resolves them
from its own environment or AWS profile, so they cannot leak into graph
keys, logs, errors or output tags.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from rdask.cloud.s3 import RETRY_TIMEOUT, STATUS_WORDS, RetryPolicy, S3Endpoint, reason, split_s3
from rdask.errors import OutputError, RasterOpenError, RdaskError, first_line
from rdask.io.gdalenv import libgdal
from rdask.io.paths import redact

log = logging.getLogger("rdask")
T = TypeVar("T")

#: GDAL's network file systems (rasterio maps ``s3://``, ``https://``...
#: to them), as ``CPL_VSIL_CURL_NON_CACHED`` prefixes (see :func:`forget`).
NETWORK_PREFIXES = ":".join(f"/vsi{fs}/" for fs in ("curl", "s3", "gs", "az", "adls", "oss", "swift", "webhdfs"))

#: GDAL options for network reads, under the user's own (``gdal_options``,
#: and GDAL settings in the environment: see :func:`network_defaults`).
NETWORK_GDAL_OPTIONS: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per open
    # Transient 429/5xx and dropped connections: retried as S3 clients
    # retry (rdask.cloud.s3.RetryPolicy), with exponential back-off.
    **RetryPolicy().gdal(),
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_TIMEOUT": "60",
    # The tiles of one window: one range request each, sent in parallel
    # (GDAL's default strategy; SINGLE_GET would send one multi-range request,
    # which S3 does not support).
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # adjacent tiles in one range
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",  # a COG's header in one request
    "CPL_VSIL_CURL_CACHE_SIZE": str(16 * 1024 * 1024),  # bounded per process
    # Granularity of single-range reads (GDAL's default; sequential reads grow
    # it by themselves). 64 KiB cost up to 128 KiB extra per one-tile read.
    "CPL_VSIL_CURL_CHUNK_SIZE": str(16 * 1024),
}

#: Option names that would carry secrets; refused so they never travel.
_SECRET = re.compile(r"SECRET|TOKEN|PASSWORD|KEY_ID|CREDENTIAL|USERPWD|HEADERS", re.I)

def network_defaults() -> dict[str, Any]:
    """:data:`NETWORK_GDAL_OPTIONS` minus those set in the environment.

    Options entered with ``rasterio.Env`` override environment variables, so
    without this a user's ``GDAL_HTTP_TIMEOUT=5`` (or a CLI user's only way to
    set GDAL options) would be silently replaced by rdask's default.
    """
    options = {**NETWORK_GDAL_OPTIONS, **RetryPolicy.from_environment().gdal()}
    return {k: v for k, v in options.items() if k not in os.environ}


def read_again(path: str, options: Mapping[str, Any], read: Callable[[], T], reopen: Callable[[], None]) -> T:
    """``read()`` of ``path``, tried again after a failure when ``path`` is
    remote, as often as ``GDAL_HTTP_MAX_RETRY`` says (in ``options`` or the
    environment), with :class:`~rdask.cloud.s3.RetryPolicy`'s back-off.

    GDAL retries HTTP errors, timeouts and connections reset before an
    answer itself, but GDAL 3.10 takes a download cut mid-body (a reset
    after the headers) for the whole range and caches it: the read (or a
    worker's open) fails on short bytes, and so would every later read of
    them in this process. So a failed read is tried again, after ``reopen``
    closed the dataset and :func:`forget` dropped what GDAL cached of the
    file; not when GDAL itself gave up on an HTTP error (:func:`gave_up`),
    nor :data:`~rdask.cloud.s3.RETRY_TIMEOUT` seconds after the first
    attempt began (a server that stopped answering costs GDAL's retries
    once, not once per attempt). A local file is read once. Call it inside
    the source's ``rasterio.Env``.
    """
    if not is_remote(path):
        return read()
    text = str(dict(options).get("GDAL_HTTP_MAX_RETRY") or os.environ.get("GDAL_HTTP_MAX_RETRY") or "")
    attempts = int(text) + 1 if text.strip().isdigit() else RetryPolicy.from_environment().attempts
    policy = RetryPolicy(max(1, attempts))
    start = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            return read()
        except Exception as exc:
            wait = policy.delay(attempt)
            if (attempt == policy.attempts or gave_up(exc)
                    or time.monotonic() + wait - start > RETRY_TIMEOUT):
                raise
            log.debug("reading %s failed (%s); trying again on a new handle in %.2f s", redact(path),
                      first_line(exc), wait)
            reopen()
            forget(path)
            time.sleep(wait)
    raise AssertionError("unreachable")


def gave_up(exc: BaseException) -> bool:
    """Whether a read failed where another attempt cannot help: GDAL spent
    its retries on an HTTP error or a lost connection (its error classes
    say so), or rdask refused (a fork)."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if name == "CPLE_HttpResponseError" or name.startswith("CPLE_AWS"):
            return True
        if isinstance(seen, RdaskError) and not isinstance(seen, RasterOpenError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def forget(path: str) -> None:
    """Drop what GDAL cached of the remote ``path`` (its bytes and size) in
    this process, with GDAL's ``VSICurlPartialClearCache``: no request is
    made (opening the file under ``CPL_VSIL_CURL_NON_CACHED`` would read it
    again, and hold the GIL while it does)."""
    import rasterio
    from rasterio._path import _parse_path

    with rasterio.Env():  # GDAL's messages, if any, to rasterio's logger
        libgdal().VSICurlPartialClearCache(_parse_path(path).as_vsi().encode())


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL or a GDAL virtual file system path."""
    return "://" in path or path.startswith("/vsi")


def is_s3(path: str) -> bool:
    return path.startswith("s3://")


def check_options(options: Mapping[str, Any] | None) -> None:
    """Refuse GDAL options that would carry credentials inside tasks."""
    for key in options or {}:
        if _SECRET.search(str(key)):
            raise RasterOpenError(
                f"GDAL option {key} carries a secret: set it in the environment or an "
                "AWS profile of every process instead, so it never travels with tasks"
            )


def diagnose(path: str, options: Mapping[str, Any] | None = None) -> str | None:
    """Why a remote input cannot be opened, as a short phrase, or None.

    Called only after GDAL failed, to turn its message into 404 / 403 /
    refused / timed out. The URL shown never includes credentials.
    """
    if path.startswith("/vsicurl/") and "://" in path:
        path = path[len("/vsicurl/") :]
    elif path.startswith("/vsis3/"):
        path = "s3://" + path[len("/vsis3/") :]
    if path.startswith(("http://", "https://")):
        return _diagnose_http(path, options)
    if is_s3(path):
        return _diagnose_s3(path, options)
    return None


def _diagnose_http(url: str, options: Mapping[str, Any] | None) -> str | None:
    import socket
    import urllib.error
    import urllib.request

    timeout = float(
        dict(options or {}).get("GDAL_HTTP_TIMEOUT")
        or os.environ.get("GDAL_HTTP_TIMEOUT")
        or NETWORK_GDAL_OPTIONS["GDAL_HTTP_TIMEOUT"]
    )
    headers = {"Range": "bytes=0-0"}
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # urllib takes ``user:pass@`` for part of the host ("unknown host");
        # send it as GDAL (curl) does, as Basic authentication.
        import base64
        from urllib.parse import unquote, urlunsplit

        userpass = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(userpass.encode()).decode()
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=min(timeout, 10.0)):
            return None
    except urllib.error.HTTPError as exc:
        return _http_reason(exc.code)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return "timed out"
        if isinstance(reason, socket.gaierror):
            return "unknown host"
        return f"cannot connect ({reason})"
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return f"cannot connect ({exc.strerror or exc})"


def _diagnose_s3(url: str, options: Mapping[str, Any] | None) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    try:
        bucket, key = split_s3(url)
    except OutputError:
        return "not an s3://bucket/key URL"
    try:
        S3Endpoint.from_options(options).client().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return reason(exc)
    except EndpointConnectionError:
        return "connection refused"
    except BotoCoreError as exc:
        return first_line(exc)
    return None


def _http_reason(code: int) -> str:
    return STATUS_WORDS.get(code, f"HTTP {code}")
