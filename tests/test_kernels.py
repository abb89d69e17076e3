"""Built-in kernels against independent references, and the kernel registry.

References: numpy for the band kernels, a brute-force loop with ``math.fsum``
and ``scipy.ndimage`` for focal-mean, and GDAL's own ``gdaldem`` for slope and
hillshade.  Arrays stay small so numba's compile time dominates, and that is
cached (``cache=True``) after the first run.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy import ndimage

from rdask.errors import KernelError
from rdask.kernels import Kernel, builtin_kernels, get_kernel, kernel

DTYPES = ["uint8", "uint16", "int16", "float32", "float64"]
BUILTINS = {"reverse-bands", "normalized-difference", "ndvi", "focal-mean", "slope", "hillshade",
            "aspect", "tri", "tpi", "roughness", "calc", "focal", "color-relief"}


def sample(shape, dtype, seed=0):
    """Deterministic values spanning the dtype's range, without nodata."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(50, 40, shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, int(info.max) + 1, shape, dtype=dt)


def run_chunked(k: Kernel, block: np.ndarray, chunk=(7, 5), **kw) -> np.ndarray:
    """Run ``k`` the way the pipeline does: chunk windows grown by the halo,
    clipped at the raster edge, then trimmed back to the chunk."""
    args = k.resolve_args({a: v for a, v in kw.items() if a not in ("nodata", "xres", "yres")})
    halo = k.halo_for(args)
    _, ny, nx = block.shape
    out = np.empty((k.out_bands(block.shape[0], args), ny, nx), dtype=k.out_dtype(block.dtype))
    for y0 in range(0, ny, chunk[0]):
        for x0 in range(0, nx, chunk[1]):
            y1, x1 = min(y0 + chunk[0], ny), min(x0 + chunk[1], nx)
            gy0, gx0 = max(y0 - halo, 0), max(x0 - halo, 0)
            gy1, gx1 = min(y1 + halo, ny), min(x1 + halo, nx)
            grown = np.ascontiguousarray(block[:, gy0:gy1, gx0:gx1])
            res = k(grown, **kw)
            out[:, y0:y1, x0:x1] = res[:, y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]
    return out


