"""Tiled mosaics (tile_size): a directory of COG tiles whose index.vrt (and
GTI index) opens as the raster the GeoTIFF output of the same job holds."""

from __future__ import annotations

import glob
import os
import subprocess

import numpy as np
import pytest
import rasterio
from affine import Affine
from cli import RDASK
from rasters import read, synthetic, write
from rio_cogeo.cogeo import cog_validate

import rdask
from rdask.errors import OutputError

SHAPE = (3, 1001, 777)  # odd: the last row and column of tiles are smaller
KW = {"tile_size": 256, "blocksize": 128}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mosaic")
    data = synthetic(SHAPE, "uint16", seed=5, nodata=0)
    path = write(tmp / "in.tif", data, block=(128, 128), nodata=0, descriptions=("a", "b", "c"),
                 tags={"FOO": "bar"})
    return path, data


@pytest.fixture(scope="module")
def reference(src, tmp_path_factory):
    """The GeoTIFF output of the same job."""
    out = str(tmp_path_factory.mktemp("ref") / "ref.tif")
    rdask.process(src[0], out, "reverse-bands", blocksize=128)
    return out


def assert_same_raster(path, reference):
    with rasterio.open(path) as a, rasterio.open(reference) as b:
        assert (a.count, a.height, a.width, a.dtypes) == (b.count, b.height, b.width, b.dtypes)
        assert a.crs == b.crs
        assert a.transform == b.transform
        assert a.nodata == b.nodata
        assert a.descriptions == b.descriptions
        assert a.tags()["FOO"] == "bar"
        np.testing.assert_array_equal(a.read(), b.read())


def listing(tmp_path) -> list[str]:
    return sorted(os.listdir(tmp_path))


def test_index_opens_as_the_geotiff_output_and_tiles_are_cogs(tmp_path, src, reference):
    out = tmp_path / "out"
    result = rdask.process(src[0], out, "reverse-bands", **KW)
    assert result.path == str(out) and result.bytes > 0
    assert listing(tmp_path) == ["out"]  # no partial directory or journal left
    assert listing(out) == ["index.gti.gpkg", "index.vrt", "tiles"]
    assert_same_raster(out / "index.vrt", reference)
    # The GTI index opens as the same raster, from any working directory.
    os.chdir("/")
    assert_same_raster(out / "index.gti.gpkg", reference)
    with rasterio.open(out / "index.gti.gpkg") as ds:
        assert ds.driver == "GTI"
    # Relative paths: the directory can move.
    moved = tmp_path / "moved"
    os.rename(out, moved)
    assert_same_raster(moved / "index.vrt", reference)

    tiles = sorted(glob.glob(str(moved / "tiles" / "*.tif")))
    assert len(tiles) == 4 * 4  # ceil(1001/256) x ceil(777/256)
    with rasterio.open(reference) as ref:
        whole, t = ref.read(), ref.transform
    for path in tiles:
        valid, errors, _ = cog_validate(path)
        assert valid, (path, errors)
        row, col = (int(v) for v in os.path.basename(path)[5:-4].split("_"))
        y0, x0 = row * 256, col * 256
        with rasterio.open(path) as ds:
            assert ds.transform == t @ Affine.translation(x0, y0)
            assert ds.shape == (min(256, SHAPE[1] - y0), min(256, SHAPE[2] - x0))
            assert ds.block_shapes[0] == (128, 128)
            assert ds.compression.name == "deflate"
            np.testing.assert_array_equal(ds.read(), whole[:, y0:y0 + ds.height, x0:x0 + ds.width])


def test_a_failing_job_leaves_nothing(tmp_path, src):
    def fail(done, total):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        rdask.process(src[0], tmp_path / "out", "reverse-bands", progress=fail, **KW)
    assert listing(tmp_path) == []


