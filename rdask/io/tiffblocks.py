"""Decoding the blocks of plain local GeoTIFFs without GDAL, for halo reads.

A halo read (:mod:`.blocks`) decodes whole blocks and keeps them for the
chunks that still need them. Decoded through GDAL, each block would also
stay in GDAL's own block cache (up to ``GDAL_CACHEMAX``, 128 MB, never
read again), doubling what the blocks cost in memory. For the TIFFs most
inputs are (tiles or strips, no compression, DEFLATE, ZSTD or LZW,
predictor 1, 2 or 3, 8- to 64-bit integer or float samples) the block is
read with one ``pread`` and decoded here, with the codecs rdask already
uses to write tiles (imagecodecs: libdeflate, zstd, GIL released) and the
predictors undone by numba ``nogil`` loops, straight into a buffer of our
own. The codecs are lossless, so the pixels are GDAL's; anything else (a
remote file, another codec or layout, a sparse or short block, a failed
decode) goes to GDAL, which then reads it as before.
"""

from __future__ import annotations

import functools
import os
import sys
import zlib
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from rdask.io.remote import is_remote

#: TIFF compressions decoded here: none, LZW, DEFLATE (both codes), ZSTD.
CODECS = {1: "none", 5: "lzw", 8: "deflate", 32946: "deflate", 50000: "zstd"}

#: Photometric interpretations whose samples GDAL returns as stored.
PHOTOMETRICS = {1, 2, 3}  # min-is-black, RGB, palette

_KINDS = {1: "u", 2: "i", 3: "f"}  # TIFF SampleFormat -> numpy kind


