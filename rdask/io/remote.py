"""Remote rasters: URLs, GDAL network defaults, S3 outputs, clear errors.

Inputs (``https://``, ``s3://``, any ``/vsi...`` path) are read by GDAL
itself; rdask adds network defaults and carries them, with the S3 endpoint
settings, inside every task as plain data. Credentials are never carried:
each process resolves them from its own environment or AWS profile, so they
cannot leak into graph keys, logs, errors or output tags.

Outputs to ``s3://bucket/key`` are staged on local disk (``$TMPDIR``), then
uploaded with one multipart upload whose completion is atomic: nothing is at
the key until the whole file is. A failed or interrupted job aborts its
upload; one left by a killed process is aborted by the next job on the key.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rdask.errors import OutputError, RasterOpenError, first_line

#: GDAL options for network reads, under the user's own (``gdal_options``,
#: and GDAL settings in the environment: see :func:`network_defaults`).
NETWORK_GDAL_OPTIONS: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per open
    "GDAL_HTTP_MAX_RETRY": "4",  # transient 429/5xx: retry...
    "GDAL_HTTP_RETRY_DELAY": "0.5",  # ...with exponential back-off from 0.5 s
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

#: Multipart upload part size (S3 allows 5 MB to 5 GB, at most 10 000 parts).
PART_BYTES = 64 * 1024 * 1024


def network_defaults() -> dict[str, Any]:
    """:data:`NETWORK_GDAL_OPTIONS` minus those set in the environment.

    Options entered with ``rasterio.Env`` override environment variables, so
    without this a user's ``GDAL_HTTP_TIMEOUT=5`` (or a CLI user's only way to
    set GDAL options) would be silently replaced by rdask's default.
    """
    return {k: v for k, v in NETWORK_GDAL_OPTIONS.items() if k not in os.environ}


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

    def gdal_options(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.endpoint:
            out["AWS_S3_ENDPOINT"] = self.endpoint
            out["AWS_HTTPS"] = "YES" if self.https else "NO"
            out["AWS_VIRTUAL_HOSTING"] = "TRUE" if self.virtual_hosting else "FALSE"
        if self.region:
            out["AWS_REGION"] = self.region
        return out

    def client(self):
        """A boto3 S3 client; credentials from the environment or profile."""
        try:
            import boto3
        except ModuleNotFoundError:
            raise OutputError("S3 outputs need boto3: pip install 'rdask[s3]'") from None

        url = f"{'https' if self.https else 'http'}://{self.endpoint}" if self.endpoint else None
        return boto3.client("s3", endpoint_url=url, region_name=self.region or "us-east-1")


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise OutputError(f"not an s3://bucket/key URL: {url}")
    return parts.netloc, parts.path.lstrip("/")


def staging_path(url: str) -> str:
    """A stable local path where an S3 output is built (stable for --resume)."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), "rdask-s3-staging", digest)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, os.path.basename(urlsplit(url).path) or "output.tif")


class S3Upload:
    """Upload a finished local file to ``s3://bucket/key`` atomically."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        check_options(options)  # as for inputs: secrets come from the environment
        self.url = url
        self.bucket, self.key = split_s3(url)
        self.endpoint = S3Endpoint.from_options(options)
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = self.endpoint.client()
        return self._client

    def check(self, *, overwrite: bool, keep: str | None = None) -> None:
        """Before any work: the bucket is reachable; no object unless overwrite;
        abort what a killed job on this key left behind (but for the upload
        ``keep``, which a resume continues)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise OutputError(f"cannot write {self.url}: {_s3_reason(exc)}") from None
        except BotoCoreError as exc:
            raise OutputError(f"cannot reach S3 for {self.url}: {first_line(exc)}") from None
        if not overwrite:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.key)
            except ClientError:
                pass
            else:
                raise OutputError(f"output exists: {self.url} (pass overwrite=True / --overwrite to replace it)")
        self.abort_stale(keep=keep)

    def abort_stale(self, keep: str | None = None) -> int:
        """Abort unfinished multipart uploads to this key (but ``keep``); return how many."""
        n = 0
        resp = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.key)
        for up in resp.get("Uploads", []):
            if up["Key"] == self.key and up["UploadId"] != keep:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=up["UploadId"])
                n += 1
        return n

    def send(self, path: str) -> tuple[str, list[dict[str, Any]]]:
        """Upload ``path`` as the parts of a new multipart upload; return its id
        and parts for :meth:`complete`. Nothing appears at the key yet."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            raise OutputError(f"cannot write {self.url}: {first_line(exc)}") from None
        try:
            parts = []
            with open(path, "rb") as fh:
                number = 1
                while True:
                    data = fh.read(PART_BYTES)
                    if not data and parts:
                        break
                    r = self.client.upload_part(
                        Bucket=self.bucket, Key=self.key, UploadId=upload_id, PartNumber=number, Body=data
                    )
                    parts.append({"ETag": r["ETag"], "PartNumber": number})
                    number += 1
                    if len(data) < PART_BYTES:
                        break
        except BaseException as exc:
            self.abort(upload_id)
            if isinstance(exc, (ClientError, BotoCoreError)):
                raise OutputError(f"cannot upload {self.url}: {first_line(exc)}") from None
            raise
        return upload_id, parts

    def complete(self, upload_id: str, parts: list[dict[str, Any]]) -> None:
        """Publish what :meth:`send` uploaded: the object appears, whole, now."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except (ClientError, BotoCoreError) as exc:
            self.abort(upload_id)
            raise OutputError(f"cannot upload {self.url}: {first_line(exc)}") from None

    def abort(self, upload_id: str) -> None:
        """Drop an upload and its parts (quietly: the error that led here matters more)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
        except Exception:  # noqa: BLE001
            pass


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
        return _s3_reason(exc)
    except EndpointConnectionError:
        return "connection refused"
    except BotoCoreError as exc:
        return first_line(exc)
    return None


def _http_reason(code: int) -> str:
    return {404: "not found (HTTP 404)", 403: "access denied (HTTP 403)", 401: "unauthorised (HTTP 401)"}.get(
        code, f"HTTP {code}"
    )


def _s3_reason(exc: Any) -> str:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("404", "NoSuchKey", "NoSuchBucket") or status == 404:
        return "not found (HTTP 404)"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
        return "access denied (HTTP 403)"
    return f"S3 error {code or status}"
