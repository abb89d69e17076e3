"""Every output kind, a warp and a stack, on a ``tcp://`` cluster: a real
``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (no root
needed), each run equal to the same job on threads.

The workers share this machine's files, so they write the local outputs
themselves (the root-only ``test_scaleout.py`` covers workers that do not).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from cluster import dask_cluster
from rasters import assert_same_raster, synthetic, write
from servers import BUCKET

import rdask

SHAPE = (2, 640, 512)
BLOCK = 128


@pytest.fixture(scope="module")
def tcp(tmp_path_factory):
    with dask_cluster(tmp_path_factory.mktemp("tcp"), n_workers=2) as (address, _):
        yield address


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tcp-inputs")
    a = write(d / "a.tif", synthetic(SHAPE, "int16", seed=1), block=(BLOCK, BLOCK))
    b = write(d / "b.tif", synthetic(SHAPE, "int16", seed=2), block=(BLOCK, BLOCK))
    return a, b


def pixels(path: str) -> np.ndarray:
    if path.endswith(".zarr") or path.startswith("s3://"):
        return rdask.open_raster(path).values
    if os.path.isdir(path):  # a mosaic
        path = os.path.join(path, "index.vrt")
    with rasterio.open(path) as ds:
        return ds.read()


KINDS = {
    "cog": ("out.tif", dict(driver="COG")),
    "cog-average": ("out.tif", dict(driver="COG", overview_resampling="average")),
    "zarr": ("out.zarr", dict(overview_levels=1)),
    "mosaic": ("out", dict(tile_size=256)),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_local_outputs_on_a_tcp_cluster_equal_threads(tmp_path, tcp, inputs, kind):
    name, options = KINDS[kind]
    kw = dict(chunk_mb=0.1, blocksize=BLOCK, **options)
    (tmp_path / "threads").mkdir()
    (tmp_path / "tcp").mkdir()
    here = str(tmp_path / "threads" / name)
    there = str(tmp_path / "tcp" / name)
    rdask.process(inputs[0], here, "focal-mean", kernel_args={"radius": 2}, workers=2, **kw)
    rdask.process(inputs[0], there, "focal-mean", kernel_args={"radius": 2}, scheduler=tcp, **kw)
    assert np.array_equal(pixels(there), pixels(here))
    if kind.startswith("cog"):
        assert_same_raster(there, here)  # the overviews' pixels too, and metadata
        with rasterio.open(there) as a, rasterio.open(here) as b:
            for level in range(len(a.overviews(1))):
                with rasterio.open(there, overview_level=level) as x, \
                        rasterio.open(here, overview_level=level) as y:
                    assert np.array_equal(x.read(), y.read())
            assert a.overviews(1) == b.overviews(1)
    assert sorted(os.listdir(tmp_path / "tcp")) == [name]  # nothing left beside it


def test_a_warp_and_a_stack_on_a_tcp_cluster_equal_threads(tmp_path, tcp, inputs):
    chain = "warp crs=EPSG:4326 resampling=bilinear | slope"
    here, there = str(tmp_path / "threads.tif"), str(tmp_path / "tcp.tif")
    rdask.process(list(inputs), here, chain, workers=2, chunk_mb=0.1, blocksize=BLOCK)
    rdask.process(list(inputs), there, chain, scheduler=tcp, chunk_mb=0.1, blocksize=BLOCK)
    assert_same_raster(there, here)
    with rasterio.open(there) as ds:
        assert ds.count == 4 and ds.crs.to_epsg() == 4326  # two files of two bands


S3_KINDS = {"s3-tif": ("out.tif", {}), "s3-cog": ("cog.tif", dict(driver="COG")),
            "s3-zarr": ("out.zarr", {})}


def test_s3_outputs_on_a_tcp_cluster_equal_threads(tmp_path, s3):
    """The workers upload the parts (6 MiB of noise: parts and pieces) and
    the Zarr chunks themselves, with the credentials of their own
    environment: a cluster started once ``s3`` has set it."""
    noise = np.random.default_rng(9).integers(0, 60000, (3, 1024, 1024), dtype=np.uint16)
    src = write(tmp_path / "noise.tif", noise, block=(BLOCK, BLOCK))
    kw = dict(chunk_mb=1, blocksize=BLOCK)
    (tmp_path / "cluster").mkdir()
    with dask_cluster(tmp_path / "cluster", n_workers=2) as (address, _):
        for name, options in S3_KINDS.values():
            here = str(tmp_path / name)
            url = f"s3://{BUCKET}/{name}"
            rdask.process(src, here, "reverse-bands", workers=2, **kw, **options)
            rdask.process(src, url, "reverse-bands", scheduler=address, **kw, **options)
            assert np.array_equal(pixels(url), pixels(here)), name
    client = s3.client()
    listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    keys = {o["Key"] for o in listed}
    assert {"out.tif", "cog.tif"} <= keys and "out.zarr/zarr.json" in keys
    assert not [k for k in keys if ".rdask-partial" in k]  # no hidden piece left
    assert not client.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
