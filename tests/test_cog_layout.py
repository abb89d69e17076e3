"""COGs GDAL takes for COGs: GDAL's own layout (ghost area, tile leaders and
trailers, row-major tiles, masks interleaved), read by two GDAL versions.

References: GDAL's own COG driver (``gdal_translate -of COG`` of the same
data with the same options) for the layout checker and for the pixels of
every level, GDAL's ``IMAGE_STRUCTURE`` ``LAYOUT`` item as rasterio's GDAL
and the system's ``gdalinfo`` report it, and ``rio cogeo validate --strict``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from coglayout_check import check_cog_layout, ghost_text, layouts
from rasters import synthetic, write
from rio_cogeo.cogeo import cog_validate
from servers import BUCKET

import rdask

GDAL_TRANSLATE = shutil.which("gdal_translate")


def gdal_cog(src: str, dst: str, **co: str) -> str:
    """GDAL's COG driver on ``src``: the system's gdal_translate when on
    PATH, else rasterio's GDAL."""
    if GDAL_TRANSLATE:
        args = [GDAL_TRANSLATE, "-q", "-of", "COG"]
        for k, v in co.items():
            args += ["-co", f"{k}={v}"]
        subprocess.run([*args, src, dst], check=True, capture_output=True)
    else:  # pragma: no cover - Debian's GDAL is on PATH here
        rasterio.shutil.copy(src, dst, driver="COG", **co)
    return dst


