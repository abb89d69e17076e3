"""Remote inputs (http, /vsicurl/, s3) and S3 outputs, against servers on 127.0.0.1.

* ``RangeServer`` (tests/servers.py) serves a directory with Range support and
  counts requests and bytes, so window reads and whole jobs can be bounded.
* moto's S3 server stands in for S3: GDAL reaches it through
  ``AWS_S3_ENDPOINT``, boto3 (rdask's uploader) through the same settings.

No test reaches an address outside 127.0.0.1: credentials are fake and
given in the environment, the AWS profile files point into ``tmp_path`` and
the EC2 metadata service is disabled.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import cli
import numpy as np
import pytest
import rasterio
import rasterio.shutil
from cli import RDASK
from rasters import assert_same_raster, read, synthetic, write
from servers import BUCKET, SECRET, RangeServer, wait_for

import rdask
from rdask.errors import KernelError, OutputError, RasterOpenError

PASSWORD = "pw-Sekr1t-99107"

FAILING_KERNEL = '''
import numba
import rdask


@rdask.kernel()
@numba.njit(nogil=True)
def explode(block):
    if block.shape[2] > 0:
        raise ValueError("boom")
    return block
'''


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The directory the HTTP server serves, with a tiled GeoTIFF in it."""
    root = tmp_path_factory.mktemp("served")
    data = synthetic((3, 600, 500), "uint16", seed=3, nodata=0)
    write(root / "in.tif", data, block=(256, 256), nodata=0,
          descriptions=("red", "green", "blue"), tags={"SENSOR": "synthetic"})
    (root / "forbidden").mkdir()
    shutil.copy(root / "in.tif", root / "forbidden" / "in.tif")
    # 6 MiB of noise: an S3 GeoTIFF of it is uploaded as parts by the tasks
    # (in.tif's, under 5 MiB, is staged and uploaded whole).
    noise = np.random.default_rng(8).integers(0, 60000, (3, 1024, 1024), dtype=np.uint16)
    write(root / "big.tif", noise, block=(256, 256), descriptions=("a", "b", "c"),
          tags={"SENSOR": "noise"})
    return root


@pytest.fixture(scope="module")
def http(served):
    with RangeServer(served, slow_seconds=5) as server:
        yield server


@pytest.fixture
def s3(s3, served):
    """The shared S3 fixture, its bucket holding ``in.tif`` and ``big.tif``."""
    for name in INPUTS:
        s3.client().upload_file(str(served / name), BUCKET, name)
    return s3


#: The inputs in the bucket, and how an S3 GeoTIFF of each is written.
INPUTS = {"in.tif": "staged", "big.tif": "parts"}


def local_job(src, tmp_path, kernel="reverse-bands", **kw):
    out = tmp_path / f"local-{kernel.split()[0]}.tif"
    rdask.process(str(src), str(out), kernel, **kw)
    return out


def objects(client, prefix=""):
    resp = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def uploads(client):
    return client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def staged_files(root):
    """Files left under $TMPDIR/rdask-s3-staging (directories may stay)."""
    base = os.path.join(root, "rdask-s3-staging")
    return [os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs]


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_copy(src, folder, name):
    """A copy under a fresh name: GDAL caches per URL, so costs are measured cold."""
    dst = os.path.join(folder, name)
    shutil.copy(src, dst)
    return os.path.basename(dst)


# -- 1. remote inputs process exactly like the local file ------------------------


def remote_url(kind, http):
    if kind == "http":
        return http.url("in.tif")
    if kind == "vsicurl":
        return "/vsicurl/" + http.url("in.tif")
    return f"s3://{BUCKET}/in.tif"


@pytest.mark.parametrize("kernel", ["reverse-bands", "focal-mean"])
@pytest.mark.parametrize("kind", ["http", "vsicurl", "s3"])
def test_remote_input_on_threads_equals_local(kind, kernel, served, http, s3, tmp_path):
    expected = local_job(served / "in.tif", tmp_path, kernel)
    url = remote_url(kind, http)
    out = tmp_path / "remote.tif"
    rdask.process(url, str(out), kernel, workers=2)
    assert_same_raster(out, expected)


