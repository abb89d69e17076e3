"""Nearest overview levels of an S3 COG, built where the tasks run.

The local COG output stores each main-pass chunk's level-1 nearest picks in
a scratch file beside the output (:class:`~.overviews.LevelPieces`). On a
cluster whose workers do not share the client's disk that file cannot
exist, so here each piece is a small compressed S3 object under a hidden
prefix next to the key, ``<key>.rdask-partial/<upload token>/l<k>/<a>-<b>``:

* every main-pass chunk's task writes its level-1 piece (:class:`PieceTap`);
* level ``k`` is a chunk job of its own whose chunks are assembled from the
  level-``k`` pieces under them (:class:`~.overviews.FromPieces`); its tasks upload
  their tiles as parts (or chunk pieces, as the main pass's) and write the
  level-``k+1`` pieces in turn;
* the smallest levels are one task (:class:`TailLevels`) that builds them
  from the first of them's pieces and stores their tiles as one chunk
  piece, which part 1 takes right after the IFDs.

A nearest pick needs no neighbours, so each piece comes from exactly one
chunk and the pixels are GDAL's (:func:`~.overviews.picks`), as in the
local COG. The prefix is deleted on commit and on abort.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rdask.cloud.multipart import MultipartUpload
from rdask.cloud.s3 import get_object, put_object, reason
from rdask.errors import OutputError
from rdask.outputs.nearest import pick_piece, picks, piece_edges, take
from rdask.outputs.s3.parts import Piece, piece_key, prefix_of, put_piece, token
from rdask.outputs.tiff.coglayout import LEADER, wrap_tile
from rdask.outputs.tiff.overviews import FromPieces
from rdask.outputs.tiff.tiles import TileEncoder
from rdask.recipe import Region

log = logging.getLogger("rdask")


@dataclass(frozen=True)
class S3Pieces:
    """Where the level-``level`` pieces of a chunk grid go.

    Chunk ``(a, b)`` of the grid above (edges ``y_edges``/``x_edges``, in
    that grid's pixels) holds the level rows ``rows[a]:rows[a+1]`` and
    columns ``cols[b]:cols[b+1]``.
    """

    upload: MultipartUpload
    level: int
    y_edges: tuple[int, ...]
    x_edges: tuple[int, ...]
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    bands: int
    dtype: str

    @classmethod
    def plan(cls, upload: MultipartUpload, level: int, chunks: tuple, dtype: Any) -> S3Pieces:
        """The pieces that the chunks ``chunks`` (of the level above) make."""
        return cls(upload, level, *piece_edges(chunks), int(chunks[0][0]), str(np.dtype(dtype)))

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
        piece = pick_piece(self, a, b, block)
        if piece is None:
            return
        import imagecodecs

        body = imagecodecs.zstd_encode(piece.tobytes(), level=1)
        try:
            put_object(self.upload.endpoint, self.upload.bucket, self.key(a, b), body)
        except Exception as exc:  # noqa: BLE001 - botocore's errors vary; one line
            raise OutputError(f"cannot write an overview piece of {self.upload.url}: {reason(exc)}") from None

    def read(self, a: int, b: int) -> np.ndarray:
        """Piece ``(a, b)`` as :meth:`write` stored it."""
        import imagecodecs

        shape = (self.bands, self.rows[a + 1] - self.rows[a], self.cols[b + 1] - self.cols[b])
        try:
            data = imagecodecs.zstd_decode(get_object(self.upload.endpoint, self.upload.bucket, self.key(a, b)))
        except Exception as exc:  # noqa: BLE001
            raise OutputError(f"cannot read an overview piece of {self.upload.url}: {reason(exc)}") from None
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
class Tail:
    """What :class:`TailLevels` stored: one piece, and each tail level's
    ``[(tile, offset in the piece, size), ...]``, largest level first."""

    piece: Piece
    levels: tuple[tuple[tuple[int, int, int], ...], ...]

    @property
    def number(self) -> int:
        return self.piece.number


@dataclass(frozen=True)
class TailLevels:
    """The smallest levels of an S3 COG (the ``tail``), made in one task.

    They are small (a few MiB raw, together), so the task builds them in
    memory from the first tail level's pieces, encodes them and stores
    their tiles, smallest level first (where a COG keeps them), row-major,
    each with GDAL's leader and trailer, as one chunk
    piece that part 1 takes right after the IFDs. Their exact size is then
    known before the tile index is written: no room to reserve, no padding.
    """

    upload: MultipartUpload
    pieces: S3Pieces  # the first tail level's
    encoders: tuple[TileEncoder, ...]  # one per tail level, largest first

    def __call__(self, block: np.ndarray, region: Region) -> Tail:
        blobs: list[bytes] = []
        layouts: list[tuple[tuple[int, int, int], ...]] = []
        at = 0
        for pixels, encoder in reversed(list(zip(self._levels(), self.encoders, strict=True))):
            layout = []
            for index, payload in sorted(encoder(pixels, (slice(None), slice(0, None), slice(0, None)))):
                blob = wrap_tile(payload)  # GDAL's leader and trailer (the COG layout)
                layout.append((index, at + LEADER, len(payload)))
                at += len(blob)
                blobs.append(blob)
            layouts.append(tuple(layout))
        key = piece_key(self.upload, "tail")
        put_piece(self.upload, key, b"".join(blobs))
        log.debug("%s: the %d smallest levels' tiles stored as a piece: %d bytes",
                  self.upload.url, len(self.encoders), at)
        return Tail(Piece(0, key, at), tuple(reversed(layouts)))

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