def assert_identical(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


# -- reverse-bands ---------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_reverse_bands_reverses_and_keeps_values(dtype):
    k = get_kernel("reverse-bands")
    block = sample((3, 9, 11), dtype)
    if np.dtype(dtype).kind == "f":
        block[0, 1, 2] = np.nan
        block[2, 3, 4] = np.inf
        block[1, 0, 0] = -np.inf
    else:
        info = np.iinfo(dtype)
        block[0, 0, 0], block[2, 0, 1] = info.min, info.max
    assert_identical(k(block), block[::-1].copy())
    # The example's synthetic work, in numpy: add 1.0 n times, subtract n.
    work = block.astype(np.float64)
    for _ in range(3):
        work += 1.0
    with np.errstate(invalid="ignore"):
        ref = (work - 3.0).astype(dtype)[::-1]
    out = k(block, iterations=3)
    assert_identical(out, ref)
    if dtype != "float64":  # float32 and integers survive the round trip exactly
        assert_identical(out, block[::-1].copy())
    assert k.out_nodata(-9999.0) == -9999.0  # pixels move, nodata stays
    assert k.keeps_bands is False  # band 1 of the output is the input's last


def test_reverse_bands_matches_rasterio_cython_example():
    from rasterio._example import compute

    block = sample((3, 37, 41), "uint8", seed=1)
    assert_identical(get_kernel("reverse-bands")(block, iterations=2000), compute(block))


def test_reverse_bands_rejects_negative_iterations():
    with pytest.raises(KernelError, match="iterations must be >= 0"):
        get_kernel("reverse-bands")(sample((2, 3, 3), "uint8"), iterations=-1)


# -- normalized-difference and ndvi ------------------------------------------


def normdiff_reference(block, a, b, nodata):
    A = block[a - 1].astype(np.float64)
    B = block[b - 1].astype(np.float64)
    bad = np.isnan(A) | np.isnan(B) | (A + B == 0)
    if nodata is not None:
        bad |= (A == nodata) | (B == nodata)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = ((A - B) / (A + B)).astype(np.float32)
    ref[bad] = np.nan
    return ref[None]


@pytest.mark.parametrize("dtype", DTYPES)
def test_normalized_difference_matches_numpy(dtype):
    k = get_kernel("normalized-difference")
    block = sample((3, 8, 9), dtype, seed=3)
    nodata = 7 if np.dtype(dtype).kind in "ui" else -9999.0
    block[0, 0, :3] = nodata
    block[2, 1, 1] = nodata
    block[0, 2, 2] = block[2, 2, 2] = 0  # A + B == 0
    if np.dtype(dtype).kind == "f":
        block[2, 3, 3] = np.nan
    if np.dtype(dtype).kind == "i":
        block[0, 4, 4], block[2, 4, 4] = 5, -5  # A + B == 0 with A != 0
    out = k(block, nodata=nodata, a=3, b=1)
    assert out.shape == (1, 8, 9) and out.dtype == np.float32
    assert_identical(out, normdiff_reference(block, 3, 1, nodata))
    assert np.isnan(out[0, 0, :3]).all() and np.isnan(out[0, 1, 1]) and np.isnan(out[0, 2, 2])


def test_normalized_difference_does_not_overflow_small_ints():
    block = np.array([[[200]], [[100]]], dtype=np.uint8)
    out = get_kernel("normalized-difference")(block, a=1, b=2)
    assert out[0, 0, 0] == np.float32(100 / 300)


def test_normalized_difference_nodata_compared_at_the_block_dtype():
    # A float32 raster stores nodata 0.1 as float32(0.1), not 0.1.
    block = np.array([[[0.1, 0.5]], [[0.3, 0.3]]], dtype=np.float32)
    out = get_kernel("normalized-difference")(block, nodata=0.1)
    a, b = np.float64(np.float32(0.5)), np.float64(np.float32(0.3))
    assert np.isnan(out[0, 0, 0]) and out[0, 0, 1] == np.float32((a - b) / (a + b))


def test_ndvi_is_nir_minus_red():
    block = sample((4, 6, 7), "uint16", seed=4)
    ndvi = get_kernel("ndvi")(block, nodata=0.0, red=3, nir=4)
    nd = get_kernel("normalized-difference")(block, nodata=0.0, a=4, b=3)
    assert_identical(ndvi, nd)
    assert_identical(ndvi, normdiff_reference(block, 4, 3, 0.0))


@pytest.mark.parametrize(
    ("name", "args", "bad"),
    [
        ("normalized-difference", {"a": 4}, "band 4 "),
        ("normalized-difference", {"b": 0}, "band 0 "),
        ("ndvi", {"nir": 5}, "band 5 "),
    ],
)
def test_band_numbers_out_of_range(name, args, bad):
    with pytest.raises(KernelError, match=f"{name}.*ValueError: {bad}is out of range 1..3"):
        get_kernel(name)(sample((3, 4, 4), "uint8"), **args)


# -- focal-mean --------------------------------------------------------------


def focal_brute(block, radius, nodata):
    """Mean of the valid values of each clipped window, summed with fsum."""
    nb, ny, nx = block.shape
    out = np.empty(block.shape, dtype=np.float32)
    for b in range(nb):
        for i in range(ny):
            for j in range(nx):
                win = block[
                    b, max(i - radius, 0) : i + radius + 1, max(j - radius, 0) : j + radius + 1
                ]
                vals = win.astype(np.float64).ravel()
                vals = vals[~np.isnan(vals)]
                if nodata is not None:
                    vals = vals[vals != nodata]
                out[b, i, j] = math.fsum(vals) / len(vals) if len(vals) else np.nan
    return out


def focal_scipy(plane, radius, nodata):
    """Clipped-window mean with scipy: direct window sums and valid counts.

    (Not ``uniform_filter``: its running sums lose the small values that
    follow a huge one, the very error focal-mean must avoid.)
    """
    v = plane.astype(np.float64)
    valid = ~np.isnan(v) & (v != nodata)
    ones = np.ones((2 * radius + 1, 2 * radius + 1))
    total = ndimage.correlate(np.where(valid, v, 0.0), ones, mode="constant")
    count = ndimage.correlate(valid.astype(np.float64), ones, mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_mean_matches_brute_force(dtype):
    k = get_kernel("focal-mean")
    block = sample((2, 13, 11), dtype, seed=5)
    nodata = 9 if np.dtype(dtype).kind in "ui" else -9999.0
    block[0, 4:8, 3:6] = nodata  # a hole wider than radius 1
    block[1, 0, :] = nodata  # a whole edge row
    if np.dtype(dtype).kind == "f":
        block[1, 6, 6] = np.nan
    for radius in (0, 1, 3, 20):
        out = k(block, nodata=nodata, radius=radius)
        assert out.dtype == np.float32 and out.shape == block.shape
        np.testing.assert_allclose(out, focal_brute(block, radius, nodata), rtol=1e-6)
    # The centre of the hole has no valid pixel within radius 1.
    assert np.isnan(k(block, nodata=nodata, radius=1)[0, 5:7, 4]).all()


def test_focal_mean_stays_exact_next_to_huge_values():
    # A running sum (add entering, subtract leaving) keeps the rounding error
    # of a passing 1e15 in the sums of the small values after it.
    rng = np.random.default_rng(6)
    block = rng.uniform(0.5, 1.5, (1, 90, 120))
    block[0, ::17, ::23] = 1e15
    block[0, 40:45, 50:60] = -1.0
    out = get_kernel("focal-mean")(block, nodata=-1.0, radius=5)
    np.testing.assert_allclose(out[0], focal_scipy(block[0], 5, -1.0), rtol=1e-6)
    # Windows that never held a huge value are exact to float32 rounding.
    sub = np.s_[1:16, 1:22]
    np.testing.assert_allclose(out[0][sub], focal_brute(block, 5, -1.0)[0][sub], rtol=1e-7)


def test_focal_mean_large_window_matches_scipy():
    block = sample((1, 150, 130), "float32", seed=7)
    block[0, 60:90, 20:70] = -9999.0
    out = get_kernel("focal-mean")(block, nodata=-9999.0, radius=5)
    np.testing.assert_allclose(out[0], focal_scipy(block[0], 5, -9999.0), rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 9), (1, 8, 1), (2, 2, 3)])
