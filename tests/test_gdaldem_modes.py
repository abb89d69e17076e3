"""Every gdaldem mode against Debian's GDAL 3.6 ``gdaldem`` on PATH.

Each kernel runs on the same small DEM as ``gdaldem`` (nodata inside, on the
edges and corners, a flat plateau, float and integer dtypes, square and
non-square pixels); nodata positions and values must be identical (the
kernels follow gdaldem operation for operation, so the measured difference
is 0 and that is what is asserted).  Then the whole pipeline: a DEM cut into
1 MB chunks with nodata across the seams, run with two threads through the
API and the CLI, and written as GeoTIFF, COG and Zarr, equals ``gdaldem``
on the whole file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine

import rdask
from rdask.kernels import builtin_kernels, get_kernel

GDALDEM = shutil.which("gdaldem")
pytestmark = pytest.mark.skipif(GDALDEM is None, reason="needs GDAL's gdaldem on PATH")
RDASK = os.path.join(os.path.dirname(sys.executable), "rdask")
NODATA = -32768.0


def dem_array(ny=47, nx=53, seed=10):
    """Hills, noise, a cliff and a flat plateau."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    dem = 900 + 150 * np.sin(xx / 6.0) * np.cos(yy / 4.5) + 4.0 * xx + rng.normal(0, 6, (ny, nx))
    dem[ny * 2 // 3 :, nx * 3 // 4 :] += 120  # a cliff
    dem[2:9, 30:40] = 1000.0  # flat: aspect's "no value", hillshade's overhead light
    return dem


def with_nodata(dem, nodata=NODATA):
    a = dem.copy()
    ny, nx = a.shape
    a[10:14, 20:25] = nodata
    a[0, 7] = a[ny - 1, 0] = a[20, nx - 1] = a[25, 0] = a[ny - 1, nx - 1] = nodata
    return a


def write_dem(path, dem, dtype, nodata, xres, yres, block=None):
    ny, nx = dem.shape
    extra = {} if block is None else {"tiled": True, "blockxsize": block, "blockysize": block}
    with rasterio.open(
        path, "w", driver="GTiff", width=nx, height=ny, count=1, dtype=dtype, nodata=nodata,
        transform=Affine(xres, 0, 500000, 0, -yres, 4000000), crs="EPSG:32633", **extra,
    ) as dst:
        dst.write(dem.astype(dtype), 1)
    return path


def gdaldem(tmp_path, mode, src, *opts):
    dst = tmp_path / f"gdaldem-{mode}.tif"
    subprocess.run([GDALDEM, mode, str(src), str(dst), *map(str, opts), "-q"], check=True)
    with rasterio.open(dst) as ds:
        return ds.read(), ds.nodata


# (gdaldem mode, its options, the kernel, its arguments)
CASES = [
    ("slope", [], "slope", {}),
    ("slope", ["-p"], "slope", {"percent": True}),
    ("slope", ["-alg", "ZevenbergenThorne"], "slope", {"alg": "zevenbergen-thorne"}),
    ("slope", ["-p", "-alg", "ZevenbergenThorne", "-s", "3"], "slope",
     {"percent": "true", "alg": "zevenbergen-thorne", "scale": 3}),
    ("aspect", [], "aspect", {}),
    ("aspect", ["-trigonometric"], "aspect", {"trigonometric": True}),
    ("aspect", ["-zero_for_flat"], "aspect", {"zero_for_flat": True}),
    ("aspect", ["-alg", "ZevenbergenThorne", "-trigonometric", "-zero_for_flat"], "aspect",
     {"alg": "zevenbergen-thorne", "trigonometric": True, "zero_for_flat": True}),
    ("hillshade", [], "hillshade", {}),
    ("hillshade", ["-az", "120", "-alt", "30", "-z", "3"], "hillshade",
     {"azimuth": 120, "altitude": 30, "z": 3}),
    ("hillshade", ["-alg", "ZevenbergenThorne", "-s", "2"], "hillshade",
     {"alg": "zevenbergen-thorne", "scale": 2}),
    ("hillshade", ["-multidirectional", "-z", "2"], "hillshade",
     {"multidirectional": True, "z": 2}),
    ("hillshade", ["-multidirectional", "-alg", "ZevenbergenThorne"], "hillshade",
     {"multidirectional": True, "alg": "zevenbergen-thorne"}),
    ("hillshade", ["-combined", "-az", "200"], "hillshade", {"combined": True, "azimuth": 200}),
    ("hillshade", ["-combined", "-alg", "ZevenbergenThorne"], "hillshade",
     {"combined": True, "alg": "zevenbergen-thorne"}),
    ("hillshade", ["-igor", "-z", "4"], "hillshade", {"igor": True, "z": 4}),
    ("hillshade", ["-igor", "-alg", "ZevenbergenThorne", "-az", "45"], "hillshade",
     {"igor": True, "alg": "zevenbergen-thorne", "azimuth": 45}),
    ("TRI", [], "tri", {}),
    ("TRI", ["-alg", "Wilson"], "tri", {"alg": "wilson"}),
    ("TRI", ["-alg", "Riley"], "tri", {"alg": "riley"}),
    ("TPI", [], "tpi", {}),
    ("roughness", [], "roughness", {}),
]
IDS = [f"{c[2]}{''.join(c[1])}".replace("-", " ").replace(" ", "-") for c in CASES]

# (dtype, nodata, pixel size): float with a nodata, float with NaN nodata and
# square pixels (gdaldem's other hillshade formula), 16-bit integers (its
# integer path), bytes, and a float64 DEM without nodata.
INPUTS = [
    ("float32", NODATA, (30.0, 20.0)),
    ("float32", float("nan"), (25.0, 25.0)),
    ("int16", NODATA, (10.0, 12.0)),
    ("uint16", 0.0, (10.0, 10.0)),
    ("uint8", 255.0, (5.0, 5.0)),
    ("float64", None, (2.0, 3.0)),
]


def dem_for(dtype, nodata):
    dem = dem_array()
    if np.dtype(dtype).kind in "iu":
        scale = 0.2 if dtype == "uint8" else 1.0
        dem = np.rint((dem - 700) * scale if dtype == "uint8" else dem)
        dem[2:9, 30:40] = dem[2, 30]
    if nodata is None:
        return dem
    return with_nodata(dem, np.nan if np.isnan(nodata) else nodata)


def compare(tmp_path, mode, opts, name, kwargs, dtype, nodata, res):
    """gdaldem and the kernel on one DEM: the largest difference and the
    number of valid pixels (nodata positions must be identical)."""
    a = dem_for(dtype, nodata).astype(dtype)
    src = write_dem(tmp_path / "dem.tif", a, dtype, nodata, *res)
    ref, ref_nodata = gdaldem(tmp_path, mode, src, *opts)
    k = get_kernel(name)
    got = k(a[None], nodata=nodata, xres=res[0], yres=res[1], **kwargs)
    assert ref_nodata == k.out_nodata(nodata, kwargs)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if ref_nodata is not None:
        ref_nd, got_nd = ref == ref_nodata, got == ref_nodata
        assert np.array_equal(ref_nd, got_nd), np.argwhere(ref_nd != got_nd)[:5]
    valid = ref != ref_nodata if ref_nodata is not None else np.ones(ref.shape, bool)
    diff = np.abs(ref[valid].astype(np.float64) - got[valid].astype(np.float64))
    return diff.max(initial=0.0), int(valid.sum())


@pytest.mark.parametrize(("mode", "opts", "name", "kwargs"), CASES, ids=IDS)
@pytest.mark.parametrize("edges", [False, True], ids=["", "edges"])
def test_equals_gdaldem(tmp_path, mode, opts, name, kwargs, edges):
    opts = [*opts, "-compute_edges"] if edges else opts
    kwargs = dict(kwargs, compute_edges=True) if edges else kwargs
    for dtype, nodata, res in INPUTS:
        worst, valid = compare(tmp_path, mode, opts, name, kwargs, dtype, nodata, res)
        assert valid > 1000, (dtype, valid)  # real values compared, not only nodata
        assert worst == 0, (dtype, nodata, res, worst)


def test_flat_areas_and_nodata_positions(tmp_path):
    """The plateau: aspect nodata (or 0), slope 0, hillshade straight-down light."""
    a = with_nodata(dem_array()).astype(np.float32)
    asp = get_kernel("aspect")(a[None], nodata=NODATA)
    zero = get_kernel("aspect")(a[None], nodata=NODATA, zero_for_flat=True)
    slope = get_kernel("slope")(a[None], nodata=NODATA, xres=30.0, yres=20.0)
    assert (asp[0, 3:8, 31:39] == -9999).all() and (zero[0, 3:8, 31:39] == 0).all()
    assert (slope[0, 3:8, 31:39] == 0).all()
    assert (zero[0, 10:14, 20:25] == 0).all()  # no output nodata: gdaldem writes 0
    assert get_kernel("aspect").out_nodata(NODATA, {"zero_for_flat": True}) is None


@pytest.mark.parametrize("shape", [(1, 6), (6, 1), (2, 2), (3, 3)])
def test_tiny_rasters(tmp_path, shape):
    a = dem_array(*shape).astype(np.float32) if min(shape) > 2 else np.arange(
        shape[0] * shape[1], dtype=np.float32).reshape(shape) * 7.5
    src = write_dem(tmp_path / "tiny.tif", a, "float32", NODATA, 30, 20)
    for mode, opts, name, kwargs in [CASES[0], CASES[4], CASES[11], CASES[17], CASES[20]]:
        for edges in ([], ["-compute_edges"]):
            ref, _ = gdaldem(tmp_path, mode, src, *opts, *edges)
            got = get_kernel(name)(a[None], nodata=NODATA, xres=30.0, yres=20.0,
                                   compute_edges=bool(edges), **kwargs)
            np.testing.assert_array_equal(got, ref)


def test_hillshade_refuses_two_shadings():
    with pytest.raises(ValueError, match="only one of multidirectional, combined or igor"):
        get_kernel("hillshade").resolve_args({"igor": True, "combined": "yes"})
    with pytest.raises(ValueError, match=r"alg='wilson' is not one of horn\|zevenbergen-thorne"):
        get_kernel("slope").resolve_args({"alg": "wilson"})
    with pytest.raises(ValueError, match="not one of riley|wilson"):
        get_kernel("tri").resolve_args({"alg": "horn"})


@pytest.mark.parametrize("name", ["aspect", "tri", "tpi", "roughness", "slope", "hillshade"])
def test_every_real_dtype_and_refuses_complex(name):
    k = get_kernel(name)
    base = np.rint(np.clip(dem_array(9, 10) / 8, 0, 120))  # values every dtype holds
    ref = k(base.astype(np.float32)[None], nodata=float("nan"), xres=2.0, yres=3.0)
    assert (ref != k.nodata).any()
    for dtype in ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
                  "int64", "float32", "float64"]:
        a = (base > 60) if dtype == "bool" else base.astype(dtype)
        got = k(a[None], nodata=float("nan"), xres=2.0, yres=3.0)
        # Every dtype is read as float32, like gdaldem does.
        want = k(a.astype(np.float32)[None], nodata=float("nan"), xres=2.0, yres=3.0)
        np.testing.assert_array_equal(got, want if dtype == "bool" else ref)
    with pytest.raises(ValueError, match=f"kernel '{name}' cannot take complex64 input"):
        k.check_input(np.complex64, 1)
    with pytest.raises(ValueError, match=f"kernel '{name}' cannot take float16 input"):
        k.check_input(np.float16, 1)


