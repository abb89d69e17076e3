"""The fast warp (``et > 0``, the default): the same pixels at any chunking,
and at least as close to ``gdalwarp -et 0`` as gdalwarp's own default.

For every resampling, on each of the exact mode's cases (tests/warpcases.py
``CASES``: odd sizes with nodata holes, a mask, a rotated source, the
antimeridian, near a pole with split windows, 100x downsampling, a
geographic source across 180 degrees, an alpha band):

* the raster assembled from odd, overlapping windows equals the raster read
  as one window, bit for bit;
* against the whole-raster ``gdalwarp -et 0`` (R0) and gdalwarp's default
  ``-et 0.125`` (R1): nodata (and alpha) at exactly R0's pixels; no more
  pixels differing from R0 than R1 has, and no larger difference;
  ``nearest``, ``min`` and ``max`` (which only pick source pixels) equal to
  R0; every value within :data:`RELATIVE` of the exact mode's
  (docs/reprojection.md; the exact mode's own agreement with R0 is
  tests/test_warp.py's).

Then the parts: the direct nearest/bilinear kernels against GDAL's warper
given the same coordinates, the lattice's error bound against the exact
transformation, and the pipeline (chunk sizes, ``local:2``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from warpcases import CASES, assemble, gdalwarp, reference, smooth, write

import rdask
from rdask.config import WARP_RESAMPLINGS
from rdask.io import warp_lattice
from rdask.io import warped as warped_module
from rdask.io.warp_capi import exact_transformer
from rdask.io.warped import Grid, WarpedSource, transformer_xml, warped
from rdask.recipe import open_recipe

pytestmark = pytest.mark.skipif(shutil.which("gdalwarp") is None, reason="needs the gdalwarp CLI")

RDASK = os.path.join(os.path.dirname(sys.executable), "rdask")

#: The documented bound on a fast-mode value's difference from -et 0,
#: relative to the value (largest measured on CASES: 6e-7, the geographic
#: source across 180 degrees; a float32's spacing is 6e-8 to 1.2e-7).
RELATIVE = 1e-6

#: Resamplings whose value is one of the source pixels it covers.
PICKS = ("nearest", "min", "max")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("warpfast")


def case_warp(path: str, grid: Grid, resampling: str, et: float, cap: int | None) -> WarpedSource:
    """The warp rdask's warp step makes (a last band marked alpha as -srcalpha)."""
    recipe = open_recipe(path)
    bands = recipe.meta.bands
    alpha = len(bands) if len(bands) > 1 and bands[-1].colorinterp == "alpha" else 0
    kw = {} if cap is None else {"max_source_bytes": cap}
    return warped(recipe.source, Grid.of(path), grid, resampling, error_threshold=et, src_alpha=alpha, **kw)