def levels(path: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every level's pixels and mask, full resolution first."""
    with rasterio.open(path) as ds:
        n = len(ds.overviews(1))
    out = []
    for level in range(-1, n):
        with rasterio.open(path, **({} if level < 0 else {"OVERVIEW_LEVEL": level})) as ds:
            out.append((ds.read(), ds.dataset_mask()))
    return out


def assert_gdal_takes_it_for_a_cog(path: str) -> dict:
    summary = check_cog_layout(path)
    seen = layouts(path)
    assert len(seen) == 2 and set(seen.values()) == {"COG"}, seen
    valid, errors, warnings = cog_validate(path, strict=True, quiet=True)
    assert valid and not errors and not warnings, (errors, warnings)
    return summary


def test_the_checker_holds_for_gdal_s_own_cogs(tmp_path):
    """The layout checker accepts what GDAL's COG driver writes, with and
    without a mask, and refuses it once a tile's leader is wrong."""
    data = synthetic((3, 700, 650), "uint8")
    mask = np.full((700, 650), 255, np.uint8)
    mask[100:300, 50:400] = 0
    for name, kw in (("plain", {}), ("masked", {"mask": mask})):
        src = write(tmp_path / f"{name}.tif", data, block=(128, 128), **kw)
        ref = gdal_cog(src, str(tmp_path / f"{name}.cog.tif"), BLOCKSIZE="128")
        assert check_cog_layout(ref)["mask"] == (name == "masked")
        assert set(layouts(ref).values()) == {"COG"}
    with rasterio.open(ref) as ds:
        off = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    with open(ref, "r+b") as fh:
        fh.seek(off - 4)
        fh.write(b"\xff\xff\xff\x7f")
    with pytest.raises(AssertionError, match="leader"):
        check_cog_layout(ref)


CASES = [
    # shape, dtype, blocksize, masked, options
    ((1, 1000, 700), "uint8", 128, False, {}),
    ((2, 1024, 768), "uint8", 128, True, {}),  # every level's size is GDAL's COG driver's
    ((3, 1001, 999), "uint16", 256, False, {"compress": "zstd"}),
    ((1, 1537, 67), "float32", 128, False, {}),  # predictor 3
    ((3, 517, 389), "uint8", 128, True, {}),  # mask, interleaved
    ((2, 100, 90), "int16", 128, False, {}),  # one tile: no overview
    ((3, 130, 300), "uint8", 128, True, {}),  # odd sizes, a mask, overviews
]


@pytest.mark.parametrize(("shape", "dtype", "blocksize", "masked", "options"), CASES)
def test_local_cog_is_gdal_s_layout_and_pixels(tmp_path, shape, dtype, blocksize, masked, options):
    data = synthetic(shape, dtype, nan_frac=0.01 if dtype.startswith("float") else 0)
    mask = None
    if masked:
        mask = np.full(shape[1:], 255, np.uint8)
        mask[shape[1] // 5 : shape[1] // 2, 3 : shape[2] // 2] = 0
    src = write(tmp_path / "in.tif", data, block=(64, 64), mask=mask)
    reversed_src = write(tmp_path / "reversed.tif", data[::-1], block=(64, 64), mask=mask)
    cog = str(tmp_path / "rdask.tif")
    rdask.process(src, cog, "reverse-bands", driver="COG", blocksize=blocksize, chunk_mb=0.05, workers=2,
                  **options)
    summary = assert_gdal_takes_it_for_a_cog(cog)
    assert summary["mask"] == masked
    # GDAL's COG driver on the same pixels, with rdask's codec settings.
    with rasterio.open(cog) as ds:
        image = ds.tags(ns="IMAGE_STRUCTURE")
    co = {"BLOCKSIZE": str(blocksize), "COMPRESS": image["COMPRESSION"], "RESAMPLING": "NEAREST",
          "PREDICTOR": image.get("PREDICTOR", "NO")}
    ref = gdal_cog(reversed_src, str(tmp_path / "gdal.tif"), **co)
    assert ghost_text(cog) == ghost_text(ref)
    ours, theirs = levels(cog), levels(ref)
    assert len(ours) == len(theirs) == summary["levels"]
    # rdask's level sizes are GDAL's overview builder's, ceil(n / factor);
    # the COG driver's can be one pixel less for odd sizes. Bit for bit
    # where the rule agrees (each level is made from the one above).
    same = 0
    for (a, am), (b, bm) in zip(ours, theirs, strict=True):
        if a.shape != b.shape:
            above = ours[same - 1][0].shape
            assert a.shape[1:] == tuple(-(-n // 2) for n in above[1:])  # ceil, GDAL's GTiff overviews
            assert b.shape[1:] == tuple(n // 2 for n in above[1:])  # floor, GDAL's COG driver
            break
        assert np.array_equal(a, b, equal_nan=True) and np.array_equal(am, bm)
        same += 1
    assert same >= 1
    if all(n % 2 ** (len(ours) - 1) == 0 for n in shape[1:]):
        assert same == len(ours)


def test_bigtiff_cog_keeps_the_layout(tmp_path):
    data = synthetic((2, 600, 500), "uint16")
    src = write(tmp_path / "in.tif", data)
    cog = str(tmp_path / "big.tif")
    rdask.process(src, cog, "reverse-bands", driver="COG", blocksize=128, chunk_mb=0.05,
                  creation_options={"BIGTIFF": "YES"})
    with open(cog, "rb") as fh:
        assert fh.read(4) == b"II+\0"
    assert_gdal_takes_it_for_a_cog(cog)
    with rasterio.open(cog) as ds:
        assert np.array_equal(ds.read(), data[::-1])


def test_s3_cog_is_a_cog_over_vsis3(s3, tmp_path):
    """An S3 COG whose tiles the tasks stored (chunks not spanning the width,
    odd sizes) reads as LAYOUT=COG in place, through /vsis3/, to both GDAL
    versions; so do a masked one (written locally, then uploaded) and a
    BigTIFF one."""
    data = (np.random.default_rng(2).normal(0, 40, size=(3, 1111, 1333)) + 100).astype("uint16")
    src = write(tmp_path / "in.tif", data, block=(128, 128))
    mask = np.full(data.shape[1:], 255, np.uint8)
    mask[200:500, 100:700] = 0
    masked = write(tmp_path / "masked.tif", data, block=(128, 128), mask=mask)
    cases = (("parts.tif", src, {}), ("staged.tif", masked, {}),
             ("bigtiff.tif", src, {"creation_options": {"BIGTIFF": "YES"}}))
    for name, path, kw in cases:
        rdask.process(path, f"s3://{BUCKET}/{name}", "reverse-bands", driver="COG", blocksize=128,
                      chunk_mb=0.5, workers=2, **kw)
        local = str(tmp_path / name)
        s3.client().download_file(BUCKET, name, local)
        assert check_cog_layout(local)["mask"] == (name == "staged.tif")
        with open(local, "rb") as fh:
            assert (fh.read(4) == b"II+\0") == (name == "bigtiff.tif")
        seen = layouts(f"/vsis3/{BUCKET}/{name}")
        assert len(seen) == 2 and set(seen.values()) == {"COG"}, seen
        with rasterio.open(f"/vsis3/{BUCKET}/{name}") as ds:
            assert np.array_equal(ds.read(), data[::-1])


def test_mosaic_tiles_are_cogs(tmp_path):
    data = synthetic((3, 700, 900), "uint8")
    mask = np.full((700, 900), 255, np.uint8)
    mask[:100, :] = 0
    src = write(tmp_path / "in.tif", data, mask=mask, block=(64, 64))
    out = tmp_path / "mosaic"
    rdask.process(src, str(out), "reverse-bands", tile_size=512, blocksize=128, chunk_mb=0.1)
    tiles = sorted(glob.glob(os.path.join(out, "**", "*.tif"), recursive=True))
    assert len(tiles) == 4
    for tile in tiles:
        assert check_cog_layout(tile)["mask"]
        seen = layouts(tile)
        assert len(seen) == 2 and set(seen.values()) == {"COG"}, seen
