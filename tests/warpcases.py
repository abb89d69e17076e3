"""Shared by the warp tests: synthetic inputs and GDAL's whole-raster warps.

References. Every comparison is against a warp of the WHOLE raster in one
piece, without ``-wo XSCALE/YSCALE`` (so GDAL computes the kernel scale
itself, from the whole output):

* ``gdalwarp`` (the Debian CLI, GDAL 3.6) with ``-wm 2000`` (one chunk) and
  ``-et 0`` (exact; or the ``-et`` given) on the grid the test reads back
  from its output, wherever its result equals GDAL 3.10's (checked in
  ``test_warp.test_cli_and_bundled_gdal_agree``);
* ``bundled``: the same ``gdalwarp`` run written as a warped VRT
  (``-of VRT``) and read by rasterio's GDAL 3.10 as one block, i.e. one
  ``WarpRegion`` of the whole output. It is used for the resamplings whose
  code changed between 3.6 and 3.10 (see ``REFERENCE``), so that what is
  compared is the chunking, not the GDAL version. (rasterio.warp.reproject
  cannot be the reference: rasterio 1.4 always wraps its transformer in
  GDAL's approximate one.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from rdask.io.warped import Grid, WarpedSource, warped
from rdask.recipe import open_recipe

#: gdalwarp's -r name per resampling.
GDAL_R = {"nearest": "near", "cubic_spline": "cubicspline"}

#: Which reference each resampling is checked against (see module docstring).
#: Measured on the DEM to EPSG:4326: lanczos differs in almost every pixel
#: between GDAL 3.6 and 3.10 when downsampling (up to 14.6 m), and the
#: footprint kernels (average, mode, min, max, med, q1, q3, rms) in the
#: ~260 pixels along the source's edge (up to 840 m: 3.10 keeps partial
#: footprints there), sum by 2.4e-4; so those use the bundled GDAL.
REFERENCE = {r: "gdalwarp" for r in ("nearest", "bilinear", "cubic", "cubic_spline")} | {
    r: "bundled" for r in ("lanczos", "average", "mode", "min", "max", "med", "q1", "q3", "sum",
                           "rms")}


def smooth(h: int, w: int, seed: float = 0.0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype("float64")
    z = (500 + 300 * np.sin(x / 97.0 + seed) * np.cos(y / 61.0)
         + 0.005 * x * y + 40 * np.sin((x + 2 * y) / 13.0))
    return z.astype("float32")


def write(path: Path, data: np.ndarray, crs: str, transform: Affine, nodata=None) -> str:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=crs, transform=transform,
                       nodata=nodata, tiled=True, blockxsize=256, blockysize=256) as ds:
        ds.write(data)
    return str(path)


def gdalwarp(src: str, out: Path, *args: str, et: str = "0") -> Path:
    """``gdalwarp -et ET -wm 2000 ARGS SRC OUT`` (one chunk; ``et=""``
    leaves -et out: GDAL's default approximation)."""
    threshold = ["-et", et] if et else []
    subprocess.run(["gdalwarp", "-q", "-overwrite", *threshold, "-wm", "2000", *args, src, str(out)],
                   check=True)
    return out


def reference(src: str, out: Path, resampling: str, *args: str,
              using: str | None = None, et: str = "0") -> tuple[np.ndarray, Grid]:
    """The whole-raster warp (see the module docstring) and its grid."""
    r = ["-r", GDAL_R.get(resampling, resampling)]
    if (using or REFERENCE[resampling]) == "gdalwarp":
        gdalwarp(src, out, *r, *args, et=et)
        with rasterio.open(out) as ds:
            return ds.read(), Grid.of(ds)
    return bundled(src, out, *r, *args, et=et)


def bundled(src: str, out: Path, *args: str, et: str = "0") -> tuple[np.ndarray, Grid]:
    """gdalwarp's warp written as a VRT and run by GDAL 3.10 in one block."""
    vrt = gdalwarp(src, out.with_suffix(".vrt"), "-of", "VRT", *args, et=et)
    with rasterio.open(vrt) as ds:
        w, h = ds.width, ds.height
    text = vrt.read_text()
    text = re.sub(r"<BlockXSize>\d+</BlockXSize>", f"<BlockXSize>{w}</BlockXSize>", text)
    text = re.sub(r"<BlockYSize>\d+</BlockYSize>", f"<BlockYSize>{h}</BlockYSize>", text)
    vrt.write_text(text)
    with rasterio.open(vrt) as ds:
        return ds.read(), Grid.of(ds)


def windows(n: int, step: int, halo: int) -> list[tuple[int, int]]:
    """Windows of ``step`` (the last shorter) grown by ``halo`` each side."""
    return [(max(0, a - halo), min(n, a + step + halo)) for a in range(0, n, step)]


def assemble(ws: WarpedSource, ystep: int = 97, xstep: int = 61, halo: int = 0) -> np.ndarray:
    """The whole target read window by window; overlapping windows must
    agree where they overlap."""
    out = np.full(ws.shape, np.nan, dtype="float64")
    for y0, y1 in windows(ws.height, ystep, halo):
        for x0, x1 in windows(ws.width, xstep, halo):
            block = ws.read(y0, y1, x0, x1).astype("float64")
            assert block.shape == (ws.count, y1 - y0, x1 - x0)
            seen = out[:, y0:y1, x0:x1]
            both = ~np.isnan(seen)
            np.testing.assert_array_equal(seen[both], block[both])
            out[:, y0:y1, x0:x1] = block
    return out


def max_diff(a: np.ndarray, b: np.ndarray, nodata=None) -> float:
    """Largest difference, after checking nodata positions are identical."""
    a, b = a.astype("float64"), b.astype("float64")
    if nodata is not None:
        np.testing.assert_array_equal(a == nodata, b == nodata)
    return float(np.abs(a - b).max())


def open_warp(path: str, dst: Grid, resampling: str, **kw) -> WarpedSource:
    return warped(open_recipe(path).source, Grid.of(path), dst, resampling, **kw)


# --------------------------------------------------------------------------
# the exact mode's cases, small, for sweeps over every resampling
# --------------------------------------------------------------------------


def _utm_dem(path: Path, h: int, w: int, res: float = 30.0, nodata: float | None = None,
             holes: bool = False) -> str:
    z = smooth(h, w)
    if holes:
        z[h // 5:h // 3, w // 4:w // 2] = -9999
        z[h // 2:h // 2 + 3, :] = -9999
        rng = np.random.default_rng(1)
        z[rng.integers(0, h, h * w // 300), rng.integers(0, w, h * w // 300)] = -9999
    return write(path, z, "EPSG:32618", Affine(res, 0, 500000, 0, -res, 4500000), nodata=nodata)


def _masked(path: Path) -> str:
    z = smooth(230, 270)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=270, height=230, count=1, dtype="float32",
                           crs="EPSG:32618", transform=Affine(30, 0, 500000, 0, -30, 4500000)) as ds:
            ds.write(z, 1)
            mask = np.full((230, 270), 255, np.uint8)
            mask[40:90, 80:150] = 0
            mask[150:, :30] = 0
            ds.write_mask(mask)
    return str(path)


def _rgba(path: Path) -> str:
    from rasterio.enums import ColorInterp

    h, w = 210, 250
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 7 + y) % 256, (x + y * 3) % 256, (x * y) % 256]).astype("uint8")
    alpha = np.full((h, w), 255, np.uint8)
    alpha[40:90, 70:140] = 0
    alpha[150:, :30] = 128
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=4, dtype="uint8",
                       crs="EPSG:32618", transform=Affine(30, 0, 500000, 0, -30, 4500000),
                       photometric="RGB", alpha="YES") as ds:
        ds.write(np.concatenate([rgb, alpha[None]]))
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return str(path)


