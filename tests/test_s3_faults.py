"""S3 under injected faults: every output kind and an ``s3://`` input,
through a fault-injecting proxy in front of moto (``tests/faultproxy.py``).

At 20% and at 40% of requests failed (503 SlowDown, 500 InternalError, a
connection reset before the server acts, a reset after it acted, half of
those GETs cut mid-body), each job completes with the output of the same
job run without faults (pixels, overviews and metadata; for Zarr every
key, metadata document and array), with nothing else left behind: no
hidden piece, no multipart upload, nothing staged in ``$TMPDIR``. Every
job reads its input from S3 too (GDAL's ``/vsis3/``), so GDAL, boto3 and
obstore all meet the faults; the proxy must have injected each kind in
each run.

Where no retry policy can help (every attempt of one operation fails, or
``AWS_MAX_ATTEMPTS=1`` at 40%), a job ends in one line naming the URL and
S3's reason, after exactly the attempts the user's setting allows, and
leaves nothing.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter

import cli
import numpy as np
import pytest
import rasterio
import zarr
from botocore.exceptions import ClientError
from faultproxy import KINDS, FaultProxy, Request
from rasters import assert_same_raster, synthetic, write
from rio_cogeo.cogeo import cog_validate
from servers import BUCKET, use_s3

import rdask
from rdask.cloud.s3 import FIRST_DELAY, MAX_DELAY, RetryPolicy, S3Endpoint
from rdask.errors import OutputError, RasterOpenError
from rdask.io.remote import network_defaults

#: The proxy's seed: with it every kind of fault is dealt within a run's
#: first 14 requests, at 20% as at 40% (a run makes 26 to 170).
SEED = 24
#: At most this many faults in a row for one request: GDAL's back-off is
#: not capped (0.1 s, doubling), and a streak of 10 would cost one request
#: 4 to 10 minutes, which at 40% happens in about one module run in ten.
#: Clients allowed 11 attempts must ride out 6 in a row; that they are
#: allowed 11, and not more, is checked without the wait below.
BURST = 6

#: What each job reads (``in/<name>.tif`` in the bucket), writes and how.
JOBS = {
    # 12 MiB of float32 noise in 6 MB chunks: parts and pieces (asserted).
    "gtiff-parts": ("big", "out/a.tif", dict(chunk_mb=6, compress="none")),
    # Under 5 MiB of pixels: built on the client, uploaded whole.
    "gtiff-staged": ("small", "out/b.tif", dict(chunk_mb=0.5)),
    # Chunk and overview pieces (a level job, the tail), parts made of them.
    "cog-parts": ("big", "out/c.tif", dict(driver="COG", chunk_mb=3, compress="deflate")),
    "cog-staged": ("small", "out/d.tif", dict(driver="COG", chunk_mb=0.5)),
    # Chunks from the tasks, an overview level read back from S3, metadata last.
    "zarr": ("big", "out/e.zarr", dict(chunk_mb=3, overview_levels=1)),
    # Each task's chunk as one shard object.
    "zarr-sharded": ("big", "out/f.zarr", dict(chunk_mb=3, overview_levels=1, creation_options={"SHARD": "YES"})),
    # GDAL's reads alone, into a local GeoTIFF.
    "s3-input": ("big", None, dict(chunk_mb=2)),
}
PARTS = ("gtiff-parts", "cog-parts")


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3faults-in")
    big = np.random.default_rng(1).normal(0, 50, size=(2, 1024, 1536)).astype("float32")
    write(root / "big.tif", big, block=(256, 256), compress=None, tags={"SENSOR": "noise"})
    small = synthetic((2, 1000, 1200), "uint16", seed=2, nodata=0)
    write(root / "small.tif", small, block=(128, 128), nodata=0, descriptions=("a", "b"))
    return root


@pytest.fixture
def faulty_s3(request, moto, monkeypatch, tmp_path, inputs):
    """moto behind a :class:`FaultProxy`, the environment (this process's,
    which CLI runs and spawned workers inherit) pointing at the proxy, the
    inputs in the bucket. Faults start at 0; ``request.param`` (the rate a
    test is parametrized with, indirectly) is ``proxy.rate_asked``."""
    use_s3(moto, monkeypatch, tmp_path, BUCKET)
    for name in ("big", "small"):
        moto.client().upload_file(str(inputs / f"{name}.tif"), BUCKET, f"in/{name}.tif")
    with FaultProxy(moto.endpoint) as proxy:
        monkeypatch.setenv("AWS_S3_ENDPOINT", proxy.endpoint)
        proxy.rate_asked = getattr(request, "param", 0.2)
        yield proxy


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Each job's output without faults, run once per module (lazily) and
    kept on local disk: ``{job: path}``."""
    return {"root": tmp_path_factory.mktemp("s3faults-ref")}


