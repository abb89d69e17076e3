"""Chunked reprojection (rdask.io.warped), exact mode, against GDAL's
whole-raster warp (the references are tests/warpcases.py's).

Chunked results are assembled from many windows of odd sizes, including
windows grown by a halo (so they overlap and start off any block grid), and
must equal the reference bit for bit, nodata positions included.
"""

from __future__ import annotations

import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from warpcases import (
    assemble,
    bundled,
    gdalwarp,
    max_diff,
    open_warp,
    reference,
    smooth,
    windows,
    write,
)

from rdask.io.files import FileSource
from rdask.io.warped import Grid, target_grid, warp_scales, warped
from rdask.recipe import open_recipe

pytestmark = pytest.mark.skipif(shutil.which("gdalwarp") is None, reason="needs the gdalwarp CLI")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("warp")


@pytest.fixture(scope="module")
def dem(data) -> str:
    """A smooth float32 DEM, 1000 x 900, 30 m, UTM zone 18N."""
    return write(data / "dem.tif", smooth(900, 1000), "EPSG:32618",
                 Affine(30, 0, 500000, 0, -30, 4500000))


@pytest.fixture(scope="module")
def dem_holes(data) -> str:
    """The DEM with nodata holes (a block, a full row band, scattered pixels)."""
    z = smooth(900, 1000)
    z[100:200, 300:420] = -9999
    z[500:507, :] = -9999
    rng = np.random.default_rng(1)
    z[rng.integers(0, 900, 3000), rng.integers(0, 1000, 3000)] = -9999
    return write(data / "dem_holes.tif", z, "EPSG:32618",
                 Affine(30, 0, 500000, 0, -30, 4500000), nodata=-9999)


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_cli_and_bundled_gdal_agree(dem, data):
    """The CLI (3.6) and the bundled GDAL (3.10) warp the DEM alike, so the
    CLI is a fair reference for these resamplings."""
    for r in ("near", "bilinear", "cubic", "cubicspline"):
        cli = gdalwarp(dem, data / f"cli_{r}.tif", "-t_srs", "EPSG:4326", "-r", r)
        with rasterio.open(cli) as ds:
            a = ds.read()
        b, _ = bundled(dem, data / f"bundled_{r}.tif", "-t_srs", "EPSG:4326", "-r", r)
        assert max_diff(a, b) == 0.0, r


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857"])
@pytest.mark.parametrize("args", [(), ("-tr", "45", "45"),
                                  ("-tr", "45", "45", "-te", "-75.01", "40.4", "-74.7", "40.6")])
def test_target_grid_is_gdalwarps(dem, data, crs, args):
    if crs == "EPSG:4326" and args[:1] == ("-tr",):
        args = ("-tr", "0.0004", "0.0004", *args[3:])
    if crs == "EPSG:3857" and args[3:4] == ("-te",):
        args = (*args[:3], "-te", "-8350000", "4925000", "-8310000", "4955000")
    out = gdalwarp(dem, data / "grid.tif", "-t_srs", crs, "-r", "near", *args)
    want = Grid.of(out)
    kw = {}
    if args[:1] == ("-tr",):
        kw["resolution"] = float(args[1])
    if args[3:4] == ("-te",):
        kw["bounds"] = tuple(float(v) for v in args[4:])
    got = target_grid(Grid.of(dem), crs=crs, **kw)
    assert got.shape == want.shape
    assert got.crs == want.crs
    assert got.transform.almost_equals(want.transform, precision=1e-9)
    assert target_grid(Grid.of(dem), like=want) is want


@pytest.mark.parametrize("crs, te", [
    ("EPSG:4326", ("-75.01", "40.4", "-74.7", "40.6")),
    ("EPSG:4326", ("-75.3", "40.2", "-74.5", "40.9")),  # wider than the source
    ("EPSG:3857", ("-8350000", "4925000", "-8310000", "4955000")),
    ("EPSG:32618", ("500000", "4480000", "520000", "4500000")),  # the source's own CRS
])
def test_target_grid_bounds_without_resolution(dem, data, crs, te):
    """-te without -tr: gdalwarp samples the source's resolution inside the
    target extent, not the whole source's suggested resolution."""
    out = gdalwarp(dem, data / "grid_te.tif", "-t_srs", crs, "-r", "near", "-te", *te)
    want = Grid.of(out)
    got = target_grid(Grid.of(dem), crs=crs, bounds=tuple(float(v) for v in te))
    assert got.shape == want.shape
    assert got.transform.almost_equals(want.transform, precision=1e-9)


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857"])
@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic", "lanczos", "average", "mode"])
def test_dem_chunked_equals_whole(dem, data, crs, resampling):
    ref, grid = reference(dem, data / f"dem_{resampling}.tif", resampling, "-t_srs", crs)
    ws = open_warp(dem, grid, resampling)
    assert ws.shape == ref.shape and ws.dtype == "float32"
    assert max_diff(assemble(ws), ref) == 0.0
    # windows grown by a halo start off every block grid and overlap
    assert max_diff(assemble(ws, 256, 200, halo=3), ref) == 0.0


