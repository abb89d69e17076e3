"""COG layout: overviews from GDAL, then a byte-copying re-layout.

A Cloud Optimized GeoTIFF is a tiled GeoTIFF whose IFDs all come first and
whose tile data is ordered smallest overview first. rdask makes one in three
steps after the kernel pass has written the full-resolution partial GeoTIFF:

1. The overview levels: for ``nearest`` rdask's own pass
   (:mod:`.overviews`: GDAL's picks, one GeoTIFF per level); otherwise
   GDAL builds internal overviews into the partial file (``BuildOverviews``,
   each level from the previous one, with GDAL's multi-threaded resampling
   and compression). Overview pixels are therefore exactly GDAL's, for every
   resampling, and seams between chunks cannot exist: the overview builder
   sees the whole full-resolution image. Level sizes follow GDAL's GeoTIFF
   overview builder: ``ceil(n / factor)``.
2. The partial file's IFDs and tag values are read (``tifffile``) and a new
   layout is computed: header, a small GDAL ghost area, every IFD (image and
   mask per level), their out-of-line tag values, then tile data from the
   smallest overview to the full resolution, row-major.
3. Compressed tiles are copied into that layout without being decoded or
   recompressed (``os.copy_file_range``), which is where GDAL's COG driver
   spends most of its time (it decompresses and recompresses every tile).

Tags (GeoTIFF keys, GDAL metadata, nodata, compression, predictor...) are
copied byte for byte from the file GDAL wrote, so metadata is GDAL's own.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from rdask.config import GDAL_CACHEMAX_MB, OVERVIEW_RESAMPLINGS
from rdask.config import TIFF_TILE_BYTECOUNTS as _TILE_BYTECOUNTS
from rdask.config import TIFF_TILE_OFFSETS as _TILE_OFFSETS
from rdask.errors import OutputError

_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_NEW_SUBFILE_TYPE = 254


def overview_factors(height: int, width: int, blocksize: int, levels: int | None = None) -> list[int]:
    """Decimation factors 2, 4, ... until the smallest level fits one tile,
    or exactly ``levels`` of them."""
    factors: list[int] = []
    f = 2
    while True:
        if levels is not None:
            if len(factors) >= levels:
                break
        elif math.ceil(height / (f // 2)) <= blocksize and math.ceil(width / (f // 2)) <= blocksize:
            break
        factors.append(f)
        f *= 2
    return factors


def build_overviews(path: str, factors: Sequence[int], resampling: str, blocksize: int, threads: int) -> None:
    """Add internal overviews to the GeoTIFF at ``path`` with GDAL, with the
    main image's compression settings."""
    import rasterio
    from rasterio.enums import Resampling

    if resampling not in OVERVIEW_RESAMPLINGS:
        raise ValueError(f"unknown overview resampling {resampling!r}; use one of {', '.join(OVERVIEW_RESAMPLINGS)}")
    if not factors:
        return
    env = {
        "GDAL_TIFF_OVR_BLOCKSIZE": str(blocksize),
        "GDAL_NUM_THREADS": str(max(1, threads)),
        "GDAL_TIFF_INTERNAL_MASK": "YES",
        "GDAL_CACHEMAX": GDAL_CACHEMAX_MB,
    }
    with rasterio.open(path) as ds:
        image = ds.tags(ns="IMAGE_STRUCTURE")
    if "PREDICTOR" in image:
        env["PREDICTOR_OVERVIEW"] = image["PREDICTOR"]
    with rasterio.Env(**env), rasterio.open(path, "r+", NUM_THREADS=max(1, threads)) as ds:
        ds.build_overviews(list(factors), getattr(Resampling, resampling))


@dataclass
class _Ifd:
    """One IFD to write: its tags (raw bytes) and the tiles it points to."""

    tags: list[tuple[int, int, int, bytes]]  # (code, type, count, raw value)
    tiles: list[tuple[int, int]]  # (source offset, byte count) per tile
    pixels: int = 0
    is_mask: bool = False
    source: int = 0  # index of the file the tiles are in
    offset: int = 0
    value_offsets: dict[int, int] = field(default_factory=dict)
    tile_offsets: list[int] = field(default_factory=list)