@dataclass(frozen=True)
class TiffLayout:
    """Where the blocks of a TIFF's first image are and how they are coded."""

    path: str
    stamp: tuple[float, int]  # (mtime, size) of the file read
    height: int
    width: int
    block: tuple[int, int]  # (rows, cols): a tile, or rows per strip x width
    tiled: bool
    samples: int
    planar: int  # 1: samples interleaved in each block, 2: one block per sample
    dtype: np.dtype  # with the file's byte order
    codec: str
    predictor: int
    offsets: np.ndarray
    counts: np.ndarray

    @property
    def across(self) -> int:
        """Blocks per row of blocks."""
        return -(-self.width // self.block[1])

    @property
    def per_plane(self) -> int:
        return -(-self.height // self.block[0]) * self.across

    @property
    def heads(self) -> bool:
        """Whether the first rows of a block can be decoded alone, for a
        fraction of the block's cost (streams that can stop early)."""
        return self.codec in ("none", "deflate", "lzw")

    def read(self, bands: tuple[int, ...], y0: int, y1: int, x0: int, x1: int) -> np.ndarray | None:
        """Bands ``bands`` (1-based) at rows ``y0:y1``, cols ``x0:x1`` as
        ``(bands, rows, cols)``: whole blocks, clipped at the raster's
        edges, but ``y1`` may cut the last row of blocks, of which only the
        first rows are decoded then. None when a block cannot be decoded
        here (GDAL reads it then)."""
        bh, bw = self.block
        out = np.empty((len(bands), y1 - y0, x1 - x0), dtype=self.dtype.newbyteorder("="))
        fd = os.open(self.path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if (st.st_mtime, st.st_size) != self.stamp:
                return None  # rewritten since: GDAL reads what its handle sees
            for i in range(y0 // bh, (y1 - 1) // bh + 1):
                for j in range(x0 // bw, (x1 - 1) // bw + 1):
                    if not self._block_into(fd, out, bands, i, j, y0, x0):
                        return None
        finally:
            os.close(fd)
        return out

    def _block_into(self, fd: int, out: np.ndarray, bands: tuple[int, ...], i: int, j: int,
                    y0: int, x0: int) -> bool:
        bh, bw = self.block
        stored = bh if self.tiled else min(bh, self.height - i * bh)  # a last strip is short
        rows = min(stored, y0 + out.shape[1] - i * bh)  # rows decoded: maybe the first ones only
        r0, c0 = i * bh - y0, j * bw - x0
        h = min(rows, self.height - i * bh)
        w = min(bw, self.width - j * bw)
        spp = self.samples if self.planar == 1 else 1
        # A unit of one whole block of one sample per segment is decoded in place.
        direct = spp == 1 and out.shape[1:] == (rows, bw)
        segment = i * self.across + j
        if self.planar == 1:
            pixels = out[0, :, :, None] if direct and len(bands) == 1 else np.empty(
                (rows, bw, spp), dtype=out.dtype)
            if not self._decode(fd, segment, pixels, rows == stored):
                return False
            for k, b in enumerate(bands):
                if not direct:
                    out[k, r0 : r0 + h, c0 : c0 + w] = pixels[:h, :w, b - 1]
            return True
        for k, b in enumerate(bands):
            pixels = out[k, :, :, None] if direct else np.empty((rows, bw, 1), dtype=out.dtype)
            if not self._decode(fd, (b - 1) * self.per_plane + segment, pixels, rows == stored):
                return False
            if not direct:
                out[k, r0 : r0 + h, c0 : c0 + w] = pixels[:h, :w, 0]
        return True

    def _decode(self, fd: int, index: int, values: np.ndarray, whole: bool = True) -> bool:
        """Decode segment ``index`` (or, not ``whole``, its first rows) into
        ``values`` (native, C-contiguous ``(rows, cols, samples)``); False
        if it cannot be decoded here."""
        size = values.nbytes  # all of the segment, or its first rows
        count = int(self.counts[index])
        if count == 0:
            return False  # sparse: GDAL fills it with nodata
        data = os.pread(fd, count, int(self.offsets[index]))
        as_bytes = values.view(np.uint8).reshape(values.shape[0], -1)
        raw = np.empty(size, dtype=np.uint8) if self.predictor == 3 else as_bytes.reshape(-1)
        try:
            if _decompress(self.codec, data, raw, whole) < size:
                return False
        except Exception:  # noqa: BLE001 - GDAL reads it and says what is wrong
            return False
        if self.predictor == 3:
            _float_predictor(raw.reshape(values.shape[0], -1), values.shape[2], values.itemsize, as_bytes)
            return True
        if not self.dtype.isnative:
            values.byteswap(inplace=True)
        if self.predictor == 2:
            _horizontal_predictor(values.view(f"u{values.itemsize}"))
        return True


def _decompress(codec: str, data: bytes, out: np.ndarray, whole: bool) -> int:
    """Decode ``data`` into ``out``: the whole segment, or (not ``whole``)
    its first ``out.size`` bytes; the bytes decoded."""
    if codec == "none":
        n = min(len(data), out.size)
        out[:n] = np.frombuffer(data, dtype=np.uint8, count=n)
        return n
    import imagecodecs

    if whole or codec == "lzw":
        decode = {"deflate": imagecodecs.deflate_decode, "zstd": imagecodecs.zstd_decode,
                  "lzw": imagecodecs.lzw_decode}[codec]
        return len(decode(data, out=out))
    if codec == "deflate":
        # libdeflate decodes whole streams only; zlib stops after the prefix.
        head = zlib.decompressobj().decompress(data, out.size)
    else:
        head = imagecodecs.zstd_decode(data)[: out.size]
    out[: len(head)] = np.frombuffer(head, dtype=np.uint8)
    return len(head)


def _float_predictor(rows: np.ndarray, spp: int, size: int, out: np.ndarray) -> None:
    """Undo TIFF predictor 3 (libtiff's ``fpAcc``) of ``rows`` (the decoded
    bytes, one row of the block each) into ``out`` (the values' native
    little-endian bytes): per row, each byte plus the one ``spp`` before it,
    then the byte planes (most significant first) gathered into values."""
    if spp == 1 and size == 4:
        _fp_acc_float32(rows, out)
    elif spp == 1:
        _fp_acc_one_sample(rows, size, out)
    else:
        _fp_acc(rows, spp, size, out)


@numba.njit(nogil=True, cache=True)
def _fp_acc_float32(rows: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - numba
    """:func:`_float_predictor` of one float32 sample per pixel, the
    accumulators in registers: each plane's sum starts at the sum of the
    planes before it, so the four planes run side by side."""
    n = rows.shape[1] // 4
    for r in range(rows.shape[0]):
        row = rows[r]
        s0 = np.uint8(0)
        s1 = np.uint8(0)
        for k in range(n):
            s1 += row[k]
        s2 = s1
        for k in range(n, 2 * n):
            s2 += row[k]
        s3 = s2
        for k in range(2 * n, 3 * n):
            s3 += row[k]
        for k in range(n):
            s0 += row[k]
            s1 += row[n + k]
            s2 += row[2 * n + k]
            s3 += row[3 * n + k]
            out[r, 4 * k + 3] = s0
            out[r, 4 * k + 2] = s1
            out[r, 4 * k + 1] = s2
            out[r, 4 * k] = s3


@numba.njit(nogil=True, cache=True)
def _fp_acc_one_sample(rows: np.ndarray, size: int, out: np.ndarray) -> None:  # pragma: no cover - numba
    """:func:`_float_predictor` of one sample per pixel, any size."""
    n = rows.shape[1] // size
    acc = np.zeros(size, np.uint8)
    for r in range(rows.shape[0]):
        row = rows[r]
        s = np.uint8(0)
        for b in range(size):
            acc[b] = s
            if b < size - 1:
                for k in range(n):
                    s += row[b * n + k]
        for k in range(n):
            for b in range(size):
                acc[b] += row[b * n + k]
                out[r, k * size + size - 1 - b] = acc[b]


@numba.njit(nogil=True, cache=True)
def _fp_acc(rows: np.ndarray, spp: int, size: int, out: np.ndarray) -> None:  # pragma: no cover - numba
    """:func:`_float_predictor`, as libtiff does it (``rows`` is overwritten)."""
    n = rows.shape[1] // size
    for r in range(rows.shape[0]):
        row = rows[r]
        for k in range(spp, row.shape[0]):
            row[k] = np.uint8(row[k] + row[k - spp])
        for k in range(n):
            for b in range(size):
                out[r, k * size + size - 1 - b] = row[b * n + k]


@numba.njit(nogil=True, cache=True)
def _horizontal_predictor(values: np.ndarray) -> None:  # pragma: no cover - numba
    """Undo TIFF predictor 2 in place: each sample plus the same sample one
    pixel left, modulo 2**bits (``values`` is the unsigned view)."""
    for r in range(values.shape[0]):
        for c in range(1, values.shape[1]):
            for s in range(values.shape[2]):
                values[r, c, s] += values[r, c - 1, s]


def layout(path: str, stamp: tuple[float, int], ds: Any) -> TiffLayout | None:
    """The layout of ``path`` if its blocks can be decoded here as GDAL's
    dataset ``ds`` reads them, else None. Cached per file version."""
    if sys.byteorder != "little" or is_remote(path) or ds.driver != "GTiff":
        return None
    if os.path.abspath(ds.name) != os.path.abspath(path):
        return None  # a subdataset or an overview level, not the file's first image
    found = _layout(path, stamp)
    if found is None:
        return None
    if (ds.height, ds.width, ds.count) != (found.height, found.width, found.samples):
        return None
    if tuple(ds.block_shapes[0]) != found.block or set(ds.dtypes) != {found.dtype.newbyteorder("=").name}:
        return None
    return found


@functools.lru_cache(maxsize=64)
def _layout(path: str, stamp: tuple[float, int]) -> TiffLayout | None:
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return _from_page(path, stamp, tif.pages[0], tif.byteorder)
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads: GDAL decodes it
        return None


def _from_page(path: str, stamp: tuple[float, int], page: Any, byteorder: str) -> TiffLayout | None:
    codec = CODECS.get(int(page.compression))
    bits = set(np.atleast_1d(page.bitspersample).tolist())
    formats = set(np.atleast_1d(page.sampleformat).tolist())
    if (codec is None or len(bits) != 1 or len(formats) != 1 or int(page.photometric) not in PHOTOMETRICS
            or int(page.fillorder) != 1 or 530 in page.tags):
        return None
    bits_, fmt = bits.pop(), int(formats.pop())
    if bits_ not in (8, 16, 32, 64) or fmt not in _KINDS:
        return None
    dtype = np.dtype(f"{byteorder}{_KINDS[fmt]}{bits_ // 8}")
    predictor = int(page.predictor)
    if predictor not in (1, 2, 3) or (predictor == 3 and dtype.kind != "f") or (
            predictor == 2 and dtype.kind == "f"):
        return None
    if page.is_tiled:
        block = (int(page.tilelength), int(page.tilewidth))
    else:
        block = (min(int(page.rowsperstrip), int(page.imagelength)), int(page.imagewidth))
    planar = int(page.planarconfig)
    samples = int(page.samplesperpixel)
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    found = TiffLayout(path, stamp, int(page.imagelength), int(page.imagewidth), block, bool(page.is_tiled),
                       samples, planar, dtype, codec, predictor, offsets, counts)
    expected = found.per_plane * (samples if planar == 2 else 1)
    if planar not in (1, 2) or len(offsets) != expected or len(counts) != expected:
        return None
    return found
