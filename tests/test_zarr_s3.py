"""Zarr stores on S3 (``s3://bucket/out.zarr``), against moto's S3 server on 127.0.0.1.

Written by the tasks themselves (threads and a real ``distributed.LocalCluster``
of processes), published metadata-last, read back by xarray (zarr's
ObjectStore), by GDAL through ``/vsis3/``, and by ``rdask.open_raster``.
Credentials are fake, given only in the environment, and must never show in
an error or a log.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import subprocess
import tempfile
import time
import warnings

import numpy as np
import pytest
import rasterio
import rasters
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr
from affine import Affine
from cli import RDASK
from servers import BUCKET, SECRET

import rdask
import rdask.errors
from rdask.errors import KernelError, OutputError, ResumeError
from rdask.kernels import as_kernel
from rdask.outputs.zarr.s3 import S3ZarrWriter

URL = f"s3://{BUCKET}/runs/out.zarr"

SHAPE = (3, 700, 900)  # odd sizes: edge chunks, odd overview levels
TRANSFORM = Affine(30.0, 0.0, 500000.125, 0.0, -30.0, 4000000.3)
NODATA = -9999
SENTINEL = 31111  # a value only one chunk of the input holds
CHUNK = re.compile(r"^band_data/\d+/\d+/\d+$")  # a chunk key of the full-resolution array


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("zarrs3-src")
    data = rasters.synthetic(SHAPE, "int16", nodata=NODATA)
    data[:, 600:610, 800:810] = SENTINEL  # in the last row and column of chunks
    return rasters.write(d / "in.tif", data, nodata=NODATA, transform=TRANSFORM, block=(256, 256))


@pytest.fixture(scope="module")
def tif(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("zarrs3-ref") / "out.tif"
    rdask.process(src, out, "reverse-bands", chunk_mb=0.5)
    with rasterio.open(out) as ds:
        return {"pixels": ds.read(), "crs": ds.crs, "transform": ds.transform, "nodata": ds.nodata}


@pytest.fixture(scope="module")
def local_zarr(src, tmp_path_factory):
    """The local Zarr output of the same job, with one overview level."""
    out = tmp_path_factory.mktemp("zarrs3-local") / "out.zarr"
    rdask.process(src, out, "reverse-bands", chunk_mb=0.5, overview_levels=1)
    return out


# -- helpers -------------------------------------------------------------------


def keys(server, prefix="runs/out.zarr/"):
    """``{key relative to the store: (size, LastModified)}``."""
    out = {}
    for page in server.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix):]] = (obj["Size"], obj["LastModified"])
    return out


class Requests:
    """Every request moto's server answers, as ``(method, path?query, body bytes)``:
    a WSGI wrapper around its app (this process's server, so no proxy)."""

    def __init__(self, server):
        self.seen: list[tuple[str, str, int]] = []
        wsgi = server._server._server  # ThreadedMotoServer -> werkzeug's server
        app = wsgi.app

        def counting(environ, start_response):
            query = environ.get("QUERY_STRING", "")
            self.seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"] + (f"?{query}" if query else ""),
                              int(environ.get("CONTENT_LENGTH") or 0)))
            return app(environ, start_response)

        wsgi.app = counting
        self._restore = lambda: setattr(wsgi, "app", app)

    def close(self):
        self._restore()

    def of(self, method, pattern):
        return [(m, p, n) for m, p, n in self.seen if m == method and re.search(pattern, p)]


def body(server, key):
    return server.client().get_object(Bucket=BUCKET, Key=f"runs/out.zarr/{key}")["Body"].read()


def open_s3_zarr(url=URL, **kw):
    """``xarray.open_zarr`` as a user would, over zarr's ObjectStore (obstore)."""
    import obstore.store
    from zarr.storage import ObjectStore

    bucket, _, prefix = url[len("s3://"):].partition("/")
    store = obstore.store.S3Store(bucket, prefix=prefix, endpoint=f"http://{os.environ['AWS_S3_ENDPOINT']}",
                                  client_options={"allow_http": True}, virtual_hosted_style_request=False)
    ds = xr.open_zarr(ObjectStore(store, read_only=True), decode_coords="all", mask_and_scale=False,
                      zarr_format=3, **kw)
    assert list(ds.data_vars) == ["band_data"]
    return ds["band_data"]


