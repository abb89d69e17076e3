"""What GDAL's COG layout promises, checked on the bytes of a file.

Independent of rdask's writer: it reads the file with tifffile and plain
byte reads, and the tests first run it on GDAL's own COG driver output, so
the checker is held to the reference before it judges rdask's files.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import rasterio
import tifffile

GHOST_KEYS = ("LAYOUT=IFDS_BEFORE_DATA", "BLOCK_ORDER=ROW_MAJOR", "BLOCK_LEADER=SIZE_AS_UINT4",
              "BLOCK_TRAILER=LAST_4_BYTES_REPEATED", "KNOWN_INCOMPATIBLE_EDITION=NO")


def ghost_text(path: str) -> str:
    with open(path, "rb") as fh:
        head = fh.read(16)
        at = 16 if head[2] == 43 else 8
        fh.seek(at)
        line = fh.read(43).decode("ascii")
        assert line.startswith("GDAL_STRUCTURAL_METADATA_SIZE="), line
        return fh.read(int(line[30:36])).decode("ascii")


def check_cog_layout(path: str) -> dict:
    """Assert GDAL's COG layout; return a summary ``{levels, tiles, mask}``.

    * the ghost area names every optimisation GDAL's reader wants;
    * every IFD (and tile index) lies before the first tile;
    * tiles come smallest level first, each level in tile order, each mask
      tile right after its image tile, back to back;
    * each tile has its size as a little-endian uint32 before it and its last
      4 bytes repeated after it.
    """
    text = ghost_text(path)
    for key in GHOST_KEYS:
        assert key in text, (key, text)
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        ifd_end = max(p.offset for p in pages)
        levels: dict[int, list] = {}
        for p in pages:
            levels.setdefault(p.imagewidth * p.imagelength, []).append(p)
        order = []
        for pixels in sorted(levels):
            pair = sorted(levels[pixels], key=lambda p: bool(int(p.tags[254].value) & 4) if 254 in p.tags else False)
            assert len(pair) in (1, 2)
            n = len(pair[0].dataoffsets)
            assert all(len(p.dataoffsets) == n for p in pair)
            for t in range(n):
                order.extend((p.dataoffsets[t], p.databytecounts[t]) for p in pair)
        mask = any(len(v) == 2 for v in levels.values())
    assert ("MASK_INTERLEAVED_WITH_IMAGERY=YES" in text) == mask
    with open(path, "rb") as fh:
        data = fh.read()
    pos = None
    for off, n in order:
        assert n > 0 and off > ifd_end
        if pos is not None:
            assert off == pos + 4, f"tile at {off} does not follow the previous one's trailer (at {pos})"
        assert struct.unpack("<I", data[off - 4 : off])[0] == n, f"leader of the tile at {off}"
        assert data[off + n : off + n + 4] == data[off + n - 4 : off + n].ljust(4, b"\0")[-4:] or n < 4
        pos = off + n + 4
    assert pos == len(data), "bytes after the last tile"
    return {"levels": len(levels), "tiles": len(order), "mask": mask}


def layouts(path: str) -> dict[str, str]:
    """``{reader: LAYOUT}`` of IMAGE_STRUCTURE: rasterio's GDAL and, when on
    PATH, the system ``gdalinfo`` (another GDAL version)."""
    out = {}
    with rasterio.open(path) as ds:
        out[f"rasterio GDAL {rasterio.__gdal_version__}"] = ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "")
    gdalinfo = shutil.which("gdalinfo")
    if gdalinfo:
        version = subprocess.run([gdalinfo, "--version"], capture_output=True, text=True).stdout.strip()
        info = subprocess.run([gdalinfo, "-json", path], capture_output=True, text=True, check=True).stdout
        import json

        meta = json.loads(info).get("metadata", {}).get("IMAGE_STRUCTURE", {})
        out[version] = meta.get("LAYOUT", "")
    return out