@pytest.mark.parametrize("kind", [
    "s3",
    pytest.param("http", marks=pytest.mark.slow),
])
def test_remote_input_on_local_cluster_equals_local(kind, served, http, s3, tmp_path):
    """Spawned workers inherit the environment (credentials, endpoint) and read
    the URL themselves; the client only writes."""
    expected = local_job(served / "in.tif", tmp_path)
    http.reset()
    out = tmp_path / "remote.tif"
    rdask.process(remote_url(kind, http), str(out), "reverse-bands", scheduler="local:2")
    assert_same_raster(out, expected)
    if kind == "http":
        # Two processes, each with its own GDAL cache: still about one read per byte.
        assert http.stats("in.tif").bytes <= 1.2 * os.path.getsize(served / "in.tif")


def test_remote_window_values_match_rasterio(served, http):
    arr = rdask.open_raster(http.url("in.tif"))
    assert arr.rio.crs is not None
    with rasterio.open(served / "in.tif") as ds:
        assert arr.rio.transform() == ds.transform
        assert arr.rio.nodata == ds.nodata
        want = ds.read(window=((123, 345), (67, 489)))
    assert np.array_equal(arr[:, 123:345, 67:489].values, want)


# -- 2. what a remote read costs ---------------------------------------------------


@pytest.fixture(scope="module")
def cog(served, tmp_path_factory):
    """A 2048 x 2048, 3-band COG (256 px tiles, deflate) with its tile index."""
    tmp = tmp_path_factory.mktemp("cog")
    base = write(tmp / "base.tif", synthetic((3, 2048, 2048), "uint8", seed=7), block=(512, 512))
    path = str(served / "cog.tif")
    rasterio.shutil.copy(base, path, driver="COG", BLOCKSIZE=256, COMPRESS="DEFLATE")
    tiles = {}
    with rasterio.open(path) as ds:
        assert ds.block_shapes[0] == (256, 256) and ds.overviews(1)
        for ty in range(ds.height // 256):
            for tx in range(ds.width // 256):
                off = int(ds.get_tag_item(f"BLOCK_OFFSET_{tx}_{ty}", "TIFF", bidx=1))
                size = int(ds.get_tag_item(f"BLOCK_SIZE_{tx}_{ty}", "TIFF", bidx=1))
                tiles[ty, tx] = (off, size)
    return {"path": path, "tiles": tiles, "size": os.path.getsize(path)}


def tiles_under(tiles, y0, y1, x0, x1, tile=256):
    return [tiles[ty, tx] for ty in range(y0 // tile, (y1 - 1) // tile + 1)
            for tx in range(x0 // tile, (x1 - 1) // tile + 1)]


#: Header bytes GDAL fetches at open (GDAL_INGESTED_BYTES_AT_OPEN), with room.
HEADER_BOUND = 64 * 1024
#: Per tile: GDAL rounds a lone range out to its 16 KiB read granularity
#: (CPL_VSIL_CURL_CHUNK_SIZE), at most one chunk at each end.
SLACK_PER_TILE = 2 * 16 * 1024


@pytest.mark.parametrize("window", [
    (100, 200, 100, 200),  # inside one tile
    (200, 300, 200, 300),  # across 2 x 2 tiles
    (1000, 1100, 1000, 1100),  # across 2 x 2 tiles and the corner of 4 chunks
])
def test_cog_window_fetches_only_its_tiles(cog, http, served, window):
    name = unique_copy(cog["path"], served, f"cog-{'-'.join(map(str, window))}.tif")
    http.reset()
    arr = rdask.open_raster(http.url(name))
    opened = http.stats(name)
    assert opened.requests <= 2 and opened.bytes <= HEADER_BOUND, opened
    http.reset()
    y0, y1, x0, x1 = window
    values = arr[:, y0:y1, x0:x1].values
    read_cost = http.stats(name)
    with rasterio.open(cog["path"]) as ds:
        assert np.array_equal(values, ds.read(window=((y0, y1), (x0, x1))))

    under = tiles_under(cog["tiles"], *window)
    bound = sum(s for _, s in under) + SLACK_PER_TILE * len(under)
    assert read_cost.bytes <= bound, (read_cost, bound)
    assert read_cost.requests <= len(under), read_cost
    # The chunks around the window: what a read without slice fusion costs.
    ys = np.cumsum((0,) + arr.chunks[1])
    xs = np.cumsum((0,) + arr.chunks[2])
    cy0, cy1 = ys[ys <= y0].max(), ys[ys >= y1].min()
    cx0, cx1 = xs[xs <= x0].max(), xs[xs >= x1].min()
    around = sum(s for _, s in tiles_under(cog["tiles"], cy0, cy1, cx0, cx1))
    assert read_cost.bytes * 3 < around, (read_cost.bytes, around)
    print(f"\nCOG window {window}: open {opened.requests} requests / {opened.bytes} B; "
          f"window {read_cost.requests} requests / {read_cost.bytes} B for {len(under)} tiles "
          f"of {sum(s for _, s in under)} B; the chunks around it: {around} B")


def test_whole_job_reads_each_byte_about_once(cog, http, served, tmp_path):
    name = unique_copy(cog["path"], served, "cog-job.tif")
    http.reset()
    out = tmp_path / "out.tif"
    rdask.process(http.url(name), str(out), "reverse-bands", workers=2)
    cost = http.stats(name)
    full_res = sum(s for _, s in cog["tiles"].values())
    assert full_res <= cost.bytes <= 1.2 * cog["size"], (cost.bytes, full_res, cog["size"])
    assert np.array_equal(read(out), read(cog["path"])[::-1])
    print(f"\nwhole job: {cost.requests} requests, {cost.bytes} B of a {cog['size']} B COG "
          f"({cost.bytes / cog['size']:.2f}x; full-resolution tiles {full_res} B)")


def test_server_answers_multirange_requests(cog, http):
    """GDAL's GDAL_HTTP_MULTIRANGE=SINGLE_GET sends ``bytes=a-b,c-d``; the server
    answers multipart/byteranges, which GDAL parses into the right pixels."""
    import urllib.request

    req = urllib.request.Request(http.url("cog.tif"), headers={"Range": "bytes=0-9,100-109"})
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 206
        assert resp.headers.get_content_type() == "multipart/byteranges"
        body = resp.read()
    raw = open(cog["path"], "rb").read()
    assert raw[0:10] in body and raw[100:110] in body
    assert "Content-Range: bytes 100-109/" in body.decode("latin-1")

    name = "cog.tif"
    http.reset()
    arr = rdask.open_raster(http.url(name), gdal_options={"GDAL_HTTP_MULTIRANGE": "SINGLE_GET"})
    with rasterio.open(cog["path"]) as ds:
        # Tiles (6, 2), (6, 3), (7, 2), (7, 3): two ranges of two adjacent tiles.
        assert np.array_equal(arr[:, 1700:1800, 700:800].values,
                              ds.read(window=((1700, 1800), (700, 800))))
    assert any("," in r for r in http.stats(name).ranges), http.stats(name).ranges


# -- 3. errors: one line naming the URL, nothing written ------------------------------


@pytest.mark.parametrize("case", ["404", "403", "refused", "timeout"])
def test_http_errors_through_the_cli(case, http, tmp_path):
    url = {
        "404": http.url("missing.tif"),
        "403": http.url("forbidden/in.tif"),
        "refused": f"http://127.0.0.1:{free_port()}/in.tif",
        "timeout": http.url("slow/in.tif"),
    }[case]
    reason = {"404": "not found (HTTP 404)", "403": "access denied (HTTP 403)",
              "refused": "connection refused", "timeout": "timed out"}[case]
    # GDAL settings in the environment win over rdask's network defaults.
    env = dict(os.environ, GDAL_HTTP_TIMEOUT="1", GDAL_HTTP_MAX_RETRY="0")
    out = tmp_path / "out.tif"
    t0 = time.monotonic()
    proc = cli.run("run", "reverse-bands", url, out, env=env)
    cli.one_line_error(proc, url, reason)
    assert not os.listdir(tmp_path)
    if case == "timeout":
        assert time.monotonic() - t0 < 30


def test_timeout_through_the_api(http):
    t0 = time.monotonic()
    with pytest.raises(RasterOpenError, match="timed out") as err:
        rdask.open_raster(http.url("slow/in.tif"),
                          gdal_options={"GDAL_HTTP_TIMEOUT": "1", "GDAL_HTTP_MAX_RETRY": "0"})
    assert http.url("slow/in.tif") in str(err.value)
    assert time.monotonic() - t0 < 15


@pytest.mark.parametrize("case", ["missing-key", "missing-bucket", "bad-credentials"])
def test_s3_errors_through_the_cli(case, s3, tmp_path):
    url = {"missing-key": f"s3://{BUCKET}/missing.tif",
           "missing-bucket": "s3://no-such-bucket-rdask/in.tif",
           "bad-credentials": f"s3://{BUCKET}/in.tif"}[case]
    env = dict(os.environ)
    reason = "not found (HTTP 404)"
    if case == "bad-credentials":
        env["AWS_ACCESS_KEY_ID"] = "AKIAUNKNOWNRDASKTEST"
        reason = "access denied (HTTP 403)"
        s3.enforce_auth(True)  # moto checks keys only when asked to
    out = tmp_path / "out.tif"
    try:
        proc = cli.run("run", "reverse-bands", url, out, env=env)
    finally:
        s3.enforce_auth(False)
    cli.one_line_error(proc, url, reason)
    assert not out.exists()


def test_s3_output_errors_through_the_cli(s3, served, tmp_path):
    """A missing bucket, or credentials S3 refuses, fail before any work."""
    proc = cli.run("run", "reverse-bands", served / "in.tif", "s3://no-such-bucket-rdask/out.tif")
    cli.one_line_error(proc, "s3://no-such-bucket-rdask/out.tif", "not found")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAUNKNOWNRDASKTEST")
    s3.enforce_auth(True)
    try:
        proc = cli.run("run", "reverse-bands", served / "in.tif", f"s3://{BUCKET}/out.tif", env=env)
    finally:
        s3.enforce_auth(False)
    cli.one_line_error(proc, f"s3://{BUCKET}/out.tif", "access denied (HTTP 403)")
    assert objects(s3.client()) == sorted(INPUTS) and not uploads(s3.client())


# -- 4. secrets never show ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(INPUTS), ids=list(INPUTS.values()))
def test_s3_secret_never_shows(s3, served, tmp_path, name):
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
    # A whole job, input and output on S3, at -vv.
    proc = cli.run("-vv", "run", "focal-mean", f"s3://{BUCKET}/{name}", f"s3://{BUCKET}/out.tif")
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    s3.client().download_file(BUCKET, "out.tif", str(tmp_path / "out.tif"))
    with rasterio.open(tmp_path / "out.tif") as ds:
        everything = [ds.tags(), ds.descriptions, *(ds.tags(i) for i in ds.indexes)]
        for ns in ds.tag_namespaces() or []:
            everything.append(ds.tags(ns=ns))
    assert SECRET not in repr(everything)
    assert SECRET.encode() not in open(tmp_path / "out.tif", "rb").read()
    # Errors.
    proc = cli.run("-vv", "run", "slope", f"s3://{BUCKET}/nope.tif", tmp_path / "x.tif")
    assert proc.returncode == 1 and SECRET not in proc.stderr
    # Graph keys, tokens and the pickled tasks a worker would receive.
    import cloudpickle
    from dask.base import tokenize

    arr = rdask.apply(rdask.open_raster(f"s3://{BUCKET}/in.tif"), "focal-mean")
    graph = dict(arr.data.__dask_graph__())
    assert SECRET not in str(graph.keys()) + arr.data.name + tokenize(arr)
    assert SECRET.encode() not in cloudpickle.dumps(graph)
    assert SECRET not in repr(arr) + repr(arr.encoding) + repr(arr.attrs)


def test_secret_gdal_options_are_refused(s3, served, tmp_path):
    for opts in ({"AWS_SECRET_ACCESS_KEY": SECRET}, {"aws_session_token": "t"},
                 {"GDAL_HTTP_USERPWD": f"alice:{PASSWORD}"}, {"GDAL_HTTP_HEADERS": "X-Api-Key: k"}):
        with pytest.raises(RasterOpenError, match="carries a secret") as err:
            rdask.open_raster(f"s3://{BUCKET}/in.tif", gdal_options=opts)
        assert SECRET not in str(err.value) and PASSWORD not in str(err.value)
        assert "environment" in str(err.value)
    with pytest.raises(RasterOpenError, match="carries a secret"):
        rdask.process(str(served / "in.tif"), str(tmp_path / "o.tif"), "reverse-bands",
                      gdal_options={"AWS_SECRET_ACCESS_KEY": SECRET})
    with pytest.raises(RasterOpenError, match="carries a secret"):
        rdask.to_raster(rdask.open_raster(str(served / "in.tif")), f"s3://{BUCKET}/o.tif",
                        gdal_options={"AWS_SECRET_ACCESS_KEY": SECRET})
    assert not (tmp_path / "o.tif").exists() and objects(s3.client()) == sorted(INPUTS)


def test_url_password_never_shows(http, tmp_path):
    url = http.url("in.tif", f"alice:{PASSWORD}")
    proc = cli.run("-vv", "run", "reverse-bands", url, tmp_path / "out.tif")
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    assert any(h.startswith("Basic ") for h in http.auth_headers())  # GDAL did send it
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert PASSWORD not in repr([ds.tags(), ds.descriptions, *(ds.tags(i) for i in ds.indexes)])
    assert PASSWORD.encode() not in open(tmp_path / "out.tif", "rb").read()
    # Errors, through the CLI and the API.
    for bad in (http.url("missing.tif", f"alice:{PASSWORD}"),
                http.url("forbidden/in.tif", f"alice:{PASSWORD}")):
        proc = cli.run("-vv", "run", "reverse-bands", bad, tmp_path / "x.tif")
        line = cli.one_line_error(proc, "HTTP 40")
        assert PASSWORD not in proc.stderr and "alice" not in line
        with pytest.raises(RasterOpenError) as err:
            rdask.open_raster(bad)
        assert PASSWORD not in str(err.value)
    # Graph keys and tokens. (The tasks themselves must carry the URL to read it.)
    from dask.base import tokenize

    arr = rdask.apply(rdask.open_raster(url), "reverse-bands")
    assert PASSWORD not in str(dict(arr.data.__dask_graph__()).keys()) + tokenize(arr) + arr.data.name


def test_vsicurl_password_never_shows(http):
    with pytest.raises(RasterOpenError) as err:
        rdask.open_raster("/vsicurl/" + http.url("missing.tif", f"alice:{PASSWORD}"))
    assert "not found (HTTP 404)" in str(err.value)
    assert PASSWORD not in str(err.value)


def test_info_hides_url_password(http):
    proc = cli.run("info", http.url("in.tif", f"alice:{PASSWORD}"))
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr


# -- 5. S3 outputs: atomic, clean on failure, never clobbering ------------------------------


@pytest.mark.parametrize("name", list(INPUTS), ids=list(INPUTS.values()))
def test_s3_output_appears_only_when_complete(s3, served, tmp_path, name):
    expected = local_job(served / name, tmp_path, "focal-mean")
    client = s3.client()
    seen = []

    def during(done, total):  # called after every chunk is written
        seen.append("out.tif" in objects(client, "out"))

    result = rdask.process(str(served / name), f"s3://{BUCKET}/out.tif", "focal-mean",
                           progress=during, workers=2, chunk_mb=1)
    assert result.path == f"s3://{BUCKET}/out.tif"
    assert len(seen) > 1 and not any(seen), seen
    assert objects(client) == sorted([*INPUTS, "out.tif"]) and not uploads(client)
    client.download_file(BUCKET, "out.tif", str(tmp_path / "from-s3.tif"))
    assert_same_raster(tmp_path / "from-s3.tif", expected)
    assert not staged_files(tempfile.gettempdir())


def test_s3_object_is_the_local_output_byte_for_byte(s3, served, tmp_path):
    """In one thread, chunks are written in the same order: same bytes."""
    expected = local_job(served / "in.tif", tmp_path, "focal-mean", scheduler="sync")
    rdask.process(str(served / "in.tif"), f"s3://{BUCKET}/out.tif", "focal-mean", scheduler="sync")
    body = s3.client().get_object(Bucket=BUCKET, Key="out.tif")["Body"].read()
    assert body == expected.read_bytes()


def test_an_object_rewritten_in_this_process_reads_as_its_new_self(s3, tmp_path):
    """GDAL keeps a remote file's bytes for the life of the process: once a
    job has replaced an object this process read, reading it again gives
    the new pixels, not the old ones."""
    url = f"s3://{BUCKET}/again.tif"
    for seed in (1, 2):
        src = write(tmp_path / f"in{seed}.tif", synthetic((1, 300, 300), "uint16", seed=seed),
                    block=(256, 256))
        rdask.process(str(src), url, "reverse-bands", overwrite=True)
        with rasterio.open(url) as ds, rasterio.open(src) as want:
            np.testing.assert_array_equal(ds.read(), want.read())


@pytest.mark.parametrize("name", list(INPUTS), ids=list(INPUTS.values()))
def test_failing_job_leaves_no_object_and_no_upload(s3, served, tmp_path, name):
    kernels = tmp_path / "failing.py"
    kernels.write_text(FAILING_KERNEL)
    with pytest.raises(KernelError, match="boom"):
        rdask.process(str(served / name), f"s3://{BUCKET}/out.tif", f"{kernels}:explode", chunk_mb=1)
    assert objects(s3.client()) == sorted(INPUTS) and not uploads(s3.client())
    assert not staged_files(tempfile.gettempdir())


def test_interrupted_upload_is_aborted(s3, served, monkeypatch):
    """Ctrl-C in the middle of the multipart upload: the upload is aborted."""
    from rdask.cloud.s3 import S3Endpoint

    real_client = S3Endpoint.client

    class Interrupting:
        def __init__(self, client):
            self._client = client

        def __getattr__(self, name):
            return getattr(self._client, name)

        def upload_part(self, **kw):
            assert uploads(self._client)  # the upload exists at this point...
            raise KeyboardInterrupt

    monkeypatch.setattr(S3Endpoint, "client", lambda self: Interrupting(real_client(self)))
    with pytest.raises(KeyboardInterrupt):
        rdask.process(str(served / "in.tif"), f"s3://{BUCKET}/out.tif", "reverse-bands")
    assert objects(s3.client()) == sorted(INPUTS) and not uploads(s3.client())  # ...and not after
    assert not staged_files(tempfile.gettempdir())


def test_existing_object_needs_overwrite(s3, served, tmp_path):
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="out.tif", Body=b"precious")
    with pytest.raises(OutputError, match="output exists") as err:
        rdask.process(str(served / "in.tif"), f"s3://{BUCKET}/out.tif", "reverse-bands")
    assert f"s3://{BUCKET}/out.tif" in str(err.value)
    assert client.get_object(Bucket=BUCKET, Key="out.tif")["Body"].read() == b"precious"
    proc = cli.run("run", "reverse-bands", served / "in.tif", f"s3://{BUCKET}/out.tif")
    cli.one_line_error(proc, f"s3://{BUCKET}/out.tif", "--overwrite")
    assert client.get_object(Bucket=BUCKET, Key="out.tif")["Body"].read() == b"precious"

    rdask.process(str(served / "in.tif"), f"s3://{BUCKET}/out.tif", "reverse-bands", overwrite=True)
    client.download_file(BUCKET, "out.tif", str(tmp_path / "from-s3.tif"))
    assert np.array_equal(read(tmp_path / "from-s3.tif"), read(served / "in.tif")[::-1])


def test_stale_multipart_upload_is_aborted(s3, served, tmp_path):
    """A killed job leaves an unfinished multipart upload (billed storage); the
    next job on the same key aborts it."""
    client = s3.client()
    stale = client.create_multipart_upload(Bucket=BUCKET, Key="out.tif")["UploadId"]
    client.upload_part(Bucket=BUCKET, Key="out.tif", UploadId=stale, PartNumber=1, Body=b"x" * 1024)
    other = client.create_multipart_upload(Bucket=BUCKET, Key="out.tif.other")["UploadId"]
    assert {u["UploadId"] for u in uploads(client)} == {stale, other}

    rdask.process(str(served / "in.tif"), f"s3://{BUCKET}/out.tif", "reverse-bands")
    assert [u["UploadId"] for u in uploads(client)] == [other]  # another key's upload is kept
    client.download_file(BUCKET, "out.tif", str(tmp_path / "from-s3.tif"))
    assert np.array_equal(read(tmp_path / "from-s3.tif"), read(served / "in.tif")[::-1])


def test_ctrl_c_while_writing_to_s3(s3, served, tmp_path):
    big = write(tmp_path / "big.tif", synthetic((3, 1024, 1024), "uint16", seed=5), block=(256, 256))
    staging = tempfile.gettempdir()
    proc = subprocess.Popen(
        [RDASK, "run", "reverse-bands", big, f"s3://{BUCKET}/out.tif", "-j", "1",
         "--kernel-arg", "iterations=20000", "--chunk-mb", "0.5", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Interrupt once the job is computing: its partial file (staged upload)
        # or its parts journal (parts uploaded by the tasks) is there.
        assert wait_for(lambda: any("rdask-part" in f for f in staged_files(staging)), 60), \
            proc.poll()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().startswith("rdask: interrupted"), err
    assert objects(s3.client()) == sorted(INPUTS) and not uploads(s3.client())
    assert not staged_files(staging)