def assert_like_geotiff(da, tif):
    assert da.dims == ("band", "y", "x")
    assert da.rio.crs == tif["crs"]
    assert da.rio.transform() == tif["transform"]  # exact, from GeoTransform
    assert da.rio.nodata == tif["nodata"]
    np.testing.assert_array_equal(da.values, tif["pixels"])


def assert_same_chunks_as_local(server, local):
    """Every chunk key of the local store is on S3 with the same bytes (one codec, gzip)."""
    local_chunks = {}
    for folder, _, files in os.walk(local):
        for f in files:
            rel = os.path.relpath(os.path.join(folder, f), local)
            if "band_data/" in rel and not f.startswith((".z", "zarr.json")):
                with open(os.path.join(folder, f), "rb") as fh:
                    local_chunks[rel] = fh.read()
    remote = keys(server)
    local_keys = {os.path.relpath(os.path.join(d, f), local) for d, _, files in os.walk(local) for f in files}
    assert local_chunks and set(remote) == local_keys  # the same store, key for key
    for k, data in local_chunks.items():
        assert same_gzip(body(server, k), data), k


def same_gzip(a, b):
    """The same gzip member but for its timestamp (header bytes 4-7, the
    time it was compressed: numcodecs' GZip sets it)."""
    assert a[:2] == b"\x1f\x8b"
    return a[:4] + a[8:] == b[:4] + b[8:]


# -- writing ---------------------------------------------------------------------