def test_focal_mean_tiny_arrays(shape):
    block = sample(shape, "float32", seed=8)
    out = get_kernel("focal-mean")(block, radius=2)
    np.testing.assert_allclose(out, focal_brute(block, 2, None), rtol=1e-6)


def test_focal_mean_all_nodata_is_nan():
    block = np.full((1, 5, 6), -9999.0, dtype=np.float32)
    assert np.isnan(get_kernel("focal-mean")(block, nodata=-9999.0, radius=2)).all()


def test_focal_mean_arguments_from_strings():
    k = get_kernel("focal-mean")
    block = sample((1, 12, 10), "float32", seed=9)
    assert_identical(k(block, radius="2"), k(block, radius=2))
    assert k.halo_for(k.resolve_args({"radius": "2"})) == 2
    with pytest.raises(KernelError, match="radius"):
        k(block, radius="two")
    with pytest.raises(KernelError, match="radius must be >= 0"):
        k(block, radius=-1)


# -- slope and hillshade against gdaldem -------------------------------------

DEM_NODATA = -32768.0


def dem_array(ny=47, nx=53, seed=10):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    dem = 900 + 150 * np.sin(xx / 6.0) * np.cos(yy / 4.5) + 4.0 * xx + rng.normal(0, 6, (ny, nx))
    dem[30:, 40:] += 120  # a cliff
    return dem


def write_dem(path, dem, dtype, nodata, xres, yres):
    ny, nx = dem.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=nx,
        height=ny,
        count=1,
        dtype=dtype,
        transform=Affine(xres, 0, 500000, 0, -yres, 4000000),
        nodata=nodata,
        crs="EPSG:32633",
    ) as dst:
        dst.write(dem.astype(dtype), 1)
    return path


@pytest.fixture(scope="module")
def dem(tmp_path_factory):
    """Float32 DEM, 30 x 20 m pixels, nodata in a block, on edges and corners."""
    a = dem_array().astype(np.float32)
    a[10:14, 20:25] = DEM_NODATA
    a[0, 7] = a[46, 0] = a[20, 52] = a[25, 0] = a[46, 52] = DEM_NODATA
    path = write_dem(tmp_path_factory.mktemp("dem") / "dem.tif", a, "float32", DEM_NODATA, 30, 20)
    return path, a