def assemble_cog(src: str, dst: str, levels: Sequence[str] = ()) -> None:
    """Write the COG ``dst`` from the tiled GeoTIFF ``src`` and its overviews,
    copying compressed tiles without recompressing them.

    Overviews are either internal to ``src`` or, when ``levels`` is given,
    one single-image GeoTIFF per level, largest first.
    """
    files = [src, *levels]
    ifds = read_ifds(files)
    bigtiff = _needs_bigtiff(ifds)
    layout_ifds(ifds, bigtiff)
    handles = [open(f, "rb") for f in files]
    try:
        with open(dst, "wb") as fout:
            fout.write(header_and_ifds(ifds, bigtiff))
            for ifd in ifds:
                _copy_tiles(handles[ifd.source], fout, ifd)
            fout.flush()
            os.fsync(fout.fileno())
    finally:
        for h in handles:
            h.close()


def read_ifds(files: Sequence[str]) -> list[_Ifd]:
    """The IFDs of a COG made of ``files`` (a GeoTIFF, then one single-image
    GeoTIFF per overview level), largest image first, each mask after its image."""
    import tifffile

    ifds: list[_Ifd] = []
    for n, path in enumerate(files):
        with tifffile.TiffFile(path) as tif:
            if tif.byteorder != "<":
                raise OutputError(f"{path}: expected a little-endian TIFF from GDAL")
            for ifd in _ordered(list(tif.pages), path):
                ifd.source = n
                if n > 0:
                    _as_overview(ifd)
                ifds.append(ifd)
    ifds.sort(key=lambda i: (-i.pixels, i.is_mask))
    return ifds


#: Tags an overview IFD does not carry (GeoTIFF keys, GDAL's metadata).
_MAIN_ONLY_TAGS = {33550, 33922, 34264, 34735, 34736, 34737, 42112}


def _as_overview(ifd: _Ifd) -> None:
    """Turn a standalone level file's IFD into a reduced-resolution one."""
    kind = 5 if ifd.is_mask else 1
    tags = [t for t in ifd.tags if t[0] not in _MAIN_ONLY_TAGS and t[0] != _NEW_SUBFILE_TYPE]
    tags.append((_NEW_SUBFILE_TYPE, 4, 1, struct.pack("<I", kind)))
    ifd.tags = tags


def _ordered(pages: list, src: str) -> list[_Ifd]:
    """IFDs of one file: each image, then its mask if it has one."""
    images, masks = [], {}
    for page in pages:
        kind = page.tags[_NEW_SUBFILE_TYPE].value if _NEW_SUBFILE_TYPE in page.tags else 0
        if not page.is_tiled:
            raise OutputError(f"{src}: COG assembly needs a tiled GeoTIFF")
        if int(kind) & 4:
            masks[(page.imagewidth, page.imagelength)] = page
        else:
            images.append(page)
    out: list[_Ifd] = []
    for page in images:
        out.append(_from_page(page))
        mask = masks.get((page.imagewidth, page.imagelength))
        if mask is not None:
            out.append(_from_page(mask, is_mask=True))
    return out


def _from_page(page, is_mask: bool = False) -> _Ifd:
    fh = page.parent.filehandle
    tags = []
    for tag in page.tags.values():
        if tag.code in (_TILE_OFFSETS, _TILE_BYTECOUNTS):
            continue
        size = tag.count * _TYPE_SIZE[int(tag.dtype)]
        fh.seek(tag.valueoffset)
        tags.append((tag.code, int(tag.dtype), tag.count, fh.read(size)))
    tiles = list(zip(page.dataoffsets, page.databytecounts, strict=True))
    return _Ifd(tags=tags, tiles=tiles, pixels=page.imagewidth * page.imagelength, is_mask=is_mask)


def _needs_bigtiff(ifds: list[_Ifd]) -> bool:
    data = sum(n for i in ifds for _, n in i.tiles)
    meta = sum(len(v) + 20 for i in ifds for *_, v in i.tags) + sum(16 * len(i.tiles) for i in ifds)
    return data + meta + 4096 >= 2**32 - 1


def _ghost(row_major: bool = True) -> bytes:
    """GDAL's structural metadata; ``row_major`` when each level's tiles are
    stored row by row (otherwise the order is left unstated)."""
    order = "BLOCK_ORDER=ROW_MAJOR\n" if row_major else ""
    body = f"LAYOUT=IFDS_BEFORE_DATA\n{order}KNOWN_INCOMPATIBLE_EDITION=NO\n "
    head = f"GDAL_STRUCTURAL_METADATA_SIZE={len(body):06d} bytes\n"
    return (head + body).encode("ascii")


