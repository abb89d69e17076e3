"""``focal`` statistics against numpy's nan-aware functions.

The reference pads each band with NaN by the radius, takes every window with
``numpy.lib.stride_tricks.sliding_window_view``, blanks the pixels outside
the shape and the invalid ones (nodata, NaN) with NaN, and applies
``nanmin``, ``nanmax``, ``nanmean``, ``nanmedian``, ``nanstd``, ``nansum``
(and counts, ranges and majorities from the same windows).  Then the
pipeline: chunks of 1 MB on two threads, through the API and the CLI, equal
the reference on the whole raster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from numpy.lib.stride_tricks import sliding_window_view

import rdask
from rdask.errors import KernelError
from rdask.kernels import builtin_kernels, get_kernel
from rdask.kernels.focalstats import STATS, offsets, out_dtype

RDASK = os.path.join(os.path.dirname(sys.executable), "rdask")


def majority(values):
    vals = values[~np.isnan(values)]
    if vals.size == 0:
        return np.nan
    uniq, counts = np.unique(vals, return_counts=True)  # sorted: ties go to the smallest
    return uniq[np.argmax(counts)]


def reference(block, nodata, stat, radius, shape):
    """numpy's value of ``stat`` per pixel, float64, NaN where none is valid."""
    out = []
    foot = np.zeros((2 * radius + 1,) * 2, bool)
    for dy, dx in offsets(radius, shape):
        foot[dy + radius, dx + radius] = True
    for band in block.astype(np.float64):
        band = np.where(band == nodata, np.nan, band) if nodata is not None else band
        padded = np.pad(band, radius, constant_values=np.nan)
        win = sliding_window_view(padded, foot.shape)[..., foot]  # (y, x, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if stat == "count":
                res = (~np.isnan(win)).sum(-1).astype(np.float64)
            elif stat == "range":
                res = np.nanmax(win, -1) - np.nanmin(win, -1)
            elif stat == "majority":
                res = np.apply_along_axis(majority, -1, win)
            elif stat == "sum":
                res = np.where(np.isnan(win).all(-1), np.nan, np.nansum(win, -1))
            else:
                res = getattr(np, f"nan{stat}")(win, -1)
        out.append(res)
    return np.stack(out)


def sample(dtype, shape=(2, 23, 29), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 9, shape).astype(np.float64) * 3  # repeats: majorities and ties
    a[:, 5:9, 7:15] += rng.normal(0, 40, (shape[0], 4, 8)).round(1)
    if np.dtype(dtype).kind == "u":
        a = np.abs(a)
    return a.astype(dtype)


def check(got, ref, k_out_nodata, dtype):
    none = np.isnan(ref)
    if k_out_nodata is not None and not np.isnan(k_out_nodata):
        assert (got[none] == k_out_nodata).all()
    elif got.dtype.kind == "f":
        assert np.isnan(got[none]).all()
    want = ref[~none].astype(got.dtype)
    if got.dtype.kind == "f":
        # mean/std/median in float64, rounded once to the output dtype.
        np.testing.assert_array_max_ulp(got[~none], want, maxulp=1)
    else:
        np.testing.assert_array_equal(got[~none], want)


@pytest.mark.parametrize("stat", STATS)
@pytest.mark.parametrize("shape", ["square", "circle"])
@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4])
def test_matches_numpy(stat, shape, radius):
    k = get_kernel("focal")
    block = sample("float32")
    block[0, 10:14, 3:9] = -9999.0  # a nodata hole wider than the small windows
    block[1, 0, :4] = np.nan
    block[1, 20:, 25:] = -9999.0  # nodata in a corner
    args = {"stat": stat, "radius": radius, "shape": shape}
    got = k(block, nodata=-9999.0, **args)
    ref = reference(block, -9999.0, stat, radius, shape)
    assert got.dtype == out_dtype(block.dtype, stat, radius)
    check(got, ref, k.out_nodata(-9999.0, args, block.dtype), block.dtype)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32",
                                   "int64", "float64", "bool"])
@pytest.mark.parametrize("stat", STATS)
def test_every_real_dtype(dtype, stat):
    k = get_kernel("focal")
    block = sample(dtype, seed=3) if dtype != "bool" else sample("uint8", seed=3) % 2 == 1
    nodata = None if dtype == "bool" else 6.0
    args = {"stat": stat, "radius": 2, "shape": "square"}
    got = k(block, nodata=float("nan") if nodata is None else nodata, **args)
    ref = reference(block, nodata, stat, 2, "square")
    check(got, ref, k.out_nodata(nodata, args, block.dtype), block.dtype)