# -- helpers -------------------------------------------------------------------


def s3url(key):
    return f"s3://{BUCKET}/{key}"


def run(job, tmp_path, **kw):
    """Run ``job``; return where its output is (an S3 URL or a local path)."""
    name, key, options = JOBS[job]
    target = s3url(key) if key else str(tmp_path / f"{job}.tif")
    rdask.process(s3url(f"in/{name}.tif"), target, "reverse-bands", **options, **kw)
    return target


def objects(moto, prefix=""):
    pages = moto.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def uploads(moto):
    return moto.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def fetch(moto, target, dst):
    """A local copy of ``target``: an S3 object or store (straight from moto,
    past the proxy), or the local file itself."""
    if not target.startswith("s3://"):
        return target
    key = target[len(f"s3://{BUCKET}/"):]
    if not key.endswith(".zarr"):
        moto.client().download_file(BUCKET, key, str(dst))
        return str(dst)
    for k in objects(moto, key + "/"):
        path = os.path.join(dst, k[len(key) + 1:])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        moto.client().download_file(BUCKET, k, path)
    return str(dst)


def reference(references, job, moto, proxy, tmp_path):
    """The job's output without faults (run now through the proxy at 0% if
    this module has not yet), then the bucket as the inputs alone."""
    if job not in references:
        proxy.set(0.0)
        (tmp_path / "ref").mkdir()
        target = run(job, tmp_path / "ref", workers=4)
        references[job] = fetch(moto, target, references["root"] / job)
        for key in objects(moto, "out/"):
            moto.client().delete_object(Bucket=BUCKET, Key=key)
    return references[job]


def assert_same_tiff(got, ref, cog):
    """Same pixels, masks and metadata, overview by overview."""
    assert_same_raster(got, ref)
    with rasterio.open(got) as a, rasterio.open(ref) as b:
        assert a.overviews(1) == b.overviews(1)
        levels = len(a.overviews(1))
    assert levels > 0 or not cog
    for level in range(levels):
        with rasterio.open(got, overview_level=level) as a, rasterio.open(ref, overview_level=level) as b:
            assert a.shape == b.shape and np.array_equal(a.read(), b.read()), level
    if cog:
        valid, errors, _ = cog_validate(got)
        assert valid, errors


def assert_same_store(got, ref):
    """The same keys, the same metadata documents, the same arrays."""
    def keys(root):
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)

    assert keys(got) == keys(ref)
    for key in keys(ref):
        if key.endswith(("zarr.json", ".zattrs", ".zarray", ".zgroup", ".zmetadata")):
            with open(os.path.join(got, key)) as a, open(os.path.join(ref, key)) as b:
                assert json.load(a) == json.load(b), key
    arrays = 0

    def walk(a, b):
        nonlocal arrays
        assert dict(a.attrs) == dict(b.attrs)
        for name, member in b.members():
            if isinstance(member, zarr.Array):
                arrays += 1
                assert np.array_equal(a[name][...], member[...], equal_nan=True), name
            else:
                walk(a[name], member)

    walk(zarr.open_group(got, mode="r", zarr_format=3), zarr.open_group(ref, mode="r", zarr_format=3))
    assert arrays >= 2  # the data and an overview level, at least


def assert_same_output(job, got, ref):
    if job.startswith("zarr"):
        assert_same_store(got, ref)
    else:
        assert_same_tiff(got, ref, cog=job.startswith("cog"))


def assert_nothing_left(moto, keep=()):
    """Only the inputs (and ``keep``) in the bucket: no hidden piece, no
    stray object; no multipart upload; nothing staged in ``$TMPDIR``."""
    left = [k for k in objects(moto) if not k.startswith("in/") and not k.startswith(tuple(keep))]
    assert left == [], left
    assert uploads(moto) == []
    staged = [os.path.join(d, f) for d, _, fs in os.walk(tempfile.gettempdir()) for f in fs]
    assert staged == [], staged