def test_threads_write_a_store_xarray_reads_like_the_geotiff(s3, src, tif, local_zarr, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    pickled = []
    original = S3ZarrWriter.__call__

    def spy(self, block, region):
        pickled.append(pickle.dumps(self))  # what a task carries to a worker
        return original(self, block, region)

    monkeypatch.setattr(S3ZarrWriter, "__call__", spy)
    requests = Requests(s3)
    try:
        result = rdask.process(src, URL, "reverse-bands", chunk_mb=0.5, overview_levels=1)
    finally:
        requests.close()
    # One PUT per chunk, never a read-modify-write (edge chunks included):
    # the full-resolution chunks are only read back by the overview level job.
    main_puts = requests.of("PUT", r"/out\.zarr/band_data/\d+/\d+/\d+$")
    level_puts = requests.of("PUT", r"/out\.zarr/1/band_data/\d+/\d+/\d+$")
    stored = keys(s3)
    assert len(main_puts) == len({p for _, p, _ in main_puts}) == len([k for k in stored if CHUNK.match(k)])
    assert len(level_puts) == len([k for k in stored if re.match(r"^1/band_data/\d+/\d+/\d+$", k)])
    assert len(requests.of("GET", r"/out\.zarr/band_data/\d+/\d+/\d+$")) == len(main_puts)
    assert not requests.of("GET", r"/out\.zarr/1/band_data/")
    # The writer carries the URL, the endpoint and chunk metadata: no secret, no local path.
    assert pickled and all(SECRET.encode() not in p and b"tmpdir" not in p for p in pickled)
    print(f"\npickled writer: {max(map(len, pickled))} bytes")
    # The root's zarr.json is the last object written.
    assert [p for m, p, _ in requests.seen if m == "PUT"][-1].endswith("/out.zarr/zarr.json")
    print(f"\nS3 requests for {len(main_puts)} + {len(level_puts)} chunks, {result.bytes} bytes stored:",
          {m: sum(1 for x, _, _ in requests.seen if x == m) for m in ("PUT", "GET", "HEAD", "POST", "DELETE")},
          f"PUT body bytes {sum(n for m, _, n in requests.seen if m == 'PUT')}")
    assert result.path == URL and result.bytes == sum(s for s, _ in keys(s3).values())
    da = open_s3_zarr()
    assert_like_geotiff(da, tif)
    assert open_s3_zarr(group="1").shape == (3, 350, 450)
    assert_same_chunks_as_local(s3, local_zarr)
    # The overview level too, byte for byte: read from S3 by the level job.
    np.testing.assert_array_equal(open_s3_zarr(group="1").values,
                                  xr.open_zarr(local_zarr, group="1", zarr_format=3,
                                               mask_and_scale=False)["band_data"].values)
    # Nothing left on the client: the staged metadata and the journal are gone.
    assert not any(files for _, _, files in os.walk(tempfile.gettempdir()))
    assert SECRET not in caplog.text


def test_a_local_cluster_of_processes_writes_from_the_workers(s3, src, tif, local_zarr, monkeypatch,
                                                               tmp_path):
    from distributed import Client, LocalCluster

    def client_side(self, block, region):
        raise AssertionError("a chunk was written by the client, not by a worker")

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # Only this (the client's) process is patched: the spawned workers
        # write with the real writer, and must, or the job fails.
        monkeypatch.setattr(S3ZarrWriter, "__call__", client_side)
        rdask.process(src, URL, "reverse-bands", chunk_mb=0.5, overview_levels=1, scheduler=client)
        # And read back by the workers, as the input of another job.
        back = tmp_path / "back.tif"
        rdask.process(URL, back, "reverse-bands", scheduler=client)
    with rasterio.open(back) as ds, rasterio.open(src) as orig:
        np.testing.assert_array_equal(ds.read(), orig.read())
    assert_like_geotiff(open_s3_zarr(), tif)
    assert_same_chunks_as_local(s3, local_zarr)


def test_gdal_reads_the_store_through_vsis3(s3, src, tif):
    rdask.process(src, URL, "reverse-bands", chunk_mb=0.5)
    # GDAL 3.10 reads the Zarr v2 metadata beside the v3 (see rdask.outputs.zarr.local).
    with rasterio.Env(AWS_S3_ENDPOINT=s3.endpoint, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE"), \
            rasterio.open(f'ZARR:"/vsis3/{BUCKET}/runs/out.zarr":/band_data') as ds:
        assert ds.crs == tif["crs"]
        assert ds.transform == tif["transform"]
        assert ds.nodata == tif["nodata"]
        np.testing.assert_array_equal(ds.read(), tif["pixels"])


def test_open_raster_round_trip_and_cli(s3, src, tif, tmp_path):
    rdask.process(src, URL, "reverse-bands", chunk_mb=0.5)
    r = rdask.open_raster(URL, chunk_mb=0.5)
    np.testing.assert_array_equal(r.values, tif["pixels"])
    assert r.rio.crs == tif["crs"] and r.rio.transform() == tif["transform"]
    # Aligned to the store's chunks: each dask chunk covers whole Zarr chunks.
    cy, cx = json.loads(body(s3, "band_data/zarr.json"))["chunk_grid"]["configuration"]["chunk_shape"][1:]
    assert all(n % cy == 0 for n in r.chunks[1][:-1]) and all(n % cx == 0 for n in r.chunks[2][:-1])
    assert len(r.chunks[1]) * len(r.chunks[2]) > 1
    # And as the input of another job, read by the tasks from S3.
    back = tmp_path / "back.tif"
    rdask.process(URL, back, "reverse-bands")
    with rasterio.open(back) as ds, rasterio.open(src) as orig:
        np.testing.assert_array_equal(ds.read(), orig.read())
    # The CLI, in a fresh process that has only its environment.
    s3.client().upload_file(str(src), BUCKET, "in.tif")
    cli_url = f"s3://{BUCKET}/cli/out.zarr"
    proc = subprocess.run([RDASK, "run", "reverse-bands", f"s3://{BUCKET}/in.tif", cli_url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    np.testing.assert_array_equal(open_s3_zarr(cli_url).values, tif["pixels"])


def test_overwrite_is_refused_in_one_line_then_replaces(s3, src, tif, tmp_path):
    rdask.process(src, URL, "reverse-bands", chunk_mb=0.5, overview_levels=2)
    before = keys(s3)
    with pytest.raises(OutputError, match="output exists") as err:
        rdask.process(src, URL, "reverse-bands", chunk_mb=0.5)
    assert "\n" not in str(err.value) and URL in str(err.value)
    assert keys(s3) == before  # refused before anything was touched
    proc = subprocess.run([RDASK, "run", "reverse-bands", str(src), URL], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "output exists" in proc.stderr and SECRET not in proc.stderr
    # Replaced by other pixels, another codec and fewer levels: nothing of the old store stays.
    requests = Requests(s3)
    try:
        rdask.process(src, URL, _kernel({"fail": False}, reverse=False), chunk_mb=0.5, overview_levels=1,
                      overwrite=True, compress="zstd")
    finally:
        requests.close()
    # The old metadata went (DeleteObjects: root, then the other nodes) before
    # the first new chunk; stale chunks before the new metadata; root zarr.json last.
    order = [(m, p) for m, p, _ in requests.seen if m in ("PUT", "POST")]
    deletes = [i for i, (m, p) in enumerate(order) if m == "POST" and p.endswith("?delete")]
    chunk_puts = [i for i, (m, p) in enumerate(order) if m == "PUT" and re.search(r"band_data/\d+/\d+/\d+$", p)]
    meta_puts = [i for i, (m, p) in enumerate(order) if m == "PUT" and p.endswith(("zarr.json", ".zarray"))]
    assert len(deletes) == 3 and deletes[1] < chunk_puts[0]
    assert chunk_puts[-1] < deletes[2] < meta_puts[0] and order[-1][1].endswith("/out.zarr/zarr.json")
    after = keys(s3)
    assert after and not any(k.startswith("2/") for k in after)
    with rasterio.open(src) as ds:
        np.testing.assert_array_equal(open_s3_zarr().values, ds.read())
    assert b"zstd" in body(s3, "band_data/zarr.json")


# -- failures and resume ----------------------------------------------------------


def _kernel(state, reverse=True):
    """reverse-bands (or the identity) that fails on the chunk holding the
    sentinel while ``state["fail"]``, counting chunks in ``state["calls"]``."""

    def kernel(block):
        state["calls"] = state.get("calls", 0) + 1
        if state["fail"] and (block == SENTINEL).any():
            raise ValueError("boom")
        return block[::-1].copy() if reverse else block.copy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return as_kernel(kernel, allow_gil=True)


def test_a_failed_job_leaves_no_store_and_no_keys(s3, src):
    with pytest.raises(KernelError, match="boom"):
        rdask.process(src, URL, _kernel({"fail": True}), chunk_mb=0.5, workers=2, overview_levels=1)
    assert keys(s3) == {}  # no root metadata, and no chunk left either


def test_resume_writes_only_the_missing_chunks(s3, src, tif):
    state = {"fail": True}
    kernel = _kernel(state)
    with pytest.raises(KernelError, match="boom") as err:
        rdask.process(src, URL, kernel, chunk_mb=0.5, workers=1, resume=True, checkpoint_seconds=0)
    first = keys(s3)
    assert first and all(CHUNK.match(k) for k in first)  # chunks only: no metadata, no readable store
    with pytest.raises(FileNotFoundError):
        open_s3_zarr()
    notes = "\n".join(getattr(err.value, "__notes__", []))
    assert "--resume" in notes and SECRET not in str(err.value) + notes

    # Another job (another kernel) cannot resume it; nothing is touched.
    with pytest.raises(ResumeError, match="kernel"):
        rdask.process(src, URL, "focal-mean", chunk_mb=0.5, workers=1, resume=True)
    assert keys(s3) == first

    time.sleep(1.1)  # LastModified has a resolution of one second
    state.update(fail=False, calls=0)
    result = rdask.process(src, URL, kernel, chunk_mb=0.5, workers=1, resume=True)
    after = keys(s3)
    assert all(after[k][1] == first[k][1] for k in first)  # no chunk of the first run written again
    rewritten = {k for k in after if CHUNK.match(k) and k not in first}
    assert len(rewritten) == result.chunks - len(first) == state["calls"] > 0
    assert_like_geotiff(open_s3_zarr(), tif)
    # The same store an uninterrupted run writes.
    rdask.process(src, f"s3://{BUCKET}/again/out.zarr", "reverse-bands", chunk_mb=0.5)
    again = keys(s3, "again/out.zarr/")
    assert set(again) == set(after)
    assert all(same_gzip(body(s3, k), s3.client().get_object(Bucket=BUCKET, Key=f"again/out.zarr/{k}")["Body"].read())
               for k in after if CHUNK.match(k))


def test_no_secret_in_errors_or_logs(s3, src, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    s3.enforce_auth(True)  # every request refused: 403
    try:
        with pytest.raises(OutputError, match="access denied") as err:
            rdask.process(src, URL, "reverse-bands", chunk_mb=0.5)
        assert "\n" not in str(err.value)
        with pytest.raises(rdask.errors.RasterOpenError, match="access denied") as err2:
            rdask.open_raster(URL)
        proc = subprocess.run([RDASK, "run", "reverse-bands", str(src), URL], capture_output=True, text=True,
                              timeout=120)
    finally:
        s3.enforce_auth(False)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "access denied" in proc.stderr
    # A kernel error on a worker thread, with the store half written.
    with pytest.raises(KernelError):
        rdask.process(src, URL, _kernel({"fail": True}), chunk_mb=0.5, workers=2)
    out, errs = capfd.readouterr()
    for text in (str(err.value), str(err2.value), proc.stdout, proc.stderr, caplog.text, out, errs):
        assert SECRET not in text


def test_objects_under_the_prefix_without_a_store_are_not_touched(s3, src):
    """A prefix with objects but no store (a killed job on another machine,
    or someone's files) is refused, not cleaned, unless overwrite."""
    s3.client().put_object(Bucket=BUCKET, Key="runs/out.zarr/notes.txt", Body=b"mine")
    with pytest.raises(OutputError, match="holds 1 objects but no Zarr store") as err:
        rdask.process(src, URL, "reverse-bands", chunk_mb=0.5, resume=True)
    assert "\n" not in str(err.value)
    assert set(keys(s3)) == {"notes.txt"}
    rdask.process(src, URL, "reverse-bands", chunk_mb=0.5, overwrite=True)
    assert "notes.txt" not in keys(s3)  # overwrite replaces the whole prefix
    assert open_s3_zarr().shape == SHAPE


# -- sharding ----------------------------------------------------------------------


def test_sharded_store_is_one_put_per_chunk_and_reads_like_the_geotiff(s3, src, tif, local_zarr):
    """``SHARD=YES``: each task writes its chunk as one shard object (one PUT
    per rdask chunk) holding blocksize^2 inner chunks; xarray reads the
    GeoTIFF's pixels, and the overview level the unsharded store's."""
    import zarr

    requests = Requests(s3)
    try:
        result = rdask.process(src, URL, "reverse-bands", chunk_mb=0.5, blocksize=128, overview_levels=1,
                               creation_options={"SHARD": "YES"})
    finally:
        requests.close()
    main_puts = requests.of("PUT", r"/out\.zarr/band_data/\d+/\d+/\d+$")
    assert len(main_puts) == len({p for _, p, _ in main_puts}) == result.chunks > 1
    assert [p for m, p, _ in requests.seen if m == "PUT"][-1].endswith("/out.zarr/zarr.json")
    assert not [k for k in keys(s3) if k.endswith((".zarray", ".zgroup"))]  # no v2 metadata: v2 has no shards
    da = open_s3_zarr()
    assert da.encoding["chunks"] == (3, 128, 128) and da.encoding["shards"][1] > 128
    assert_like_geotiff(da, tif)
    level = open_s3_zarr(group="1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = zarr.open_array(str(local_zarr / "1" / "band_data"), mode="r", zarr_format=3)[...]
    np.testing.assert_array_equal(level.values, ref)
    back = rdask.open_raster(URL)
    np.testing.assert_array_equal(back.values, tif["pixels"])
