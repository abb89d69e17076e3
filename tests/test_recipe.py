"""The recipe path: process() and the CLI run a file's chunks directly, with
no DataArray and no dask.array, and must write exactly what the DataArray
path (open_raster -> apply -> to_raster over dask.array) writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import rasterio
from rasters import synthetic, write

import rdask
from rdask.recipe import extend, open_recipe
from rdask.xr import RECIPE_KEY, meta_of, recipe_of

DATA = os.path.join(os.path.dirname(__file__), "data")
SHARED = ["RGB.byte.tif", "RGBA.uint16.tif", "float_nan.tif", "cogeo.tif", "shade.tif"]


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    """A file with band descriptions, tags, scales, offsets and units."""
    tmp = tmp_path_factory.mktemp("recipe")
    path = write(tmp / "described.tif", synthetic((2, 300, 260), "int16", seed=5, nodata=-9),
                 block=(64, 64), nodata=-9, descriptions=("red", "nir"), tags={"SENSOR": "x"})
    with rasterio.open(path, "r+") as ds:
        ds.scales = (0.5, 0.5)
        ds.offsets = (1.0, 2.0)
        ds.units = ("m", "m")
    return path


def inputs(described):
    return [os.path.join(DATA, f) for f in SHARED] + [described]


def same_meta(a, b) -> bool:
    """RasterMeta equality with NaN nodata equal to NaN nodata."""
    nan = a.nodata is not None and b.nodata is not None and np.isnan(a.nodata) and np.isnan(b.nodata)
    return (nan or a.nodata == b.nodata) and replace(a, nodata=None) == replace(b, nodata=None)


def test_recipe_meta_is_what_the_dataarray_carries(described):
    """The metadata process() writes equals what to_raster takes from the
    DataArray: the one typed object, unchanged through the DataArray, and
    the attrs rioxarray users see describe it."""
    for path in inputs(described):
        recipe = open_recipe(path)
        data = rdask.open_raster(path)
        assert replace(recipe, meta=None) == replace(recipe_of(data), meta=None)  # NaN nodata != NaN
        assert recipe.shape == data.shape and recipe.dtype == data.dtype
        assert recipe.chunks == data.data.chunks
        assert same_meta(recipe.meta, meta_of(data, recipe_of(data))), path
        # What the attrs say, read back without the recipe, is the same again
        # for every item attrs can hold.
        plain = meta_of(data, None)
        assert [(b.description, b.scale, b.offset, b.unit) for b in plain.bands] == [
            (b.description, b.scale, b.offset, b.unit) for b in recipe.meta.bands], path
        for kernel in ("focal-mean", "slope"):
            if kernel == "slope" and recipe.shape[0] != 1:
                continue
            out = rdask.apply(data, kernel)
            grown = extend(recipe, kernel)
            assert grown.name == recipe_of(out).name  # a token of source, steps and chunks
            assert same_meta(grown.meta, meta_of(out, recipe_of(out))), (path, kernel)


def written(path) -> tuple:
    with rasterio.open(path) as ds:
        return (ds.read(), ds.profile, ds.tags(), ds.descriptions, ds.scales, ds.offsets, ds.units,
                [ds.tags(i) for i in ds.indexes], ds.dataset_mask())


@pytest.mark.parametrize("kernel", ["reverse-bands", "focal-mean", "focal-mean radius=2 | reverse-bands"])
def test_process_writes_what_the_dataarray_paths_write(described, tmp_path, kernel, monkeypatch):
    """process() (recipe), to_raster on an rdask DataArray (recipe) and on the
    same DataArray without its recipe (dask.array graph) agree in every pixel
    and every piece of metadata."""
    from rdask import xr
    from rdask.cli.options import parse_chain

    graphs = []
    real = xr._as_dask
    monkeypatch.setattr(xr, "_as_dask", lambda data: graphs.append(True) or real(data))

    chain = parse_chain(kernel)
    for i, src in enumerate(inputs(described)):
        if "reverse-bands" in kernel and src.endswith(("float_nan.tif", "shade.tif")):
            continue  # single band: reversing is the identity, covered elsewhere
        a = str(tmp_path / f"process-{i}.tif")
        rdask.process(src, a, chain, chunk_mb=0.2, blocksize=128)
        data = rdask.open_raster(src, chunk_mb=0.2, tile=128)
        for name, args in chain:
            data = rdask.apply(data, name, **args)
        b = str(tmp_path / f"recipe-{i}.tif")
        graphs.clear()
        rdask.to_raster(data, b, blocksize=128)
        assert graphs == []  # ran the recipe's chunks, not the array's graph
        opaque = data.copy()
        opaque.encoding.pop(RECIPE_KEY)
        assert recipe_of(opaque) is None
        c = str(tmp_path / f"dask-{i}.tif")
        rdask.to_raster(opaque, c, blocksize=128)
        assert graphs == [True]
        ref = written(c)
        for got in (written(a), written(b)):
            np.testing.assert_array_equal(got[0], ref[0])
            assert repr(got[1:-1]) == repr(ref[1:-1]), src  # repr: NaN nodata equals NaN
            np.testing.assert_array_equal(got[-1], ref[-1])


def test_process_imports_neither_dask_array_nor_xarray(tmp_path):
    """What makes the CLI start fast and stay small (W2/W3 of the benchmark), COG included."""
    code = textwrap.dedent(f"""
        import sys, rdask
        src = {os.path.join(DATA, 'RGB.byte.tif')!r}
        rdask.process(src, {str(tmp_path / 'o.tif')!r}, "focal-mean")
        rdask.process(src, {str(tmp_path / 'cog.tif')!r}, "reverse-bands", driver="COG", blocksize=128)
        print(sorted(m for m in ("dask.array", "xarray", "pandas", "rioxarray") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]"]
    assert rasterio.open(tmp_path / "o.tif").shape == (718, 791)
    with rasterio.open(tmp_path / "cog.tif") as cog:
        assert cog.overviews(1) == [2, 4, 8]


def test_cluster_workers_import_no_dask_array(tmp_path):
    """On a local cluster a recipe's tasks reference only rdask's own functions:
    workers never import dask.array (or xarray, pandas)."""
    from rdask.schedule import open_runner

    src = write(tmp_path / "in.tif", synthetic((3, 600, 500), "uint8", seed=2), block=(128, 128))
    dst = str(tmp_path / "out.tif")
    with open_runner("local:2") as runner:
        rdask.process(src, dst, "reverse-bands", scheduler=runner.client, chunk_mb=0.2, blocksize=128)
        seen = runner.client.run(
            eval, "sorted(m for m in ('dask.array', 'xarray', 'pandas') if m in __import__('sys').modules)"
        )
        ran = runner.client.run(eval, "'rdask.kernels.bands' in __import__('sys').modules")
    assert list(seen.values()) == [[], []]
    assert any(ran.values())  # the workers did run the kernel
    with rasterio.open(src) as s, rasterio.open(dst) as d:
        np.testing.assert_array_equal(d.read(), s.read()[::-1])


def test_both_paths_make_the_same_resumable_job(described, tmp_path):
    """A job interrupted through the API resumes from the CLI and back: the job
    fingerprint does not depend on which path computed the metadata (the
    DataArray's nodata is a NumPy scalar, the recipe's a float)."""
    from rdask.outputs import WriteOptions
    from rdask.pipeline import JobInputs, job_id

    for src in (os.path.join(DATA, "RGB.byte.tif"), os.path.join(DATA, "float_nan.tif"), described):
        recipe = extend(open_recipe(src), "focal-mean")
        data = rdask.apply(rdask.open_raster(src), "focal-mean")
        opts = WriteOptions()
        a = job_id(recipe.job(), recipe.meta, opts, JobInputs.of(recipe))
        b = job_id(recipe_of(data).job(), meta_of(data, recipe_of(data)), opts, JobInputs.of(recipe_of(data)))
        assert a == b, src


def test_nodata_the_output_dtype_cannot_hold_is_refused_on_both_paths(tmp_path):
    """A kernel keeping the input's NaN nodata with a uint8 output: one clear
    error from apply() and from process(), not a file without its nodata."""
    import numba

    @rdask.kernel(dtype="uint8")
    @numba.njit(nogil=True)
    def to_byte(block):
        return block.astype(np.uint8)

    src = os.path.join(DATA, "float_nan.tif")
    with pytest.raises(rdask.KernelError, match="uint8 output cannot hold the nodata value nan"):
        rdask.apply(rdask.open_raster(src), to_byte)
    with pytest.raises(rdask.KernelError, match="uint8 output cannot hold the nodata value nan"):
        rdask.process(src, str(tmp_path / "o.tif"), to_byte)
    assert not os.listdir(tmp_path)