# -- 1. the faults a policy rides out --------------------------------------------


# Every job at 40% faults; at 20% (another seeded sequence) the cheaper ones.
RATES = [(job, 0.4) for job in JOBS] + [(job, 0.2) for job in ("gtiff-parts", "cog-parts",
                                                                "s3-input")]


@pytest.mark.parametrize(("job", "faulty_s3"), RATES, indirect=["faulty_s3"],
                         ids=[f"{job}-{rate:.0%}" for job, rate in RATES])
def test_completes_with_the_fault_free_output(job, faulty_s3, moto, references, tmp_path):
    proxy = faulty_s3
    ref = reference(references, job, moto, proxy, tmp_path)
    proxy.set(proxy.rate_asked, SEED, burst=BURST)
    target = run(job, tmp_path, workers=4)
    faults, requests, forwarded, cut = proxy.faults(), proxy.requests, dict(proxy.forwarded), proxy.truncated
    proxy.set(0.0)
    print(f"\n{job} at {proxy.rate_asked:.0%}: {requests} requests, faults {faults} "
          f"({cut} GETs cut mid-body), forwarded {forwarded}")
    assert all(faults[k] >= 1 for k in KINDS), faults
    if job in PARTS:
        assert forwarded["UploadPart"] >= 2 and forwarded["PutObject"] >= 1  # parts and pieces
    got = fetch(moto, target, tmp_path / "got")
    assert_same_output(job, got, ref)
    keep = [] if target.startswith("/") else [target[len(f"s3://{BUCKET}/"):]]
    assert_nothing_left(moto, keep)


@pytest.mark.parametrize("faulty_s3", [0.4], indirect=True, ids=["40%"])
def test_a_local_cluster_completes_too(faulty_s3, moto, references, tmp_path):
    """Spawned workers read the input and upload the parts and the chunk and
    overview pieces through the proxy, with the policy their own environment
    gives them."""
    proxy, job = faulty_s3, "cog-parts"
    ref = reference(references, job, moto, proxy, tmp_path)
    proxy.set(proxy.rate_asked, SEED, burst=BURST)
    target = run(job, tmp_path, scheduler="local:2")
    faults, requests = proxy.faults(), proxy.requests
    proxy.set(0.0)
    print(f"\n{job} on local:2 at 40%: {requests} requests, faults {faults}")
    assert all(faults[k] >= 1 for k in KINDS), faults
    assert_same_output(job, fetch(moto, target, tmp_path / "got"), ref)
    assert_nothing_left(moto, [target[len(f"s3://{BUCKET}/"):]])


LOST_ANSWERS = {
    # A second upload, which the first job would never complete: aborted.
    "create": ("gtiff-parts", lambda r: r.operation == "CreateMultipartUpload"),
    # Retried, it finds no upload: the object at the key is checked instead.
    "complete": ("gtiff-parts", lambda r: r.operation == "CompleteMultipartUpload"),
    # The pieces' deletion after the completion (boto3), done twice.
    "delete-pieces": ("cog-parts", lambda r: r.operation == "DeleteObjects"),
    # A piece's download cut mid-body (or never answered), fetched again.
    "get-piece": ("cog-parts", lambda r: r.operation == "GetObject" and ".rdask-partial/" in r.path),
    # obstore does not repeat a POST whose connection dropped: rdask does.
    "delete-zarr": ("zarr", lambda r: r.operation == "DeleteObjects"),
    # Nor a GET whose error answer broke off: the 404 of a shard not yet
    # written (zarr reads it before writing), and reads of the level above.
    "get-zarr": ("zarr-sharded", lambda r: r.operation == "GetObject" and "/out/" in r.path),
}