def test_listed_with_their_arguments():
    k = builtin_kernels()
    assert {"aspect", "tri", "tpi", "roughness"} <= set(k)
    assert dict(k["hillshade"].defaults)["multidirectional"] is False
    assert dict(k["tri"].choices)["alg"] == ("riley", "wilson")
    assert all(k[n].halo == 1 for n in ("aspect", "tri", "tpi", "roughness"))
    out = subprocess.run([RDASK, "kernels"], capture_output=True, text=True, check=True).stdout
    for needle in ("aspect", "trigonometric=False", "alg=riley|wilson", "tpi", "roughness",
                   "percent=False", "igor=False"):
        assert needle in out, needle


# -- the whole pipeline ------------------------------------------------------


@pytest.fixture(scope="module")
def big_dem(tmp_path_factory):
    """A 700 x 600 float32 DEM in 256-pixel tiles (1 MB chunks: 512 x 512),
    with nodata across the chunk seams and on the raster edges."""
    tmp = tmp_path_factory.mktemp("bigdem")
    dem = dem_array(700, 600, seed=3)
    dem[505:520, 100:140] = NODATA  # across the row seam at 512
    dem[200:230, 508:516] = NODATA  # across the column seam at 512
    dem[511:513, 511:513] = NODATA  # on the corner of four chunks
    dem[0, 50:60] = dem[699, 300:320] = dem[100:110, 0] = NODATA
    dem[600:650, 200:260] = 950.0  # flat
    return write_dem(tmp / "dem.tif", dem.astype(np.float32), "float32", NODATA, 30, 30,
                     block=256)