#: name -> (make(dir) -> source path, gdalwarp arguments, reference override,
#: source bytes cap or None). Each is a case the exact mode is held to
#: ``-et 0`` on (tests/test_warp.py), made small.
CASES = {
    "odd sizes, nodata holes": (
        lambda d: _utm_dem(d / "holes.tif", 290, 330, nodata=-9999, holes=True),
        ("-t_srs", "EPSG:4326"), None, None),
    "mask": (lambda d: _masked(d / "masked.tif"), ("-t_srs", "EPSG:4326"), None, None),
    "rotated": (
        lambda d: write(d / "rotated.tif", smooth(250, 300), "EPSG:32618",
                        Affine(30, 0, 500000, 0, -30, 4500000) @ Affine.rotation(20)),
        ("-t_srs", "EPSG:4326"), "bundled", None),
    "antimeridian": (
        lambda d: write(d / "zone1.tif", smooth(200, 300), "EPSG:32601",
                        Affine(2000, 0, 150000, 0, -2000, 7000000)),
        ("-t_srs", "EPSG:4326", "-te", "175.5", "55", "190", "63.5", "-ts", "320", "190"), "bundled", None),
    "near a pole": (
        lambda d: write(d / "pole.tif", smooth(200, 200), "EPSG:3413",
                        Affine(10000, 0, -1000000, 0, -10000, 1000000)),
        ("-t_srs", "EPSG:4326", "-te", "-180", "72", "180", "90", "-ts", "360", "45"), "bundled",
        16 * 1024),
    "100x downsampling": (
        lambda d: _utm_dem(d / "fine.tif", 700, 800, res=1.0),
        ("-t_srs", "EPSG:32618", "-tr", "100", "100"), None, 1_000_000),
    "geographic across 180": (
        lambda d: write(d / "geo180.tif", smooth(160, 320), "EPSG:4326",
                        Affine(0.0625, 0, 170, 0, -0.0625, 60)),
        ("-t_srs", "EPSG:32660"), None, None),
    "alpha band": (lambda d: _rgba(d / "rgba.tif"), ("-t_srs", "EPSG:4326"), None, None),
}