@pytest.mark.parametrize("case", list(LOST_ANSWERS))
def test_an_answer_lost_after_s3_acted_is_not_a_failure(case, faulty_s3, moto, references, tmp_path):
    """Each request of one operation has its connection reset after S3
    acted (a GET's answer cut mid-body every other time), once: its retry
    meets the work already done, and the job still gives the fault-free
    output and leaves nothing behind."""
    proxy = faulty_s3
    job, operation = LOST_ANSWERS[case]
    ref = reference(references, job, moto, proxy, tmp_path)
    if job == "zarr":
        run(job, tmp_path / "ref")  # a store to replace: its old metadata is deleted first
    proxy.set(1.0, SEED, only=operation, kinds=("reset-after",), burst=1)
    target = run(job, tmp_path, workers=4, overwrite=True)
    faults, forwarded = proxy.faults(), dict(proxy.forwarded)
    proxy.set(0.0)
    print(f"\n{case}: {faults['reset-after']} answers lost, forwarded {forwarded}")
    assert faults["reset-after"] >= 1
    if case == "create":
        assert forwarded["CreateMultipartUpload"] == 2 and forwarded.get("AbortMultipartUpload") == 1
    if case == "complete":
        assert forwarded["CompleteMultipartUpload"] == 2
    assert_same_output(job, fetch(moto, target, tmp_path / "got"), ref)
    assert_nothing_left(moto, [target[len(f"s3://{BUCKET}/"):]])


# -- 2. faults no policy rides out -----------------------------------------------


SLOWDOWN = r"SlowDown: Please reduce your request rate. \(after 2 retries\)$"


@pytest.mark.parametrize(("job", "operation", "env", "attempts", "error", "said"), [
    ("gtiff-parts", "UploadPart", {}, 3, OutputError, r"^cannot upload part \d+ of s3://rdask-test/out/a.tif: "
                                                      + SLOWDOWN),
    ("zarr", "PutObject", {}, 3, OutputError, r"^cannot write s3://rdask-test/out/e.zarr: SlowDown \(HTTP 503\) "
                                              r"\(after 2 retries\)$"),
    ("s3-input", "GetObject", {}, 3, RasterOpenError, r"^cannot open s3://rdask-test/in/big.tif: "
                                                      r"Please reduce your request rate.$"),
    # GDAL's own setting wins for GDAL.
    ("s3-input", "GetObject", {"GDAL_HTTP_MAX_RETRY": "1"}, 2, RasterOpenError,
     r"^cannot open s3://rdask-test/in/big.tif: Please reduce your request rate.$"),
], ids=["boto3", "obstore", "gdal", "gdal-own-setting"])
def test_every_attempt_failing_ends_in_one_line_and_leaves_nothing(job, operation, env, attempts, error, said,
                                                                   faulty_s3, moto, tmp_path, monkeypatch):
    """503 SlowDown to every attempt of one operation, ``AWS_MAX_ATTEMPTS=3``:
    each request is tried as often as the user's setting says (boto3,
    obstore, and GDAL, whose ``GDAL_HTTP_MAX_RETRY`` follows unless set),
    then one line names the URL and S3's reason; nothing is published and
    nothing is left."""
    proxy = faulty_s3
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    proxy.set(1.0, SEED, only=lambda r: r.operation == operation, burst=10**6, kinds=("slowdown",))
    with pytest.raises(error) as err:
        run(job, tmp_path, workers=1)
    faults, log = proxy.faults(), list(proxy.log)
    proxy.set(0.0)
    message = str(err.value)
    assert re.search(said, message), message
    # Each request as often as allowed (GDAL asks twice at open: the guard's look, then the open).
    tries = Counter(request for _, request, _ in log)
    assert tries and all(n % attempts == 0 and n <= 2 * attempts for n in tries.values()), tries
    assert faults["slowdown"] == len(log) and sum(faults.values()) == len(log)
    assert_nothing_left(moto)
    assert not os.path.exists(tmp_path / "s3-input.tif")


@pytest.mark.parametrize("faulty_s3", [0.4], indirect=True, ids=["40%"])
def test_one_attempt_at_40_percent_fails_fast_in_one_line(faulty_s3, moto, tmp_path, monkeypatch):
    """``AWS_MAX_ATTEMPTS=1``, honoured by every client of the job (GDAL's
    reads included): the CLI's COG job fails at the first fault, in one
    line naming the URL and the fault, and leaves nothing."""
    proxy = faulty_s3
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    proxy.set(proxy.rate_asked, SEED, burst=BURST)
    name, key, options = JOBS["cog-parts"]
    proc = cli.run("run", "reverse-bands", s3url(f"in/{name}.tif"), s3url(key), "--driver", "COG",
                   "--chunk-mb", "3", "-j", "2", timeout=120)
    faults, requests = proxy.faults(), proxy.requests
    proxy.set(0.0)
    line = cli.one_line_error(proc, f"s3://{BUCKET}/")
    print(f"\n{line}\nfaults {faults}, requests {requests}")
    assert re.search(r"SlowDown|InternalError|HTTP 50[03]|Please reduce your request rate|"
                     r"We encountered an internal error|connection to S3 dropped", line), line
    assert sum(faults.values()) <= 2  # the first fault ended it (two tasks may meet one each)
    assert_nothing_left(moto)


