"""Odd but valid TIFFs, which libtiff and GDAL read correctly, pass the
hostile-file guard and read through rdask exactly as through rasterio.

Each file is written byte by byte from a known array, in a layout libtiff
accepts but GDAL never writes: tiles listed under the strip tags (libtiff
keeps one offsets field for both), packed YCbCr strips and tiles (one Cb and
one Cr per block of Y samples, so fewer bytes than width x height x 3), and
byte counts libtiff reads past (an uncompressed strip is read as its decoded
size whatever its count; a lone strip's zero count is estimated; a compressed
one over 1 MiB is cut to ten times its decoded size + 4 KB; extra entries
are ignored). Where the pixels are known (everything but chroma), GDAL must
read them back exactly; rdask must then read what GDAL reads, bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import hostile
import imagecodecs
import numpy as np
import pytest
import rasterio
from hostile import (
    BITS,
    COMPRESSION,
    DEFLATE,
    HEIGHT,
    LZW,
    NONE,
    PHOTOMETRIC,
    PLANAR,
    ROWS_PER_STRIP,
    SAMPLES,
    TILE_LENGTH,
    TILE_WIDTH,
    WIDTH,
    YCBCR,
    YCBCR_SUBSAMPLING,
    tiff_bytes,
)

import rdask
from rdask.io import guard

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

ROOT = str(Path(__file__).resolve().parent.parent)
RDASK = os.path.join(os.path.dirname(sys.executable), "rdask")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}

ENCODE = {NONE: bytes, DEFLATE: zlib.compress, LZW: imagecodecs.lzw_encode}

#: A file and the pixels GDAL must read from it (None: only rdask == GDAL).
Built = tuple[str, np.ndarray | None]


def pixels(bands: int, height: int, width: int, dtype: str = "uint16", seed: int = 0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max, (bands, height, width),
                                                dtype=dtype, endpoint=True)


def layout(blobs: Sequence[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """The blobs one after another, and each one's (offset, byte count)."""
    at, striles = 0, []
    for blob in blobs:
        striles.append((at, len(blob)))
        at += len(blob)
    return b"".join(blobs), striles


def image_tags(a: np.ndarray, compression: int, *, planar: int = 1) -> dict[int, list[int]]:
    bands = a.shape[0]
    return {WIDTH: [a.shape[2]], HEIGHT: [a.shape[1]], BITS: [a.dtype.itemsize * 8] * bands,
            COMPRESSION: [compression], PHOTOMETRIC: [1], SAMPLES: [bands], PLANAR: [planar],
            hostile.SAMPLE_FORMAT: [1] * bands}


