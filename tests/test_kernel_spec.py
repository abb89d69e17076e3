"""The kernel spec: undeclared numba kernels, band provenance, input dtypes.

Real numba kernels on real dtypes.  References are numpy in float64; the
kernels defined here are module-level with ``cache=True`` so reruns skip
their compile.
"""

from __future__ import annotations

import math
import pickle
import warnings

import numba
import numpy as np
import pytest

from rdask.errors import KernelError, KernelOutputError
from rdask.kernels import (
    Kernel,
    as_kernel,
    builtin_kernels,
    compose_band_sources,
    get_kernel,
    kernel,
)

INT_DTYPES = ["int8", "int64", "uint64"]
COMPLEX_DTYPES = ["complex64", "complex128"]
ALL_DTYPES = [
    "bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64",
    "float32", "float64", "complex64", "complex128",
]  # fmt: skip
REAL_BUILTINS = ["normalized-difference", "ndvi", "focal-mean", "slope", "hillshade"]


def full_range(shape, dtype, seed=0):
    """Values over the whole range of ``dtype``, its extremes included."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        out = rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
        out.flat[:2] = info.min, info.max
        return out
    if dt.kind == "c":
        return (rng.normal(0, 1e3, shape) + 1j * rng.normal(0, 1e3, shape)).astype(dt)
    return rng.normal(0, 1e3, shape).astype(dt)


def assert_one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 250, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


# -- kernels under test --------------------------------------------------------


@numba.njit(nogil=True, cache=True)
def band_ratio(block, nodata, scale=1.0):
    """(b0 - b1) / (b0 + b1) * scale as float32; NaN on nodata."""
    out = np.empty((1, block.shape[1], block.shape[2]), np.float32)
    for i in range(block.shape[1]):
        for j in range(block.shape[2]):
            a, b = np.float64(block[0, i, j]), np.float64(block[1, i, j])
            if a == nodata or b == nodata:
                out[0, i, j] = np.nan
            else:
                out[0, i, j] = scale * (a - b) / (a + b)
    return out


@numba.njit(nogil=True, cache=True)
def band_steps(block):
    """Differences of neighbouring bands: bands - 1 output bands, input dtype."""
    return block[1:] - block[:-1]


@numba.njit(nogil=True, cache=True)
def scaled_by_pixel(block, xres, yres, offset=0):
    """block * xres / yres + offset: float64 for integer input (numba's promotion)."""
    return block * xres / yres + offset


@numba.njit(nogil=True, cache=True)
def root(block):
    """math.sqrt of each value: real input only."""
    out = np.empty(block.shape, np.float64)
    for b in range(block.shape[0]):
        for i in range(block.shape[1]):
            for j in range(block.shape[2]):
                out[b, i, j] = math.sqrt(block[b, i, j])
    return out


@numba.njit(nogil=True, cache=True)
def third_band(block):
    """Band 3; raises on fewer bands."""
    if block.shape[0] < 3:
        raise ValueError("needs 3 bands")
    return block[2:3].copy()


@numba.njit(nogil=True, cache=True)
def flat(block):
    """A 2-D result: not a kernel's shape."""
    return block[0].copy()


@numba.njit(cache=True)
def with_gil(block):
    return block


def plain(block):
    return block


# -- as_kernel ---------------------------------------------------------------


def test_as_kernel_passes_kernels_and_resolves_names(tmp_path):
    slope = builtin_kernels()["slope"]
    assert as_kernel(slope) is slope
    assert as_kernel("slope") is slope
    assert as_kernel("rdask.kernels.focal:focal_mean") is builtin_kernels()["focal-mean"]
    path = tmp_path / "mine.py"
    path.write_text(
        "import numba\n@numba.njit(nogil=True)\ndef add_one(block, value=1):\n"
        "    return block + value\n"
    )
    # A reference resolves as get_kernel does: declared defaults, not probed.
    k = as_kernel(f"{path}:add_one")
    assert k == get_kernel(f"{path}:add_one") and not k.probed
    assert k.out_dtype(np.dtype("int16")) == np.int16 and k.keeps_bands
    with pytest.raises(KernelError) as err:
        as_kernel("no-such-kernel")
    assert_one_line(err, "'no-such-kernel'")


def test_plain_njit_runs_like_the_function_itself():
    k = as_kernel(band_ratio)
    assert isinstance(k, Kernel) and k.probed and k.name == "band-ratio"
    assert (k.halo_for(k.resolve_args({})), k.context, k.params) == (0, ("nodata",), ("scale",))
    block = full_range((2, 6, 7), "uint16", seed=1)
    block[0, 2, 3] = 9
    got = k(block, nodata=9, scale="2.5")
    want = band_ratio(block, 9.0, 2.5)
    assert got.dtype == np.float32 and got.shape == (1, 6, 7)
    assert np.array_equal(got, want, equal_nan=True) and np.isnan(got[0, 2, 3])
    assert k.out_nodata(9.0) == 9.0  # like map_blocks: the input's nodata


def test_plain_njit_fills_pixel_size():
    k = as_kernel(scaled_by_pixel)
    assert k.context == ("xres", "yres")
    block = full_range((1, 3, 4), "int16", seed=2)
    got = k(block, xres=30.0, yres=20.0, offset=2)
    assert np.array_equal(got, scaled_by_pixel(block, 30.0, 20.0, 2))
    assert np.array_equal(got, block * 1.5 + 2)


@pytest.mark.parametrize(
    ("func", "dtype", "bands", "want"),
    [
        (band_ratio, "uint8", 2, ("float32", 1)),
        (band_ratio, "float64", 5, ("float32", 1)),
        (band_steps, "int16", 4, ("int16", 3)),
        (band_steps, "float32", 2, ("float32", 1)),
        (scaled_by_pixel, "uint8", 3, ("float64", 3)),
        (scaled_by_pixel, "float32", 1, ("float64", 1)),
    ],
)
def test_probed_output_depends_on_the_input(func, dtype, bands, want):
    k = as_kernel(func)
    args = k.resolve_args({})
    assert k.out_dtype(dtype, bands, args) == np.dtype(want[0])
    assert k.out_bands(bands, args, dtype) == want[1]
    out = k(full_range((bands, 5, 4), dtype, seed=3), xres=1.0, yres=1.0)
    assert (out.dtype, out.shape[0]) == (np.dtype(want[0]), want[1])


def test_probe_is_cached_per_dtype_bands_and_args():
    calls = []

    def counted(block, factor=2):
        calls.append(block.shape)
        return np.repeat(block, factor, axis=0).astype(np.float32)

    with pytest.warns(RuntimeWarning, match="holds the GIL"):
        k = as_kernel(counted, allow_gil=True)
    for _ in range(3):
        assert k.out_dtype("uint8", 3, {}) == np.float32
        assert k.out_bands(3, {}, "uint8") == 6
    assert calls == [(3, 2, 2)]
    assert k.out_bands(3, {"factor": 3}, "uint8") == 9  # arguments can change the count
    assert k.out_bands(2, {}, "uint8") == 4
    assert k.out_dtype("int16", 3) == np.float32
    assert len(calls) == 4
    # The probes travel with the kernel, so workers need not run them again.
    copy = pickle.loads(pickle.dumps(as_kernel(band_ratio)))
    assert copy.out_bands(2, {}, "uint8") == 1
    k2 = as_kernel(band_ratio)
    k2.out_dtype("uint8", 2)
    assert pickle.loads(pickle.dumps(k2)).memo == k2.memo != {}


def test_probed_kernel_needs_dtype_and_bands():
    k = as_kernel(band_steps)
    with pytest.raises(KernelError) as err:
        k.out_dtype("uint8")
    assert_one_line(err, "'band-steps'", "out_dtype(in_dtype, in_bands, args)")
    with pytest.raises(KernelError) as err:
        k.out_bands(3, {})
    assert_one_line(err, "'band-steps'", "out_bands(in_bands, args, in_dtype)")


def test_probe_failures_are_one_line():
    with pytest.raises(KernelError) as err:
        as_kernel(third_band).check_input("uint8", 2)
    assert_one_line(err, "'third-band'", "ValueError: needs 3 bands", "rdask.kernel(dtype=")
    assert as_kernel(third_band).out_bands(4, {}, "uint8") == 1
    with pytest.raises(KernelError) as err:
        as_kernel(flat).out_dtype("float32", 2)
    assert_one_line(err, "'flat'", "(2, 2)", "(bands, 2, 2)")

    @numba.njit(nogil=True)
    def needs_arg(block, gain):
        return block * gain

    with pytest.raises(KernelError) as err:
        as_kernel(needs_arg)
    assert_one_line(err, "'gain' needs a default")
    with pytest.raises(KernelError) as err:
        as_kernel(42)
    assert_one_line(err, "not a int")


@pytest.mark.parametrize(
    ("func", "what"),
    [(plain, "is a plain Python function"), (with_gil, "is compiled without nogil=True")],
)
def test_functions_holding_the_gil_are_refused(func, what):
    for make in (as_kernel, kernel):
        with pytest.raises(KernelError) as err:
            make(func)
        assert_one_line(err, f"kernel '{func.__name__.replace('_', '-')}' {what}", "allow_gil=True")
    with pytest.raises(KernelError) as err:
        as_kernel(func)
    assert_one_line(err, "hold the GIL", "rdask.kernel(..., allow_gil=True)")
    # allow_gil=True: accepted with the same warning as rdask.kernel gives.
    with pytest.warns(RuntimeWarning, match="holds the GIL, so threads will not scale"):
        k = as_kernel(func, allow_gil=True)
    block = full_range((3, 4, 5), "int16", seed=4)
    assert k.out_dtype("int16", 3) == np.int16
    assert np.array_equal(k(block), block)
    with pytest.warns(RuntimeWarning, match="holds the GIL"):
        assert kernel(func, allow_gil=True).keeps_bands


def test_undeclared_kernel_by_reference_keeps_declared_defaults():
    # get_kernel's rule stays: an undeclared function named by reference is
    # wrapped by rdask.kernel with the defaults (same dtype and bands).
    k = get_kernel("test_kernel_spec:band_steps")
    assert not k.probed and k.out_bands(4, {}) == 4
    with pytest.raises(KernelOutputError, match="returned shape"):
        k(full_range((4, 2, 2), "int16"))


# -- band provenance -----------------------------------------------------------


def test_band_sources_of_builtins():
    k = builtin_kernels()
    rb = k["reverse-bands"]
    assert rb.band_sources(3, {}) == (2, 1, 0) and rb.band_sources(1, {"iterations": 5}) == (0,)
    assert not rb.keeps_bands  # output band 1 is the input's last
    twice = compose_band_sources(rb.band_sources(4, {}), rb.band_sources(4, {}))
    assert twice == (0, 1, 2, 3)
    assert k["focal-mean"].band_sources(3, {"radius": 2}) == (0, 1, 2)
    for name in ("slope", "hillshade", "ndvi", "normalized-difference"):
        assert k[name].band_sources(3, {}) is None, name
    fm_then_rb = compose_band_sources(k["focal-mean"].band_sources(2, {}), rb.band_sources(2, {}))
    assert fm_then_rb == (1, 0)
    assert compose_band_sources(rb.band_sources(2, {}), k["slope"].band_sources(2, {})) is None


def test_band_sources_declared_by_callable():
    @kernel(bands=2, bands_from=lambda n, first=1: (first - 1, n - 1))
    @numba.njit(nogil=True)
    def first_and_last(block, first=1):
        out = np.empty((2,) + block.shape[1:], block.dtype)
        out[0] = block[first - 1]
        out[1] = block[-1]
        return out

    assert not first_and_last.keeps_bands
    assert first_and_last.band_sources(4, {}) == (0, 3)
    assert first_and_last.band_sources(4, {"first": "2"}) == (1, 3)  # CLI strings too
    block = full_range((4, 3, 3), "uint16", seed=5)
    out = first_and_last(block, first=2)
    assert np.array_equal(out, block[list(first_and_last.band_sources(4, {"first": 2}))])
    with pytest.raises(KernelError) as err:
        first_and_last.band_sources(4, {"first": 9})
    assert_one_line(err, "'first-and-last'", "[8, 3]", "0..3")

    wrong_count = kernel(band_steps, bands=lambda n: n - 1, bands_from=lambda n: range(n))
    with pytest.raises(KernelError) as err:
        wrong_count.band_sources(3, {})
    assert_one_line(err, "expected 2 indices")


def test_band_sources_same_and_keeps_bands():
    @numba.njit(nogil=True)
    def negate(block):
        return -block

    assert kernel(negate).band_sources(3, {}) == (0, 1, 2)  # keeps_bands by default
    same = kernel(negate, bands_from="same")
    assert same.keeps_bands and same.band_sources(2, {}) == (0, 1)
    rev = kernel(negate, bands_from="reversed")
    assert not rev.keeps_bands and rev.band_sources(2, {}) == (1, 0)
    assert kernel(negate, keeps_bands=False).band_sources(3, {}) is None
    # keeps_bands holds only while the band count does, as in the pipeline.
    assert kernel(negate, bands=3, keeps_bands=True).band_sources(2, {}) is None
    assert kernel(negate, bands=3, keeps_bands=True).band_sources(3, {}) == (0, 1, 2)
    assert as_kernel(negate).band_sources(3, {}) is None  # undeclared: new bands


@pytest.mark.parametrize(
    ("declared", "match"),
    [
        ({"bands_from": "backwards"}, "bands_from must be 'same', 'reversed' or a callable"),
        ({"bands_from": 3}, "bands_from must be"),
        ({"bands_from": "reversed", "keeps_bands": True}, "contradicts"),
        ({"bands_from": "same", "keeps_bands": False}, "contradicts"),
        ({"bands_from": "reversed", "bands": 2}, "leave bands unset"),
        ({"accepts": "complex"}, "accepts must be"),
    ],
)
def test_contradictory_declarations(declared, match):
    with pytest.raises(KernelError) as err:
        kernel(band_steps, **declared)
    assert_one_line(err, "'band-steps'", match)


# -- input dtypes: built-ins ---------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_reverse_bands_takes_every_dtype(dtype):
    k = builtin_kernels()["reverse-bands"]
    k.check_input(dtype, 3)
    block = full_range((3, 9, 11), dtype, seed=6)
    assert np.array_equal(k(block), block[::-1])
    out = k(block, iterations=3)
    assert out.dtype == block.dtype
    if dtype not in ("float64", "complex128"):
        assert np.array_equal(out, block[::-1])
    else:  # float64 values (or parts) may round, exactly as in rasterio's example
        parts = block.view(np.float64)
        ref = ((parts + 1.0 + 1.0 + 1.0) - 3.0).view(block.dtype)
        assert np.array_equal(out, ref[::-1]) and not np.array_equal(out, block[::-1])


@pytest.mark.parametrize("dtype", ["int64", "uint64"])
def test_reverse_bands_work_keeps_64_bit_integers_exact(dtype):
    # float64 holds integers up to 2**53 only; these used to come back rounded.
    info = np.iinfo(dtype)
    values = [info.max, info.min, 2**53 + 1, 12345678901234567, info.max - 1, 2**62 + 3]
    block = np.array(values * 2, dtype=dtype).reshape(2, 2, 3)
    out = builtin_kernels()["reverse-bands"](block, iterations=2000)
    assert out.dtype == block.dtype and np.array_equal(out, block[::-1])


def test_reverse_bands_work_on_complex_parts():
    block = np.array([[[1.5 + 2.25j, np.nan + 1j]], [[-np.inf - 3j, 7 + np.inf * 1j]]], "complex64")
    out = builtin_kernels()["reverse-bands"](block, iterations=50)
    assert np.array_equal(out.view(np.float32), block[::-1].view(np.float32), equal_nan=True)


@pytest.mark.parametrize("dtype", COMPLEX_DTYPES)
@pytest.mark.parametrize("name", REAL_BUILTINS)
def test_real_builtins_refuse_complex_in_one_line(name, dtype):
    k = builtin_kernels()[name]
    with pytest.raises(KernelError) as err:
        k.check_input(dtype, 3)
    want = f"kernel '{name}' cannot take {dtype} input (it needs real numbers)"
    assert str(err.value) == want
    with pytest.raises(KernelError) as err:  # and when called, before numba sees it
        k(np.ones((3, 4, 4), dtype), xres=1.0, yres=1.0)
    assert str(err.value) == want


@pytest.mark.parametrize("name", sorted(builtin_kernels()))
def test_builtins_refuse_dtypes_numba_lacks(name):
    with pytest.raises(KernelError) as err:
        builtin_kernels()[name].check_input("float16", 2)
    assert str(err.value) == f"kernel '{name}' cannot take float16 input (numba has no float16 arrays)"
    with pytest.raises(KernelError) as err:
        builtin_kernels()[name].check_input("U4", 2)
    assert_one_line(err, "(it needs numbers)")


def normdiff_reference(block, a, b, nodata):
    A, B = block[a - 1].astype(np.float64), block[b - 1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = ((A - B) / (A + B)).astype(np.float32)
    ref[(A == nodata) | (B == nodata) | (A + B == 0)] = np.nan
    return ref[None]


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_normalized_difference_and_ndvi_on_wide_and_narrow_ints(dtype):
    block = full_range((3, 7, 8), dtype, seed=7)
    nodata = float(np.iinfo(dtype).max)  # GDAL's usual nodata for these types
    block[1, 3, :4] = np.iinfo(dtype).max
    for name, args, (a, b) in (
        ("normalized-difference", {"a": 3, "b": 2}, (3, 2)),
        ("ndvi", {"red": 1, "nir": 2}, (2, 1)),
    ):
        k = builtin_kernels()[name]
        k.check_input(dtype, 3)
        out = k(block, nodata=nodata, **args)
        ref = normdiff_reference(block, a, b, nodata)
        assert np.array_equal(out, ref, equal_nan=True), name
        assert np.isnan(out[0, 3, :4]).all() and np.isfinite(out).sum() > 40


def focal_reference(block, radius, nodata):
    """Mean of the valid values of each clipped window, in float64 numpy."""
    v = block.astype(np.float64)
    out = np.empty(block.shape, np.float32)
    nb, ny, nx = block.shape
    for b in range(nb):
        for i in range(ny):
            for j in range(nx):
                win = v[b, max(i - radius, 0) : i + radius + 1, max(j - radius, 0) : j + radius + 1]
                win = win[win != nodata]
                out[b, i, j] = win.mean() if win.size else np.nan
    return out


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_focal_mean_on_wide_and_narrow_ints(dtype):
    k = builtin_kernels()["focal-mean"]
    k.check_input(dtype, 2)
    block = full_range((2, 9, 10), dtype, seed=8)
    nodata = float(np.iinfo(dtype).min)
    block[0, 2:6, 3:7] = np.iinfo(dtype).min
    for radius in (1, 3):
        out = k(block, nodata=nodata, radius=radius)
        ref = focal_reference(block, radius, nodata)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=1e-6)
    assert np.isnan(k(block, nodata=nodata, radius=1)[0, 3:5, 4:6]).all()


def dem_of(dtype, seed=9):
    """A DEM in the range of ``dtype`` (int8 holds only -128..127)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:12, 0:14]
    dem = 40 * np.sin(xx / 3.0) * np.cos(yy / 2.5) + 3 * xx + rng.normal(0, 2, (12, 14))
    lo = {"int8": 0, "int64": -50_000, "uint64": 1_000}[dtype]
    return np.rint(dem + lo).astype(dtype)[None]


def horn_reference(dem, xres, yres):
    """Interior slope (degrees) and Horn sums of a float32-read DEM, in float64."""
    w = dem[0].astype(np.float32).astype(np.float64)
    c = w[1:-1, 1:-1]
    n, s, e, wst = w[:-2, 1:-1], w[2:, 1:-1], w[1:-1, 2:], w[1:-1, :-2]
    nw, ne, sw, se = w[:-2, :-2], w[:-2, 2:], w[2:, :-2], w[2:, 2:]
    sx = (nw + 2 * wst + sw) - (ne + 2 * e + se)
    sy = (sw + 2 * s + se) - (nw + 2 * n + ne)
    assert c.shape == sx.shape
    dx, dy = sx / xres, sy / -yres
    return np.degrees(np.arctan(np.hypot(dx, dy) / 8)), dx, dy


def hillshade_reference(dx, dy, azimuth=315.0, altitude=45.0, z=1.0):
    """gdaldem's shade of the same Horn gradients, in float64."""
    az, alt = np.radians(azimuth), np.radians(altitude)
    zf = z / 8.0
    cang = (
        254 * np.sin(alt) - (dy * 254 * np.cos(az) * np.cos(alt) * zf
                             - dx * 254 * np.sin(az) * np.cos(alt) * zf)
    ) / np.sqrt(1 + zf * zf * (dx * dx + dy * dy))  # fmt: skip
    cang = np.where(cang <= 0, 1.0, 1.0 + cang)
    return np.clip(np.floor(cang + 0.5), 1, 255)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_terrain_on_wide_and_narrow_ints(dtype):
    dem = dem_of(dtype)
    slope, shade = builtin_kernels()["slope"], builtin_kernels()["hillshade"]
    for k in (slope, shade):
        k.check_input(dtype, 1)
    ref_slope, dx, dy = horn_reference(dem, 10.0, 12.0)
    got = slope(dem, xres=10.0, yres=12.0)
    assert got.dtype == np.float32 and (got[0, 1:-1, 1:-1] != -9999).all()
    np.testing.assert_allclose(got[0, 1:-1, 1:-1], ref_slope, rtol=1e-5, atol=1e-4)
    assert ref_slope.max() > 20  # real relief, not a flat test
    got = shade(dem, xres=10.0, yres=12.0)
    diff = np.abs(got[0, 1:-1, 1:-1].astype(np.int16) - hillshade_reference(dx, dy))
    assert got.dtype == np.uint8 and diff.max() <= 1
    # Like gdaldem, every dtype is read as float32.
    as_f32 = dem.astype(np.float32)
    assert np.array_equal(shade(dem, xres=10.0, yres=12.0), shade(as_f32, xres=10.0, yres=12.0))


# -- input dtypes: user kernels ------------------------------------------------


@pytest.mark.parametrize("dtype", COMPLEX_DTYPES)
def test_user_kernel_typing_failure_is_one_line(dtype):
    declared = kernel(root, dtype="float64")
    for k in (declared, as_kernel(root)):
        with pytest.raises(KernelError) as err:
            k.check_input(dtype, 2)
        msg = assert_one_line(err, f"kernel 'root' cannot take {dtype} input", f"sqrt({dtype})")
        assert "Failed in nopython" not in msg and "During:" not in msg
        with pytest.raises(KernelError) as err:  # a direct call says the same
            k(np.ones((2, 3, 3), dtype))
        assert str(err.value) == msg
    assert as_kernel(band_steps).out_dtype(dtype, 3) == np.dtype(dtype)  # complex is fine here


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int64", "uint64", "float32"])
def test_user_kernel_real_dtypes_pass_the_check(dtype):
    declared = kernel(root, dtype="float64")
    declared.check_input(dtype, 2)
    block = np.random.default_rng(10).integers(0, 100, (2, 3, 3)).astype(dtype)
    # numba's sqrt of a float32 is a float32, of an integer a float64.
    np.testing.assert_allclose(declared(block), np.sqrt(block.astype(np.float64)), rtol=1e-6)


def test_declared_kernel_check_leaves_run_time_errors_to_the_run():
    k = kernel(third_band)
    k.check_input("int16", 2)  # compiles; "needs 3 bands" is not about the dtype
    assert ("input", "<i2", 2) in k.memo
    with pytest.raises(KernelError, match="needs 3 bands"):
        k(np.ones((2, 3, 3), "int16"))


def test_declared_accepts():
    listed = kernel(band_steps, accepts=["uint8", "float32"], bands=lambda n: n - 1)
    listed.check_input("float32", 3)
    with pytest.raises(KernelError) as err:
        listed.check_input("int16", 3)
    assert str(err.value) == "kernel 'band-steps' cannot take int16 input (it takes uint8, float32)"
    real = kernel(band_steps, accepts="real", bands=lambda n: n - 1)
    real.check_input("uint64", 2)
    with pytest.raises(KernelError, match=r"cannot take complex128 input \(it needs real numbers\)"):
        real(np.ones((2, 2, 2), "complex128"))
    anything = kernel(band_steps, accepts="any", bands=lambda n: n - 1)
    block = full_range((3, 2, 2), "complex64", seed=11)
    anything.check_input("complex64", 3)
    assert np.array_equal(anything(block), block[1:] - block[:-1])


def test_check_input_needs_a_band():
    with pytest.raises(KernelError) as err:
        builtin_kernels()["slope"].check_input("float32", 0)
    assert_one_line(err, "'slope'", "at least one input band")


def test_probe_block_survives_division():
    # The probe block is ones: a kernel dividing by its input must not fail.
    @numba.njit(nogil=True)
    def inverse(block):
        return 100 // block

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert as_kernel(inverse).out_dtype("int32", 1).kind == "i"