def test_median_ties_and_flat_areas():
    k = get_kernel("focal")
    flat = np.full((1, 12, 14), 7.5, np.float32)
    for stat in ("median", "majority", "min", "max", "mean"):
        assert (k(flat, nodata=float("nan"), stat=stat, radius=2) == 7.5).all()
    assert (k(flat, nodata=float("nan"), stat="std", radius=2) == 0).all()
    assert (k(flat, nodata=float("nan"), stat="range", radius=2) == 0).all()
    assert k(flat, nodata=float("nan"), stat="count", radius=2)[0, 0, 0] == 9  # clipped corner
    ties = np.array([[[3, 1], [1, 3]]], np.int16)  # 1 and 3 twice each: the smaller wins
    assert (k(ties, nodata=float("nan"), stat="majority", radius=1) == 1).all()


def test_no_valid_pixel_is_no_value():
    k = get_kernel("focal")
    block = np.full((1, 5, 6), -1, np.int16)
    block[0, 0, 0] = 4
    mean = k(block, nodata=-1.0, stat="mean", radius=1)
    assert mean.dtype == np.float32 and mean[0, 0, 1] == 4 and mean[0, 4, 5] == -1
    assert get_kernel("focal").out_nodata(-1.0, {"stat": "mean"}, np.int16) == -1.0
    assert k(block, nodata=-1.0, stat="count", radius=1)[0, 4, 5] == 0


def test_arguments_refused_in_one_line():
    k = builtin_kernels()["focal"]
    with pytest.raises(KernelError, match="stat='mode' is not one of mean|min"):
        k.resolve_args({"stat": "mode"})
    with pytest.raises(KernelError, match="shape='diamond' is not one of square|circle"):
        k.resolve_args({"shape": "diamond"})
    with pytest.raises(KernelError, match="radius must be >= 0"):
        k.resolve_args({"radius": -1})
    with pytest.raises(KernelError, match="cannot take complex128"):
        k.check_input(np.complex128, 1)
    assert k.halo_for(k.resolve_args({"radius": "3"})) == 3
    assert "focal-mean" in builtin_kernels()  # stays as it is


def write(path, a, nodata):
    with rasterio.open(
        path, "w", driver="GTiff", width=a.shape[2], height=a.shape[1], count=a.shape[0],
        dtype=a.dtype, nodata=nodata, transform=Affine(10, 0, 0, 0, -10, 0), crs="EPSG:3857",
        tiled=True, blockxsize=256, blockysize=256,
    ) as dst:
        dst.write(a)
        dst.set_band_description(1, "elevation")
    return str(path)


@pytest.fixture(scope="module")
def dem(tmp_path_factory):
    """700 x 600 float32 (1 MB chunks: 512 x 512), nodata across the seams."""
    rng = np.random.default_rng(8)
    a = (rng.integers(0, 50, (1, 700, 600)) * 2.5).astype(np.float32)
    a[0, 505:520, 100:140] = -9999.0
    a[0, 200:230, 508:516] = -9999.0
    a[0, 0, :9] = np.nan
    return write(tmp_path_factory.mktemp("focal") / "dem.tif", a, -9999.0), a


@pytest.mark.parametrize(("stat", "shape"), [("median", "square"), ("std", "circle"),
                                             ("majority", "square"), ("range", "circle")])
def test_pipeline_chunks_equal_numpy(tmp_path, dem, stat, shape):
    path, a = dem
    out = tmp_path / "out.tif"
    rdask.process(path, out, "focal", kernel_args={"stat": stat, "radius": 2, "shape": shape},
                  workers=2, chunk_mb=1)
    with rasterio.open(out) as ds:
        got, nodata, desc = ds.read(), ds.nodata, ds.descriptions
    assert desc == ("elevation",)  # the band is kept, so is its metadata
    check(got, reference(a, -9999.0, stat, 2, shape), nodata, a.dtype)


def test_cli_chain_after_calc(tmp_path, dem):
    path, a = dem
    out = tmp_path / "out.tif"
    proc = subprocess.run(
        [RDASK, "run", "calc expr='b1 * 2' dtype=float32 | focal stat=median radius=2", path,
         str(out), "-j", "2", "--chunk-mb", "1", "-q"], capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    doubled = np.where(np.isnan(a) | (a == -9999), np.nan, a * 2)
    with rasterio.open(out) as ds:
        got = ds.read()
    check(got, reference(doubled, None, "median", 2, "square"), ds.nodata, np.float32)


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_median_network_selects_the_median(radius):
    """The pruned selection network on every kind of window: random, sorted,
    reversed, all equal, few distinct values (the middle output must be the
    median of each window of many random ones)."""
    from rdask.kernels.mediannet import median_network

    n = (2 * radius + 1) ** 2
    lo, hi, target = median_network(n)
    rng = np.random.default_rng(radius)
    cases = [rng.normal(size=(n, 500)), rng.integers(0, 3, (n, 500)).astype(float),
             np.sort(rng.normal(size=(n, 50)), axis=0), np.sort(rng.normal(size=(n, 50)), 0)[::-1],
             np.ones((n, 5))]
    for values in cases:
        slots = values.copy()
        for a, b in zip(lo, hi, strict=True):
            slots[a], slots[b] = np.minimum(slots[a], slots[b]), np.maximum(slots[a], slots[b])
        np.testing.assert_array_equal(slots[target], np.median(values, axis=0))