def gdaldem(mode, src, dst, *opts):
    subprocess.run(["gdaldem", mode, str(src), str(dst), *opts, "-q"], check=True)
    with rasterio.open(dst) as ds:
        return ds.read(), ds.nodata


def compare_with_gdaldem(tmp_path, src, block, mode, opts, kwargs, *, nodata, res, min_valid=0.5):
    """Run ``gdaldem mode src opts`` and the kernel with ``kwargs``; compare."""
    k = get_kernel(mode)
    ref, ref_nodata = gdaldem(mode, src, tmp_path / f"{mode}.tif", *opts)
    got = k(block[None], nodata=nodata, xres=res[0], yres=res[1], **kwargs)
    assert ref_nodata == k.nodata
    assert got.dtype == ref.dtype and got.shape == ref.shape
    ref_nd, got_nd = ref == ref_nodata, got == k.nodata
    assert np.array_equal(ref_nd, got_nd), np.argwhere(ref_nd != got_nd)[:5]
    valid = ~ref_nd
    assert valid.sum() >= min_valid * valid.size
    # The kernels follow gdaldem operation for operation: identical values.
    assert np.array_equal(ref[valid], got[valid]), np.abs(ref[valid] - got[valid]).max()
    return ref, got


@pytest.mark.parametrize(
    ("opts", "kwargs"),
    [
        ([], {}),
        (["-compute_edges"], {"compute_edges": True}),
        (["-s", "2.5"], {"scale": 2.5}),
        (["-s", "0.5", "-compute_edges"], {"scale": "0.5", "compute_edges": "yes"}),
    ],
)
def test_slope_matches_gdaldem(dem, tmp_path, opts, kwargs):
    src, a = dem
    _, got = compare_with_gdaldem(
        tmp_path, src, a, "slope", opts, kwargs, nodata=DEM_NODATA, res=(30.0, 20.0)
    )
    edges = "-compute_edges" in opts
    # Edges and the pixels around nodata are computed only with -compute_edges.
    assert (got[0, 0, 1:6] != -9999).all() == edges
    assert (got[0, 9, 21] != -9999) == edges
    assert (got[0, 10:14, 20:25] == -9999).all()


@pytest.mark.parametrize(
    ("opts", "kwargs"),
    [
        ([], {}),
        (["-compute_edges"], {"compute_edges": True}),
        (["-az", "120", "-alt", "30", "-z", "3"], {"azimuth": 120.0, "altitude": "30", "z": 3}),
        (
            ["-az", "10", "-alt", "70", "-s", "2", "-compute_edges"],
            {"azimuth": "10", "altitude": 70.0, "scale": 2.0, "compute_edges": True},
        ),
    ],
)
def test_hillshade_matches_gdaldem(dem, tmp_path, opts, kwargs):
    src, a = dem
    _, got = compare_with_gdaldem(
        tmp_path, src, a, "hillshade", opts, kwargs, nodata=DEM_NODATA, res=(30.0, 20.0)
    )
    assert int(got.max()) - int(got[got > 0].min()) > 80  # real relief


@pytest.mark.parametrize("mode", ["slope", "hillshade"])
def test_terrain_nan_nodata_square_pixels_matches_gdaldem(tmp_path, mode):
    a = dem_array(seed=11).astype(np.float32)
    a[5:9, 30:36] = np.nan
    a[0, 0] = a[20, 52] = np.nan
    src = write_dem(tmp_path / "nan.tif", a, "float32", float("nan"), 25, 25)
    for opts, kw in (([], {}), (["-compute_edges"], {"compute_edges": True})):
        compare_with_gdaldem(tmp_path, src, a, mode, opts, kw, nodata=float("nan"), res=(25, 25))


