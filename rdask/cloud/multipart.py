"""One S3 multipart upload: what a task needs to upload a part (no
credentials), and what the client does to start, check, complete or
abort it.

S3's rules: every part but the last is 5 MiB to 5 GiB, at most 10,000
parts, numbers ascending with gaps allowed. Nothing appears at the key
until :meth:`MultipartUpload.complete`, which is atomic; until then the
parts are invisible, and :meth:`MultipartUpload.abort` drops them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rdask.cloud.s3 import S3Endpoint, error_code, reason, split_s3
from rdask.errors import OutputError

log = logging.getLogger("rdask")

MIN_PART = 5 * 1024**2
MAX_PART = 5 * 1024**3
MAX_PARTS = 10_000

#: Part size when a whole local file is uploaded (:meth:`MultipartUpload.send_file`).
FILE_PART = 64 * 1024 * 1024


def check_key(endpoint: S3Endpoint, url: str, *, overwrite: bool) -> None:
    """Before any work: the bucket is reachable, and no object is at the key
    unless ``overwrite``."""
    bucket, key = split_s3(url)
    client = endpoint.client()
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - botocore's errors vary; one line
        raise OutputError(f"cannot {'reach S3 for' if not error_code(exc) else 'write'} {url}: "
                          f"{reason(exc)}") from None
    if overwrite:
        return
    try:
        client.head_object(Bucket=bucket, Key=key)
    except Exception:  # noqa: BLE001 - absent (or unreadable): nothing to clobber
        return
    raise OutputError(f"output exists: {url} (pass overwrite=True / --overwrite to replace it)")


@dataclass(frozen=True)
class MultipartUpload:
    """One multipart upload, as a task or the client needs it (no secrets)."""

    endpoint: S3Endpoint
    bucket: str
    key: str
    upload_id: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def create(cls, endpoint: S3Endpoint, url: str) -> MultipartUpload:
        """Start an upload (nothing appears at the key until it completes),
        and abort every other unfinished upload to the key.

        CreateMultipartUpload is not idempotent: when its response is lost
        (the connection dropped after S3 acted) the client's retry starts a
        second upload, and the first, which nobody would complete or abort,
        keeps its parts (and their storage) until a lifecycle rule drops it.
        One listing right after finds it, with any a killed job left; if
        that listing fails, the next job on the key aborts them.
        """
        bucket, key = split_s3(url)
        try:
            up = cls(endpoint, bucket, key,
                     endpoint.client().create_multipart_upload(Bucket=bucket, Key=key)["UploadId"])
        except Exception as exc:  # noqa: BLE001
            raise OutputError(f"cannot write {url}: {reason(exc)}") from None
        try:
            cls.abort_stale(endpoint, url, keep=up.upload_id)
        except Exception as exc:  # noqa: BLE001 - cleanup only; the next job retries it
            log.debug("could not list the other uploads to %s: %s", url, reason(exc))
        return up

    @classmethod
    def abort_stale(cls, endpoint: S3Endpoint, url: str, *, keep: str | None = None) -> int:
        """Abort every unfinished upload to this key but ``keep`` (what killed
        jobs left); return how many."""
        bucket, key = split_s3(url)
        client = endpoint.client()
        n = 0
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key)
        for page in pages:
            for up in page.get("Uploads", []):
                if up["Key"] == key and up["UploadId"] != keep:
                    cls(endpoint, bucket, key, up["UploadId"]).abort()
                    n += 1
        return n

    def put(self, number: int, data: bytes) -> str:
        """Upload part ``number``; return its ETag. Idempotent: a retried
        part replaces the first attempt's."""
        if len(data) > MAX_PART:
            raise OutputError(f"cannot write {self.url}: a chunk encodes to {len(data)} bytes, more than "
                              "S3's 5 GiB part limit (use smaller chunks: --chunk-mb)")
        try:
            r = self.endpoint.client().upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                   PartNumber=number, Body=data)
        except Exception as exc:  # noqa: BLE001
            raise OutputError(f"cannot upload part {number} of {self.url}: {reason(exc)}") from None
        return r["ETag"]

    def listed(self) -> dict[int, tuple[str, int]] | None:
        """``{part number: (ETag, size)}`` of the parts S3 holds, or None when
        the upload no longer exists."""
        out: dict[int, tuple[str, int]] = {}
        try:
            pages = self.endpoint.client().get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            for page in pages:
                for p in page.get("Parts", []):
                    out[int(p["PartNumber"])] = (p["ETag"], int(p["Size"]))
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "NoSuchUpload":
                return None
            raise OutputError(f"cannot resume {self.url}: {reason(exc)}") from None
        return out

    def complete(self, parts: list[tuple[int, str]]) -> None:
        """Publish ``[(number, ETag), ...]``: the object appears at the key,
        whole, now.

        A completion whose response was lost is retried by the client and
        then finds no upload (``NoSuchUpload``); it succeeded if the object
        now at the key is the one these parts make (its multipart ETag).
        """
        listing = [{"PartNumber": n, "ETag": e} for n, e in sorted(parts)]
        try:
            self.endpoint.client().complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": listing})
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "NoSuchUpload" and self._completed_as(listing):
                return
            raise OutputError(f"cannot finish {self.url}: {reason(exc)}") from None

    def _completed_as(self, listing: list[dict[str, Any]]) -> bool:
        import hashlib

        digests = b"".join(bytes.fromhex(p["ETag"].strip('"')) for p in listing)
        expected = f'"{hashlib.md5(digests).hexdigest()}-{len(listing)}"'  # noqa: S324 - S3's ETag
        try:
            head = self.endpoint.client().head_object(Bucket=self.bucket, Key=self.key)
        except Exception:  # noqa: BLE001
            return False
        return head.get("ETag") == expected

    def abort(self) -> None:
        """Drop the upload and its parts (quietly: it may be gone already, and
        the error that led here matters more)."""
        try:
            self.endpoint.client().abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                          UploadId=self.upload_id)
        except Exception as exc:  # noqa: BLE001
            log.debug("could not abort the multipart upload of %s: %s", self.url, reason(exc))

    def send_file(self, path: str) -> list[tuple[int, str]]:
        """Upload the local file ``path`` as this upload's parts; return them
        for :meth:`complete`."""
        parts: list[tuple[int, str]] = []
        with open(path, "rb") as fh:
            while True:
                data = fh.read(FILE_PART)
                if not data and parts:
                    return parts
                parts.append((len(parts) + 1, self.put(len(parts) + 1, data)))
                if len(data) < FILE_PART:
                    return parts
