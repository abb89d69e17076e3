"""The Zarr output: what xarray/rioxarray, GDAL and rdask read back.

Every test compares against the GeoTIFF output of the same job: pixels,
CRS, exact transform and nodata must be the same whichever reader opens
the store.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace

import numpy as np
import pytest
import rasterio
import rasters
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr
from affine import Affine

import rdask
from rdask.errors import KernelError, OutputError
from rdask.kernels import as_kernel

SHAPE = (3, 700, 900)  # odd sizes: edge chunks, odd overview levels
TRANSFORM = Affine(30.0, 0.0, 500000.125, 0.0, -30.0, 4000000.3)
NODATA = -9999
SENTINEL = 31111  # a value only one chunk of the input holds


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("zarr-src")
    data = rasters.synthetic(SHAPE, "int16", nodata=NODATA)
    data[:, 600:610, 800:810] = SENTINEL  # in the last row and column of chunks
    return rasters.write(d / "in.tif", data, nodata=NODATA, transform=TRANSFORM, block=(256, 256))


@pytest.fixture(scope="module")
def tif(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("zarr-ref") / "out.tif"
    rdask.process(src, out, "reverse-bands", chunk_mb=0.5)
    with rasterio.open(out) as ds:
        return {"pixels": ds.read(), "crs": ds.crs, "transform": ds.transform, "nodata": ds.nodata,
                "path": str(out)}


def _zarr(path, **kw):
    """``xarray.open_zarr`` as a user would; the one variable."""
    ds = xr.open_zarr(path, decode_coords="all", mask_and_scale=False, zarr_format=3, **kw)
    assert list(ds.data_vars) == ["band_data"]
    return ds["band_data"]


def test_xarray_reads_what_the_geotiff_holds(src, tif, tmp_path):
    out = tmp_path / "out.zarr"
    result = rdask.process(src, out, "reverse-bands", chunk_mb=0.5)  # the suffix picks Zarr
    assert result.path == str(out) and result.bytes > 0
    assert sorted(os.listdir(tmp_path)) == ["out.zarr"]  # no partial, no journal left
    da = _zarr(out)
    assert da.dims == ("band", "y", "x")
    assert da.rio.crs == tif["crs"]
    assert da.rio.transform() == tif["transform"]  # exact, from GeoTransform
    assert da.rio.nodata == tif["nodata"]
    np.testing.assert_array_equal(da.values, tif["pixels"])
    ref = rioxarray.open_rasterio(tif["path"])
    np.testing.assert_array_equal(da.x.values, ref.x.values)
    np.testing.assert_array_equal(da.y.values, ref.y.values)
    np.testing.assert_array_equal(da.band.values, ref.band.values)
    # Masked as CF readers do by default: nodata becomes NaN.
    masked = xr.open_zarr(out, decode_coords="all", zarr_format=3)["band_data"]
    assert masked.rio.encoded_nodata == NODATA
    assert int(np.isnan(masked.values).sum()) == int((tif["pixels"] == NODATA).sum())
    # GeoZarr's proj: and spatial: attributes, with the conventions declared.
    with open(out / "zarr.json") as fh:
        attrs = json.load(fh)["attributes"]
    assert attrs["proj:code"] == "EPSG:32618"
    assert attrs["spatial:transform"] == list(TRANSFORM)[:6]
    assert attrs["spatial:shape"] == list(SHAPE[1:])
    assert {c["name"] for c in attrs["zarr_conventions"]} == {"proj:", "spatial:"}
    # Every rdask chunk maps to whole Zarr chunks (512 = blocksize).
    with open(out / "band_data" / "zarr.json") as fh:
        meta = json.load(fh)
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [3, 512, 512]


def test_gdal_reads_it(src, tif, tmp_path):
    out = tmp_path / "out.zarr"
    rdask.process(src, out, "reverse-bands", driver="Zarr", chunk_mb=0.5)
    for path in (str(out), f'ZARR:"{out}":/band_data'):
        with rasterio.open(path) as ds:
            assert ds.driver == "Zarr"
            assert ds.crs == tif["crs"]
            # From the pixel-centre coordinates: equal up to their rounding.
            assert ds.transform.almost_equals(tif["transform"], precision=1e-6)
            assert ds.nodata == tif["nodata"]
            np.testing.assert_array_equal(ds.read(), tif["pixels"])


def test_overviews_are_a_multiscales_group(src, tmp_path):
    out, cog = tmp_path / "out.zarr", tmp_path / "out.cog.tif"
    rdask.process(src, out, "reverse-bands", chunk_mb=0.5, overview_levels=2)
    rdask.process(src, cog, "reverse-bands", chunk_mb=0.5, driver="COG", overview_levels=2)
    with open(out / "zarr.json") as fh:
        attrs = json.load(fh)["attributes"]
    layout = attrs["multiscales"]["layout"]
    assert [e["asset"] for e in layout] == ["band_data", "1/band_data", "2/band_data"]
    assert [e.get("derived_from") for e in layout] == [None, "band_data", "1/band_data"]
    sizes = [(700, 900), (350, 450), (175, 225)]
    assert [tuple(e["spatial:shape"]) for e in layout] == sizes
    assert "multiscales" in {c["name"] for c in attrs["zarr_conventions"]}
    with rasterio.open(cog) as ds:
        for k, (h, w) in enumerate(sizes[1:], start=1):
            level = _zarr(out, group=str(k))
            assert level.shape == (3, h, w)
            # Nearest picks equal to GDAL's (the COG's overviews).
            np.testing.assert_array_equal(level.values, ds.read(out_shape=(3, h, w)))
            assert level.rio.transform().almost_equals(ds.transform @ Affine.scale(900 / w, 700 / h))
            assert level.rio.crs == ds.crs


def _failing(state):
    def kernel(block):
        if state["fail"] and (block == SENTINEL).any():
            raise ValueError("boom")
        return block[::-1].copy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return as_kernel(kernel, allow_gil=True)


def test_failed_job_leaves_nothing_and_resume_completes(src, tif, tmp_path):
    out = tmp_path / "out.zarr"
    state = {"fail": True}
    kernel = _failing(state)
    with pytest.raises(KernelError, match="boom"):
        rdask.process(src, out, kernel, chunk_mb=0.5, workers=1)
    assert os.listdir(tmp_path) == []  # nothing at out.zarr, no partial, no journal

    with pytest.raises(KernelError, match="boom"):
        rdask.process(src, out, kernel, chunk_mb=0.5, workers=1, resume=True)
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == [".out.zarr.rdask-journal", ".out.zarr.rdask-partial"]
    with open(tmp_path / ".out.zarr.rdask-journal") as fh:
        journaled = len(fh.read().splitlines()) - 1
    assert journaled > 0

    state["fail"] = False
    calls = []
    result = rdask.process(src, out, kernel, chunk_mb=0.5, workers=1, resume=True,
                           progress=lambda done, total: calls.append(done))
    assert len(calls) == result.chunks - journaled  # only the missing chunks computed
    assert sorted(os.listdir(tmp_path)) == ["out.zarr"]
    np.testing.assert_array_equal(_zarr(out).values, tif["pixels"])


def test_local_cluster_writes_what_threads_write(src, tmp_path):
    threads, cluster = tmp_path / "threads.zarr", tmp_path / "cluster.zarr"
    rdask.process(src, threads, "reverse-bands", chunk_mb=0.5)
    rdask.process(src, cluster, "reverse-bands", chunk_mb=0.5, scheduler="local:2", overview_levels=1)
    np.testing.assert_array_equal(_zarr(cluster).values, _zarr(threads).values)
    assert _zarr(cluster, group="1").shape == (3, 350, 450)


def test_open_raster_round_trip(src, tif, tmp_path):
    out = tmp_path / "out.zarr"
    rdask.process(src, out, "reverse-bands", chunk_mb=0.5)
    da = rdask.open_raster(out)
    assert da.rio.crs == tif["crs"] and da.rio.transform() == tif["transform"]
    assert da.rio.nodata == tif["nodata"]
    for sizes in da.chunks[1:]:
        assert all(s % 512 == 0 for s in sizes[:-1])  # whole Zarr chunks
    np.testing.assert_array_equal(da.values, tif["pixels"])
    # ... and a Zarr input is processed like any other.
    again = tmp_path / "again.tif"
    rdask.process(out, again, "reverse-bands", chunk_mb=0.5)
    with rasterio.open(again) as ds:
        np.testing.assert_array_equal(ds.read(), tif["pixels"][::-1])
        assert ds.transform == tif["transform"] and ds.crs == tif["crs"] and ds.nodata == NODATA


def test_existing_store_is_kept_unless_overwrite(src, tmp_path):
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(OutputError, match="output exists"):
        rdask.process(src, out, "reverse-bands", chunk_mb=0.5)
    assert (out / "keep").exists()
    rdask.process(src, out, "reverse-bands", chunk_mb=0.5, overwrite=True)
    assert not (out / "keep").exists()
    assert sorted(os.listdir(tmp_path)) == ["out.zarr"]
    assert _zarr(out).shape == SHAPE


def test_zarr_options_are_checked():
    with pytest.raises(ValueError, match="deflate"):
        rdask.WriteOptions(driver="zarr", compress="lzw")
    with pytest.raises(ValueError, match="nearest or average"):
        rdask.WriteOptions(driver="Zarr", overview_resampling="cubic")
    assert rdask.WriteOptions(driver="zarr", compress="zstd").driver == "Zarr"
    with pytest.raises(ValueError, match="local paths and s3:// URLs only"):
        rdask.process("nothing.tif", "gs://bucket/out.zarr", "reverse-bands")
    with pytest.raises(ValueError, match="V2_METADATA"):
        rdask.WriteOptions(driver="Zarr", creation_options={"PREDICTOR": 2})


def test_pure_v3_store_without_v2_metadata(src, tif, tmp_path):
    out = tmp_path / "out.zarr"
    rdask.process(src, out, "reverse-bands", chunk_mb=0.5, compress="zstd",
                  creation_options={"V2_METADATA": "NO"}, overview_levels=1)
    assert not [f for _, _, files in os.walk(out) for f in files if f.startswith(".z")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "both zarr.json and .zgroup" warning
        da = xr.open_zarr(out, decode_coords="all", mask_and_scale=False)["band_data"]
    np.testing.assert_array_equal(da.values, tif["pixels"])
    assert da.rio.transform() == tif["transform"] and da.rio.crs == tif["crs"]
    np.testing.assert_array_equal(rdask.open_raster(out).values, tif["pixels"])


def test_workers_that_cannot_see_the_store_return_pixels(src, tif, tmp_path, monkeypatch):
    """What a worker on another machine does: the client writes the chunks
    and makes the levels itself."""
    from rdask.outputs.zarr import local as zarr_output

    original = zarr_output.ZarrOutput.__init__
    monkeypatch.setattr(zarr_output.ZarrOutput, "__init__",
                        lambda self, spec: original(self, replace(spec, shares_files=lambda path: False)))
    out = tmp_path / "out.zarr"
    rdask.process(src, out, "reverse-bands", chunk_mb=0.5, overview_levels=1)
    np.testing.assert_array_equal(_zarr(out).values, tif["pixels"])
    assert _zarr(out, group="1").shape == (3, 350, 450)


# -- sharding ----------------------------------------------------------------------


def _objects(array_dir):
    return sorted(os.path.relpath(os.path.join(d, f), array_dir) for d, _, files in os.walk(array_dir)
                  for f in files if f != "zarr.json")


def test_sharded_store_holds_one_object_per_chunk(src, tif, tmp_path):
    """``SHARD=YES``: one shard file per rdask chunk, inner chunks of the
    blocksize; xarray and rdask read the GeoTIFF's pixels; the overview
    levels equal the unsharded store's; no v2 metadata (GDAL up to 3.10
    cannot read shards, and v2 cannot describe them)."""
    import zarr

    plain, sharded = tmp_path / "plain.zarr", tmp_path / "sharded.zarr"
    rdask.process(src, plain, "reverse-bands", chunk_mb=0.5, blocksize=128, overview_levels=2)
    result = rdask.process(src, sharded, "reverse-bands", chunk_mb=0.5, blocksize=128, overview_levels=2,
                           creation_options={"SHARD": "YES"})
    arr = zarr.open_array(str(sharded / "band_data"), mode="r", zarr_format=3)
    assert arr.chunks == (3, 128, 128) and arr.shards is not None
    assert len(_objects(sharded / "band_data")) == result.chunks > 1
    assert len(_objects(plain / "band_data")) > result.chunks
    assert not [f for _, _, files in os.walk(sharded) for f in files if f.startswith(".z")]
    np.testing.assert_array_equal(_zarr(sharded).values, tif["pixels"])
    for group in ("1", "2"):
        np.testing.assert_array_equal(_zarr(sharded, group=group).values, _zarr(plain, group=group).values)
    np.testing.assert_array_equal(rdask.open_raster(sharded).values, tif["pixels"])
    with pytest.raises(ValueError, match="SHARD"):
        rdask.WriteOptions(driver="Zarr", creation_options={"SHARDS": "YES"})


def test_sharded_store_resumes(src, tif, tmp_path):
    out = tmp_path / "out.zarr"
    state = {"fail": True}
    kernel = _failing(state)
    kw = dict(chunk_mb=0.5, workers=1, resume=True, creation_options={"SHARD": "YES"})
    with pytest.raises(KernelError, match="boom"):
        rdask.process(src, out, kernel, **kw)
    with open(tmp_path / ".out.zarr.rdask-journal") as fh:
        journaled = len(fh.read().splitlines()) - 1
    assert journaled > 0 and not out.exists()
    state["fail"] = False
    calls = []
    result = rdask.process(src, out, kernel, progress=lambda done, total: calls.append(done), **kw)
    assert len(calls) == result.chunks - journaled
    np.testing.assert_array_equal(_zarr(out).values, tif["pixels"])