def test_resume_keeps_present_tiles_and_completes(tmp_path, src, reference):
    out = tmp_path / "out"
    seen = []

    def interrupt(done, total):
        seen.append(done)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        rdask.process(src[0], out, "reverse-bands", progress=interrupt, chunk_mb=0.1, resume=True, **KW)
    assert any("kept for --resume" in n for n in getattr(info.value, "__notes__", []))
    assert listing(tmp_path) == [".out.rdask-journal", ".out.rdask-partial"]
    written = sorted(glob.glob(str(tmp_path / ".out.rdask-partial" / "tiles" / "*.tif")))
    assert len(written) >= 3
    # A tile lost since (or never made durable) is redone, not trusted.
    os.unlink(written[0])
    computed = []
    rdask.process(src[0], out, "reverse-bands", chunk_mb=0.1, resume=True,
                  progress=lambda done, total: computed.append(done), **KW)
    assert 16 - len(written) < len(computed) < 16
    assert listing(tmp_path) == ["out"]
    assert_same_raster(out / "index.vrt", reference)


def test_a_local_cluster_writes_what_threads_write(tmp_path, src):
    rdask.process(src[0], tmp_path / "threads", "reverse-bands", **KW)
    rdask.process(src[0], tmp_path / "cluster", "reverse-bands", scheduler="local:2", **KW)
    np.testing.assert_array_equal(read(tmp_path / "cluster" / "index.vrt"), read(tmp_path / "threads" / "index.vrt"))
    names = sorted(os.listdir(tmp_path / "threads" / "tiles"))
    assert sorted(os.listdir(tmp_path / "cluster" / "tiles")) == names


def test_workers_that_cannot_see_the_directory_send_their_tiles(tmp_path, src, reference, monkeypatch):
    """A worker without the client's filesystem returns the encoded tiles,
    which the client writes."""
    from dataclasses import replace

    from rdask.outputs import mosaic

    real_open = mosaic.MosaicOutput.__init__

    def unseen(self, spec):
        real_open(self, spec)
        self.writer = replace(self.writer, marker=os.path.join(self.partial, "elsewhere"))

    monkeypatch.setattr(mosaic.MosaicOutput, "__init__", unseen)
    rdask.process(src[0], tmp_path / "out", "reverse-bands", **KW)
    assert_same_raster(tmp_path / "out" / "index.vrt", reference)


def test_bad_tile_size_is_one_error_before_any_work(tmp_path, src):
    with pytest.raises(ValueError, match="tile_size must be a multiple of the blocksize"):
        rdask.process(src[0], tmp_path / "out", "reverse-bands", tile_size=300, blocksize=128)
    assert listing(tmp_path) == []


def test_existing_targets(tmp_path, src):
    out = tmp_path / "out"
    rdask.process(src[0], out, "reverse-bands", **KW)
    with pytest.raises(OutputError, match="output exists"):
        rdask.process(src[0], out, "reverse-bands", **KW)
    # overwrite replaces an earlier mosaic...
    rdask.process(src[0], out, "reverse-bands", overwrite=True, tile_size=512, blocksize=128)
    assert len(os.listdir(out / "tiles")) == 2 * 2
    assert listing(tmp_path) == ["out"]
    # ...but never a directory or file that is not one.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an rdask mosaic"):
        rdask.process(src[0], other, "reverse-bands", overwrite=True, **KW)
    assert os.listdir(other) == ["keep.txt"]


def test_masks_travel_into_tiles_and_index(tmp_path):
    data = synthetic((3, 300, 260), "uint16", seed=3)
    mask = np.full(data.shape[1:], 255, np.uint8)
    mask[40:200, 30:90] = 0
    path = write(tmp_path / "masked.tif", data, block=(64, 64), mask=mask)
    rdask.process(path, tmp_path / "ref.tif", "reverse-bands", blocksize=64)
    rdask.process(path, tmp_path / "out", "reverse-bands", tile_size=128, blocksize=64)
    with rasterio.open(tmp_path / "out" / "index.vrt") as a, rasterio.open(tmp_path / "ref.tif") as b:
        np.testing.assert_array_equal(a.dataset_mask(), b.dataset_mask())
        np.testing.assert_array_equal(a.read(), b.read())


def test_cli(tmp_path, src, reference):
    proc = subprocess.run([RDASK, "run", "reverse-bands", src[0], tmp_path / "out", "--tile-size", "512",
                           "--blocksize", "128"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_same_raster(tmp_path / "out" / "index.vrt", reference)
    bad = subprocess.run([RDASK, "run", "reverse-bands", src[0], tmp_path / "bad", "--tile-size", "500"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == (
        "rdask: error: tile_size must be a multiple of the blocksize (512), got 500")
    assert not (tmp_path / "bad").exists()