@pytest.mark.parametrize("resampling", [
    "cubic_spline", "min", "max", "med", "q1", "q3", "rms",
    # sum is refused by rdask's warp step (tests/test_warp_pipeline.py): GDAL
    # 3.10's sum (GWKSumPreserving) spreads each source pixel over the target
    # pixels it covers, and GDAL's own block-by-block warp of this case
    # differs from its one-block warp by up to 5832 at 301 block-edge pixels.
])
def test_other_resamplings_downsampling(dem, data, resampling):
    """The other resamplings, downsampling about 3x (the footprint kernels
    then take several source pixels, and the scale enters every kernel)."""
    ref, grid = reference(dem, data / f"down_{resampling}.tif", resampling, "-t_srs", "EPSG:4326",
                          "-tr", "0.001", "0.001")
    ws = open_warp(dem, grid, resampling)
    assert ws.scales[0] < 0.5
    assert max_diff(assemble(ws, 41, 37, halo=2), ref) == 0.0


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "average"])
def test_multiband_nodata(resampling, data):
    """RGB.byte.tif: three bands, nodata 0 on each (gdalwarp's per-band
    source nodata, copied to the output)."""
    src = str(Path(__file__).parent / "data" / "RGB.byte.tif")
    ref, grid = reference(src, data / f"rgb_{resampling}.tif", resampling, "-t_srs", "EPSG:3857")
    ws = open_warp(src, grid, resampling)
    assert ws.count == 3 and ws.dtype == "uint8" and ws.nodata == 0
    assert max_diff(assemble(ws, 100, 150, halo=1), ref, nodata=0) == 0.0
    np.testing.assert_array_equal(ws.read(50, 90, 60, 99, bands=(1, 3)),
                                  ref[1:3, 50:90, 60:99])


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_source_mask(data, resampling):
    """A source with an internal per-dataset mask and no nodata: masked
    pixels are not used, and the output has 0 where nothing contributes."""
    path = data / "masked.tif"
    if not path.exists():
        z = smooth(300, 350)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(path, "w", driver="GTiff", width=350, height=300, count=1,
                               dtype="float32", crs="EPSG:32618",
                               transform=Affine(30, 0, 500000, 0, -30, 4500000)) as ds:
                ds.write(z, 1)
                mask = np.full((300, 350), 255, np.uint8)
                mask[50:120, 100:200] = 0
                mask[200:, :40] = 0
                ds.write_mask(mask)
    source = open_recipe(str(path)).source
    assert source.per_dataset_mask
    ref, grid = reference(str(path), data / f"masked_{resampling}.tif", resampling,
                          "-t_srs", "EPSG:4326")
    ws = open_warp(str(path), grid, resampling)
    assert ws.nodata is None
    assert max_diff(assemble(ws, 64, 57, halo=1), ref) == 0.0


def test_whole_raster_scale_is_needed(dem, data):
    """With each window's own scale (what GDAL does per chunk) the chunked
    cubic result drifts from the whole-raster one; with warp_scales it is
    exact, and warp_scales is what GDAL uses (the whole read equals it)."""
    ref, grid = reference(dem, data / "scale.tif", "cubic", "-t_srs", "EPSG:4326", "-tr",
                          "0.0006", "0.0006")
    ws = open_warp(dem, grid, "cubic")
    assert ws.scales == warp_scales(Grid.of(dem), grid, "cubic")
    assert ws.scales[0] < 1  # downsampling: the scale enters the weights
    assert max_diff(ws.read(0, grid.height, 0, grid.width), ref) == 0.0
    assert max_diff(assemble(ws, 50, 50), ref) == 0.0
    per_chunk = np.empty(ref.shape, ref.dtype)
    for y0, y1 in windows(grid.height, 50, 0):
        for x0, x1 in windows(grid.width, 50, 0):
            sub = Grid(grid.crs, grid.transform @ Affine.translation(x0, y0), x1 - x0, y1 - y0)
            own = replace(ws, scales=warp_scales(ws.src_grid, sub, "cubic"))
            per_chunk[:, y0:y1, x0:x1] = own.read(y0, y1, x0, x1)
    assert max_diff(per_chunk, ref) > 0.0


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic", "average"])
def test_nodata_holes(dem_holes, data, resampling):
    ref, grid = reference(dem_holes, data / f"holes_{resampling}.tif", resampling,
                          "-t_srs", "EPSG:3857")
    ws = open_warp(dem_holes, grid, resampling)
    assert ws.src_nodata == -9999 and ws.nodata == -9999
    assert (ref == -9999).sum() > 1000
    assert max_diff(assemble(ws, 83, 71, halo=2), ref, nodata=-9999) == 0.0


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic"])
def test_rotated_source(data, resampling):
    rot = Affine(30, 0, 500000, 0, -30, 4500000) @ Affine.rotation(20)
    src = write(data / "rotated.tif", smooth(500, 600), "EPSG:32618", rot)
    # GDAL 3.6 and 3.10 warp this rotated source differently (bilinear: in
    # 255k of 550k pixels, by up to 1.99), whatever the chunking: the bundled
    # GDAL is the reference.
    ref, grid = reference(src, data / f"rot_{resampling}.tif", resampling, "-t_srs", "EPSG:4326",
                          using="bundled")
    got = target_grid(Grid.of(src), crs="EPSG:4326")
    assert got.shape == grid.shape
    ws = open_warp(src, grid, resampling)
    assert max_diff(assemble(ws, 64, 77, halo=1), ref) == 0.0


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "average"])
def test_antimeridian(data, resampling):
    """A UTM zone 1 raster reaching west of 180 degrees, to EPSG:4326."""
    src = write(data / "zone1.tif", smooth(400, 600), "EPSG:32601",
                 Affine(1000, 0, 150000, 0, -1000, 7000000))
    # GDAL 3.6 suggests a whole-world output for it; give the grid instead,
    # in longitudes past 180.
    ref, grid = reference(src, data / f"am_{resampling}.tif", resampling, "-t_srs", "EPSG:4326",
                          "-te", "175.5", "59", "188.5", "63.5", "-ts", "650", "300")
    assert grid.transform.c < 180 < grid.transform.c + grid.transform.a * grid.width
    ws = open_warp(src, grid, resampling)
    assert max_diff(assemble(ws, 90, 111, halo=1), ref) == 0.0