def pad(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """``a`` (..., h, w) padded with zeros to (..., height, width)."""
    out = np.zeros((*a.shape[:-2], height, width), a.dtype)
    out[..., : a.shape[-2], : a.shape[-1]] = a
    return out


def tiles(a: np.ndarray, size: int, planar: int) -> list[bytes]:
    """Whole ``size`` px tiles of ``a`` (bands, h, w), row by row, each
    plane's tiles after the previous one's when ``planar`` is 2."""
    _, h, w = a.shape
    full = pad(a, -(-h // size) * size, -(-w // size) * size)
    grid = [(y, x) for y in range(0, full.shape[1], size) for x in range(0, full.shape[2], size)]
    if planar == 2:
        return [full[b, y : y + size, x : x + size].tobytes() for b in range(len(a)) for y, x in grid]
    return [full[:, y : y + size, x : x + size].transpose(1, 2, 0).tobytes() for y, x in grid]


def little_endian(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder("<"))


# -- tiles and strips under each other's tags -----------------------------


def tiles_under_strip_tags(d: Path, compression: int, planar: int) -> Built:
    a = pixels(3, 40, 50)
    blobs = [ENCODE[compression](t) for t in tiles(little_endian(a), 16, planar)]
    data, striles = layout(blobs)
    tags = {**image_tags(a, compression, planar=planar), TILE_WIDTH: [16], TILE_LENGTH: [16]}
    path = d / f"tiles_under_strip_tags_{compression}_{planar}.tif"
    path.write_bytes(tiff_bytes(tags, data, striles, tiled=False))
    return str(path), a


def strips_under_tile_tags(d: Path) -> Built:
    a = pixels(2, 37, 23, "uint8")
    rows = 8
    blobs = [a[:, y : y + rows].transpose(1, 2, 0).tobytes() for y in range(0, 37, rows)]
    data, striles = layout(blobs)
    tags = {**image_tags(a, NONE), ROWS_PER_STRIP: [rows]}
    path = d / "strips_under_tile_tags.tif"
    path.write_bytes(tiff_bytes(tags, data, striles, tiled=True))
    return str(path), a


# -- packed YCbCr ----------------------------------------------------------


def ycbcr_blocks(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, h: int, v: int) -> bytes:
    """Packed YCbCr: per h x v block, row by row, its Y samples then Cb, Cr."""
    rows, cols = y.shape[0] // v, y.shape[1] // h
    blocks = y.reshape(rows, v, cols, h).transpose(0, 2, 1, 3).reshape(rows, cols, v * h)
    return np.concatenate([blocks, cb[..., None], cr[..., None]], axis=2).tobytes()


def ycbcr(d: Path, name: str, *, h: int, v: int, compression: int = NONE, rows: int | None = None,
          tile: int | None = None, neutral: bool = False, width: int = 37,
          height: int = 29) -> Built:
    """An 8-bit YCbCr image subsampled ``h`` x ``v``, in strips of ``rows``
    (a multiple of ``v``) or in ``tile`` px tiles. Each strip holds its rows
    rounded up to ``v`` and its width to ``h``, as libtiff sizes it. With
    ``neutral`` chroma (Cb = Cr = 128) GDAL's RGB is the Y plane thrice."""
    step = rows or height
    if tile:
        windows = [(y0, x0, tile, tile) for y0 in range(0, height, tile)
                   for x0 in range(0, width, tile)]
    else:
        windows = [(y0, 0, -(-min(step, height - y0) // v) * v, -(-width // h) * h)
                   for y0 in range(0, height, step)]
    full_h = max(y0 + n for y0, _, n, _ in windows)
    full_w = max(x0 + w for _, x0, _, w in windows)
    rng = np.random.default_rng(3)
    y = rng.integers(16, 236, (full_h, full_w), dtype=np.uint8)
    chroma = (full_h // v, full_w // h)
    cb, cr = ((np.full(chroma, 128, np.uint8),) * 2 if neutral
              else rng.integers(16, 241, (2, *chroma), dtype=np.uint8))
    blobs = []
    for y0, x0, n, w in windows:
        c = np.s_[y0 // v : (y0 + n) // v, x0 // h : (x0 + w) // h]
        blobs.append(ENCODE[compression](
            ycbcr_blocks(y[y0 : y0 + n, x0 : x0 + w], cb[c], cr[c], h, v)))
    data, striles = layout(blobs)
    tags = {WIDTH: [width], HEIGHT: [height], BITS: [8] * 3, COMPRESSION: [compression],
            PHOTOMETRIC: [YCBCR], SAMPLES: [3], PLANAR: [1], YCBCR_SUBSAMPLING: [h, v]}
    tags.update({TILE_WIDTH: [tile], TILE_LENGTH: [tile]} if tile else {ROWS_PER_STRIP: [step]})
    path = d / f"{name}.tif"
    path.write_bytes(tiff_bytes(tags, data, striles, tiled=bool(tile)))
    return str(path), np.repeat(y[None, :height, :width], 3, axis=0) if neutral else None


def ycbcr_jpeg(d: Path, tiled: bool) -> Built:
    """GDAL's own YCbCr JPEG (4:2:0, no YCbCrSubsampling tag)."""
    path = str(d / f"ycbcr_jpeg_{'tiles' if tiled else 'strips'}.tif")
    layout_ = dict(tiled=True, blockxsize=32, blockysize=32) if tiled else dict(blockysize=16)
    with rasterio.open(path, "w", driver="GTiff", width=77, height=61, count=3, dtype="uint8",
                       compress="jpeg", photometric="YCBCR", **layout_) as dst:
        dst.write(pixels(3, 61, 77, "uint8", seed=4))
    return path, None


# -- byte counts libtiff reads past ----------------------------------------


def strips(d: Path, name: str, counts: Callable[[list[tuple[int, int]]], list[tuple[int, int]]], *,
           rows: int = 10, compression: int = NONE, tail: int = 0) -> Built:
    """A 50 x 40 px byte image in strips of ``rows``, whose (offset, byte
    count) list ``counts`` rewrites; ``tail`` zero bytes end the data."""
    a = pixels(1, 40, 50, "uint8", seed=5)
    blobs = [ENCODE[compression](a[0, y : y + rows].tobytes()) for y in range(0, 40, rows)]
    data, striles = layout(blobs)
    tags = {**image_tags(a, compression), ROWS_PER_STRIP: [rows]}
    path = d / f"{name}.tif"
    path.write_bytes(tiff_bytes(tags, data + b"\0" * tail, counts(striles)))
    return str(path), a


def _last(count: int) -> Callable[[list[tuple[int, int]]], list[tuple[int, int]]]:
    return lambda s: [*s[:-1], (s[-1][0], count)]


ODD: dict[str, Callable[[Path], Built]] = {
    "tiles_under_strip_tags": lambda d: tiles_under_strip_tags(d, NONE, 1),
    "tiles_under_strip_tags_deflate": lambda d: tiles_under_strip_tags(d, DEFLATE, 1),
    "tiles_under_strip_tags_planar": lambda d: tiles_under_strip_tags(d, LZW, 2),
    "strips_under_tile_tags": strips_under_tile_tags,
    "ycbcr_420_neutral": lambda d: ycbcr(d, "ycbcr_420_neutral", h=2, v=2, rows=8, neutral=True),
    "ycbcr_420": lambda d: ycbcr(d, "ycbcr_420", h=2, v=2, rows=8),
    "ycbcr_422_one_strip": lambda d: ycbcr(d, "ycbcr_422_one_strip", h=2, v=1),
    "ycbcr_411_deflate": lambda d: ycbcr(d, "ycbcr_411_deflate", h=4, v=1, rows=6,
                                         compression=DEFLATE),
    "ycbcr_420_lzw": lambda d: ycbcr(d, "ycbcr_420_lzw", h=2, v=2, rows=4, compression=LZW),
    # libtiff reads uncompressed YCbCr tiles only when their size is a whole
    # number of KB (its read buffer is rounded up to one): 64 x 64 px is 6 KB.
    "ycbcr_420_tiles_neutral": lambda d: ycbcr(d, "ycbcr_420_tiles_neutral", h=2, v=2, tile=64,
                                               neutral=True, width=100, height=70),
    "ycbcr_422_tiles_deflate": lambda d: ycbcr(d, "ycbcr_422_tiles_deflate", h=2, v=1, tile=16,
                                               compression=DEFLATE),
    "ycbcr_jpeg_strips": lambda d: ycbcr_jpeg(d, tiled=False),
    "ycbcr_jpeg_tiles": lambda d: ycbcr_jpeg(d, tiled=True),
    "uncompressed_count_past_eof": lambda d: strips(d, "uncompressed_count_past_eof",
                                                    _last(10**9)),
    "uncompressed_counts_short": lambda d: strips(d, "uncompressed_counts_short",
                                                  lambda s: [(at, 1) for at, _ in s]),
    "lone_strip_zero_count": lambda d: strips(d, "lone_strip_zero_count",
                                              lambda s: [(s[0][0], 0)], rows=40),
    "lone_deflate_strip_zero_count": lambda d: strips(d, "lone_deflate_strip_zero_count",
                                                      lambda s: [(s[0][0], 0)], rows=40,
                                                      compression=DEFLATE),
    "deflate_count_over_cap": lambda d: strips(d, "deflate_count_over_cap", _last(2_000_000),
                                               compression=DEFLATE, tail=10 * 500 + 4096),
    "extra_offsets": lambda d: strips(d, "extra_offsets", lambda s: s + [(10**9, 10**9)] * 3),
}

#: One file of each family also goes through the CLI.
CLI = ("tiles_under_strip_tags_deflate", "ycbcr_420", "ycbcr_jpeg_tiles", "lone_strip_zero_count")


def gdal_read(path: str) -> np.ndarray:
    with rasterio.Env(**dict(guard.READ_OPTIONS)), rasterio.open(path) as ds:
        return ds.read()


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_file_reads_as_gdal_reads_it(tmp_path: Path, name: str) -> None:
    path, known = ODD[name](tmp_path)
    guard.check_file(path)
    expected = gdal_read(path)
    if known is not None:
        np.testing.assert_array_equal(expected, known)
    np.testing.assert_array_equal(rdask.open_raster(path).values, expected)
    out = str(tmp_path / "out.tif")
    rdask.process(path, out, "reverse-bands")
    np.testing.assert_array_equal(gdal_read(out), expected[::-1])


@pytest.mark.parametrize("name", CLI)
def test_cli_reverses_bands_of_odd_file(tmp_path: Path, name: str) -> None:
    path, _ = ODD[name](tmp_path)
    out = str(tmp_path / "out.tif")
    proc = subprocess.run([RDASK, "run", "reverse-bands", path, out, "--no-progress"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0 and "refusing" not in proc.stderr, proc.stderr
    np.testing.assert_array_equal(gdal_read(out), gdal_read(path)[::-1])