# -- 3. the policy ---------------------------------------------------------------


def test_the_policy_follows_the_environment(monkeypatch):
    """Attempts and mode from ``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE``, the
    same attempts for every client; GDAL's own setting kept; a mistyped
    setting refused in one line."""
    for name in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "GDAL_HTTP_MAX_RETRY", "GDAL_HTTP_RETRY_DELAY"):
        monkeypatch.delenv(name, raising=False)
    policy = RetryPolicy.from_environment()
    assert policy == RetryPolicy() and policy.mode == "standard"
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("AWS_RETRY_MODE", "Adaptive")
    policy = RetryPolicy.from_environment()
    assert (policy.attempts, policy.mode) == (4, "adaptive")
    assert policy.botocore().retries == {"mode": "adaptive", "total_max_attempts": 4}
    assert policy.obstore()["max_retries"] == 3
    assert network_defaults()["GDAL_HTTP_MAX_RETRY"] == "3"
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "7")
    assert "GDAL_HTTP_MAX_RETRY" not in network_defaults()  # GDAL reads it from the environment itself
    for name, value in [("AWS_MAX_ATTEMPTS", "many"), ("AWS_MAX_ATTEMPTS", "0"), ("AWS_RETRY_MODE", "eager")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(OutputError) as err:
            RetryPolicy.from_environment()
        assert name in str(err.value) and repr(value.lower()) in str(err.value) and "\n" not in str(err.value)
        monkeypatch.setenv(name, {"AWS_MAX_ATTEMPTS": "4", "AWS_RETRY_MODE": "standard"}[name])


def test_the_seed_deals_every_kind_within_14_requests():
    """What the runs' "every kind at least once" rests on."""
    for rate in (0.2, 0.4):
        with FaultProxy("127.0.0.1:9", rate, SEED) as proxy:
            dealt = [proxy.decide(Request("GET", "/b/k", "/b/k", {}, {}), str(i)) for i in range(14)]
        assert set(dealt) - {None} == set(KINDS), (rate, dealt)


def test_backoff_doubles_from_a_tenth_of_a_second_to_at_most_15():
    """obstore's back-off: the first retry after 0.1 to 0.2 s, each bound twice
    the last, capped at 15 s; drawn between, so clients spread out."""
    policy = RetryPolicy()
    assert [policy.delay(r, lambda: 0.0) for r in range(1, 12)] == [FIRST_DELAY] * 11
    assert [policy.delay(r, lambda: 1.0) for r in range(1, 12)] == [
        min(MAX_DELAY, FIRST_DELAY * 2**r) for r in range(1, 12)]
    assert (FIRST_DELAY, MAX_DELAY) == (0.1, 15.0)


def test_boto3_retries_every_request_with_the_policy_and_no_quota(faulty_s3, monkeypatch):
    """40 requests, each answered 500 ten times and then served: each gets
    through on its 11th attempt, after each retry waiting what
    :meth:`RetryPolicy.delay` says (made 0 here); an 11th fault in a row is
    final. (botocore's standard mode stops retrying once its quota of 500
    tokens, 14 per retried 500, runs out: after 35 retries.)"""
    proxy = faulty_s3
    waits = []
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, retry, draw=None: waits.append(retry) or 0.0)
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    client = S3Endpoint.from_options({}).client()
    proxy.set(1.0, SEED, only=lambda r: r.operation == "HeadObject", kinds=("internal",), burst=10)
    for _ in range(40):
        client.head_object(Bucket=BUCKET, Key="in/small.tif")
    assert proxy.faults()["internal"] == 400 and proxy.forwarded["HeadObject"] == 40
    assert waits == list(range(1, 11)) * 40
    proxy.set(1.0, SEED, only=lambda r: r.operation == "HeadObject", kinds=("internal",), burst=11)
    with pytest.raises(ClientError, match="500"):
        client.head_object(Bucket=BUCKET, Key="in/small.tif")
    assert proxy.faults()["internal"] == 11
