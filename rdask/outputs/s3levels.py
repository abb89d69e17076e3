"""Nearest overview levels of an S3 COG, built where the tasks run.

The local COG output stores each main-pass chunk's level-1 nearest picks in
a scratch file beside the output (:class:`~.overviews.LevelPieces`). On a
cluster whose workers do not share the client's disk that file cannot
exist, so here each piece is a small compressed S3 object under a hidden
prefix next to the key, ``<key>.rdask-partial/<upload token>/l<k>/<a>-<b>``:

* every main-pass chunk's task writes its level-1 piece (:class:`PieceTap`);
* level ``k`` is a chunk job of its own whose chunks are assembled from the
  level-``k`` pieces under them (:class:`FromPieces`); its tasks upload
  their tiles as parts and write the level-``k+1`` pieces in turn.

A nearest pick needs no neighbours, so each piece comes from exactly one
chunk and the pixels are GDAL's (:func:`~.overviews.picks`), as in the
local COG. The prefix is deleted on commit and on abort.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rdask.errors import OutputError
from rdask.outputs.coglayout import header_and_ifds
from rdask.outputs.overviews import picks, take
from rdask.outputs.parts import Part, Upload, s3_client, s3_reason
from rdask.outputs.tiles import TileEncoder
from rdask.recipe import Region

log = logging.getLogger("rdask")


def prefix_of(key: str) -> str:
    """The hidden prefix of every job's pieces for ``key``."""
    return f"{key}.rdask-partial/"


def token(upload_id: str) -> str:
    """A short, key-safe name for one upload's pieces."""
    return hashlib.sha256(upload_id.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class S3Pieces:
    """Where the level-``level`` pieces of a chunk grid go.

    Chunk ``(a, b)`` of the grid above (edges ``y_edges``/``x_edges``, in
    that grid's pixels) holds the level rows ``rows[a]:rows[a+1]`` and
    columns ``cols[b]:cols[b+1]``.
    """

    upload: Upload
    level: int
    y_edges: tuple[int, ...]
    x_edges: tuple[int, ...]
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    bands: int
    dtype: str

    @classmethod
    def plan(cls, upload: Upload, level: int, chunks: tuple, dtype: Any) -> S3Pieces:
        """The pieces that the chunks ``chunks`` (of the level above) make."""
        y_edges = tuple(int(v) for v in np.cumsum((0, *chunks[1])))
        x_edges = tuple(int(v) for v in np.cumsum((0, *chunks[2])))
        h, w = y_edges[-1], x_edges[-1]
        rows = np.searchsorted(picks(h, math.ceil(h / 2), 0, math.ceil(h / 2)), y_edges)
        cols = np.searchsorted(picks(w, math.ceil(w / 2), 0, math.ceil(w / 2)), x_edges)
        return cls(upload, level, y_edges, x_edges, tuple(int(v) for v in rows), tuple(int(v) for v in cols),
                   int(chunks[0][0]), str(np.dtype(dtype)))

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows[-1], self.cols[-1]

    def key(self, a: int, b: int) -> str:
        up = self.upload
        return f"{prefix_of(up.key)}{token(up.upload_id)}/l{self.level}/{a}-{b}"

    def write(self, block: np.ndarray, region: Region) -> None:
        """Pick and store the piece of the chunk at ``region`` (of the level above)."""
        _, ysl, xsl = region
        a, b = self.y_edges.index(ysl.start), self.x_edges.index(xsl.start)
        rows = picks(self.y_edges[-1], self.shape[0], self.rows[a], self.rows[a + 1]) - ysl.start
        cols = picks(self.x_edges[-1], self.shape[1], self.cols[b], self.cols[b + 1]) - xsl.start
        if not (len(rows) and len(cols)):
            return
        import imagecodecs

        piece = np.ascontiguousarray(take(block, rows, cols), dtype=self.dtype)
        body = imagecodecs.zstd_encode(piece.tobytes(), level=1)
        try:
            s3_client(self.upload.endpoint).put_object(Bucket=self.upload.bucket, Key=self.key(a, b), Body=body)
        except Exception as exc:  # noqa: BLE001 - botocore's errors vary; one line
            raise OutputError(f"cannot write an overview piece of {self.upload.url}: {s3_reason(exc)}") from None

    def read(self, a: int, b: int) -> np.ndarray:
        """Piece ``(a, b)`` as :meth:`write` stored it."""
        import imagecodecs

        shape = (self.bands, self.rows[a + 1] - self.rows[a], self.cols[b + 1] - self.cols[b])
        try:
            obj = s3_client(self.upload.endpoint).get_object(Bucket=self.upload.bucket, Key=self.key(a, b))
            data = imagecodecs.zstd_decode(obj["Body"].read())
        except Exception as exc:  # noqa: BLE001
            raise OutputError(f"cannot read an overview piece of {self.upload.url}: {s3_reason(exc)}") from None
        return np.frombuffer(data, dtype=self.dtype).reshape(shape)


@dataclass(frozen=True)
class PieceTap:
    """A writer that also stores its chunk's piece of the next level, first
    (so a part S3 holds always has its piece)."""

    writer: Any
    pieces: S3Pieces

    def __call__(self, block: np.ndarray, region: Region) -> Any:
        self.pieces.write(block, region)
        return self.writer(block, region)


@dataclass(frozen=True)
class FromPieces:
    """A level chunk assembled from the pieces under it."""

    pieces: S3Pieces

    def __call__(self, region: Region) -> np.ndarray:
        _, ys, xs = region
        p = self.pieces
        out = np.empty((p.bands, ys.stop - ys.start, xs.stop - xs.start), dtype=p.dtype)
        for a in range(len(p.rows) - 1):
            r0, r1 = max(ys.start, p.rows[a]), min(ys.stop, p.rows[a + 1])
            for b in range(len(p.cols) - 1):
                c0, c1 = max(xs.start, p.cols[b]), min(xs.stop, p.cols[b + 1])
                if r0 < r1 and c0 < c1:
                    piece = p.read(a, b)
                    out[:, r0 - ys.start : r1 - ys.start, c0 - xs.start : c1 - xs.start] = piece[
                        :, r0 - p.rows[a] : r1 - p.rows[a], c0 - p.cols[b] : c1 - p.cols[b]
                    ]
        return out


def delete_pieces(upload: Upload, *, keep: str | None = None) -> int:
    """Delete the pieces under ``upload``'s key (all jobs' but ``keep``'s
    token); return how many. Quiet: a failure only leaves hidden objects."""
    client = s3_client(upload.endpoint)
    prefix = prefix_of(upload.key)
    n = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=upload.bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])
                    if keep is None or not o["Key"].startswith(f"{prefix}{keep}/")]
            if keys:
                client.delete_objects(Bucket=upload.bucket, Delete={"Objects": keys, "Quiet": True})
                n += len(keys)
    except Exception:  # noqa: BLE001
        pass
    return n