PIPELINE = [
    ("aspect", ["-compute_edges"], "aspect", {"compute_edges": True}),
    ("TRI", [], "tri", {}),
    ("TPI", ["-compute_edges"], "tpi", {"compute_edges": True}),
    ("roughness", [], "roughness", {}),
    ("hillshade", ["-multidirectional"], "hillshade", {"multidirectional": True}),
    ("slope", ["-p", "-alg", "ZevenbergenThorne", "-compute_edges"], "slope",
     {"percent": True, "alg": "zevenbergen-thorne", "compute_edges": True}),
]


@pytest.mark.parametrize(("mode", "opts", "name", "kwargs"), PIPELINE,
                         ids=[c[2] for c in PIPELINE])
def test_pipeline_chunks_equal_gdaldem(tmp_path, big_dem, mode, opts, name, kwargs):
    ref, ref_nodata = gdaldem(tmp_path, mode, big_dem, *opts)
    out = tmp_path / f"{name}.tif"
    rdask.process(big_dem, out, name, kernel_args=kwargs, workers=2, chunk_mb=1)
    with rasterio.open(out) as ds:
        assert ds.nodata == ref_nodata
        np.testing.assert_array_equal(ds.read(), ref)


@pytest.mark.parametrize("driver", ["GTiff", "COG", "Zarr"])
def test_cli_outputs_equal_gdaldem(tmp_path, big_dem, driver):
    ref, _ = gdaldem(tmp_path, "aspect", big_dem, "-trigonometric")
    out = tmp_path / ("aspect.zarr" if driver == "Zarr" else "aspect.tif")
    proc = subprocess.run(
        [RDASK, "run", "aspect trigonometric=true", big_dem, out, "-j", "2", "--chunk-mb", "1",
         "--driver", driver], capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    if driver == "Zarr":
        got = rdask.open_raster(out).values
    else:
        with rasterio.open(out) as ds:
            got = ds.read()
    np.testing.assert_array_equal(got, ref)


# -- color-relief --------------------------------------------------------------

COLORS = os.path.join(os.path.dirname(__file__), "data", "colors")
MATCH = [([], {}), (["-alpha"], {"alpha": True}),
         (["-exact_color_entry", "-alpha"], {"match": "exact", "alpha": True}),
         (["-nearest_color_entry"], {"match": "nearest"})]


@pytest.mark.parametrize("palette", ["relief.txt", "percent.txt"])
@pytest.mark.parametrize(("opts", "kwargs"), MATCH, ids=["interpolate", "alpha", "exact",
                                                         "nearest"])
def test_color_relief_equals_gdaldem(tmp_path, palette, opts, kwargs):
    """Elevations, named colours, nv, alpha, repeated entries, percentages:
    colours identical for float, integer and nodata-free inputs."""
    for dtype, nodata in [("float32", NODATA), ("int16", NODATA), ("uint16", 0.0),
                          ("float64", None)]:
        a = dem_array() if nodata is None else with_nodata(dem_array(), nodata)
        a = a.astype(dtype)
        src = write_dem(tmp_path / "dem.tif", a, dtype, nodata, 30, 30)
        dst = tmp_path / "relief.tif"
        subprocess.run([GDALDEM, "color-relief", str(src), os.path.join(COLORS, palette),
                        str(dst), *opts, "-q"], check=True, capture_output=True)
        with rasterio.open(dst) as ds:
            ref = ds.read()
        valid = a if nodata is None else a[a != nodata]
        extra = {"min": float(valid.min()), "max": float(valid.max())} if "percent" in palette else {}
        k = get_kernel("color-relief")
        got = k(a[None], nodata=float("nan") if nodata is None else nodata,
                colors=os.path.join(COLORS, palette), **kwargs, **extra)
        assert got.dtype == np.uint8 and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)