def layout_ifds(ifds: list[_Ifd], bigtiff: bool, *, row_major: bool = True) -> None:
    """Assign file offsets to IFDs, out-of-line values and tiles (the tiles
    back to back after the IFDs, smallest level first)."""
    entry, count_size, word = (20, 8, 8) if bigtiff else (12, 2, 4)
    off_type_size = 8 if bigtiff else 4
    pos = (16 if bigtiff else 8) + len(_ghost(row_major))
    for ifd in ifds:
        pos += pos % 2
        ifd.offset = pos
        n_entries = len(ifd.tags) + 2
        pos += count_size + n_entries * entry + word
        for code, _, _, raw in ifd.tags:
            if len(raw) > word:
                pos += pos % 2
                ifd.value_offsets[code] = pos
                pos += len(raw)
        for code in (_TILE_OFFSETS, _TILE_BYTECOUNTS):
            size = len(ifd.tiles) * off_type_size
            if size > word:
                pos += pos % 2
                ifd.value_offsets[code] = pos
                pos += size
    # Tile data: smallest level first; the full resolution last.
    for ifd in reversed(ifds):
        for _, nbytes in ifd.tiles:
            if nbytes:
                ifd.tile_offsets.append(pos)
                pos += nbytes
            else:
                ifd.tile_offsets.append(0)


def header_and_ifds(ifds: list[_Ifd], bigtiff: bool, *, row_major: bool = True) -> bytes:
    """The file's bytes up to its first tile, as :func:`layout_ifds` placed them."""
    word = 8 if bigtiff else 4
    off_type = 16 if bigtiff else 4
    blob = bytearray()
    blob += b"II" + (struct.pack("<HHHQ", 43, 8, 0, ifds[0].offset) if bigtiff else struct.pack("<HI", 42, ifds[0].offset))
    blob += _ghost(row_major)
    for k, ifd in enumerate(ifds):
        entries = list(ifd.tags)
        offsets = ifd.tile_offsets
        counts = [n for _, n in ifd.tiles]
        fmt = "<%dQ" if bigtiff else "<%dI"
        entries.append((_TILE_OFFSETS, off_type, len(offsets), struct.pack(fmt % len(offsets), *offsets)))
        entries.append((_TILE_BYTECOUNTS, off_type, len(counts), struct.pack(fmt % len(counts), *counts)))
        entries.sort(key=lambda e: e[0])
        _pad_to(blob, ifd.offset)
        blob += struct.pack("<Q", len(entries)) if bigtiff else struct.pack("<H", len(entries))
        values: list[tuple[int, bytes]] = []
        for code, typ, count, raw in entries:
            blob += struct.pack("<HHQ", code, typ, count) if bigtiff else struct.pack("<HHI", code, typ, count)
            if len(raw) > word:
                at = ifd.value_offsets[code]
                blob += struct.pack("<Q", at) if bigtiff else struct.pack("<I", at)
                values.append((at, raw))
            else:
                blob += raw.ljust(word, b"\0")
        nxt = ifds[k + 1].offset if k + 1 < len(ifds) else 0
        blob += struct.pack("<Q", nxt) if bigtiff else struct.pack("<I", nxt)
        for at, raw in sorted(values):
            _pad_to(blob, at)
            blob += raw
    return bytes(blob)


def _pad_to(blob: bytearray, at: int) -> None:
    if len(blob) > at:
        raise AssertionError(f"COG layout overlap at byte {at} (have {len(blob)})")
    blob += b"\0" * (at - len(blob))


def _copy_tiles(fin, fout, ifd: _Ifd) -> None:
    src_fd, dst_fd = fin.fileno(), fout.fileno()
    for (src_off, nbytes), dst_off in zip(ifd.tiles, ifd.tile_offsets, strict=True):
        if not nbytes:
            continue
        done = 0
        while done < nbytes:
            try:
                n = os.copy_file_range(src_fd, dst_fd, nbytes - done, src_off + done, dst_off + done)
            except OSError:
                n = 0
            if n <= 0:
                # No in-kernel copy here (or a short one): plain read and write.
                data = os.pread(src_fd, nbytes - done, src_off + done)
                n = os.pwrite(dst_fd, data, dst_off + done)
            done += n
