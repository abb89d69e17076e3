"""Refusing hostile inputs before they cost unbounded time or memory.

A crafted TIFF can declare far more than it holds: 2048 x 1073741824
pixels in a 4 KB file, 65535 bands, a strip whose byte count runs past the
end of the file, fewer tiles than the image size needs, or an LZW strip of
a few KB that claims to decode to gigabytes. GDAL reads such files without
complaint until a read fails (or succeeds with zeros for tiles that are
missing), and meanwhile rdask plans, allocates and writes for the size
declared. GDAL calls cannot be interrupted safely, so rdask does not race
them against a clock: it bounds the *work* instead, and refuses a file that
breaks a bound with one line naming the file and the reason
(:class:`~rdask.errors.RasterOpenError`), before any output exists.

The bounds
----------
Before GDAL opens a local TIFF or BigTIFF, :func:`check_file` reads its
IFDs (at most :data:`MAX_IFDS`, loops stopped) with plain ``struct`` and
lays each image out as libtiff (4.7: ``tif_dirread.c``, ``tif_strip.c``,
``tif_read.c``) will read it:

* it is tiled when it has a TileWidth or TileLength, and its offsets and
  byte counts are whichever of the strip or tile tags comes last: libtiff
  keeps one field for both, so tiles listed under StripOffsets are read;
* each strip or tile decodes to libtiff's size for it (``_TIFFStrileSize64``):
  rows x row bytes, except packed YCbCr (contiguous, not JPEG, which GDAL
  has libtiff turn into RGB), which holds one Cb and one Cr per
  YCbCrSubsampling block of Y, so less than width x height x 3;
* missing byte counts (one strip per plane), and a lone strip's zero byte
  count, are estimated as libtiff does (``EstimateStripByteCounts``): the
  strip's decoded size if uncompressed, else up to the end of the file;
* integer fields may have any integer type, signed too (libtiff converts
  them); BitsPerSample is its first value (libtiff refuses a file whose
  per-sample values differ); an IFD of over 4096 entries ends the check
  (libtiff refuses to read it).

and refuses the file when any image

* has more than :data:`MAX_BANDS` samples per pixel (rdask's bound, below);
* has strip/tile offsets or byte counts that are not integers (libtiff
  cannot read them, yet GDAL opens the image and only its reads fail);
* lists fewer strip/tile offsets or byte counts than it has strips or
  tiles: libtiff fills the table with empty entries, so GDAL would read
  the missing ones as zeros (a valid file lists one per strip or tile;
  extra entries are ignored, as libtiff does);
* has an offset table, or a strip or tile, that lies past the end of the
  file (a truncated file, or a byte count that exceeds the file), counting
  the bytes libtiff reads, which fails past the end: an uncompressed strip
  or tile is read as its decoded size from its offset, whatever its byte
  count (``TIFFReadEncodedStrip``); a compressed one as its byte count,
  cut to ten times its decoded size + 4 KB when over 1 MiB
  (``TIFFFillStrip``);
* declares more decoded bytes in a compressed strip or tile than those
  bytes can hold: the most each codec can expand, PackBits (64x), LZW
  (~3641x: a 9-bit code spells at most 4096 bytes) and Deflate (1032x).
  libtiff fails a strip or tile whose data ends before it is full ("Not
  enough data"), so no file GDAL reads goes past these. Empty (sparse)
  strips and tiles are fine.

The check costs a read of the IFDs and of the offset tables, which the
file must contain anyway (both bounded by the file's size).

After opening (any format, local or remote), :func:`check_declared`
refuses more than :data:`MAX_BANDS` bands and a block that is larger than
:data:`MAX_BLOCK_BYTES` across all bands: a chunk holds all bands and at
least one block, so this is the smallest chunk the plan can make, and it
bounds memory per chunk (every thread holds an input and an output chunk)
and the work of decoding it.

While opening and reading, :data:`READ_OPTIONS` hold GDAL and libtiff to
the same bounds: ``GDAL_MAX_BAND_COUNT`` (:data:`MAX_BANDS`, for formats
whose open itself builds the bands), ``GTIFF_MAX_CUMULATED_MEM_USAGE``
(what libtiff may allocate per open file: four blocks' worth) and
``GTIFF_IGNORE_READ_ERRORS=NO`` (a corrupt block is an error, never zeros).
JPEG streams are bounded by GDAL's and libtiff's own defaults (at most 100
progressive scans: ``GDAL_JPEG_MAX_ALLOWED_SCAN_NUMBER`` /
``LIBTIFF_JPEG_MAX_ALLOWED_SCAN_NUMBER``; libjpeg memory capped unless
``..._ALLOW_LARGE_LIBJPEG_MEM_ALLOC`` is set), which rdask leaves alone.

So every read decodes at most a chunk's blocks, each at most
:data:`MAX_BLOCK_BYTES` from at most the file's bytes, with codecs whose
time is linear in those sizes: each chunk ends, with pixels or an error,
in time proportional to its size, and the job fails on the first error
with nothing left beside the output.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from rdask.errors import RasterOpenError

#: Most bands a file may have. A GDAL read of all bands of a TIFF window
#: costs ~bands**2 whatever the interleave (GDAL 3.10, deflate, a 64 x 4 px
#: window: 0.08 s at 1024 bands, 1.3 s at 4096, so ~5 minutes at 65535), and
#: every chunk reads all bands.
MAX_BANDS = 4096

#: Most bytes one block may decode to, across all bands (512 MiB).
MAX_BLOCK_BYTES = 512 * 1024 * 1024

#: Most IFDs (images, overviews, masks) read from one TIFF.
MAX_IFDS = 1024

#: GDAL configuration for opening and reading inputs (merge it into the
#: options entered around every open and read).
READ_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("GDAL_MAX_BAND_COUNT", str(MAX_BANDS)),
    ("GTIFF_IGNORE_READ_ERRORS", "NO"),
    ("GTIFF_MAX_CUMULATED_MEM_USAGE", str(4 * MAX_BLOCK_BYTES)),
)

# TIFF tags read here.
_WIDTH, _HEIGHT, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS, _PLANAR = 273, 277, 278, 279, 284
_TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_COUNTS, _SUBSAMPLING = 322, 323, 324, 325, 530
_TAGS = {_WIDTH, _HEIGHT, _BITS, _COMPRESSION, _PHOTOMETRIC, _STRIP_OFFSETS, _SAMPLES,
         _ROWS_PER_STRIP, _STRIP_COUNTS, _PLANAR, _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS,
         _TILE_COUNTS, _SUBSAMPLING}

# libtiff keeps one field for the offsets and one for the byte counts of
# strips or tiles alike, set by whichever tag comes last in the IFD.
_OFFSETS, _COUNTS = _STRIP_OFFSETS, _STRIP_COUNTS
_FIELD = {_TILE_OFFSETS: _OFFSETS, _TILE_COUNTS: _COUNTS}

_UNCOMPRESSED, _JPEG, _YCBCR, _SEPARATE = 1, 7, 6, 2

#: Most entries libtiff reads in one IFD (it refuses a longer one).
_MAX_ENTRIES = 4096

# Integer field types, as libtiff reads them: BYTE, SBYTE, SHORT, SSHORT,
# LONG, SLONG, IFD, LONG8, SLONG8, IFD8 (a negative value is out of range).
_FORMATS = {1: "B", 6: "b", 3: "H", 8: "h", 4: "I", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}

#: Codec -> (name, most decoded bytes per stored byte). Codecs not listed
#: (JPEG, ZSTD, LERC, WebP...) have no small bound and are held by
#: :data:`MAX_BLOCK_BYTES` alone.
_EXPANSION = {
    32773: ("PackBits", 64.0),
    5: ("LZW", 4096 * 8 / 9),
    8: ("Deflate", 1032.0),
    32946: ("Deflate", 1032.0),
}


class _Refused(Exception):
    """A reason to refuse the file being checked."""


def check_file(path: str) -> None:
    """Refuse a local TIFF whose structure promises more than it holds.

    Does nothing for a URL, a ``/vsi`` path or a file that is not a TIFF
    (GDAL then reports what it finds); reads only IFDs and offset tables.

    Parameters
    ----------
    path
        Local path of an input.

    Raises
    ------
    RasterOpenError
        One line naming ``path`` and the reason (see the module docstring).
    """
    if "://" in path or path.startswith("/vsi") or not os.path.isfile(path):
        return
    try:
        with open(path, "rb") as f:
            _check_tiff(f, os.fstat(f.fileno()).st_size)
    except _Refused as why:
        raise RasterOpenError(f"refusing {path}: {why}") from None
    except OSError:
        return  # unreadable: GDAL's open reports it in its own words


def check_declared(ds: Any, shown: str) -> None:
    """Refuse an open dataset with too many bands or too large a block.

    Parameters
    ----------
    ds
        An open rasterio dataset.
    shown
        The input's name as messages show it (credentials removed).

    Raises
    ------
    RasterOpenError
        One line naming the file and the reason.
    """
    if ds.count > MAX_BANDS:
        raise RasterOpenError(f"refusing {shown}: {ds.count} bands (rdask's limit is {MAX_BANDS})")
    by, bx = ds.block_shapes[0]
    itemsize = max(np.dtype(read_dtype(d)).itemsize for d in ds.dtypes)
    nbytes = by * bx * itemsize * ds.count
    if nbytes > MAX_BLOCK_BYTES:
        raise RasterOpenError(
            f"refusing {shown}: one {by} x {bx} px block of all {ds.count} bands is "
            f"{_human(nbytes)} (rdask's limit is {_human(MAX_BLOCK_BYTES)}); "
            "rewrite it with smaller tiles, e.g. gdal_translate -co TILED=YES"
        )


def read_dtype(name: str) -> str:
    """The numpy dtype rasterio reads a band of GDAL type ``name`` as:
    ``complex_int16`` (GDAL's CInt16, which numpy lacks) is read as
    ``complex64``; every other name is numpy's already."""
    return "complex64" if name.startswith("complex_int") else name


# -- the TIFF structure ----------------------------------------------------


class _Field(NamedTuple):
    """One IFD entry: its field type, value format ("" if not integers),
    value count and value/offset slot."""

    kind: int
    fmt: str
    count: int
    raw: bytes


@dataclass(frozen=True)
class _Layout:
    """How libtiff cuts an image into strips or tiles."""

    kind: str  # "strip" or "tile"
    count: int  # strips or tiles, over all planes
    planes: int
    full: int  # decoded bytes of a whole strip or tile
    last: int  # decoded bytes of a plane's last strip (its last rows only)

    def sizes(self) -> np.ndarray:
        """Decoded bytes of each strip or tile."""
        per_plane = np.full(self.count // self.planes, self.full, dtype=np.float64)
        per_plane[-1] = self.last
        return np.tile(per_plane, self.planes)


class _Reader:
    """Typed reads from a TIFF of known byte order and flavour."""

    def __init__(self, f: BinaryIO, size: int, order: str, big: bool) -> None:
        self.f, self.size, self.order, self.big = f, size, order, big
        self.offset_fmt = "Q" if big else "I"

    def unpack(self, fmt: str, at: int) -> tuple:
        n = struct.calcsize(self.order + fmt)
        if at < 0 or at + n > self.size:
            raise EOFError
        self.f.seek(at)
        return struct.unpack(self.order + fmt, self.f.read(n))

    def values(self, field: _Field, limit: int, table: str = "") -> np.ndarray:
        """The first ``limit`` values of ``field`` (libtiff reads no more).

        Values past the end of the file refuse it when ``table`` names them,
        else end the check (libtiff fails to read the tag: GDAL reports it).
        """
        width = struct.calcsize(field.fmt)
        n = min(field.count, limit)
        if field.count * width <= len(field.raw):
            buf = field.raw[: n * width]
        else:
            (at,) = struct.unpack(self.order + self.offset_fmt, field.raw)
            if at + n * width > self.size:
                if table:
                    raise _Refused(f"its {table} table lies past the end of the "
                                   f"{self.size}-byte file")
                raise EOFError
            self.f.seek(at)
            buf = self.f.read(n * width)
        return np.frombuffer(buf, dtype=np.dtype(field.fmt).newbyteorder(self.order)).astype(np.uint64)

    def first(self, tags: dict[int, _Field], tag: int, default: int) -> int:
        """A tag's first value, as libtiff keeps it (per-sample tags must agree)."""
        values = self.values(tags[tag], 1) if tag in tags else ()
        return int(values[0]) if len(values) else default


def _check_tiff(f: BinaryIO, size: int) -> None:
    head = f.read(16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        return
    version = struct.unpack(order + "H", head[2:4])[0]
    if version not in (42, 43):
        return
    r = _Reader(f, size, order, big=version == 43)
    seen: set[int] = set()
    # A loop, a chain past the file's end or an IFD libtiff cannot read stops
    # here; GDAL reports it (or never reads past it).
    try:
        at = r.unpack("Q" if r.big else "I", 8 if r.big else 4)[0]
        while at and at not in seen and len(seen) < MAX_IFDS:
            seen.add(at)
            tags, at = _read_ifd(r, at)
            _check_image(r, tags)
    except EOFError:
        return


def _read_ifd(r: _Reader, at: int) -> tuple[dict[int, _Field], int]:
    """The tags rdask checks in the IFD at ``at``, and the next IFD's offset."""
    count_fmt, entry_fmt, entry = ("Q", "HHQ", 20) if r.big else ("H", "HHI", 12)
    slot = 8 if r.big else 4
    (n,) = r.unpack(count_fmt, at)
    if n > _MAX_ENTRIES:
        raise EOFError
    start = at + struct.calcsize(r.order + count_fmt)
    tags: dict[int, _Field] = {}
    for i in range(n):
        tag, kind, count = r.unpack(entry_fmt, start + i * entry)
        if tag not in _TAGS:
            continue
        key = _FIELD.get(tag, tag)
        if kind in _FORMATS or key in (_OFFSETS, _COUNTS):
            r.f.seek(start + (i + 1) * entry - slot)
            tags[key] = _Field(kind, _FORMATS.get(kind, ""), count, r.f.read(slot))
        else:
            tags.pop(key, None)  # not integers: libtiff fails or ignores it
    (nxt,) = r.unpack(r.offset_fmt, start + n * entry)
    return tags, nxt


def _check_image(r: _Reader, tags: dict[int, _Field]) -> None:
    width, height = r.first(tags, _WIDTH, 0), r.first(tags, _HEIGHT, 0)
    if width <= 0 or height <= 0:
        return
    bands = r.first(tags, _SAMPLES, 1)
    if bands > MAX_BANDS:
        raise _Refused(f"declares {bands} bands (rdask's limit is {MAX_BANDS})")
    layout = _layout(r, tags, width, height, bands)
    offsets, counts = tags.get(_OFFSETS), tags.get(_COUNTS)
    # libtiff refuses the image without offsets, or without byte counts
    # unless each plane is one strip or tile (it then estimates them).
    if layout is None or offsets is None or (counts is None and layout.count != layout.planes):
        return
    n, kind = layout.count, layout.kind
    for field, name in ((offsets, "offsets"), (counts, "byte counts")):
        if field is not None and not field.fmt:  # libtiff cannot read them
            raise _Refused(f"its {kind} {name} are not integers (TIFF field type {field.kind})")
    dims = f"declares {width} x {height} px x {bands} band{'s' if bands > 1 else ''}"
    if offsets.count < n or (counts is not None and counts.count < n):
        listed = "no" if counts is None else counts.count
        raise _Refused(f"{dims} in {n} {kind}s, but lists {offsets.count} {kind} offsets "
                       f"and {listed} byte counts")
    starts = r.values(offsets, n, kind).astype(np.float64)
    listed_counts = None if counts is None else r.values(counts, n, kind).astype(np.float64)
    compression = r.first(tags, _COMPRESSION, _UNCOMPRESSED)
    lengths = _byte_counts(listed_counts, starts, layout, r.size, compression)
    _check_striles(r.size, layout, starts, lengths, compression, dims)


def _layout(r: _Reader, tags: dict[int, _Field], width: int, height: int,
            bands: int) -> _Layout | None:
    """The strips or tiles libtiff cuts the image into; None where libtiff
    refuses the image itself (a zero or invalid strip or tile size)."""
    separate = r.first(tags, _PLANAR, 1) == _SEPARATE
    planes = bands if separate else 1
    size = _strile_size(r, tags, bands, separate)
    if size is None:
        return None
    if _TILE_WIDTH in tags or _TILE_LENGTH in tags:
        tw, th = r.first(tags, _TILE_WIDTH, 0), r.first(tags, _TILE_LENGTH, 0)
        if tw <= 0 or th <= 0:
            return None
        n = math.ceil(width / tw) * math.ceil(height / th)
        return _Layout("tile", n * planes, planes, size(tw, th), size(tw, th))
    rows = min(r.first(tags, _ROWS_PER_STRIP, height), height)
    if rows <= 0:
        return None
    n = math.ceil(height / rows)
    return _Layout("strip", n * planes, planes, size(width, rows),
                   size(width, height - (n - 1) * rows))


def _strile_size(r: _Reader, tags: dict[int, _Field], bands: int,
                 separate: bool) -> Callable[[int, int], int] | None:
    """libtiff's decoded bytes of a strip or tile ``width`` px wide and
    ``rows`` high (``_TIFFStrileSize64``); None where it is zero."""
    bits = r.first(tags, _BITS, 1)
    packed = (r.first(tags, _PHOTOMETRIC, -1) == _YCBCR and not separate
              and r.first(tags, _COMPRESSION, _UNCOMPRESSED) != _JPEG)
    if not packed:
        samples = 1 if separate else bands
        return lambda width, rows: rows * math.ceil(width * samples * bits / 8)
    # One Cb and one Cr per block of h x v Y samples; libtiff refuses other
    # factors than 1, 2 and 4, or other than 3 samples.
    h, v = _subsampling(r, tags)
    if bands != 3 or h not in (1, 2, 4) or v not in (1, 2, 4):
        return None
    return lambda width, rows: (math.ceil(math.ceil(width / h) * (h * v + 2) * bits / 8)
                                * math.ceil(rows / v))


def _subsampling(r: _Reader, tags: dict[int, _Field]) -> tuple[int, int]:
    """YCbCrSubsampling as libtiff keeps it: 2 x 2 unless the tag is a pair
    it can read (it ignores any other)."""
    field = tags.get(_SUBSAMPLING)
    try:
        if field is not None and field.count == 2:
            h, v = r.values(field, 2)
            return int(h), int(v)
    except EOFError:
        pass
    return 2, 2


def _byte_counts(listed: np.ndarray | None, starts: np.ndarray, layout: _Layout, size: int,
                 compression: int) -> np.ndarray:
    """The byte counts libtiff reads with: those listed, or its estimates
    where they are missing or a lone strip's is zero (``ByteCountLooksBad``):
    the strip's decoded size if uncompressed, else up to the end of the file."""
    lone = layout.kind == "strip" and layout.count == 1 and starts[0] != 0
    if listed is not None and not (lone and listed[0] == 0):
        return listed
    if compression == _UNCOMPRESSED:
        return layout.sizes()
    return np.maximum(size - starts, 0)


def _check_striles(size: int, layout: _Layout, starts: np.ndarray, lengths: np.ndarray,
                   compression: int, dims: str) -> None:
    kind = layout.kind
    live = lengths > 0  # empty (sparse) strips and tiles read as nodata
    decoded = layout.sizes()
    if compression == _UNCOMPRESSED:
        # libtiff reads its decoded size from its offset, whatever its byte count.
        past = np.flatnonzero(live & (starts + decoded > size))
        if len(past):
            i = int(past[0])
            raise _Refused(f"{dims}; {kind} {i} should hold {_human(decoded[i])} of uncompressed "
                           f"data from byte {int(starts[i])}, but the file ends at byte {size}")
        return
    # libtiff reads a compressed one's byte count, cut to ten times its
    # decoded size + 4 KB when over 1 MiB (TIFFFillStrip, TIFFFillTile).
    cap = 10.0 * layout.full + 4096
    read = np.where((lengths > 1 << 20) & (np.floor((lengths - 4096) / 10) > layout.full),
                    cap, lengths)
    past = np.flatnonzero(live & (starts + read > size))
    if len(past):
        i = int(past[0])
        end = int(starts[i]) + int(lengths[i])
        raise _Refused(f"{kind} {i} (bytes {int(starts[i])}..{end}) runs "
                       f"past the end of the {size}-byte file")
    if compression not in _EXPANSION:
        return
    codec, ratio = _EXPANSION[compression]
    short = np.flatnonzero(live & (read * ratio < decoded))
    if len(short):
        i = int(short[0])
        raise _Refused(f"{dims}; {kind} {i} should decode to {_human(decoded[i])} but holds "
                       f"{_human(read[i])} of {codec} data ({codec} expands at most {ratio:.0f}x)")


def _human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"
