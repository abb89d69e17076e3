"""Band stacks (several files as bands, in order) and VRT inputs."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from affine import Affine
from cli import RDASK
from rasters import read, synthetic, write

import rdask
from rdask.errors import RasterMismatchError

GDALBUILDVRT = shutil.which("gdalbuildvrt")  # GDAL's tools: make test installs gdal-bin


def rdask_cli(*args, cwd=None):
    return subprocess.run([RDASK, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rdask: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    """Three files on one grid with different block shapes: 256 x 256 tiles,
    two bands in 512 x 512 tiles, and strips."""
    tmp = tmp_path_factory.mktemp("stack")
    shape = (1100, 1024)
    a = write(tmp / "a.tif", synthetic((1, *shape), "uint16", seed=1), block=(256, 256))
    b = write(tmp / "b.tif", synthetic((2, *shape), "uint16", seed=2), block=(512, 512))
    c = write(tmp / "c.tif", synthetic((1, *shape), "uint16", seed=3), block=None)
    return [a, b, c]


def assert_chunks_align(arr, paths):
    """No block of any input is read by two chunks."""
    for p in paths:
        with rasterio.open(p) as ds:
            by, bx = ds.block_shapes[0]
            assert arr.shape[1:] == (ds.height, ds.width)
        for edges, block, size in ((arr.chunks[1], by, arr.shape[1]), (arr.chunks[2], bx, arr.shape[2])):
            inner = np.cumsum(edges)[:-1]
            assert all(e % block == 0 for e in inner), (p, block, edges)
            assert np.cumsum(edges)[-1] == size


def test_stack_bands_in_order(trio):
    arr = rdask.open_raster(trio)
    assert arr.shape == (4, 1100, 1024)
    want = np.concatenate([read(p) for p in trio])
    assert np.array_equal(arr.values, want)
    assert np.array_equal(arr[:, 300:700, 100:900].values, want[:, 300:700, 100:900])
    # The other order is the other band order.
    assert np.array_equal(rdask.open_raster(trio[::-1]).values,
                          np.concatenate([read(p) for p in trio[::-1]]))


@pytest.mark.parametrize("chunk_mb", [16, 1, 0.1])
def test_stack_chunks_align_with_every_inputs_blocks(trio, chunk_mb):
    arr = rdask.open_raster(trio, chunk_mb=chunk_mb)
    assert_chunks_align(arr, trio)


def test_tiled_stack_chunks_align(tmp_path):
    shape = (1200, 1536)
    a = write(tmp_path / "a.tif", synthetic((1, *shape), "uint8", seed=1), block=(256, 256))
    b = write(tmp_path / "b.tif", synthetic((1, *shape), "uint8", seed=2), block=(512, 512))
    c = write(tmp_path / "c.tif", synthetic((1, *shape), "uint8", seed=3), block=(128, 384))
    for chunk_mb in (16, 0.5):
        arr = rdask.open_raster([a, b, c], chunk_mb=chunk_mb)
        assert_chunks_align(arr, [a, b, c])
        assert np.array_equal(arr.values, np.concatenate([read(p) for p in (a, b, c)]))


def test_stack_descriptions_default_to_file_names(tmp_path):
    a = write(tmp_path / "B04.tif", synthetic((1, 64, 64), "uint16", seed=1), block=(16, 16))
    b = write(tmp_path / "B08.tif", synthetic((1, 64, 64), "uint16", seed=2), block=(16, 16),
              descriptions=("nir",))
    arr = rdask.open_raster([a, b])
    assert arr.attrs["long_name"] == ("B04.tif", "nir")  # a file's own description wins
    out = tmp_path / "stack.tif"
    rdask.process([a, b], str(out), "reverse-bands")
    with rasterio.open(out) as ds:
        assert np.array_equal(ds.read(), np.concatenate([read(b), read(a)]))
    single = rdask.open_raster(a)
    assert "long_name" not in single.attrs  # one file: its own (empty) descriptions


def test_stack_through_the_cli(trio, tmp_path):
    out = tmp_path / "out.tif"
    proc = rdask_cli("run", "reverse-bands", *trio, out, "-j", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(out) as ds:
        assert ds.count == 4
        assert np.array_equal(ds.read(), np.concatenate([read(p) for p in trio])[::-1])
    # A kernel that keeps the bands keeps their names: the file names.
    proc = rdask_cli("run", "focal-mean", *trio, tmp_path / "fm.tif", "-q")
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(tmp_path / "fm.tif") as ds:
        assert ds.descriptions == ("a.tif", "b.tif", "b.tif", "c.tif")


# -- mismatches: one line naming both files and what differs -------------------------


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mismatch")
    data = synthetic((1, 200, 300), "uint16", seed=4)
    base = write(tmp / "base.tif", data)
    return {
        "base": base,
        "crs": (write(tmp / "other-crs.tif", data, crs="EPSG:32619"), "CRS differs", "EPSG:32619"),
        "transform": (write(tmp / "other-transform.tif", data,
                            transform=Affine(30.0, 0.0, 500030.0, 0.0, -30.0, 4000000.0)),
                      "transform differs", "500030.0"),
        "size": (write(tmp / "other-size.tif", synthetic((1, 180, 300), "uint16")), "size differs", "180"),
        "dtype": (write(tmp / "other-dtype.tif", data.astype("float32")), "dtype differs", "float32"),
    }


@pytest.mark.parametrize("what", ["crs", "transform", "size", "dtype"])
def test_stack_mismatch_is_one_clear_error(mismatched, what, tmp_path):
    other, phrase, detail = mismatched[what]
    base = mismatched["base"]
    with pytest.raises(RasterMismatchError) as err:
        rdask.open_raster([base, other])
    msg = str(err.value)
    assert "\n" not in msg
    for needle in (base, other, phrase, detail):
        assert needle in msg, (needle, msg)

    out = tmp_path / "out.tif"
    proc = rdask_cli("run", "reverse-bands", base, other, out)
    assert_one_line_error(proc, base, other, phrase, detail)
    assert not out.exists() and not os.listdir(tmp_path)


# -- VRT inputs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """A 2 x 2 mosaic of GeoTIFF tiles, with gdalbuildvrt."""
    assert GDALBUILDVRT, "gdalbuildvrt (GDAL's tools, Debian's gdal-bin) is not on PATH"
    tmp = tmp_path_factory.mktemp("vrt")
    h, w = 300, 400
    tiles = []
    for i in range(2):
        for j in range(2):
            t = Affine(30.0, 0.0, 500000.0 + j * w * 30, 0.0, -30.0, 4000000.0 - i * h * 30)
            tiles.append(write(tmp / f"tile_{i}_{j}.tif", synthetic((3, h, w), "int16", seed=10 + 2 * i + j),
                               block=(128, 128), transform=t))
    vrt = tmp / "mosaic.vrt"
    subprocess.run([GDALBUILDVRT, "-q", str(vrt), *tiles], check=True, capture_output=True)
    return str(vrt)


def test_vrt_input(mosaic, tmp_path):
    arr = rdask.open_raster(mosaic)
    with rasterio.open(mosaic) as ds:
        assert arr.shape == (3, 600, 800) == (ds.count, ds.height, ds.width)
        assert arr.rio.transform() == ds.transform
        want = ds.read()
    assert np.array_equal(arr.values, want)
    assert np.array_equal(arr[:, 250:350, 350:450].values, want[:, 250:350, 350:450])  # the seam
    out = tmp_path / "out.tif"
    rdask.process(mosaic, str(out), "reverse-bands", workers=2)
    assert np.array_equal(read(out), want[::-1])
    proc = rdask_cli("run", "focal-mean", mosaic, tmp_path / "fm.tif", "-q")
    assert proc.returncode == 0, proc.stderr
    rdask.process(mosaic, str(tmp_path / "fm-api.tif"), "focal-mean", scheduler="sync")
    assert np.array_equal(read(tmp_path / "fm.tif"), read(tmp_path / "fm-api.tif"), equal_nan=True)


def test_vrt_in_a_stack(mosaic, tmp_path):
    with rasterio.open(mosaic) as ds:
        profile = ds.profile
    extra = write(tmp_path / "extra.tif", synthetic((1, 600, 800), "int16", seed=99),
                  transform=profile["transform"])
    arr = rdask.open_raster([mosaic, extra])
    assert np.array_equal(arr.values, np.concatenate([read(mosaic), read(extra)]))
    assert arr.attrs["long_name"] == ("mosaic.vrt",) * 3 + ("extra.tif",)


# -- ndvi / normalized-difference on a stack -----------------------------------------


@pytest.fixture(scope="module")
def bands(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s2")
    rng = np.random.default_rng(42)
    red = rng.integers(0, 3000, size=(1, 300, 400)).astype("uint16")
    nir = rng.integers(0, 6000, size=(1, 300, 400)).astype("uint16")
    red[0, :5, :5] = 0  # nodata in one band only
    nir[0, 10:15, :5] = 0
    red[0, 20:25, :5] = nir[0, 20:25, :5] = 0  # both: nodata, and the sum is 0
    b04 = write(tmp / "B04.tif", red, block=(64, 64), nodata=0)
    b08 = write(tmp / "B08.tif", nir, block=(128, 128), nodata=0)
    red64, nir64 = red[0].astype("float64"), nir[0].astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        want = ((nir64 - red64) / (nir64 + red64)).astype("float32")
    want[(red[0] == 0) | (nir[0] == 0)] = np.nan
    return {"B04": b04, "B08": b08, "ndvi": want[None]}


def test_ndvi_cli_on_a_stack(bands, tmp_path):
    out = tmp_path / "ndvi.tif"
    proc = rdask_cli("run", "ndvi", bands["B04"], bands["B08"], out,
                     "--kernel-arg", "red=1", "--kernel-arg", "nir=2", "-q")
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(out) as ds:
        assert ds.count == 1 and ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        got = ds.read()
    np.testing.assert_array_equal(got, bands["ndvi"])
    assert np.isnan(got[0, :5, :5]).all() and np.isnan(got[0, 20:25, :5]).all()


def test_normalized_difference_api_on_a_stack(bands, tmp_path):
    out = tmp_path / "nd.tif"
    rdask.process([bands["B08"], bands["B04"]], str(out), "normalized-difference",
                  kernel_args={"a": 1, "b": 2})
    np.testing.assert_array_equal(read(out), bands["ndvi"])
    lazy = rdask.apply(rdask.open_raster([bands["B04"], bands["B08"]]), "ndvi", red=1, nir=2)
    np.testing.assert_array_equal(lazy.values, bands["ndvi"])
