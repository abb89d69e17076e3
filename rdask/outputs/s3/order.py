"""An S3 COG's tiles in GDAL's order, from the pieces the tasks stored.

GDAL's COG layout (``BLOCK_ORDER=ROW_MAJOR``) wants each level's tiles in
tile order, row by row, smallest level first. A chunk's task holds a block
of tiles, several tile rows tall and, unless the chunk spans the raster's
width, only part of each row: its tiles cannot be one multipart part in
row-major order. So the S3 COG's tasks store every chunk as a piece (a
temporary object, tiles in row-major order inside the chunk, each already
wrapped in GDAL's leader and trailer, :class:`~.parts.PartWriter` with
``cog=True``), and the commit lays the object out:

* :func:`segments`: for each level (smallest first), each tile row, each
  chunk across it, the byte range of that chunk's piece holding its part
  of the row; consecutive ranges of one piece merge, so a chunk spanning
  the width is one range.
* :func:`plan_order`: the ranges, cut into parts of at least 5 MiB in
  that order. Part 1 is the header, the smallest levels (the tail piece)
  and the first ranges.
* :class:`OrderedParts`: a task per part, run through ``commit(run)``
  where the chunk tasks run: a part that is one range of one piece is
  copied by S3 itself (``UploadPartCopy``, no bytes through any process);
  any other is fetched range by range (ranged GETs) and uploaded. Piece
  bytes never reach the client.

Tile offsets follow from the ranges' places in the object, before any part
is made, so the client writes the header first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rdask.cloud.multipart import MAX_PARTS, MIN_PART, MultipartUpload
from rdask.cloud.s3 import get_object, reason
from rdask.errors import OutputError
from rdask.outputs.s3.parts import Part, Piece
from rdask.outputs.tiff.coglayout import LEADER, TRAILER
from rdask.recipe import Region

log = logging.getLogger("rdask")


@dataclass(frozen=True)
class Segment:
    """Bytes ``start:stop`` of the piece ``key``."""

    key: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Grid:
    """One level's pieces: ``pieces`` by chunk row (each row's chunks left
    to right); ``across`` tiles per tile row of the level."""

    pieces: tuple[tuple[Piece, ...], ...]
    across: int


def grid_of(parts: dict[int, Part | Piece], columns: int, across: int) -> Grid:
    """A level's pieces (by part number, ``columns`` chunks per chunk row)."""
    ordered = [parts[n] for n in sorted(parts)]
    if any(not isinstance(p, Piece) for p in ordered):
        raise AssertionError("rdask bug: a COG chunk was uploaded as a part, not stored as a piece")
    rows = tuple(tuple(ordered[i : i + columns]) for i in range(0, len(ordered), columns))
    return Grid(rows, across)  # type: ignore[arg-type]


def segments(grids: Sequence[Grid]) -> list[Segment]:
    """The ranges of the pieces in object order (see the module docstring)."""
    out: list[Segment] = []
    for grid in grids:
        for row in grid.pieces:
            rows = [_tile_rows(p, grid.across) for p in row]
            for r in sorted({r for by_row in rows for r in by_row}):
                for piece, by_row in zip(row, rows, strict=True):
                    if r in by_row:
                        _append(out, Segment(piece.key, *by_row[r]))
    return out


def _tile_rows(piece: Piece, across: int) -> dict[int, tuple[int, int]]:
    """``{tile row: (start, stop)}`` of a piece's wrapped tiles (a chunk's
    tiles are stored row by row, so each row's are contiguous)."""
    out: dict[int, tuple[int, int]] = {}
    for index, off, n in piece.tiles:
        r = index // across
        lo, hi = out.get(r, (off - LEADER, off + n + TRAILER))
        out[r] = (min(lo, off - LEADER), max(hi, off + n + TRAILER))
    return out


def _append(out: list[Segment], seg: Segment) -> None:
    if out and out[-1].key == seg.key and out[-1].stop == seg.start:
        out[-1] = Segment(seg.key, out[-1].start, seg.stop)
    else:
        out.append(seg)


@dataclass(frozen=True)
class OrderedPart:
    """Part ``number``: ``head`` (part 1's header), then ``segments``."""

    number: int
    segments: tuple[Segment, ...]
    head: bytes = b""

    @property
    def copy(self) -> bool:
        """One range of one piece, nothing else: S3 copies it."""
        return not self.head and len(self.segments) == 1


