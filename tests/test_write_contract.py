"""The write contract and the scheduler around it: jobs stay separate, the
sync scheduler is synchronous, an interrupted COG finish is resumable, and
the DataArray face keeps what the user did to the array."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import rasterio
from rasters import read, synthetic, write

import rdask


@pytest.fixture
def src(tmp_path):
    data = synthetic((2, 700, 650), "uint16", seed=11)
    return write(tmp_path / "in.tif", data, block=(128, 128)), data


def test_two_writes_of_one_array_at_once_on_one_client(tmp_path, src):
    """Each write of the same (opaque) dask array is its own job: concurrent
    writes on one client never hand one job's tiles to the other."""
    from distributed import Client

    path, data = src
    x = (rdask.open_raster(path, chunk_mb=0.1, tile=128) + 1).astype("uint16")
    outs = [str(tmp_path / f"o{i}.tif") for i in range(2)]
    errors = []
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        def job(out):
            try:
                rdask.to_raster(x, out, blocksize=128, scheduler=client)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=job, args=(o,)) for o in outs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert errors == []
    for out in outs:
        np.testing.assert_array_equal(read(out), data + 1)


def test_a_persisted_array_is_written(tmp_path, src):
    from distributed import Client

    path, data = src
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        x = (rdask.open_raster(path, chunk_mb=0.1, tile=128) + 1).astype("uint16").persist()
        out = str(tmp_path / "persisted.tif")
        rdask.to_raster(x, out, blocksize=128, scheduler=client)
    np.testing.assert_array_equal(read(out), data + 1)


def test_sync_runs_every_chunk_in_the_calling_thread(tmp_path, src):
    import warnings

    seen = set()

    def where(block):
        seen.add(threading.get_ident())
        return block

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # allow_gil=True warns that this holds the GIL
        k = rdask.kernel(allow_gil=True)(where)
    path, data = src
    out = str(tmp_path / "o.tif")
    rdask.process(path, out, k, scheduler="sync", chunk_mb=0.1, blocksize=128)
    assert seen == {threading.get_ident()}
    np.testing.assert_array_equal(read(out), data)


def test_interrupted_cog_finish_is_kept_for_resume(tmp_path, src, monkeypatch):
    """Ctrl-C while the overviews are made, with resume=True: the finished
    main pass is kept (and said to be), and the resume only finishes it."""
    from rdask.outputs.tiff import cog

    path, data = src
    out = str(tmp_path / "cog.tif")
    real = cog.assemble_cog

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cog, "assemble_cog", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        rdask.process(path, out, "reverse-bands", driver="COG", blocksize=128, chunk_mb=0.1, resume=True)
    assert any("kept for --resume" in n for n in getattr(info.value, "__notes__", []))
    assert sorted(os.listdir(tmp_path)) == [".cog.tif.rdask-journal", ".cog.tif.rdask-partial", "in.tif"]
    monkeypatch.setattr(cog, "assemble_cog", real)
    computed = []
    rdask.process(path, out, "reverse-bands", driver="COG", blocksize=128, chunk_mb=0.1, resume=True,
                  progress=lambda done, total: computed.append(done))
    assert computed == []  # every chunk was already in the partial file
    np.testing.assert_array_equal(read(out), data[::-1])
    assert sorted(os.listdir(tmp_path)) == ["cog.tif", "in.tif"]


def test_strided_and_flipped_slices_keep_their_georeferencing(tmp_path, src):
    path, _ = src
    da = rdask.open_raster(path)
    with rasterio.open(path) as ds:
        t = ds.transform
    for sl, expect in ((np.s_[:, ::2, ::2], (t.a * 2, t.e * 2)), (np.s_[:, 10:200, 5:300], (t.a, t.e))):
        out = str(tmp_path / f"s{expect[0]}.tif")
        rdask.to_raster(da[sl], out, overwrite=True)
        with rasterio.open(out) as ds:
            assert (ds.transform.a, ds.transform.e) == pytest.approx(expect)
            x, y = ds.xy(0, 0)  # the first pixel's centre
            assert (x, y) == pytest.approx((float(da[sl].x[0]), float(da[sl].y[0])))


def test_a_single_band_long_name_string_is_its_description(tmp_path):
    path = write(tmp_path / "one.tif", synthetic((1, 300, 300), "float32", seed=2), block=(64, 64),
                 descriptions=("elev",))
    da = rdask.open_raster(path)
    da.attrs["long_name"] = "height"
    out = str(tmp_path / "o.tif")
    rdask.to_raster(da, out)
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("height",)