def test_color_relief_refusals(tmp_path):
    k = get_kernel("color-relief")
    with pytest.raises(ValueError, match="has percentages: give the band's min= and max="):
        k.resolve_args({"colors": os.path.join(COLORS, "percent.txt")})
    with pytest.raises(ValueError, match="cannot read colour file"):
        k.resolve_args({"colors": str(tmp_path / "missing.txt")})
    bad = tmp_path / "bad.txt"
    bad.write_text("100 chartreuse\n")
    with pytest.raises(ValueError, match="line 1: unknown color 'chartreuse'"):
        k.resolve_args({"colors": str(bad)})
    bad.write_text("# only comments\n")
    with pytest.raises(ValueError, match="no color association found"):
        k.resolve_args({"colors": str(bad)})
    with pytest.raises(ValueError, match="match='closest' is not one of"):
        k.resolve_args({"colors": os.path.join(COLORS, "relief.txt"), "match": "closest"})
    assert k.out_bands(1, {"colors": os.path.join(COLORS, "relief.txt"), "alpha": "yes"}) == 4


def test_color_relief_pipeline_cog(tmp_path, big_dem):
    palette = os.path.join(COLORS, "relief.txt")
    dst = tmp_path / "gdaldem.tif"
    subprocess.run([GDALDEM, "color-relief", big_dem, palette, str(dst), "-alpha", "-q"],
                   check=True)
    with rasterio.open(dst) as ds:
        ref = ds.read()
    out = tmp_path / "relief.tif"
    rdask.process(big_dem, out, f"color-relief colors='{palette}' alpha=true", workers=2,
                  chunk_mb=1, driver="COG")
    with rasterio.open(out) as ds:
        assert ds.count == 4 and ds.dtypes[0] == "uint8" and ds.nodata is None
        np.testing.assert_array_equal(ds.read(), ref)


