"""S3, once for inputs and outputs: where it is, the client every process
builds for it, one retry policy, and one way to say why a request failed.

An :class:`S3Endpoint` is plain data (host, scheme, addressing, region; no
credentials) that travels inside tasks; each process resolves credentials
from its own environment or AWS profile, so they never reach a graph key, a
log line, an error or an output tag.

:class:`RetryPolicy` is the one answer to "how hard do we try": obstore
(Zarr stores), boto3 (GeoTIFF and COG uploads) and GDAL (reading ``s3://``
and ``https://`` inputs) all make the same number of attempts with
exponential back-off, so a throttling burst (503 SlowDown) or a dropped
connection costs a job time, not its result. It follows the usual
environment: ``AWS_MAX_ATTEMPTS`` and ``AWS_RETRY_MODE`` for every client
(GDAL's retries too, unless ``GDAL_HTTP_MAX_RETRY`` is set). What it
survives is measured by ``tests/test_s3_faults.py`` (docs/remote-data.md).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rdask.errors import OutputError, first_line

log = logging.getLogger("rdask")

#: Attempts per request (the first and 10 retries: obstore's default).
ATTEMPTS = 11
#: Back-off: the first retry after 0.1 to 0.2 s, each next one drawn up to
#: twice as far, at most :data:`MAX_DELAY` (obstore's defaults).
FIRST_DELAY = 0.1
MAX_DELAY = 15.0
#: No new attempt this many seconds after a request's first (obstore's).
RETRY_TIMEOUT = 300.0
#: HTTP statuses GDAL retries: throttling and server errors, never a 4xx
#: that another attempt cannot change.
RETRY_CODES = "429,500,502,503,504"
#: botocore's retry modes (``AWS_RETRY_MODE``).
MODES = ("standard", "adaptive", "legacy")


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets, and how it backs off between them.

    In botocore's ``standard`` mode (the default) a boto3 client retries
    what that mode retries (throttling, 5xx, dropped connections) but with
    obstore's back-off (:meth:`delay`) and without botocore's retry quota:
    that bucket of 500 tokens, shared by a client's requests, pays 14 per
    retried 5xx or reset and 5 per throttled request and earns 1 per clean
    one, so a job's thousands of requests under a burst of faults drain it
    and every later fault is final, however few attempts its request had.
    ``adaptive`` and ``legacy`` are botocore's own, with these attempts.
    """

    attempts: int = ATTEMPTS
    mode: str = "standard"

    @classmethod
    def from_environment(cls) -> RetryPolicy:
        """The policy, with ``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE`` where set.

        Raises
        ------
        OutputError
            Either is set to something botocore would refuse.
        """
        text = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
        mode = os.environ.get("AWS_RETRY_MODE", "").strip().lower() or "standard"
        try:
            attempts = int(text) if text else ATTEMPTS
        except ValueError:
            attempts = 0
        if attempts < 1:
            raise OutputError(f"AWS_MAX_ATTEMPTS must be a whole number of attempts, 1 or more, not {text!r}")
        if mode not in MODES:
            raise OutputError(f"AWS_RETRY_MODE must be one of {', '.join(MODES)}, not {mode!r}")
        return cls(attempts, mode)

    def delay(self, retry: int, draw: Callable[[], float] = random.random) -> float:
        """Seconds before retry ``retry`` (1 is the first): drawn between
        :data:`FIRST_DELAY` and ``FIRST_DELAY * 2 ** retry``, at most
        :data:`MAX_DELAY`, so concurrent clients spread out."""
        top = min(MAX_DELAY, FIRST_DELAY * 2.0 ** min(retry, 64))
        return FIRST_DELAY + draw() * max(0.0, top - FIRST_DELAY)

    def botocore(self) -> Any:
        """A botocore ``Config`` with these attempts and mode (see :meth:`install`)."""
        from botocore.config import Config

        return Config(retries={"mode": self.mode, "total_max_attempts": self.attempts})

    def install(self, client: Any) -> Any:
        """Give ``client`` (made with :meth:`botocore`) this policy's back-off
        and no retry quota, in ``standard`` mode; return it."""
        if self.mode != "standard":
            return client
        try:
            from botocore.retries import standard

            handler = standard.RetryHandler(
                retry_policy=standard.RetryPolicy(
                    retry_checker=standard.StandardRetryConditions(max_attempts=self.attempts),
                    retry_backoff=_Backoff(self)),
                retry_event_adapter=standard.RetryEventAdapter(),
                retry_quota=_NoQuota())
        except (ImportError, AttributeError, TypeError) as exc:  # another botocore's internals
            log.debug("botocore's standard retries kept as they are (%s)", exc)
            return client
        name = client.meta.service_model.service_id.hyphenize()
        unique = f"retry-config-{name}"  # botocore's own handler's id: replaced
        client.meta.events.unregister(f"needs-retry.{name}", unique_id=unique)
        client.meta.events.register(f"needs-retry.{name}", handler.needs_retry, unique_id=unique)
        return client

    def obstore(self) -> dict[str, Any]:
        """obstore's ``retry_config``."""
        from datetime import timedelta

        return {
            "max_retries": self.attempts - 1,
            "backoff": {"init_backoff": timedelta(seconds=FIRST_DELAY),
                        "max_backoff": timedelta(seconds=MAX_DELAY), "base": 2},
            "retry_timeout": timedelta(seconds=RETRY_TIMEOUT),
        }

    def gdal(self) -> dict[str, str]:
        """GDAL's options for the same retries (its delay doubles, with jitter)."""
        return {
            "GDAL_HTTP_MAX_RETRY": str(self.attempts - 1),
            "GDAL_HTTP_RETRY_DELAY": str(FIRST_DELAY),
            "GDAL_HTTP_RETRY_CODES": RETRY_CODES,
        }