def plan_order(head: int, lead: Sequence[Segment], ranges: Sequence[Segment]) -> list[OrderedPart]:
    """Cut ``head`` bytes of header, then ``lead`` and ``ranges``, into
    parts of at least 5 MiB (the last may be smaller), in order: a part
    closes at the first range boundary past its size, so a range of 5 MiB
    or more that starts a part is a part alone (a copy); a big range that
    comes when a part is short gives it just the bytes it lacks and is
    copied for the rest (tiles may straddle parts). The size grows
    past 5 MiB only when the object would need more than S3's 10,000
    parts. Part 1's header is filled in by :meth:`OrderedParts.with_header`."""
    total = head + sum(s.size for s in (*lead, *ranges))
    target = max(MIN_PART, math.ceil(total / (MAX_PARTS - 1)))
    parts: list[list[Segment]] = [list(lead)]
    size = head + sum(s.size for s in lead)
    for seg in ranges:
        if size >= target:
            parts.append([])
            size = 0
        need = MIN_PART - size
        if 0 < need and seg.size - need >= MIN_PART:
            # A big range after a short start: only what the part lacks is
            # fetched, the rest is a part S3 copies.
            parts[-1].append(Segment(seg.key, seg.start, seg.start + need))
            seg = Segment(seg.key, seg.start + need, seg.stop)
            parts.append([])
            size = 0
        parts[-1].append(seg)
        size += seg.size
    if len(parts) > 1 and size < MIN_PART:
        parts[-2].extend(parts.pop())  # never required by S3 (the last part may be small), but
        # a small last part costs a request for little: it joins the one before
    return [OrderedPart(n, tuple(segs)) for n, segs in enumerate(parts, start=1)]


def places(head: int, parts: Iterable[OrderedPart]) -> dict[tuple[str, int], int]:
    """``{(piece key, offset in the piece): offset in the object}`` of every
    segment's first byte."""
    out, at = {}, head
    for part in parts:
        for seg in part.segments:
            out[(seg.key, seg.start)] = at
            at += seg.size
    return out


def tile_offsets(piece: Piece, where: dict[tuple[str, int], int], spans: list[tuple[str, int, int]]) -> list[
        tuple[int, int]]:
    """``[(tile index, offset in the object)]`` of a piece's tiles, given the
    object offset ``where`` of each segment start and ``spans``, the
    piece's ``(key, start, stop)`` segments sorted by start."""
    out = []
    starts = [s for _, s, _ in spans]
    for index, off, _ in piece.tiles:
        k = int(np.searchsorted(starts, off, side="right")) - 1
        key, start, _ = spans[k]
        out.append((index, where[(key, start)] + off - start))
    return out


@dataclass(frozen=True)
class OrderedParts:
    """The commit's tasks: chunk ``j`` of their job makes ``parts[j]``."""

    upload: MultipartUpload
    parts: tuple[OrderedPart, ...]

    def with_header(self, header: bytes) -> OrderedParts:
        first = self.parts[0]
        return OrderedParts(self.upload, (OrderedPart(1, first.segments, header), *self.parts[1:]))

    def __call__(self, block: np.ndarray, region: Region) -> Part:
        part = self.parts[region[2].start]
        up = self.upload
        if part.copy:
            seg = part.segments[0]
            etag = copy_part(up, part.number, seg)
            log.debug("%s: part %d copied by S3: %d bytes", up.url, part.number, seg.size)
            return Part(part.number, etag, seg.size)
        data = b"".join([part.head, *(get_range(up, s) for s in part.segments)])
        etag = up.put(part.number, data)
        log.debug("%s: part %d uploaded: %d bytes (%d ranges)", up.url, part.number, len(data),
                  len(part.segments))
        return Part(part.number, etag, len(data))


def get_range(upload: MultipartUpload, seg: Segment) -> bytes:
    """Bytes ``seg.start:seg.stop`` of a piece (one ranged GET)."""
    try:
        body = get_object(upload.endpoint, upload.bucket, seg.key, (seg.start, seg.stop))
    except Exception as exc:  # noqa: BLE001 - botocore's errors vary; one line
        raise OutputError(f"cannot read a piece of {upload.url}: {reason(exc)}") from None
    if len(body) != seg.size:
        raise OutputError(f"cannot finish {upload.url}: a piece changed size behind rdask's back "
                          "(rerun without --resume)")
    return body


def copy_part(upload: MultipartUpload, number: int, seg: Segment) -> str:
    """Part ``number`` as S3's copy of a piece's range (``UploadPartCopy``)."""
    try:
        r = upload.endpoint.client().upload_part_copy(
            Bucket=upload.bucket, Key=upload.key, UploadId=upload.upload_id, PartNumber=number,
            CopySource={"Bucket": upload.bucket, "Key": seg.key},
            CopySourceRange=f"bytes={seg.start}-{seg.stop - 1}")
    except Exception as exc:  # noqa: BLE001
        raise OutputError(f"cannot copy part {number} of {upload.url}: {reason(exc)}") from None
    return r["CopyPartResult"]["ETag"]
