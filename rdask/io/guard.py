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
refuses it when any image in it

* has more than :data:`MAX_BANDS` samples per pixel;
* lists a different number of strip/tile offsets or byte counts than its
  size implies (GDAL would silently read the missing tiles as zeros);
* has a strip/tile offset table, or a strip/tile, that lies past the end
  of the file (a truncated file, or a byte count that exceeds the file);
* declares more decoded bytes in a strip or tile than its stored bytes
  can hold: 1x for uncompressed data, and the most each codec can expand
  for PackBits (64x), LZW (~3641x: a 9-bit code spells at most 4096
  bytes) and Deflate (1032x). Empty (sparse) strips and tiles are fine.

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
from typing import Any, BinaryIO

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
_WIDTH, _HEIGHT, _BITS, _COMPRESSION = 256, 257, 258, 259
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS = 273, 277, 278, 279
_PLANAR, _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_COUNTS = 284, 322, 323, 324, 325
_TAGS = {_WIDTH, _HEIGHT, _BITS, _COMPRESSION, _STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP,
         _STRIP_COUNTS, _PLANAR, _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_COUNTS}

# Unsigned integer field types: BYTE, SHORT, LONG, IFD, LONG8, IFD8.
_FORMATS = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}

#: Codec -> (name, most decoded bytes per stored byte). Codecs not listed
#: (JPEG, ZSTD, LERC, WebP...) have no small bound and are held by
#: :data:`MAX_BLOCK_BYTES` alone.
_EXPANSION = {
    1: ("uncompressed", 1.0),
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

    def array(self, fmt: str, count: int, raw: bytes, what: str) -> np.ndarray:
        """The ``count`` values of a field whose value/offset slot is ``raw``."""
        nbytes = count * struct.calcsize(fmt)
        if nbytes <= len(raw):
            buf = raw[:nbytes]
        else:
            (at,) = struct.unpack(self.order + self.offset_fmt, raw)
            if at + nbytes > self.size:
                raise _Refused(f"its {what} table lies past the end of the {self.size}-byte file")
            self.f.seek(at)
            buf = self.f.read(nbytes)
        return np.frombuffer(buf, dtype=np.dtype(fmt).newbyteorder(self.order)).astype(np.uint64)


def _check_tiff(f: BinaryIO, size: int) -> None:
    head = f.read(16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        return
    version = struct.unpack(order + "H", head[2:4])[0]
    if version not in (42, 43):
        return
    r = _Reader(f, size, order, big=version == 43)
    at = r.unpack("Q" if r.big else "I", 8 if r.big else 4)[0]
    seen: set[int] = set()
    # A loop or a chain past the file's end stops here; GDAL reports it.
    while at and at not in seen and len(seen) < MAX_IFDS:
        seen.add(at)
        try:
            tags, at = _read_ifd(r, at)
        except EOFError:
            return
        _check_image(r, tags)


def _read_ifd(r: _Reader, at: int) -> tuple[dict[int, np.ndarray], int]:
    """The tags rdask checks in the IFD at ``at``, and the next IFD's offset."""
    count_fmt, entry_fmt, entry = ("Q", "HHQ", 20) if r.big else ("H", "HHI", 12)
    (n,) = r.unpack(count_fmt, at)
    start = at + struct.calcsize(r.order + count_fmt)
    tags: dict[int, np.ndarray] = {}
    for i in range(n):
        tag, kind, count = r.unpack(entry_fmt, start + i * entry)
        if tag in _TAGS and kind in _FORMATS:
            slot = start + i * entry + (entry - (8 if r.big else 4))
            r.f.seek(slot)
            raw = r.f.read(8 if r.big else 4)
            what = "tile" if tag in (_TILE_OFFSETS, _TILE_COUNTS) else "strip"
            tags[tag] = r.array(_FORMATS[kind], count, raw, what)
    (nxt,) = r.unpack(r.offset_fmt, start + n * entry)
    return tags, nxt


def _first(tags: dict[int, np.ndarray], tag: int, default: int) -> int:
    values = tags.get(tag)
    return int(values[0]) if values is not None and len(values) else default


def _check_image(r: _Reader, tags: dict[int, np.ndarray]) -> None:
    width, height = _first(tags, _WIDTH, 0), _first(tags, _HEIGHT, 0)
    if width <= 0 or height <= 0:
        return
    bands = _first(tags, _SAMPLES, 1)
    if bands > MAX_BANDS:
        raise _Refused(f"declares {bands} bands (rdask's limit is {MAX_BANDS})")
    dims = f"declares {width} x {height} px x {bands} band{'s' if bands > 1 else ''}"
    tiled = _TILE_WIDTH in tags and _TILE_OFFSETS in tags
    offsets = tags.get(_TILE_OFFSETS if tiled else _STRIP_OFFSETS)
    counts = tags.get(_TILE_COUNTS if tiled else _STRIP_COUNTS)
    if offsets is None or counts is None:
        return  # libtiff estimates missing byte counts; GDAL reports missing offsets
    kind = "tile" if tiled else "strip"
    decoded = _decoded_sizes(tags, width, height, bands, tiled)
    if decoded is None:
        return
    expected = decoded[0]
    if len(offsets) != expected or len(counts) != expected:
        raise _Refused(f"{dims} in {expected} {kind}s, but lists {len(offsets)} {kind} offsets "
                       f"and {len(counts)} byte counts")
    _check_striles(r.size, offsets, counts, decoded[1], kind, dims,
                   _first(tags, _COMPRESSION, 1))


def _decoded_sizes(tags: dict[int, np.ndarray], width: int, height: int, bands: int,
                   tiled: bool) -> tuple[int, Callable[[], np.ndarray]] | None:
    """The number of strips (or tiles) and a function giving the decoded
    bytes of each: called only once the number matches the file's tables,
    so a declared billion strips is never materialised."""
    bits = int(tags[_BITS].max()) if len(tags.get(_BITS, ())) else 1
    planes = bands if _first(tags, _PLANAR, 1) == 2 else 1
    per_pixel = bits * (bands // planes)
    if tiled:
        tw, th = _first(tags, _TILE_WIDTH, 0), _first(tags, _TILE_LENGTH, 0)
        if tw <= 0 or th <= 0:
            return None
        n = math.ceil(width / tw) * math.ceil(height / th)
        size = th * math.ceil(tw * per_pixel / 8)
        return n * planes, lambda: np.full(n * planes, size, dtype=np.float64)
    rows = max(1, min(_first(tags, _ROWS_PER_STRIP, height), height))
    n = math.ceil(height / rows)
    row_bytes = math.ceil(width * per_pixel / 8)

    def sizes() -> np.ndarray:
        per_plane = np.full(n, rows * row_bytes, dtype=np.float64)
        per_plane[-1] = (height - (n - 1) * rows) * row_bytes
        return np.tile(per_plane, planes)

    return n * planes, sizes


def _check_striles(size: int, offsets: np.ndarray, counts: np.ndarray,
                   sizes: Callable[[], np.ndarray], kind: str,
                   dims: str, compression: int) -> None:
    live = counts > 0  # empty (sparse) strips and tiles read as nodata
    ends = offsets + counts
    past = np.flatnonzero(live & (ends > size))
    if len(past):
        i = int(past[0])
        raise _Refused(f"{kind} {i} (bytes {int(offsets[i])}..{int(ends[i])}) runs past the end "
                       f"of the {size}-byte file")
    if compression not in _EXPANSION:
        return
    codec, ratio = _EXPANSION[compression]
    decoded = sizes()
    short = np.flatnonzero(live & (counts.astype(np.float64) * ratio < decoded))
    if len(short):
        i = int(short[0])
        held = f"{_human(int(counts[i]))} of {codec} data"
        limit = "" if ratio == 1 else f" ({codec} expands at most {ratio:.0f}x)"
        raise _Refused(f"{dims}; {kind} {i} should decode to {_human(int(decoded[i]))} "
                       f"but holds {held}{limit}")


def _human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"