@pytest.mark.parametrize("dtype", ["int16", "uint16"])
def test_terrain_integer_dem_matches_gdaldem(tmp_path, dtype):
    a = np.rint(dem_array(seed=12)).astype(dtype)
    a[15:18, 0:3] = 0
    src = write_dem(tmp_path / "int.tif", a, dtype, 0, 10, 12)
    for mode in ("slope", "hillshade"):
        edges = {"compute_edges": True}
        compare_with_gdaldem(
            tmp_path, src, a, mode, ["-compute_edges"], edges, nodata=0.0, res=(10.0, 12.0)
        )


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (2, 2), (2, 6), (3, 3)])
def test_terrain_tiny_rasters_match_gdaldem(tmp_path, shape):
    a = dem_array(*shape, seed=13).astype(np.float32)
    src = write_dem(tmp_path / "tiny.tif", a, "float32", DEM_NODATA, 30, 20)
    for mode in ("slope", "hillshade"):
        for opts, kw in (([], {}), (["-compute_edges"], {"compute_edges": True})):
            _, got = compare_with_gdaldem(
                tmp_path, src, a, mode, opts, kw, nodata=DEM_NODATA, res=(30, 20), min_valid=0
            )
            # A raster less than 2 pixels high or wide is all nodata.
            all_nodata = min(shape) < 2 or (not opts and min(shape) < 3)
            assert (got == get_kernel(mode).nodata).all() == all_nodata


def test_terrain_treats_nan_as_nodata_without_a_nodata_value():
    # gdaldem propagates NaN when the raster has no nodata; rdask masks it.
    a = dem_array(8, 9, seed=14).astype(np.float32)
    a[4, 4] = np.nan
    slope = get_kernel("slope")(a[None], xres=30.0, yres=30.0, compute_edges=True)
    shade = get_kernel("hillshade")(a[None], xres=30.0, yres=30.0)
    assert slope[0, 4, 4] == -9999 and np.isfinite(slope).all()
    assert (slope[0, 3:6, 3:6] != -9999).sum() == 8  # neighbours use the centre value
    assert (shade[0, 3:6, 3:6] == 0).all()


def test_terrain_multiband_is_per_band():
    a = np.stack([dem_array(10, 12, seed=s) for s in (15, 16)]).astype(np.float32)
    both = get_kernel("slope")(a, xres=5.0, yres=5.0)
    second = get_kernel("slope")(a[1:], xres=5.0, yres=5.0)
    assert_identical(both[1:], second)


@pytest.mark.parametrize("dtype", DTYPES)
def test_terrain_accepts_every_dtype(dtype):
    a = np.clip(dem_array(9, 10, seed=17) / 8, 0, 250).astype(dtype)
    for name in ("slope", "hillshade"):
        k = get_kernel(name)
        got = k(a[None], xres=2.0, yres=3.0, compute_edges=True)
        # Like gdaldem, every dtype is read as float32.
        assert_identical(got, k(a[None].astype(np.float32), xres=2.0, yres=3.0, compute_edges=True))
        assert (got != k.nodata).all()


# -- the seam property: chunked == whole -------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("reverse-bands", {"iterations": 2}),
        ("ndvi", {"red": 1, "nir": 2}),
        ("focal-mean", {"radius": 1}),
        ("focal-mean", {"radius": 3}),
        ("focal-mean", {"radius": 6}),
        ("slope", {}),
        ("slope", {"compute_edges": True}),
        ("hillshade", {}),
        ("hillshade", {"compute_edges": True, "azimuth": 200.0}),
    ],
)
def test_chunked_equals_whole(name, kwargs):
    k = get_kernel(name)
    block = dem_array(41, 37, seed=18).astype(np.float32)
    block = np.stack([block, block[::-1] * 0.5])
    block[0, 15:19, 10:13] = -9999.0
    block[1, 0, 5] = np.nan
    kw = dict(kwargs, nodata=-9999.0, xres=30.0, yres=20.0)
    whole = k(block, **kw)
    for chunk in ((7, 5), (1, 1), (41, 3)):
        assert_identical(run_chunked(k, block, chunk, **kw), whole)


# -- registry and declarations -----------------------------------------------


def test_builtin_kernels_registry():
    kernels = builtin_kernels()
    assert set(kernels) == BUILTINS
    assert builtin_kernels() is kernels  # cached
    with pytest.raises(TypeError):
        kernels["mine"] = kernels["slope"]  # shared, so read-only
    for name, k in kernels.items():
        assert isinstance(k, Kernel) and k.name == name and get_kernel(name) is k
        summary = k.doc.splitlines()[0]
        assert 20 < len(summary) <= 90 and summary.endswith("."), summary
        # numba nogil, or a dispatcher picking a numba nogil function per block
        assert k.dispatches or k.func.targetoptions["nogil"]