def test_after_a_warp_equals_gdalwarp_then_gdaldem(tmp_path, big_dem):
    """A chain that warps first (gdalwarp -et 0 is rdask's exact warp, bit for bit)."""
    warped = tmp_path / "warped.tif"
    subprocess.run(["gdalwarp", "-q", "-et", "0", "-t_srs", "EPSG:3857", "-tr", "40", "40",
                    "-r", "bilinear", big_dem, str(warped)], check=True)
    ref, _ = gdaldem(tmp_path, "TRI", warped, "-alg", "Wilson", "-compute_edges")
    out = tmp_path / "tri.tif"
    rdask.process(big_dem, out, "warp crs=EPSG:3857 res=40 resampling=bilinear et=0 | tri alg=wilson "
                  "compute_edges=true", workers=2, chunk_mb=1)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), ref)


def test_on_a_stack_each_band_equals_gdaldem(tmp_path):
    a = with_nodata(dem_array(300, 280, seed=1)).astype(np.float32)
    b = with_nodata(dem_array(300, 280, seed=2)).astype(np.float32)
    paths = [write_dem(tmp_path / f"{n}.tif", x, "float32", NODATA, 20, 20, block=128)
             for n, x in (("a", a), ("b", b))]
    out = tmp_path / "tpi.tif"
    rdask.process(paths, out, "tpi", workers=2, chunk_mb=0.1)
    with rasterio.open(out) as ds:
        got = ds.read()
    for band, path in enumerate(paths):
        ref, _ = gdaldem(tmp_path, "TPI", path)
        np.testing.assert_array_equal(got[band], ref[0])