@dataclass(frozen=True)
class HeaderWithLevels:
    """Part 1 of an S3 COG, made in a task: the header and every IFD, then
    the tiles of the smallest levels (the ``tail``), where a COG keeps them.

    The tail levels are small (a few MiB raw, together), so the task builds
    them in memory from the first tail level's pieces, encodes them, writes
    their tile index into their IFDs and pads the part to ``size``.
    """

    upload: Upload
    ifds: tuple[Any, ...]  # laid out (coglayout); the tail's are the last ones
    bigtiff: bool
    row_major: bool
    size: int
    pieces: S3Pieces | None = None  # the first tail level's
    encoders: tuple[TileEncoder, ...] = ()  # one per tail level, largest first

    def __call__(self, block: np.ndarray, region: Region) -> Part:
        ifds = [copy.copy(ifd) for ifd in self.ifds]
        tail = ifds[len(ifds) - len(self.encoders):]
        at = len(header_and_ifds(ifds, self.bigtiff, row_major=self.row_major))
        blobs: list[bytes] = []
        for ifd, pixels, encoder in reversed(list(zip(tail, self._levels(), self.encoders, strict=True))):
            tiles = sorted(encoder(pixels, (slice(None), slice(0, None), slice(0, None))))
            ifd.tiles = [(0, len(b)) for _, b in tiles]
            ifd.tile_offsets = [int(v) for v in at + np.cumsum([0] + [len(b) for _, b in tiles[:-1]])]
            at += sum(len(b) for _, b in tiles)
            blobs += [b for _, b in tiles]
        head = header_and_ifds(ifds, self.bigtiff, row_major=self.row_major)
        if len(head) + sum(map(len, blobs)) > self.size:
            raise OutputError(f"cannot finish {self.upload.url}: rdask bug: the smallest levels overflow part 1")
        pad = self.size - len(head) - sum(map(len, blobs))
        etag = self.upload.put(1, b"".join([head, *blobs, bytes(pad)]))
        log.debug("%s: part 1 uploaded: %d bytes of header + %d bytes of padding (with %d levels' tiles)",
                  self.upload.url, self.size - pad, pad, len(self.encoders))
        return Part(1, etag, self.size, padding=pad)

    def _levels(self) -> list[np.ndarray]:
        """The tail levels' pixels, largest first."""
        if self.pieces is None:
            return []
        h, w = self.pieces.shape
        out = [FromPieces(self.pieces)((slice(None), slice(0, h), slice(0, w)))]
        for _ in self.encoders[1:]:
            hp, wp = out[-1].shape[1:]
            h, w = math.ceil(hp / 2), math.ceil(wp / 2)
            out.append(np.ascontiguousarray(take(out[-1], picks(hp, h, 0, h), picks(wp, w, 0, w))))
        return out


def tail_bound(shape: tuple[int, int, int], encoder: TileEncoder) -> int:
    """The most bytes a level of ``shape`` can encode to (whole tiles, plus
    what DEFLATE or ZSTD add to incompressible data)."""
    bands, h, w = shape
    t = encoder.tile
    raw = t * t * bands * np.dtype(encoder.dtype).itemsize
    return math.ceil(h / t) * math.ceil(w / t) * (raw + raw // 64 + 1024)
