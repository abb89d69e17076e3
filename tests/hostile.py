"""Crafted TIFF files that make a reader loop, over-allocate or trip over
inconsistent metadata, written byte by byte at test time.

Each generator writes one file and returns its path. The files are tiny
(at most a few hundred KB) whatever they declare: the point is the gap
between what a header claims and what the file holds, in the spirit of
GDAL's own autotest cases (huge strips to chop, excessive memory, tile
counts that disagree with the image size).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# TIFF field types used here.
SHORT, LONG = 3, 4

# Baseline tags.
WIDTH, HEIGHT, BITS, COMPRESSION, PHOTOMETRIC = 256, 257, 258, 259, 262
STRIP_OFFSETS, SAMPLES, ROWS_PER_STRIP, STRIP_COUNTS, PLANAR = 273, 277, 278, 279, 284
TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_COUNTS, SAMPLE_FORMAT = 322, 323, 324, 325, 339
YCBCR_SUBSAMPLING = 530
YCBCR = 6  # PhotometricInterpretation

NONE, LZW, JPEG, DEFLATE = 1, 5, 7, 8


def tiff_bytes(tags: dict[int, Sequence[int]], data: bytes = b"",
               striles: Sequence[tuple[int, int]] = (), *, tiled: bool = False) -> bytes:
    """A little-endian classic TIFF with one IFD.

    Parameters
    ----------
    tags
        Tag -> values (LONG if any value exceeds 65535, else SHORT).
    data
        Pixel bytes, placed right after the 8-byte header.
    striles
        ``(offset into data, byte count)`` of each strip or tile; written as
        StripOffsets/StripByteCounts (or the tile tags when ``tiled``).
    """
    offsets_tag, counts_tag = (TILE_OFFSETS, TILE_COUNTS) if tiled else (STRIP_OFFSETS, STRIP_COUNTS)
    tags = dict(tags)
    if striles:
        tags[offsets_tag] = [8 + off for off, _ in striles]
        tags[counts_tag] = [count for _, count in striles]
    body = bytearray(data)
    entries = []
    for tag in sorted(tags):
        values = list(tags[tag])
        kind, fmt = (LONG, "I") if max(values, default=0) > 0xFFFF or tag in (offsets_tag, counts_tag) else (SHORT, "H")
        packed = struct.pack(f"<{len(values)}{fmt}", *values)
        if len(packed) <= 4:
            inline = packed.ljust(4, b"\0")
        else:
            # Out-of-line values go after the data; word-align as TIFF asks.
            body += b"\0" * (len(body) % 2)
            inline = struct.pack("<I", 8 + len(body))
            body += packed
        entries.append(struct.pack("<HHI", tag, kind, len(values)) + inline)
    body += b"\0" * (len(body) % 2)
    ifd_at = 8 + len(body)
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_at) + bytes(body) + ifd


def _image(width: int, height: int, *, spp: int = 1, bits: int = 8,
           compression: int = NONE) -> dict[int, Sequence[int]]:
    return {
        WIDTH: [width], HEIGHT: [height], BITS: [bits] * spp, COMPRESSION: [compression],
        PHOTOMETRIC: [1], SAMPLES: [spp], PLANAR: [1], SAMPLE_FORMAT: [1] * spp,
    }


def _save(path: Path, blob: bytes) -> str:
    path.write_bytes(blob)
    return str(path)


def huge_dims(path: Path) -> str:
    """2048 x 1073741824 pixels (2 TiB) declared in one uncompressed strip
    of 4 KB: libtiff would chop it into a billion strips."""
    tags = {**_image(2048, 1073741824), ROWS_PER_STRIP: [1073741824]}
    return _save(path, tiff_bytes(tags, b"\0" * 4096, [(0, 4096)]))


def many_bands(path: Path) -> str:
    """65535 samples per pixel in a 64 x 1 image."""
    spp = 65535
    tags = {**_image(64, 1, spp=spp, compression=DEFLATE), ROWS_PER_STRIP: [1]}
    import zlib

    data = zlib.compress(b"\0" * (64 * spp))
    return _save(path, tiff_bytes(tags, data, [(0, len(data))]))


def strip_past_eof(path: Path) -> str:
    """A 256 x 256 deflate strip whose byte count runs 1 GB past the file."""
    tags = {**_image(256, 256, compression=DEFLATE), ROWS_PER_STRIP: [256]}
    return _save(path, tiff_bytes(tags, b"x\x9c" + b"\0" * 64, [(0, 1_000_000_000)]))


def huge_strip(path: Path) -> str:
    """GDAL's strip-chop case: one uncompressed 65536 x 65536 strip (4 GiB
    declared, 4 KB held), which libtiff splits into virtual row strips."""
    tags = {**_image(65536, 65535), ROWS_PER_STRIP: [65535]}
    return _save(path, tiff_bytes(tags, b"\0" * 4096, [(0, 65536 * 65535)]))


def tile_count_mismatch(path: Path) -> str:
    """A 1024 x 1024 image of 256 x 256 tiles (16 expected) listing 3."""
    tile = 256 * 256
    tags = {**_image(1024, 1024), TILE_WIDTH: [256], TILE_LENGTH: [256]}
    return _save(path, tiff_bytes(tags, b"\0" * (3 * tile), [(i * tile, tile) for i in range(3)],
                                  tiled=True))


def no_byte_counts(path: Path) -> str:
    """huge_dims without StripByteCounts: libtiff estimates a lone strip's
    byte count from the image size (2 TiB)."""
    tags = {**_image(2048, 1073741824), ROWS_PER_STRIP: [1073741824], STRIP_OFFSETS: [8]}
    return _save(path, tiff_bytes(tags, b"\0" * 4096))


def _retyped(blob: bytes, tags: set[int], kind: int) -> bytes:
    """A one-IFD ``blob`` (from :func:`tiff_bytes`) with the field type of
    ``tags`` set to ``kind``."""
    out = bytearray(blob)
    (ifd,) = struct.unpack_from("<I", out, 4)
    (n,) = struct.unpack_from("<H", out, ifd)
    for i in range(n):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", out, entry)[0] in tags:
            struct.pack_into("<H", out, entry + 2, kind)
    return bytes(out)


def signed_tables(path: Path) -> str:
    """huge_dims with its strip tables typed SLONG, which libtiff reads as
    integers like LONG."""
    tags = {**_image(2048, 1073741824), ROWS_PER_STRIP: [1073741824]}
    blob = tiff_bytes(tags, b"\0" * 4096, [(0, 4096)])
    return _save(path, _retyped(blob, {STRIP_OFFSETS, STRIP_COUNTS}, 9))


def text_tables(path: Path) -> str:
    """huge_dims with its strip tables typed ASCII: GDAL still opens the
    2 TiB image (libtiff loads the tables on demand), then fails every read."""
    tags = {**_image(2048, 1073741824), ROWS_PER_STRIP: [1073741824]}
    blob = tiff_bytes(tags, b"\0" * 4096, [(0, 4096)])
    return _save(path, _retyped(blob, {STRIP_OFFSETS, STRIP_COUNTS}, 2))


def zero_byte_count(path: Path) -> str:
    """huge_dims whose one strip's byte count is 0, which libtiff takes as
    missing and estimates from the image size (2 TiB)."""
    tags = {**_image(2048, 1073741824), ROWS_PER_STRIP: [1073741824]}
    return _save(path, tiff_bytes(tags, b"\0" * 4096, [(0, 0)]))


def tiles_under_strip_tags(path: Path) -> str:
    """tile_count_mismatch with its 3 tiles listed under StripOffsets and
    StripByteCounts, which libtiff reads as the tile tables."""
    tile = 256 * 256
    tags = {**_image(1024, 1024), TILE_WIDTH: [256], TILE_LENGTH: [256]}
    return _save(path, tiff_bytes(tags, b"\0" * (3 * tile), [(i * tile, tile) for i in range(3)]))


def ycbcr_lzw_bomb(path: Path) -> str:
    """lzw_bomb as 4:2:0 YCbCr: 40000 x 40000 px in one LZW strip whose
    packed samples (4 Y, Cb, Cr per 2 x 2 block) are 2.4 GB."""
    data = lzw_zero_run(4000)
    tags = {**_image(40000, 40000, spp=3, compression=LZW), PHOTOMETRIC: [YCBCR],
            YCBCR_SUBSAMPLING: [2, 2], ROWS_PER_STRIP: [40000]}
    return _save(path, tiff_bytes(tags, data, [(0, len(data))]))


def _write_random(path: Path) -> None:
    """A 512 x 512 tiled deflate GeoTIFF of noise (four 256 x 256 tiles)."""
    import rasterio

    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not georeferenced, on purpose
        with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=1,
                           dtype="uint8", tiled=True, blockxsize=256, blockysize=256,
                           compress="deflate") as dst:
            dst.write(rng.integers(0, 255, (1, 512, 512), dtype=np.uint8))


def truncated(path: Path) -> str:
    """A valid tiled deflate GeoTIFF cut in half: the IFD survives, tiles don't."""
    full = path.with_suffix(".full.tif")
    _write_random(full)
    blob = full.read_bytes()
    full.unlink()
    # GDAL writes the IFD first, so the first half keeps it whole.
    return _save(path, blob[: len(blob) // 2])


def corrupt_tile_data(path: Path) -> str:
    """A valid tiled deflate GeoTIFF whose second tile's bytes are garbage:
    the structure is sound, so only the read of that tile fails."""
    import tifffile

    full = path.with_suffix(".full.tif")
    _write_random(full)
    blob = bytearray(full.read_bytes())
    full.unlink()
    with tifffile.TiffFile(io.BytesIO(bytes(blob))) as tif:
        page = tif.pages[0]
        at, n = page.dataoffsets[1], page.databytecounts[1]
    blob[at : at + n] = b"\xff" * n
    return _save(path, bytes(blob))


def broken_jpeg(path: Path) -> str:
    """JPEG-in-TIFF whose strip is a JPEG start marker followed by garbage."""
    tags = {**_image(256, 256, compression=JPEG), ROWS_PER_STRIP: [256]}
    rng = np.random.default_rng(1)
    data = b"\xff\xd8\xff\xdb" + rng.integers(0, 255, 2000, dtype=np.uint8).tobytes() + b"\xff\xd9"
    return _save(path, tiff_bytes(tags, data, [(0, len(data))]))


def lzw_bomb(path: Path) -> str:
    """One LZW strip of 40000 x 40000 (1.6 GB decoded) from a few KB of
    codes: decoding would allocate and fill the whole strip at once."""
    data = lzw_zero_run(4000)
    tags = {**_image(40000, 40000, compression=LZW), ROWS_PER_STRIP: [40000]}
    return _save(path, tiff_bytes(tags, data, [(0, len(data))]))


def lzw_zero_run(codes: int) -> bytes:
    """A TIFF LZW stream of ``codes`` codes spelling ever longer runs of
    zeros (code n+1 = code n + one more zero): ~codes**2 / 2 bytes out."""
    out, bits, acc, width = bytearray(), 0, 0, 9

    def put(code: int) -> None:
        nonlocal bits, acc
        acc = (acc << width) | code
        bits += width
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)

    put(256)  # clear
    put(0)
    # Each code is the one the decoder is about to define (the KwKwK case):
    # the previous run plus one zero. The decoder's next free code after
    # "0" is 258; TIFF LZW widens one code early ("early change").
    for code in range(258, 258 + min(codes, 3800)):
        if code + 1 >= (1 << width):
            width += 1
        put(code)
    put(257)  # end of information
    if bits:
        out.append((acc << (8 - bits)) & 0xFF)
    return bytes(out)


#: Name -> generator, for parametrised tests.
CASES: dict[str, Callable[[Path], str]] = {
    "huge_dims": huge_dims,
    "many_bands": many_bands,
    "strip_past_eof": strip_past_eof,
    "huge_strip": huge_strip,
    "tile_count_mismatch": tile_count_mismatch,
    "truncated": truncated,
    "corrupt_tile_data": corrupt_tile_data,
    "broken_jpeg": broken_jpeg,
    "lzw_bomb": lzw_bomb,
    "no_byte_counts": no_byte_counts,
    "zero_byte_count": zero_byte_count,
    "signed_tables": signed_tables,
    "text_tables": text_tables,
    "tiles_under_strip_tags": tiles_under_strip_tags,
    "ycbcr_lzw_bomb": ycbcr_lzw_bomb,
}


def make_all(directory: Path) -> dict[str, str]:
    """Write every case into ``directory``; name -> path."""
    os.makedirs(directory, exist_ok=True)
    return {name: make(Path(directory) / f"{name}.tif") for name, make in CASES.items()}
