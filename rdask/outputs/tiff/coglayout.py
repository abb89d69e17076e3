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
   layout is computed, GDAL's COG driver's: header, GDAL's ghost area
   (:func:`ghost`), every IFD (the full resolution, its mask, the overviews
   largest first, their masks) with its out-of-line tag values, every tile
   index array, then tile data from the smallest overview to the full
   resolution, each level's tiles in tile order, each mask tile right after
   its image tile, each tile with a 4-byte size leader before it and its
   last 4 bytes repeated after it (offsets point after the leader). GDAL
   then reports ``LAYOUT=COG``.
3. Compressed tiles are copied into that layout without being decoded or
   recompressed (``os.copy_file_range``), which is where GDAL's COG driver
   spends most of its time (it decompresses and recompresses every tile);
   the leaders and trailers are written between them.

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
from rdask.io.gdalenv import gdal_env

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
    with gdal_env(**env), rasterio.open(path, "r+", NUM_THREADS=max(1, threads)) as ds:
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
    import tifffile

    files = [src, *levels]
    ifds = read_ifds(files)
    with tifffile.TiffFile(src) as tif:
        asked = tif.is_bigtiff  # BIGTIFF=YES (or GDAL's IF_SAFER guess) stays
    bigtiff = asked or _needs_bigtiff(ifds)
    start = layout_ifds(ifds, bigtiff)
    place_tiles(ifds, start)
    handles = [open(f, "rb") for f in files]
    try:
        with open(dst, "wb") as fout:
            fout.write(header_and_ifds(ifds, bigtiff))
            fout.flush()
            _copy_data(handles, fout, ifds, start)
            os.fsync(fout.fileno())
    finally:
        for h in handles:
            h.close()


def read_ifds(files: Sequence[str]) -> list[_Ifd]:
    """The IFDs of a COG made of ``files`` (a GeoTIFF, then one single-image
    GeoTIFF per overview level), in GDAL's COG order: the full resolution,
    its mask, the overviews largest first, then their masks."""
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
    main = max(i.pixels for i in ifds)
    ifds.sort(key=lambda i: (i.pixels < main and i.is_mask, -i.pixels, i.is_mask))
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
    meta = sum(len(v) + 20 for i in ifds for *_, v in i.tags) + sum(24 * len(i.tiles) for i in ifds)
    return data + meta + 4096 >= 2**32 - 1


#: Bytes GDAL puts around each tile: a 4-byte size leader and a 4-byte trailer.
LEADER, TRAILER = 4, 4


def ghost(mask: bool = False) -> bytes:
    """GDAL's COG ghost area, byte for byte as its COG driver writes it
    (``gtiffdataset_write.cpp``): the IFDs come first, each level's tiles
    in tile order with a size leader and a repeated trailer, and with a
    mask, each mask tile right after its image tile. GDAL reports
    ``LAYOUT=COG`` for a file whose ghost says all of that."""
    body = ("LAYOUT=IFDS_BEFORE_DATA\nBLOCK_ORDER=ROW_MAJOR\nBLOCK_LEADER=SIZE_AS_UINT4\n"
            "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\nKNOWN_INCOMPATIBLE_EDITION=NO\n ")
    if mask:
        body += "MASK_INTERLEAVED_WITH_IMAGERY=YES\n"
    return f"GDAL_STRUCTURAL_METADATA_SIZE={len(body):06d} bytes\n{body}".encode("ascii")


def wrap_tile(payload: bytes) -> bytes:
    """A tile as a COG stores it: its size (uint32, little-endian), the
    payload, the payload's last 4 bytes again (zero-filled when shorter)."""
    return b"".join((struct.pack("<I", len(payload)), payload, trailer(payload[-TRAILER:])))


def trailer(last: bytes) -> bytes:
    """The trailer of a tile whose payload ends with ``last`` (at most 4 bytes)."""
    return last.ljust(TRAILER, b"\0")


def data_order(ifds: list[_Ifd]) -> list[tuple[_Ifd, int]]:
    """``(ifd, tile)`` in the order GDAL's COG driver writes tile data:
    smallest level first; in a level tile by tile (row-major), each mask
    tile right after its image tile."""
    levels: dict[int, list[_Ifd]] = {}
    for ifd in ifds:
        levels.setdefault(ifd.pixels, []).append(ifd)
    out: list[tuple[_Ifd, int]] = []
    for pixels in sorted(levels):
        pair = sorted(levels[pixels], key=lambda i: i.is_mask)
        for t in range(len(pair[0].tiles)):
            out.extend((ifd, t) for ifd in pair)
    return out