@dataclass(frozen=True)
class _Backoff:
    """botocore's back-off interface, with :meth:`RetryPolicy.delay`."""

    policy: RetryPolicy

    def delay_amount(self, context: Any) -> float:
        return self.policy.delay(context.attempt_number)


class _NoQuota:
    """botocore's retry-quota interface: every retry allowed (the attempts bound them)."""

    def acquire_retry_quota(self, context: Any) -> bool:
        return True


@dataclass(frozen=True)
class S3Endpoint:
    """Where S3 is, read from GDAL options or the environment (no secrets)."""

    endpoint: str | None  # host[:port], as GDAL's AWS_S3_ENDPOINT
    https: bool
    virtual_hosting: bool
    region: str | None

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> S3Endpoint:
        opts = {str(k).upper(): str(v) for k, v in (options or {}).items()}

        def get(name: str) -> str | None:
            return opts.get(name) or os.environ.get(name)

        endpoint = get("AWS_S3_ENDPOINT")
        https = (get("AWS_HTTPS") or "YES").upper() not in ("NO", "FALSE", "0", "OFF")
        url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint is None and url:
            parts = urlsplit(url)
            endpoint, https = parts.netloc, parts.scheme == "https"
        vh = (get("AWS_VIRTUAL_HOSTING") or "TRUE").upper() not in ("NO", "FALSE", "0", "OFF")
        return cls(endpoint, https, vh, get("AWS_REGION") or get("AWS_DEFAULT_REGION"))

    @property
    def url(self) -> str | None:
        """``http[s]://host[:port]``, or None for AWS itself."""
        return f"{'https' if self.https else 'http'}://{self.endpoint}" if self.endpoint else None

    def gdal_options(self) -> dict[str, str]:
        """GDAL's spelling of this endpoint (for ``/vsis3/`` reads)."""
        out: dict[str, str] = {}
        if self.endpoint:
            out["AWS_S3_ENDPOINT"] = self.endpoint
            out["AWS_HTTPS"] = "YES" if self.https else "NO"
            out["AWS_VIRTUAL_HOSTING"] = "TRUE" if self.virtual_hosting else "FALSE"
        if self.region:
            out["AWS_REGION"] = self.region
        return out

    def client(self) -> Any:
        """This process's boto3 client for the endpoint (see :class:`Clients`)."""
        return clients().get(self)


class Clients:
    """One boto3 client per endpoint and retry policy in a process.

    Creating a client costs ~50 ms and is not thread-safe; using one is. A
    process holds one :class:`Clients` (:func:`clients`); a forked child
    gets its own, since a connection pool must not cross a fork.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[S3Endpoint, RetryPolicy], Any] = {}

    def get(self, endpoint: S3Endpoint) -> Any:
        key = (endpoint, RetryPolicy.from_environment())
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = _new_client(*key)
            return client

    def close(self) -> None:
        """Close every client (their connection pools)."""
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def clients() -> Clients:
    """This process's :class:`Clients`."""
    return _clients_of(os.getpid())


