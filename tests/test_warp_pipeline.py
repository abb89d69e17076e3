"""The warp step where a kernel goes: in chains (API and CLI), before and
after kernels, for stacks on different grids (``--grid``), through the
xarray face, into a COG. The reference is GDAL's own ``gdalwarp -et 0`` of
the whole raster, which the exact mode (``et=0``) equals (per-chunk
equality with it is tests/test_warp.py's; the default fast mode's
deviation is tests/test_warp_fast.py's)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import rdask

RDASK = os.path.join(os.path.dirname(sys.executable), "rdask")


@pytest.fixture(scope="module")
def dem(tmp_path_factory):
    """A smooth UTM DEM with a nodata hole and a band description."""
    tmp = tmp_path_factory.mktemp("warp")
    h, w = 700, 650
    yy, xx = np.mgrid[0:h, 0:w]
    z = (500 + 100 * np.sin(xx / 50) + 80 * np.cos(yy / 40) + xx * 0.1).astype("float32")
    z[100:130, 200:260] = -9999
    path = str(tmp / "dem.tif")
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                       tiled=True, blockxsize=128, blockysize=128, crs="EPSG:32618",
                       transform=from_origin(500000, 4000000, 30, 30), nodata=-9999) as ds:
        ds.write(z, 1)
        ds.set_band_description(1, "elevation")
    return path


def gdalwarp(src, dst, *args):
    subprocess.run(["gdalwarp", "-q", "-overwrite", "-et", "0", *args, src, dst], check=True)
    return dst


def pixels(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs, ds.nodata, ds.descriptions


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic"])
def test_process_warp_equals_gdalwarp(dem, tmp_path, resampling):
    ours = str(tmp_path / "ours.tif")
    rdask.process(dem, ours, [("warp", {"crs": "EPSG:4326", "resampling": resampling, "et": 0})], chunk_mb=0.05)
    ref = gdalwarp(dem, str(tmp_path / "ref.tif"), "-t_srs", "EPSG:4326", "-r", resampling)
    a, b = pixels(ours), pixels(ref)
    assert a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
    np.testing.assert_array_equal(a[0], b[0])
    assert a[4] == ("elevation",)


def test_cli_chain_equals_two_steps_and_gdal(dem, tmp_path):
    """``warp ... | slope`` in one pass equals the warp written to a file and
    then sloped, and the warp part equals gdalwarp."""
    chain = str(tmp_path / "chain.tif")
    proc = subprocess.run([RDASK, "run", "warp crs=EPSG:3857 res=30 resampling=bilinear et=0 | slope", dem, chain,
                           "--chunk-mb", "0.05", "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    warped = str(tmp_path / "warped.tif")
    subprocess.run([RDASK, "run", "warp crs=EPSG:3857 res=30 resampling=bilinear et=0", dem, warped, "-q"],
                   check=True)
    ref = gdalwarp(dem, str(tmp_path / "ref.tif"), "-t_srs", "EPSG:3857", "-tr", "30", "30", "-r", "bilinear")
    np.testing.assert_array_equal(pixels(warped)[0], pixels(ref)[0])
    two = str(tmp_path / "two.tif")
    rdask.process(warped, two, "slope")
    np.testing.assert_array_equal(pixels(chain)[0], pixels(two)[0])
    assert pixels(chain)[1] == pixels(ref)[1]


def test_warp_after_a_kernel(dem, tmp_path):
    """A warp may follow kernels: it warps their output."""
    ours = str(tmp_path / "ours.tif")
    rdask.process(dem, ours, [("focal-mean", {"radius": 1}), ("warp", {"crs": "EPSG:4326", "et": 0})],
                  chunk_mb=0.05)
    mean = str(tmp_path / "mean.tif")
    rdask.process(dem, mean, "focal-mean")
    ref = gdalwarp(mean, str(tmp_path / "ref.tif"), "-t_srs", "EPSG:4326")
    np.testing.assert_array_equal(pixels(ours)[0], pixels(ref)[0])


def test_stack_on_the_first_files_grid(tmp_path):
    """``--grid first``: a 20 m band warped onto a 10 m band's grid on the fly."""
    h, w = 400, 300
    red = (np.arange(h * w) % 1000).reshape(h, w).astype("uint16") + 1
    nir = (np.arange((h // 2) * (w // 2)) % 777).reshape(h // 2, w // 2).astype("uint16") + 1
    paths = []
    for name, data, res in (("b04.tif", red, 10), ("b8a.tif", nir, 20)):
        p = str(tmp_path / name)
        with rasterio.open(p, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                           dtype="uint16", crs="EPSG:32618", transform=from_origin(500000, 4000000, res, res)) as ds:
            ds.write(data, 1)
        paths.append(p)
    out = str(tmp_path / "ndvi.tif")
    proc = subprocess.run([RDASK, "run", "ndvi", *paths, out, "--kernel-arg", "red=1", "--kernel-arg", "nir=2",
                           "--grid", "first", "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    on10 = gdalwarp(paths[1], str(tmp_path / "on10.tif"), "-te", "500000", str(4000000 - h * 10),
                    str(500000 + w * 10), "4000000", "-ts", str(w), str(h))
    r, n = red.astype("float32"), pixels(on10)[0][0].astype("float32")
    np.testing.assert_array_equal(pixels(out)[0][0], (n - r) / (n + r))
    refused = subprocess.run([RDASK, "run", "ndvi", *paths, str(tmp_path / "x.tif"), "-q"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "--grid first" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_dataarray_warp_and_cog(dem, tmp_path):
    da = rdask.open_raster(dem, chunk_mb=0.05, tile=128)
    warped = rdask.warp(da, crs="EPSG:4326", resampling="bilinear", error_threshold=0)
    ref = gdalwarp(dem, str(tmp_path / "ref.tif"), "-t_srs", "EPSG:4326", "-r", "bilinear")
    np.testing.assert_array_equal(warped.values, pixels(ref)[0])
    assert warped.rio.crs == rasterio.crs.CRS.from_epsg(4326)
    cog = str(tmp_path / "cog.tif")
    rdask.to_raster(warped, cog, driver="COG", blocksize=128)
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(cog, quiet=True)[0]
    np.testing.assert_array_equal(pixels(cog)[0], pixels(ref)[0])
    # An opaque array (no longer rdask's own), onto another raster's grid.
    like = rdask.warp(da * 1, like=ref, resampling="bilinear", error_threshold=0)
    np.testing.assert_array_equal(like.values, pixels(ref)[0])


def test_bad_warp_arguments_are_one_line(dem, tmp_path):
    proc = subprocess.run([RDASK, "run", "warp crs=EPSG:4326 colour=red", dem, str(tmp_path / "o.tif")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "warp has no argument 'colour'" in lines[0]
    assert os.listdir(tmp_path) == []


def test_sum_is_refused_with_its_reason(dem, tmp_path):
    """GDAL's sum is not chunk-independent (not even in gdalwarp's own
    block-by-block warp), so rdask refuses it instead of writing pixels that
    depend on the chunking."""
    with pytest.raises(rdask.KernelError, match="sum is not chunk-independent"):
        rdask.process(dem, str(tmp_path / "o.tif"), [("warp", {"crs": "EPSG:4326", "resampling": "sum"})])
    assert os.listdir(tmp_path) == []