def has_mask(ifds: list[_Ifd]) -> bool:
    return any(i.is_mask for i in ifds)


def layout_ifds(ifds: list[_Ifd], bigtiff: bool) -> int:
    """Assign file offsets to the IFDs and their out-of-line values, then
    every tile index array after all IFDs (as GDAL's COG driver places
    them); return where tile data starts."""
    entry, count_size, word = (20, 8, 8) if bigtiff else (12, 2, 4)
    off_type_size = 8 if bigtiff else 4
    pos = (16 if bigtiff else 8) + len(ghost(has_mask(ifds)))
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
    for ifd in ifds:
        for code in (_TILE_OFFSETS, _TILE_BYTECOUNTS):
            size = len(ifd.tiles) * off_type_size
            if size > word:
                pos += pos % 2
                ifd.value_offsets[code] = pos
                pos += size
    return pos


def place_tiles(ifds: list[_Ifd], start: int) -> int:
    """Give every tile its offset (after its leader) in :func:`data_order`
    from ``start``; return the end of the data. Empty tiles stay at 0."""
    for ifd in ifds:
        ifd.tile_offsets = [0] * len(ifd.tiles)
    pos = start
    for ifd, t in data_order(ifds):
        nbytes = ifd.tiles[t][1]
        if nbytes:
            ifd.tile_offsets[t] = pos + LEADER
            pos += LEADER + nbytes + TRAILER
    return pos


def header_and_ifds(ifds: list[_Ifd], bigtiff: bool) -> bytes:
    """The file's bytes up to its first tile, as :func:`layout_ifds` placed them."""
    word = 8 if bigtiff else 4
    off_type = 16 if bigtiff else 4
    blob = bytearray()
    blob += b"II" + (struct.pack("<HHHQ", 43, 8, 0, ifds[0].offset) if bigtiff else struct.pack("<HI", 42, ifds[0].offset))
    blob += ghost(has_mask(ifds))
    values: list[tuple[int, bytes]] = []
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
        mine: list[tuple[int, bytes]] = []
        for code, typ, count, raw in entries:
            blob += struct.pack("<HHQ", code, typ, count) if bigtiff else struct.pack("<HHI", code, typ, count)
            if len(raw) > word:
                at = ifd.value_offsets[code]
                blob += struct.pack("<Q", at) if bigtiff else struct.pack("<I", at)
                (values if code in (_TILE_OFFSETS, _TILE_BYTECOUNTS) else mine).append((at, raw))
            else:
                blob += raw.ljust(word, b"\0")
        nxt = ifds[k + 1].offset if k + 1 < len(ifds) else 0
        blob += struct.pack("<Q", nxt) if bigtiff else struct.pack("<I", nxt)
        for at, raw in sorted(mine):
            _pad_to(blob, at)
            blob += raw
    for at, raw in sorted(values):  # the tile index arrays, after every IFD
        _pad_to(blob, at)
        blob += raw
    return bytes(blob)


def _pad_to(blob: bytearray, at: int) -> None:
    if len(blob) > at:
        raise AssertionError(f"COG layout overlap at byte {at} (have {len(blob)})")
    blob += b"\0" * (at - len(blob))


def _copy_data(handles: list, fout, ifds: list[_Ifd], start: int) -> None:
    """Copy every tile's payload into place (in-kernel, never decoded) and
    write the leaders and trailers between them: one 8-byte write joins a
    tile's trailer to the next tile's leader."""
    dst_fd = fout.fileno()
    pending = b""  # the previous tile's trailer
    pos = start
    for ifd, t in data_order(ifds):
        src_off, nbytes = ifd.tiles[t]
        if not nbytes:
            continue
        src_fd = handles[ifd.source].fileno()
        os.pwrite(dst_fd, pending + struct.pack("<I", nbytes), pos - len(pending))
        _copy_range(src_fd, dst_fd, src_off, pos + LEADER, nbytes)
        pending = trailer(os.pread(src_fd, min(nbytes, TRAILER), src_off + max(0, nbytes - TRAILER)))
        pos += LEADER + nbytes + TRAILER
    if pending:
        os.pwrite(dst_fd, pending, pos - len(pending))


def _copy_range(src_fd: int, dst_fd: int, src_off: int, dst_off: int, nbytes: int) -> None:
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