@functools.cache
def _clients_of(pid: int) -> Clients:
    return Clients()


def _new_client(endpoint: S3Endpoint, retries: RetryPolicy) -> Any:
    try:
        import boto3
    except ModuleNotFoundError:
        raise OutputError("S3 outputs need boto3: pip install 'rdask[s3]'") from None
    client = boto3.client("s3", endpoint_url=endpoint.url, region_name=endpoint.region or "us-east-1",
                          config=retries.botocore())
    return retries.install(client)


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise OutputError(f"not an s3://bucket/key URL: {url}")
    return parts.netloc, parts.path.lstrip("/")


#: What an HTTP status means, in the words every rdask error uses.
STATUS_WORDS = {404: "not found (HTTP 404)", 403: "access denied (HTTP 403)", 401: "unauthorised (HTTP 401)"}


def reason(exc: BaseException) -> str:
    """Why an S3 request failed, as a short phrase: boto3's and obstore's
    errors alike (neither ever holds a credential), S3's error code first,
    and how many retries were spent on it when any were."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError
        code = str(response.get("Error", {}).get("Code", ""))
        meta = response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NoSuchBucket") or status == 404:
            return STATUS_WORDS[404]
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            return STATUS_WORDS[403]
        message = str(response.get("Error", {}).get("Message", ""))
        if code.isdigit():  # an answer without a body (HEAD): its status and phrase
            said = f"HTTP {code} ({message})" if message else f"HTTP {code}"
        else:
            said = f"{code}: {message}".strip(": ") or first_line(exc)
        return _after(said, meta.get("RetryAttempts"))
    text = str(exc)
    retries = re.search(r"after (\d+) retries", text)  # obstore's
    spent = int(retries.group(1)) if retries else None
    status = re.search(r"status code: (\d{3})", text)
    if status:
        number = int(status.group(1))
        code = re.search(r"<Code>([^<]+)</Code>", text)
        said = STATUS_WORDS.get(number) or (f"{code.group(1)} (HTTP {number})" if code else f"HTTP {number}")
        return _after(said, spent)
    if type(exc).__name__ in _DROPPED or "error sending request" in text or "body error" in text:
        if not re.search(r"refused|tcp connect|dns error", text, re.I):
            return _after("the connection to S3 dropped", spent)
    if "onnect" in text:
        return "cannot connect to S3"
    return first_line(exc)


#: botocore's errors for a connection lost before, or while, S3 answered.
_DROPPED = ("ConnectionClosedError", "ResponseStreamingError", "IncompleteReadError", "ProtocolError")


def _after(said: str, retries: Any) -> str:
    return f"{said} (after {retries} retries)" if isinstance(retries, int) and retries > 0 else said


def error_code(exc: BaseException) -> str:
    """S3's error code of a boto3 error (``NoSuchUpload``...), or ``""``."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


# -- objects --------------------------------------------------------------------


def list_objects(endpoint: S3Endpoint, bucket: str, prefix: str) -> dict[str, int]:
    """``{key: size}`` of every object under ``prefix`` (paginated)."""
    pages = endpoint.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: int(o["Size"]) for page in pages for o in page.get("Contents", [])}


def delete_objects(endpoint: S3Endpoint, bucket: str, keys: list[str]) -> None:
    """Delete ``keys``, a thousand per request (S3's DeleteObjects limit)."""
    client = endpoint.client()
    for i in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[i : i + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


def put_object(endpoint: S3Endpoint, bucket: str, key: str, data: bytes) -> None:
    endpoint.client().put_object(Bucket=bucket, Key=key, Body=data)


def get_object(endpoint: S3Endpoint, bucket: str, key: str, span: tuple[int, int] | None = None) -> bytes:
    """The object's bytes, or bytes ``start:stop`` of it (``span``).

    botocore's retries end when a response's headers arrive; a download
    cut short after them (a dropped connection mid-body) is requested
    again here, as often and with the same back-off as the policy says.
    """
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

    ranged = {"Range": f"bytes={span[0]}-{span[1] - 1}"} if span else {}
    policy = RetryPolicy.from_environment()
    for attempt in range(1, policy.attempts + 1):
        try:
            return endpoint.client().get_object(Bucket=bucket, Key=key, **ranged)["Body"].read()
        except (IncompleteReadError, ReadTimeoutError, ResponseStreamingError):
            if attempt == policy.attempts:
                raise
            time.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")
