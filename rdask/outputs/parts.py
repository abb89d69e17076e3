"""S3 multipart parts that the compute tasks upload themselves.

What travels in a task is an :class:`Upload` (endpoint, bucket, key and
upload id: no credentials, which every process resolves from its own
environment or AWS profile) and a writer: :class:`PartWriter` encodes a
chunk's tiles and uploads them as one part, :class:`HeaderWriter` uploads
the TIFF header the client built. Either returns a :class:`Part`: its
number, ETag, size and where the chunk's tiles are inside it, never the
bytes.

S3's rules: every part but the last is 5 MiB to 5 GiB, at most 10,000 parts,
numbers ascending with gaps allowed. A part smaller than 5 MiB is padded
with zero bytes that no tile references (the file stays a valid TIFF).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from rdask.errors import OutputError, first_line
from rdask.io.remote import S3Endpoint
from rdask.outputs.tiles import TileEncoder
from rdask.recipe import Region

log = logging.getLogger("rdask")

MIN_PART = 5 * 1024**2
MAX_PART = 5 * 1024**3
MAX_PARTS = 10_000

_clients: dict[S3Endpoint, Any] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint: S3Endpoint) -> Any:
    """One boto3 client per endpoint and process (creating one costs ~50 ms
    and is not thread-safe; using one is)."""
    with _clients_lock:
        client = _clients.get(endpoint)
        if client is None:
            client = _clients[endpoint] = endpoint.client()
        return client


def s3_reason(exc: BaseException) -> str:
    """A one-line reason for a boto3 error (no credentials are ever in it)."""
    response = getattr(exc, "response", None)
    if response:
        error = response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        return f"{code}: {message}".strip(": ") or first_line(exc)
    return first_line(exc)


@dataclass(frozen=True)
class Part:
    """An uploaded part: ``tiles`` is ``[(tile index, offset in part, size), ...]``;
    ``padding`` the zero bytes at its end."""

    number: int
    etag: str
    size: int
    tiles: tuple[tuple[int, int, int], ...] = ()
    padding: int = 0


@dataclass(frozen=True)
class Upload:
    """One multipart upload, as a task or the client needs it (no secrets)."""

    endpoint: S3Endpoint
    bucket: str
    key: str
    upload_id: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def create(cls, endpoint: S3Endpoint, bucket: str, key: str) -> Upload:
        """Start a multipart upload (nothing appears at the key until it completes)."""
        try:
            up = s3_client(endpoint).create_multipart_upload(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - botocore's errors vary; one line
            raise OutputError(f"cannot write s3://{bucket}/{key}: {s3_reason(exc)}") from None
        return cls(endpoint, bucket, key, up["UploadId"])

    def put(self, number: int, data: bytes) -> str:
        """Upload part ``number``; return its ETag."""
        if len(data) > MAX_PART:
            raise OutputError(f"cannot write {self.url}: a chunk encodes to {len(data)} bytes, more than "
                              "S3's 5 GiB part limit (use smaller chunks: --chunk-mb)")
        try:
            r = s3_client(self.endpoint).upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                     PartNumber=number, Body=data)
        except Exception as exc:  # noqa: BLE001
            raise OutputError(f"cannot upload part {number} of {self.url}: {s3_reason(exc)}") from None
        return r["ETag"]

    def listed(self) -> dict[int, tuple[str, int]] | None:
        """``{part number: (ETag, size)}`` of the parts S3 holds, or None when
        the upload no longer exists (ListParts is paginated: 1,000 a page)."""
        client = s3_client(self.endpoint)
        out: dict[int, tuple[str, int]] = {}
        try:
            pages = client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=self.key,
                                                                UploadId=self.upload_id)
            for page in pages:
                for p in page.get("Parts", []):
                    out[int(p["PartNumber"])] = (p["ETag"], int(p["Size"]))
        except Exception as exc:  # noqa: BLE001
            if "NoSuchUpload" in str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")):
                return None
            raise OutputError(f"cannot resume {self.url}: {s3_reason(exc)}") from None
        return out

    def complete(self, parts: list[Part]) -> None:
        """Publish: the object appears at the key, whole, now."""
        listing = [{"PartNumber": p.number, "ETag": p.etag} for p in sorted(parts, key=lambda p: p.number)]
        try:
            s3_client(self.endpoint).complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": listing})
        except Exception as exc:  # noqa: BLE001
            raise OutputError(f"cannot finish {self.url}: {s3_reason(exc)}") from None

    def abort(self) -> None:
        """Drop the upload and its parts (quietly: it may be gone already)."""
        try:
            s3_client(self.endpoint).abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                            UploadId=self.upload_id)
        except Exception as exc:  # noqa: BLE001 - the error that led here matters more
            log.debug("could not abort the multipart upload of %s: %s", self.url, s3_reason(exc))


@dataclass(frozen=True)
class PartNumbers:
    """Chunk ``(i, j)`` of a grid is part ``first + i * columns + j``; the
    last part number overall (``last``) is the only part that may be small."""

    y_edges: tuple[int, ...]
    x_edges: tuple[int, ...]
    first: int
    last: int

    @classmethod
    def of(cls, chunks: tuple[tuple[int, ...], ...], first: int, last: int | None = None) -> PartNumbers:
        y = tuple(int(v) for v in np.cumsum((0, *chunks[1])))
        x = tuple(int(v) for v in np.cumsum((0, *chunks[2])))
        count = (len(y) - 1) * (len(x) - 1)
        return cls(y, x, first, first + count - 1 if last is None else last)

    def number(self, region: Region) -> int:
        """The part of the chunk at ``region``."""
        return self.at(region[1].start, region[2].start)

    def at(self, y0: int, x0: int) -> int:
        """The part of the chunk starting at row ``y0``, column ``x0`` (ValueError if none does)."""
        return self.first + self.y_edges.index(y0) * (len(self.x_edges) - 1) + self.x_edges.index(x0)

    def padding(self, number: int, size: int) -> int:
        """Zero bytes to add to a part of ``size`` bytes."""
        return 0 if number == self.last else max(0, MIN_PART - size)


@dataclass(frozen=True)
class PartWriter:
    """Encode a chunk's tiles and upload them as one part (in the chunk's task)."""

    encoder: TileEncoder
    upload: Upload
    numbers: PartNumbers

    def __call__(self, block: np.ndarray, region: Region) -> Part:
        tiles = self.encoder(block, region)
        number = self.numbers.number(region)
        placed, at = [], 0
        for index, blob in tiles:
            placed.append((index, at, len(blob)))
            at += len(blob)
        pad = self.numbers.padding(number, at)
        etag = self.upload.put(number, b"".join([b for _, b in tiles] + [bytes(pad)]))
        log.debug("%s: part %d uploaded: %d bytes of tiles + %d bytes of padding",
                  self.upload.url, number, at, pad)
        return Part(number, etag, at + pad, tuple(placed), pad)


@dataclass(frozen=True)
class HeaderWriter:
    """Upload the TIFF header (built by the client) as part 1, padded to
    ``size`` here, where the tasks run: the client sends only the header."""

    upload: Upload
    header: bytes
    size: int

    def __call__(self, block: np.ndarray, region: Region) -> Part:
        pad = self.size - len(self.header)
        etag = self.upload.put(1, self.header + bytes(pad))
        log.debug("%s: part 1 uploaded: %d bytes of header + %d bytes of padding",
                  self.upload.url, len(self.header), pad)
        return Part(1, etag, self.size, padding=pad)
