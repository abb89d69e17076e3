"""The pipeline end to end, bit-exact against plain single-threaded rasterio."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasters import read, synthetic, write

import rdask
from rdask.io.files import FileSource
from rdask.xr import recipe_of

DATA = os.path.join(os.path.dirname(__file__), "data")


def reference_reverse(path: str) -> np.ndarray:
    """Independent oracle: the whole raster read once by rasterio, bands reversed."""
    return read(path)[::-1]


def assert_same_georef(src: str, dst: str, *, check_nodata: bool = True) -> None:
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.crs == a.crs
        # Bit for bit: compare the float tuples, not with a tolerance.
        assert b.transform.to_gdal() == a.transform.to_gdal()
        assert (b.width, b.height, b.count) == (a.width, a.height, a.count)
        if check_nodata:
            assert (b.nodata is None and a.nodata is None) or np.array_equal(
                np.float64(b.nodata), np.float64(a.nodata), equal_nan=True
            )


# -- real files -----------------------------------------------------------


@pytest.mark.parametrize("name", ["RGB.byte.tif", "shade.tif", "float_nan.tif", "RGBA.uint16.tif"])
def test_reverse_bands_real_files(tmp_path, name):
    src = os.path.join(DATA, name)
    dst = str(tmp_path / "out.tif")
    rdask.process(src, dst, "reverse-bands", workers=2, chunk_mb=0.2)
    assert np.array_equal(read(dst), reference_reverse(src), equal_nan=True)
    assert_same_georef(src, dst)
    with rasterio.open(dst) as ds:
        assert ds.profile["tiled"] and ds.compression.name.lower() == "deflate"
        assert ds.block_shapes[0] == (512, 512)
        with rasterio.open(src) as sds:
            assert ds.tags() == sds.tags()


def test_transform_exact_where_rioxarray_drifts(tmp_path):
    """RGB.byte.tif: rioxarray's own write drifts ~6e-14; rdask's must not."""
    src = os.path.join(DATA, "RGB.byte.tif")
    data = rdask.open_raster(src)
    with rasterio.open(src) as ds:
        expected = ds.transform
    assert data.rio.transform().to_gdal() == expected.to_gdal()
    dst = str(tmp_path / "out.tif")
    rdask.to_raster(rdask.apply(data, "reverse-bands"), dst)
    with rasterio.open(dst) as out:
        assert out.transform.to_gdal() == expected.to_gdal()


def test_sliced_array_keeps_exact_transform(tmp_path):
    src = os.path.join(DATA, "RGB.byte.tif")
    data = rdask.open_raster(src)[:, 100:300, 37:400]
    dst = str(tmp_path / "out.tif")
    rdask.to_raster(data, dst)
    with rasterio.open(src) as ds:
        from rasterio.windows import Window

        win = Window(37, 100, 363, 200)
        expected = ds.window_transform(win)
        ref = ds.read(window=win)
    with rasterio.open(dst) as out:
        assert out.transform.to_gdal() == expected.to_gdal()
        assert np.array_equal(out.read(), ref)


# -- synthetic rasters: shapes, layouts, dtypes -----------------------------

CASES = [
    # (bands, height, width), dtype, block (None = striped), interleave, nodata
    ((3, 517, 389), "uint8", (256, 256), "pixel", 0),
    ((1, 1, 1), "uint8", (16, 16), "pixel", None),
    ((2, 1, 300), "int16", None, "band", -9999),
    ((2, 300, 1), "uint16", None, "pixel", None),
    ((7, 130, 90), "float32", (32, 64), "band", float("nan")),
    ((4, 200, 333), "float64", (64, 32), "pixel", -1.5),
    ((5, 77, 1030), "uint16", None, "band", 65535),
    ((1, 600, 500), "float32", (128, 128), "pixel", None),
]


@pytest.mark.parametrize("shape,dtype,block,interleave,nodata", CASES)
def test_reverse_bands_synthetic(tmp_path, shape, dtype, block, interleave, nodata):
    data = synthetic(shape, dtype, nan_frac=0.05 if dtype.startswith("float") else 0, nodata=nodata)
    src = write(tmp_path / "in.tif", data, block=block, interleave=interleave, nodata=nodata)
    dst = str(tmp_path / "out.tif")
    # Tiny chunks so many seams and partial edge chunks are exercised.
    rdask.process(src, dst, "reverse-bands", workers=3, chunk_mb=0.05, blocksize=32)
    out = read(dst)
    assert out.dtype == np.dtype(dtype)
    assert np.array_equal(out, data[::-1], equal_nan=True)
    assert_same_georef(src, dst)


def test_chunks_are_block_multiples_and_striped_is_full_width(tmp_path):
    tiled = write(tmp_path / "t.tif", synthetic((3, 1000, 1500), "uint8"), block=(256, 256))
    da = rdask.open_raster(tiled, chunk_mb=1, tile=256)
    _, ys, xs = da.chunks
    assert all(c % 256 == 0 for c in ys[:-1]) and all(c % 256 == 0 for c in xs[:-1])
    assert sum(ys) == 1000 and sum(xs) == 1500
    assert 0.25e6 <= da.data.blocks[0, 0, 0].nbytes <= 4e6
    striped = write(tmp_path / "s.tif", synthetic((1, 1000, 1500), "uint8"), block=None)
    ds = rdask.open_raster(striped, chunk_mb=0.5, tile=None)
    assert ds.chunks[2] == (1500,)
    assert all(c % 8 == 0 for c in ds.chunks[1][:-1])


def test_rotated_transform_and_no_crs(tmp_path):
    data = synthetic((2, 90, 70), "uint8")
    rot = Affine(20.0, 5.0, 1000.0, 4.0, -20.0, 5000.0)
    src = write(tmp_path / "in.tif", data, transform=rot, crs=None)
    dst = str(tmp_path / "out.tif")
    rdask.process(src, dst, "reverse-bands", chunk_mb=0.01, blocksize=16)
    with rasterio.open(dst) as ds:
        assert ds.crs is None
        assert ds.transform.to_gdal() == rot.to_gdal()
        assert np.array_equal(ds.read(), data[::-1])


def test_rotated_transform_refused_by_slope(tmp_path):
    src = write(tmp_path / "in.tif", synthetic((1, 20, 20), "float32"),
                transform=Affine(20.0, 5.0, 0.0, 4.0, -20.0, 0.0))
    with pytest.raises(rdask.KernelError, match="rotated"):
        rdask.apply(rdask.open_raster(src), "slope")


def test_internal_mask_descriptions_and_tags_survive(tmp_path):
    data = synthetic((3, 140, 150), "uint8")
    mask = np.full((140, 150), 255, np.uint8)
    mask[10:50, 20:90] = 0
    src = write(tmp_path / "in.tif", data, mask=mask, descriptions=("red", "green", "blue"),
                tags={"SENSOR": "synthetic", "LEVEL": "2"}, block=(32, 32))
    dst = str(tmp_path / "out.tif")
    rdask.process(src, dst, "reverse-bands", chunk_mb=0.02, blocksize=32, workers=2)
    with rasterio.open(dst) as ds:
        assert np.array_equal(ds.dataset_mask(), mask)
        assert ds.tags()["SENSOR"] == "synthetic" and ds.tags()["LEVEL"] == "2"
        assert np.array_equal(ds.read(), data[::-1])


def test_band_descriptions_kept_when_kernel_keeps_bands(tmp_path):
    data = synthetic((2, 40, 40), "float32")
    src = write(tmp_path / "in.tif", data, descriptions=("a", "b"), block=(16, 16))
    dst = str(tmp_path / "out.tif")
    rdask.process(src, dst, "focal-mean", kernel_args={"radius": 1}, blocksize=16)
    with rasterio.open(dst) as ds:
        assert ds.descriptions == ("a", "b")


# -- laziness, tokens, handles ----------------------------------------------


def test_open_reads_no_pixels_and_errors_name_the_window(tmp_path):
    import hostile

    # A valid structure and broken tile data: opening succeeds.
    data = rdask.open_raster(hostile.corrupt_tile_data(tmp_path / "corrupt.tif"))
    with pytest.raises(rdask.RasterOpenError, match=r"corrupt\.tif at rows \d+:\d+, cols \d+:\d+"):
        data.values  # noqa: B018


def test_equal_opens_share_graph_keys(tmp_path):
    src = os.path.join(DATA, "RGB.byte.tif")
    a, b = rdask.open_raster(src), rdask.open_raster(src)
    assert a.data.name == b.data.name
    assert rdask.apply(a, "reverse-bands").data.name == rdask.apply(b, "reverse-bands").data.name
    assert rdask.apply(a, "reverse-bands", iterations=1).data.name != rdask.apply(b, "reverse-bands").data.name
    from dask.base import tokenize

    assert tokenize(recipe_of(a).plan) == tokenize(recipe_of(b).plan)


def test_reads_use_one_handle_per_thread():
    from rdask.io.files import handles as open_handles

    src = rdask.open_raster(os.path.join(DATA, "RGB.byte.tif"))
    source: FileSource = recipe_of(src).source
    handles = {}

    def grab(i):
        handles[i] = open_handles().get(source.files[0], source.gdal_options)
        assert open_handles().get(source.files[0], source.gdal_options) is handles[i]  # kept per thread

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(h) for h in handles.values()}) == 3


def test_window_slice_matches_rasterio():
    src = os.path.join(DATA, "RGB.byte.tif")
    sub = rdask.open_raster(src)[:, 200:260, 300:333].values
    with rasterio.open(src) as ds:
        from rasterio.windows import Window

        assert np.array_equal(sub, ds.read(window=Window(300, 200, 33, 60)))


# -- halo kernels: seams ------------------------------------------------------


@pytest.mark.parametrize("radius", [1, 3])
def test_focal_mean_seams_match_whole_array(tmp_path, radius):
    data = synthetic((2, 97, 83), "float32", nan_frac=0.1)
    src = write(tmp_path / "in.tif", data, block=(16, 16))
    whole = rdask.get_kernel("focal-mean")(data, radius=radius)
    tiny = rdask.apply(rdask.open_raster(src, chunks=(16, 16), tile=None), "focal-mean", radius=radius)
    assert len(tiny.chunks[1]) > 4 and len(tiny.chunks[2]) > 4
    assert np.array_equal(tiny.values, whole, equal_nan=True)


def test_halo_on_plain_dask_array_uses_map_overlap(tmp_path):
    import dask.array as dsa

    data = synthetic((1, 61, 47), "float32")
    src = write(tmp_path / "in.tif", data, block=(16, 16))
    opened = rdask.open_raster(src, chunks=(16, 16), tile=None)
    # "+ 0" makes it an arbitrary dask array with no file behind it.
    shifted = opened + 0
    assert recipe_of(shifted) is None
    out = rdask.apply(shifted, "focal-mean", radius=2)
    assert isinstance(out.data, dsa.Array)
    whole = rdask.get_kernel("focal-mean")(data, radius=2)
    assert np.array_equal(out.values, whole, equal_nan=True)


def test_chain_reads_once_with_summed_halo(tmp_path):
    data = synthetic((1, 70, 66), "float32")
    src = write(tmp_path / "in.tif", data, block=(16, 16))
    opened = rdask.open_raster(src, chunks=(16, 16), tile=None)
    chained = rdask.apply(rdask.apply(opened, "focal-mean", radius=2), "focal-mean", radius=1)
    assert recipe_of(chained).halo == 3
    fm = rdask.get_kernel("focal-mean")
    assert np.array_equal(chained.values, fm(fm(data, radius=2), radius=1), equal_nan=True)


def test_accessor_wraps_the_functions(tmp_path):
    src = os.path.join(DATA, "RGB.byte.tif")
    data = rdask.open_raster(src)
    out = data.rdask.apply("reverse-bands")
    assert out.data.name == rdask.apply(data, "reverse-bands").data.name
    result = out.rdask.to_raster(tmp_path / "o.tif")
    assert np.array_equal(read(result.path), reference_reverse(src))


def test_plain_dataarray_without_rdask_metadata(tmp_path):
    """Any rioxarray-opened array can be written (map_blocks path, rechunked to tiles)."""
    import rioxarray

    src = os.path.join(DATA, "shade.tif")
    data = rioxarray.open_rasterio(src, chunks=(1, 300, 300))
    out = rdask.apply(data, "reverse-bands")
    dst = str(tmp_path / "o.tif")
    rdask.to_raster(out, dst, blocksize=256)
    assert np.array_equal(read(dst), read(src)[::-1])
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.crs == a.crs and b.nodata == a.nodata
        assert b.transform.almost_equals(a.transform)


def test_halo_on_selected_bands_multi_chunk(tmp_path):
    """map_overlap path with several chunks: declared and computed shapes agree."""
    data = synthetic((3, 130, 120), "float32")
    src = write(tmp_path / "in.tif", data, block=(32, 32))
    sel = rdask.open_raster(src, chunks=(32, 32), tile=None).sel(band=[1])
    out = rdask.apply(sel, "focal-mean", radius=2)
    assert out.shape == (1, 130, 120)
    whole = rdask.get_kernel("focal-mean")(data[:1], radius=2)
    assert np.array_equal(out.values, whole, equal_nan=True)
    rdask.to_raster(out, tmp_path / "o.tif", blocksize=32)
    assert np.array_equal(read(tmp_path / "o.tif"), whole, equal_nan=True)


@pytest.mark.parametrize("chunks", [(16, 16), (48, 32)])
def test_chain_equals_two_steps_with_an_intermediate_file(tmp_path, chunks):
    dem = synthetic((1, 90, 75), "float32") * 3
    dem[0, 60:, :20] = -9999
    src = write(tmp_path / "dem.tif", dem, block=(16, 16), nodata=-9999,
                transform=Affine(30.0, 0, 0, 0, -20.0, 0))
    step1, two = str(tmp_path / "step1.tif"), str(tmp_path / "two.tif")
    rdask.process(src, step1, "focal-mean", kernel_args={"radius": 2}, blocksize=16)
    rdask.process(step1, two, "slope", blocksize=16)
    chained = rdask.apply(rdask.apply(rdask.open_raster(src, chunks=chunks, tile=16), "focal-mean", radius=2),
                          "slope")
    one = str(tmp_path / "one.tif")
    rdask.to_raster(chained, one, blocksize=16)
    assert np.array_equal(read(one), read(two), equal_nan=True)
    with rasterio.open(one) as a, rasterio.open(two) as b:
        assert a.nodata == b.nodata == -9999.0


def test_chain_cli_syntax(tmp_path):
    import subprocess
    import sys

    src = os.path.join(DATA, "shade.tif")
    out = tmp_path / "o.tif"
    rd = os.path.join(os.path.dirname(sys.executable), "rdask")
    proc = subprocess.run([rd, "run", "focal-mean radius=1 | hillshade azimuth=200", src, str(out), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = rdask.open_raster(src)
    expected = rdask.apply(rdask.apply(data, "focal-mean", radius=1), "hillshade", azimuth=200).values
    assert np.array_equal(read(out), expected)


@pytest.mark.parametrize("dtype,predictor", [("uint8", 2), ("int16", 2), ("float32", 3)])
def test_default_deflate_profile_and_override(tmp_path, dtype, predictor):
    data = synthetic((2, 100, 90), dtype)
    src = write(tmp_path / "in.tif", data, block=(32, 32))
    out, plain = str(tmp_path / "o.tif"), str(tmp_path / "p.tif")
    rdask.process(src, out, "reverse-bands", blocksize=32)
    rdask.process(src, plain, "reverse-bands", blocksize=32, creation_options={"PREDICTOR": 1})
    with rasterio.open(out) as a, rasterio.open(plain) as b:
        assert a.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == str(predictor)
        assert "PREDICTOR" not in b.tags(ns="IMAGE_STRUCTURE")
        assert np.array_equal(a.read(), b.read()) and np.array_equal(a.read(), data[::-1])


def test_rates_count_only_the_pixels_computed_in_this_run():
    """A resumed run's throughput and ETA leave out what the earlier run wrote."""
    import io

    from rdask.pipeline import Result
    from rdask.progress import TerminalProgress

    fresh = Result("o.tif", 2.0, 100_000_000, 1, 10)
    resumed = Result("o.tif", 2.0, 100_000_000, 1, 10, resumed=60_000_000)
    assert "50.0 Mpx/s" in fresh.summary()
    assert "20.0 Mpx/s" in resumed.summary() and "60.0 Mpx of them resumed" in resumed.summary()
    out = io.StringIO()
    bar = TerminalProgress(out)
    bar.base = 90_000_000
    bar.t0 -= 1.0  # one second in
    bar(90_000_000 + 1_000_000, 100_000_000)
    text = out.getvalue()
    assert "   1.0 Mpx/s" in text or "  1.0 Mpx/s" in text
    assert "ETA     9s" in text