def diff_stats(a: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    a, ref = a.astype("float64"), ref.astype("float64")
    differ = a != ref
    return int(differ.sum()), float(np.abs(a - ref)[differ].max()) if differ.any() else 0.0


@pytest.mark.parametrize("resampling", WARP_RESAMPLINGS)
@pytest.mark.parametrize("case", list(CASES))
def test_fast_mode_on_the_exact_modes_cases(data, case, resampling):
    make, args, using, cap = CASES[case]
    folder = data / case.replace(" ", "_")
    folder.mkdir(exist_ok=True)
    src = make(folder)
    r0, grid = reference(src, folder / f"r0_{resampling}.tif", resampling, *args, using=using)
    r1, _ = reference(src, folder / f"r1_{resampling}.tif", resampling, *args, using=using, et="")
    ws = case_warp(src, grid, resampling, 0.125, cap)
    whole = ws.read(0, grid.height, 0, grid.width)
    # chunk invariance: odd windows, grown by a halo, overlapping
    np.testing.assert_array_equal(assemble(ws, 61, 47, halo=2), whole)
    # nodata (or a zero alpha) exactly where -et 0 has it
    if ws.nodata is not None:
        np.testing.assert_array_equal(whole == ws.nodata, r0 == ws.nodata)
    if ws.src_alpha:
        np.testing.assert_array_equal(whole[-1] == 0, r0[-1] == 0)
    ours, gdal_default = diff_stats(whole, r0), diff_stats(r1, r0)
    assert ours[0] <= gdal_default[0] and ours[1] <= gdal_default[1], (ours, gdal_default)
    if resampling in PICKS:
        assert ours == (0, 0.0)
    # the fast mode's own deviation: from the exact mode's pixels
    exact = case_warp(src, grid, resampling, 0.0, cap).read(0, grid.height, 0, grid.width).astype("float64")
    rel = np.abs(whole - exact) / np.maximum(np.abs(exact), 1.0)
    assert rel.max(initial=0.0) <= RELATIVE


@pytest.mark.parametrize("resampling", ["average", "mode", "bilinear"])
@pytest.mark.parametrize("factor", [4, 10])
def test_downsampling_honours_the_resampling(data, resampling, factor):
    """At 4x and 10x downsampling the footprint kernels average (or vote
    over) all the source pixels they cover, and bilinear widens its taps,
    as the whole-raster gdalwarp does: exact mode equal to it, fast mode
    within the bound."""
    src = write(data / "down.tif", smooth(600, 700), "EPSG:32618", Affine(30, 0, 500000, 0, -30, 4500000))
    res = str(30 * factor / 111_000 * 1.3)
    ref, grid = reference(src, data / f"down_{resampling}_{factor}.tif", resampling, "-t_srs", "EPSG:4326",
                          "-tr", res, res)
    exact = case_warp(src, grid, resampling, 0.0, None)
    assert max(exact.scales) < 1 / (factor * 0.9)
    np.testing.assert_array_equal(assemble(exact, 23, 19, halo=1), ref)
    fast = case_warp(src, grid, resampling, 0.125, None)
    got = assemble(fast, 23, 19, halo=1)
    np.testing.assert_array_equal(got, fast.read(0, grid.height, 0, grid.width))
    assert np.abs(got - ref).max() <= RELATIVE * np.abs(ref).max()


# --------------------------------------------------------------------------
# the parts
# --------------------------------------------------------------------------


def _gdal_only(monkeypatch):
    monkeypatch.setattr(WarpedSource, "_direct", lambda self, pixels, mask: False)


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
@pytest.mark.parametrize("kind", ["nodata", "no nodata", "float64", "nan nodata", "three bands nodata",
                                  "uint8 nodata"])
def test_direct_kernels_equal_gdals(data, monkeypatch, kind, resampling):
    """Given the same coordinates, the numba nearest and bilinear equal
    GDAL's warper bit for bit: inside, along the source's edges (the
    target reaches past them) and next to nodata."""
    z = smooth(180, 210)
    rng = np.random.default_rng(5)
    holes = (rng.random(z.shape) < 0.05) | (np.add.outer(np.arange(180), np.arange(210)) % 37 == 0)
    dtype, nodata, bands = "float32", -9999.0, 1
    if kind == "no nodata":
        nodata = None
    elif kind == "float64":
        dtype = "float64"
    elif kind == "nan nodata":
        nodata = float("nan")
    elif kind == "three bands nodata":
        bands = 3
    elif kind == "uint8 nodata":
        dtype, nodata = "uint8", 0.0
    stack = np.stack([np.roll(z, 7 * b, axis=1) for b in range(bands)])
    if dtype == "uint8":
        stack = (stack / 4).clip(1, 255)
    stack = stack.astype(dtype)
    if nodata is not None:
        for b in range(bands):
            stack[b][np.roll(holes, 11 * b, axis=0)] = nodata
    path = data / f"direct_{kind.replace(' ', '_')}.tif"
    write(path, stack, "EPSG:32618", Affine(30, 0, 500000, 0, -30, 4500000), nodata=nodata)
    # pixels finer than the source's (bilinear's 4-sample formula), past
    # the source on every side (its edges inside the output)
    grid = warped_module.target_grid(Grid.of(str(path)), crs="EPSG:4326", resolution=0.00025)
    grid = Grid(grid.crs, grid.transform @ Affine.translation(-5, -5), grid.width + 10, grid.height + 10)
    ws = case_warp(str(path), grid, resampling, 0.125, None)
    if dtype == "uint8" and resampling == "bilinear":
        assert not ws._direct(np.zeros((1, 1, 1), dtype), None)  # GDAL's rounding: left to GDAL
        return
    assert ws._direct(np.zeros((1, 1, 1), dtype), None)
    direct = assemble(ws, 41, 53, halo=1)
    _gdal_only(monkeypatch)
    gdal = assemble(ws, 41, 53, halo=1)
    np.testing.assert_array_equal(direct, gdal)
    assert np.isnan(direct).sum() == 0 or kind == "nan nodata"


def test_window_lattices_agree(data):
    """Points asked of two overlapping windows' lattices get the same
    coordinates: they depend on the point, not on the window."""
    path = write(data / "lattice.tif", smooth(300, 320), "EPSG:32618", Affine(30, 0, 500000, 0, -30, 4500000))
    src = Grid.of(path)
    grid = warped_module.target_grid(src, crs="EPSG:4326")
    exact = exact_transformer(transformer_xml(src, grid))
    px, py = np.meshgrid(np.arange(50, 170) + 0.5, np.arange(40, 130) + 0.5)
    got = []
    for x0, y0, x1, y1 in ((0, 0, 200, 200), (45, 31, 171, 133), (50, 40, 170, 130)):
        lattice = warp_lattice.window_lattice(exact, x0, y0, x1, y1, 0.125)
        x, y, ok = px.ravel().copy(), py.ravel().copy(), np.zeros(px.size, np.intc)
        warp_lattice.transform_row(lattice.header, x, y, ok)
        assert ok.all() and lattice.misses == 0
        got.append((x, y))
    for x, y in got[1:]:
        np.testing.assert_array_equal(x, got[0][0])
        np.testing.assert_array_equal(y, got[0][1])


def _hard_grids(data: Path) -> list[tuple[str, Grid, Grid]]:
    """CASES' grids, and two more distorted ones: a continent in UTM to
    polar stereographic, and a geographic raster to Mercator at 80 N."""
    out = []
    for name, (make, args, using, _) in CASES.items():
        folder = data / f"bound_{name.replace(' ', '_')}"
        folder.mkdir(exist_ok=True)
        src = make(folder)
        _, grid = reference(src, folder / "grid.tif", "nearest", *args, using=using)
        out.append((name, Grid.of(src), grid))
    wide = Grid(rasterio.crs.CRS.from_epsg(32633), Affine(5000, 0, -500000, 0, -5000, 7500000), 400, 500)
    out.append(("UTM 33N to EPSG:3413", wide, warped_module.target_grid(wide, crs="EPSG:3413")))
    arctic = Grid(rasterio.crs.CRS.from_epsg(4326), Affine(0.05, 0, -20, 0, -0.05, 84), 600, 200)
    out.append(("EPSG:4326 to 3857 at 75-84 N", arctic, warped_module.target_grid(arctic, crs="EPSG:3857")))
    return out


def test_error_bound_holds(data):
    """Wherever a cell is interpolated, every pixel centre's and corner's
    interpolated coordinate is within the cell's bound of GDAL's exact one
    (the bound is an upper bound, measured here on distorted mappings)."""
    for name, src, grid in _hard_grids(data):
        exact = exact_transformer(transformer_xml(src, grid))
        lattice = warp_lattice.window_lattice(exact, 0, 0, grid.width, grid.height, 0.125)
        bounds = lattice.bounds()
        worst = 0.0
        for offset in (0.5, 0.0):
            px, py = np.meshgrid(np.arange(grid.width + 1) + offset, np.arange(grid.height + 1) + offset)
            x, y = px.ravel().copy(), py.ravel().copy()
            ok, todo = np.zeros(x.size, np.intc), np.empty(x.size, np.int64)
            hdr = lattice.header
            level, goff, boff, gx, gy, bound = lattice.arrays
            n = warp_lattice._interpolate(hdr, level, goff, boff, gx, gy, bound, x, y, ok, todo)
            interpolated = ok == 1
            assert n == (~interpolated).sum() and lattice.misses == 0
            ex, ey = exact.transform(px.ravel(), py.ravel())
            err = np.maximum(np.abs(x - ex), np.abs(y - ey))[interpolated]
            cell = bounds[(py.ravel() // warp_lattice.SPACING).astype(int),
                          (px.ravel() // warp_lattice.SPACING).astype(int)][interpolated]
            assert np.isfinite(err).all(), name
            worst = max(worst, float((err / cell).max(initial=0.0)))
        assert worst <= 1.0, (name, worst)


# --------------------------------------------------------------------------
# through the pipeline and the CLI
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dem(data) -> str:
    z = smooth(500, 450)
    z[100:130, 200:260] = -9999
    return write(data / "dem.tif", z, "EPSG:32618", Affine(30, 0, 500000, 0, -30, 4500000), nodata=-9999)


def pixels(path):
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.mark.parametrize("resampling", WARP_RESAMPLINGS)
def test_same_output_at_any_chunk_size(dem, tmp_path, resampling):
    """Threads with chunks of 0.05 MB and of the default size: the same file."""
    chain = f"warp crs=EPSG:4326 resampling={resampling}"
    rdask.process(dem, tmp_path / "small.tif", chain, chunk_mb=0.05)
    rdask.process(dem, tmp_path / "default.tif", chain)
    np.testing.assert_array_equal(pixels(tmp_path / "small.tif"), pixels(tmp_path / "default.tif"))


def test_same_output_on_a_local_cluster(dem, tmp_path):
    """Every resampling (a band each) computed by threads and by a local
    cluster of two processes: the same pixels."""
    da = rdask.open_raster(dem)
    bands = xr.concat([rdask.warp(da, crs="EPSG:4326", resampling=r) for r in WARP_RESAMPLINGS], dim="band")
    rdask.to_raster(bands, tmp_path / "threads.tif")
    rdask.to_raster(bands, tmp_path / "local.tif", scheduler="local:2")
    got = pixels(tmp_path / "threads.tif")
    assert got.shape[0] == len(WARP_RESAMPLINGS)
    np.testing.assert_array_equal(got, pixels(tmp_path / "local.tif"))


def test_cli_same_output_on_local_processes(dem, tmp_path):
    chain = "warp crs=EPSG:4326 resampling=bilinear"
    rdask.process(dem, tmp_path / "threads.tif", chain, chunk_mb=0.2)
    proc = subprocess.run([RDASK, "run", chain, dem, str(tmp_path / "local.tif"), "--scheduler", "local:2",
                           "--chunk-mb", "0.05", "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(pixels(tmp_path / "threads.tif"), pixels(tmp_path / "local.tif"))


def test_exact_mode_stays_exact(dem, tmp_path):
    """et=0 equals gdalwarp -et 0; the default (fast) differs from it in at
    most a few pixels, by at most a float32 step."""
    ref = gdalwarp(dem, tmp_path / "ref.tif", "-t_srs", "EPSG:4326", "-r", "cubic")
    rdask.process(dem, tmp_path / "exact.tif", "warp crs=EPSG:4326 resampling=cubic et=0", chunk_mb=0.05)
    rdask.process(dem, tmp_path / "fast.tif", "warp crs=EPSG:4326 resampling=cubic", chunk_mb=0.05)
    np.testing.assert_array_equal(pixels(tmp_path / "exact.tif"), pixels(ref))
    fast, want = pixels(tmp_path / "fast.tif"), pixels(ref)
    assert (fast != want).mean() < 1e-3
    assert np.abs(fast.astype("float64") - want)[want != -9999].max(initial=0) <= RELATIVE * 2000


@pytest.mark.parametrize("et", ["0", "0.125"])
def test_tap(dem, tmp_path, et):
    """tap=true aligns the extent on the resolution as gdalwarp -tap does."""
    ref = gdalwarp(dem, tmp_path / "ref.tif", "-t_srs", "EPSG:4326", "-tr", "0.0004", "0.0004", "-tap",
                   "-r", "bilinear")
    out = tmp_path / "tap.tif"
    rdask.process(dem, out, f"warp crs=EPSG:4326 res=0.0004 tap=true resampling=bilinear et={et}")
    with rasterio.open(out) as a, rasterio.open(ref) as b:
        assert a.shape == b.shape and a.transform.almost_equals(b.transform, precision=1e-12)
        got, want = a.read(), b.read()
    if et == "0":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_array_equal(got == -9999, want == -9999)
        assert np.abs(got - want).max() <= RELATIVE * 2000
    bad = subprocess.run([RDASK, "run", "warp crs=EPSG:4326 tap=true", dem, str(tmp_path / "x.tif")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "tap=true needs res=" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("crs", ["EPSG:32660", "EPSG:3832"])
@pytest.mark.parametrize("et", [0.0, 0.125])
def test_geographic_source_across_180_keeps_its_longitudes(data, crs, et):
    """A geographic source from 170 to 190 degrees: gdalwarp centres the
    longitudes on the source (CENTER_LONG=180), so pixels past 180 land
    east of the antimeridian; the grid and the pixels are gdalwarp's."""
    src = write(data / "geo180.tif", smooth(160, 320), "EPSG:4326", Affine(0.0625, 0, 170, 0, -0.0625, 60))
    ref, grid = reference(src, data / f"geo180_{crs[5:]}.tif", "nearest", "-t_srs", crs)
    got = warped_module.target_grid(Grid.of(src), crs=crs)
    assert got.shape == grid.shape and got.transform.almost_equals(grid.transform, precision=1e-6)
    ws = case_warp(src, grid, "nearest", et, None)
    np.testing.assert_array_equal(assemble(ws, 61, 47), ref)
    assert (ref != 0).mean() > 0.5  # both halves of the source land


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "average"])
def test_alpha_band_like_gdalwarp(data, tmp_path, resampling):
    """A last band marked alpha weighs the others (-srcalpha) and becomes the
    output's alpha (-dstalpha), as gdalwarp does by default, in both modes."""
    make, args, _, _ = CASES["alpha band"]
    src = make(data)
    ref, _ = reference(src, tmp_path / "ref.tif", resampling, *args)
    for et in ("0", "0.125"):
        out = tmp_path / f"out{et}.tif"
        rdask.process(src, out, f"warp crs=EPSG:4326 resampling={resampling} et={et}", chunk_mb=0.05)
        with rasterio.open(out) as ds:
            assert ds.colorinterp[-1] == rasterio.enums.ColorInterp.alpha
            np.testing.assert_array_equal(ds.read(), ref)
    assert 0 < (ref[-1] == 0).mean() < 0.9 and (ref[-1] == 255).any()


@pytest.mark.parametrize("et", ["0", "0.125"])
def test_stack_on_a_grid_in_both_modes(tmp_path, et):
    """--grid first with --grid-et: a band in EPSG:4326 warped onto a UTM
    band's grid, exactly (0: gdalwarp -et 0's pixels) or fast."""
    h, w = 200, 150
    red = smooth(h, w) + 10
    first = write(tmp_path / "b04.tif", red, "EPSG:32618", Affine(30, 0, 500000, 0, -30, 4500000))
    nir = write(tmp_path / "b08.tif", smooth(90, 70, seed=1.0) + 20, "EPSG:4326",
                Affine(0.0008, 0, -75.01, 0, -0.0008, 40.66))
    out = tmp_path / "stack.tif"
    proc = subprocess.run([RDASK, "run", "reverse-bands", first, nir, str(out), "--grid", "first",
                           "--resampling", "bilinear", "--grid-et", et, "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    onto = gdalwarp(nir, tmp_path / "onto.tif", "-r", "bilinear", "-t_srs", "EPSG:32618", "-te", "500000",
                    str(4500000 - h * 30), str(500000 + w * 30), "4500000", "-ts", str(w), str(h))
    got, want = pixels(out), pixels(onto)[0]
    np.testing.assert_array_equal(got[1], red)
    assert (want != 0).mean() > 0.5
    if et == "0":
        np.testing.assert_array_equal(got[0], want)
    else:
        np.testing.assert_array_equal(got[0] == 0, want == 0)
        assert np.abs(got[0] - want).max() <= RELATIVE * np.abs(want).max()


def test_bad_error_threshold_is_one_line(dem, tmp_path):
    proc = subprocess.run([RDASK, "run", "warp crs=EPSG:4326 et=-1", dem, str(tmp_path / "o.tif")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "et must be 0 (exact) or a positive number" in lines[0]
    assert os.listdir(tmp_path) == []


def test_dataarray_warp_equals_the_pipelines(dem, tmp_path):
    """The xarray face's default warp gives the pipeline's pixels, and the
    exact mode gdalwarp -et 0's."""
    da = rdask.open_raster(dem, chunk_mb=0.05, tile=128)
    rdask.process(dem, tmp_path / "fast.tif", "warp crs=EPSG:4326 resampling=bilinear")
    np.testing.assert_array_equal(rdask.warp(da, crs="EPSG:4326", resampling="bilinear").values,
                                  pixels(tmp_path / "fast.tif"))
    ref = gdalwarp(dem, tmp_path / "ref.tif", "-t_srs", "EPSG:4326", "-r", "bilinear")
    exact = rdask.warp(da, crs="EPSG:4326", resampling="bilinear", error_threshold=0)
    np.testing.assert_array_equal(exact.values, pixels(ref))