class _Reads:
    """Records the size of every source read."""

    def __init__(self, monkeypatch):
        self.sizes: list[int] = []
        real = FileSource.read

        def read(source, y0, y1, x0, x1, *, bands=None):
            out = real(source, y0, y1, x0, x1, bands=bands)
            self.sizes.append(out.nbytes)
            return out

        monkeypatch.setattr(FileSource, "read", read)


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_pole_splits_windows(data, monkeypatch, resampling):
    """EPSG:3413 around the north pole to EPSG:4326: the top rows need the
    whole source; a small cap splits them and the result stays exact."""
    src = write(data / "pole.tif", smooth(400, 400), "EPSG:3413",
                 Affine(5000, 0, -1000000, 0, -5000, 1000000))
    # gdalwarp cuts this output in two chunks even with -wm 2000 (the
    # source fill ratio rule), so the one-block bundled warp is the reference.
    ref, grid = reference(src, data / f"pole_{resampling}.tif", resampling, "-t_srs", "EPSG:4326",
                          "-te", "-180", "72", "180", "90", "-ts", "720", "90", using="bundled")
    cap = 64 * 1024
    ws = open_warp(src, grid, resampling, max_source_bytes=cap)
    reads = _Reads(monkeypatch)
    assert max_diff(assemble(ws, 30, 200), ref) == 0.0
    assert max(reads.sizes) <= cap
    assert len(reads.sizes) > 2 * len(windows(grid.height, 30, 0)) * len(windows(grid.width, 200, 0))


def test_downsample_100x_average_splits(data, monkeypatch):
    src = write(data / "fine.tif", smooth(2000, 2300), "EPSG:32618",
                 Affine(1, 0, 500000, 0, -1, 4500000))
    ref, grid = reference(src, data / "coarse.tif", "average", "-t_srs", "EPSG:32618",
                          "-tr", "100", "100")
    assert grid.shape == (20, 23)
    cap = 1_000_000
    ws = open_warp(src, grid, "average", max_source_bytes=cap)
    reads = _Reads(monkeypatch)
    assert max_diff(assemble(ws, 7, 9), ref) == 0.0
    assert max(reads.sizes) <= cap


def test_interface(dem):
    grid = target_grid(Grid.of(dem), crs=CRS.from_epsg(4326))
    source = open_recipe(dem).source
    ws = warped(source, Grid.of(dem), grid, "bilinear")
    assert (ws.count, ws.height, ws.width) == (1, grid.height, grid.width)
    assert ws.shape == (1, *grid.shape)
    assert ws.files == source.files and ws.gdal_options == source.gdal_options
    assert ws.per_dataset_mask is False and ws.nodata is None and ws.error_threshold == 0.0
    back = pickle.loads(pickle.dumps(ws))
    assert back == ws
    np.testing.assert_array_equal(back.read(10, 20, 30, 45), ws.read(10, 20, 30, 45))
    from dask.base import tokenize

    assert tokenize(ws) == tokenize(back) != tokenize(replace(ws, resampling="cubic"))
    assert ws.read(0, 0, 0, 5).shape == (1, 0, 5)
    with pytest.raises(ValueError):
        warped(source, Grid.of(dem), grid, "gauss")