def test_builtin_declarations():
    k = builtin_kernels()
    assert (k["slope"].dtype, k["slope"].nodata, k["slope"].halo) == (np.float32, -9999.0, 1)
    assert (k["hillshade"].dtype, k["hillshade"].nodata, k["hillshade"].halo) == (np.uint8, 0.0, 1)
    assert k["slope"].context == ("nodata", "xres", "yres")
    fm = k["focal-mean"]
    assert fm.halo_for(fm.resolve_args({"radius": 4})) == 4 and math.isnan(fm.nodata)
    assert k["ndvi"].out_bands(4, {}) == 1 and not k["ndvi"].keeps_bands
    assert k["reverse-bands"].out_dtype(np.dtype("int16")) == np.int16


def test_unknown_kernel_lists_builtins():
    with pytest.raises(KernelError) as err:
        get_kernel("slop")
    msg = str(err.value)
    assert "'slop'" in msg and "\n" not in msg
    assert all(name in msg for name in BUILTINS)


USER_KERNELS = '''
import numba
import numpy as np
from rdask.kernels import kernel

@numba.njit(nogil=True, cache=True)
def add_value(block, nodata, value=1.0):
    """Add a value."""
    return (block + value).astype(np.float32)

@kernel(dtype="float64", nodata=None)
@numba.njit(nogil=True, cache=True)
def doubled(block):
    """Double."""
    return block * 2.0

def plain(block):
    return block

NOT_A_FUNCTION = 3
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "user_kernels.py"
    path.write_text(textwrap.dedent(USER_KERNELS))
    return path


def test_get_kernel_from_file(user_file):
    k = get_kernel(f"{user_file}:add_value")
    assert k.name == "add-value" and k.params == ("value",) and k.context == ("nodata",)
    block = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    assert_identical(k(block, value="2.5"), block + np.float32(2.5))
    assert get_kernel(f"{user_file}:add_value").func is k.func  # loaded once
    doubled = get_kernel(f"{user_file}:doubled")
    assert doubled.dtype == np.float64 and doubled.nodata is None


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ("{file}:missing", "has no attribute 'missing'"),
        ("{file}:NOT_A_FUNCTION", "not a function"),
        ("{file}:plain", "plain Python function"),
        ("{dir}/nope.py:f", "no such file"),
        ("no_such_package_xyz.mod:f", "cannot import no_such_package_xyz.mod"),
        ("rdask.kernels.focal:nothing_here", "has no attribute 'nothing_here'"),
    ],
)
def test_get_kernel_errors(user_file, ref, match):
    ref = ref.format(file=user_file, dir=user_file.parent)
    with pytest.raises(KernelError, match=match) as err:
        get_kernel(ref)
    assert "\n" not in str(err.value)
    if "plain" not in ref:
        assert repr(ref) in str(err.value)  # the message names the kernel


def test_get_kernel_broken_file(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def f(:\n")
    with pytest.raises(KernelError, match="error loading .*SyntaxError"):
        get_kernel(f"{path}:f")


def test_get_kernel_from_module(tmp_path, monkeypatch):
    pkg = tmp_path / "mykernels_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "ops.py").write_text(textwrap.dedent(USER_KERNELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    k = get_kernel("mykernels_pkg.ops:add_value")
    assert k.name == "add-value"
    assert get_kernel("rdask.kernels.focal:focal_mean") is builtin_kernels()["focal-mean"]


def test_kernel_refuses_functions_holding_the_gil():
    def plain(block):
        return block

    with pytest.raises(KernelError, match="plain Python function"):
        kernel(plain)

    @numba.njit
    def with_gil(block):
        return block

    with pytest.raises(KernelError, match="without nogil"):
        kernel(with_gil)
    with pytest.warns(RuntimeWarning, match="holds the GIL"):
        assert kernel(with_gil, allow_gil=True).name == "with-gil"


def test_kernel_modules_import_no_xarray_dask_rasterio():
    code = (
        "import sys, rdask.kernels as k; k.builtin_kernels();"
        "bad = [m for m in ('xarray', 'dask', 'rasterio') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