def test_process_takes_the_clis_chain_text(tmp_path):
    """process() takes a chain as the CLI writes it, with the same result as
    the list form; kernel_args go to a single step; a bad chain is one line."""
    src = write(tmp_path / "in.tif", synthetic((2, 300, 260), "float32", seed=4), block=(64, 64))
    listed = str(tmp_path / "listed.tif")
    rdask.process(src, listed, [("focal-mean", {"radius": 2}), ("reverse-bands", {})], chunk_mb=0.1)
    text = str(tmp_path / "text.tif")
    rdask.process(src, text, "focal-mean radius=2 | reverse-bands", chunk_mb=0.1)
    np.testing.assert_array_equal(read(text), read(listed))
    single = str(tmp_path / "single.tif")
    rdask.process(src, single, "focal-mean radius=1", kernel_args={"radius": 2}, chunk_mb=0.1)
    np.testing.assert_array_equal(read(single)[::-1], read(listed))
    with pytest.raises(ValueError, match=r"^empty step in kernel chain"):
        rdask.process(src, str(tmp_path / "bad.tif"), "focal-mean | ", chunk_mb=0.1)
    with pytest.raises(ValueError, match=r"is not NAME=VALUE"):
        rdask.process(src, str(tmp_path / "bad.tif"), "focal-mean radius", chunk_mb=0.1)
    assert not (tmp_path / "bad.tif").exists()
