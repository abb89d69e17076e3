"""rdask's outputs on a cluster whose workers cannot see the client's files,
and what crosses to the client.

The rig (:mod:`isolation`): ``rdask run`` runs in a network namespace of its
own whose only way out is a veth pair, so the pair's counters are every
byte the client sent and received; the ``dask scheduler``, the ``dask
worker`` processes (each with an empty tmpfs over the client's working
directory) and moto's S3 server run on the host, on the pair's host
address. Inputs, and outputs that need a shared filesystem, live in a
directory everybody sees.

For each output mode: the output equals a threaded run of the same job;
a worker SIGKILLed mid-job does not change it; a client SIGKILLed mid-job
then resumed gives the same output; and on a job whose output is at least
200 MB the client moves at most 1% of the output's bytes (Zarr, mosaic,
and the S3 outputs once workers upload themselves), or about all of them
(today's client-writes GeoTIFF, which proves the counter).

Needs root (namespaces, veth, mounts).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import isolation
import numpy as np
import pytest
import rasterio
from cli import RDASK
from faultutil import journal_chunks, reverse_bands_iterations, wait_until
from isolation import Counters, Rig, rig
from rasters import synthetic, write

pytestmark = [
    pytest.mark.scale,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                       reason="needs root: network and mount namespaces"),
]

BUCKET = "scaleout"

# The small job (correctness and faults): 36 chunks of one 128 x 128 tile.
SMALL_SHAPE = (3, 768, 768)
SMALL_BLOCK = 128
SMALL_CHUNK_MB = 0.05
# The big job (bytes): 3 x 4608 x 4608 float32 noise, ~255 MB of pixels that
# zstd barely shrinks, so the output stays well above 200 MB.
BIG_SHAPE = (3, 4608, 4608)
BIG_BLOCK = 512
MIN_BIG_OUTPUT = 200e6
#: Client bytes / output bytes: at most this where workers write the output.
METADATA_SHARE = 0.01
#: ... and at least this where the client writes it (the counter's proof).
CLIENT_WRITES_SHARE = 0.90


# -- output modes -------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """One output kind: where it goes, how to ask for it, how to read it back."""

    name: str
    suffix: str  # of the target name: ".tif", ".zarr", "" (a mosaic directory)
    place: str  # "hidden" (the client's dir), "shared" or "s3"
    args: tuple[str, ...] = ()
    workers_write: bool = True  # the client should move metadata only
    #: Why the bytes bound cannot hold yet (strict xfail until it does).
    bytes_pending: str = ""
    #: Why the mode cannot run at all yet (strict xfail on every test).
    pending: str = ""
    mosaic: bool = False

    def target(self, r: Rig, stem: str) -> str:
        name = f"{stem}-{self.name}{self.suffix}"
        if self.place == "s3":
            return f"s3://{BUCKET}/{name}"
        return str((r.hidden if self.place == "hidden" else r.shared) / name)


MODES = [
    Mode("tif", ".tif", "hidden", workers_write=False),
    Mode("zarr", ".zarr", "shared"),
    Mode("mosaic", "", "shared", mosaic=True),
    Mode("s3-tif", ".tif", "s3"),
    Mode("s3-cog", ".tif", "s3", ("--driver", "cog")),
    Mode("s3-zarr", ".zarr", "s3"),
]
MODE_IDS = [m.name for m in MODES]


def expect_pending(request: pytest.FixtureRequest, mode: Mode, *, bytes_bound: bool = False) -> None:
    """Mark this test a strict xfail if ``mode`` cannot pass it yet (an
    XPASS then fails: drop the reason from MODES when the output lands)."""
    reason = mode.pending or (mode.bytes_pending if bytes_bound else "")
    if reason:
        # Only an assertion (rdask failing, or a bound) is expected: a rig error still fails.
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True, raises=AssertionError))


# -- reading outputs back -----------------------------------------------------


@dataclass
class Output:
    """An output read back: pixels, and the metadata that must not change."""

    pixels: np.ndarray
    meta: dict = field(default_factory=dict)
    nbytes: int = 0


def _read_tif(path: str) -> Output:
    with rasterio.open(path) as ds:
        meta = dict(ds.profile, tags=ds.tags(), band_tags=[ds.tags(b) for b in ds.indexes],
                    overviews=ds.overviews(1), descriptions=ds.descriptions)
        return Output(ds.read(), meta, os.path.getsize(path))


def _tree_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def read_output(r: Rig, mode: Mode, target: str) -> Output:
    """The output at ``target`` (downloaded first from S3)."""
    if mode.place == "s3":
        key = target.split("/", 3)[3]
        local = download(r, key, r.base / "download")
        try:
            return read_output(r, replace(mode, place="shared"), str(local))
        finally:
            shutil.rmtree(r.base / "download")
    if mode.suffix == ".zarr":
        import zarr

        arr = zarr.open_array(os.path.join(target, "band_data"), mode="r", zarr_format=3)
        return Output(arr[:], {"attrs": dict(arr.attrs)}, _tree_size(target))
    if mode.mosaic:
        out = _read_tif(os.path.join(target, "index.vrt"))
        out.nbytes = _tree_size(target)
        return out
    return _read_tif(target)


def download(r: Rig, key: str, into: Path) -> Path:
    """Every object at ``key`` or under ``key/`` (a Zarr store), into ``into``."""
    s3 = r.s3.client()
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("Contents", [])
    for o in listing:
        if o["Key"] == key or o["Key"].startswith(key + "/"):
            local = into / o["Key"]
            local.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(BUCKET, o["Key"], str(local))
    assert listing, f"nothing at s3://{BUCKET}/{key}"
    return into / key


def output_bytes(r: Rig, mode: Mode, target: str) -> int:
    """Bytes of the output as stored (every object under the S3 key)."""
    if mode.place == "s3":
        key = target.split("/", 3)[3]
        listing = r.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=key)
        return sum(o["Size"] for o in listing.get("Contents", []))
    return _tree_size(target) if os.path.isdir(target) else os.path.getsize(target)


def remove_output(r: Rig, mode: Mode, target: str) -> None:
    if mode.place == "s3":
        key = target.split("/", 3)[3]
        s3 = r.s3.client()
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=o["Key"])
    elif os.path.isdir(target):
        shutil.rmtree(target)
    elif os.path.exists(target):
        os.unlink(target)


def journal_of(r: Rig, mode: Mode, target: str) -> Path | None:
    """The journal of an interrupted job on ``target``: beside it, or beside
    its staging file (S3) in the client's temporary directory."""
    if mode.place == "s3":
        digest = hashlib.sha256(target.encode()).hexdigest()[:16]
        found = glob.glob(str(r.hidden / "tmp" / "rdask-s3-staging" / digest / ".*.rdask-journal"))
        return Path(found[0]) if found else None
    t = Path(target)
    return t.with_name(f".{t.name}.rdask-journal")


# -- jobs -------------------------------------------------------------------


@dataclass
class Job:
    """An ``rdask run`` job on an input in the shared dir, in any mode."""

    src: str
    args: tuple[str, ...]  # kernel, options (no input or output)
    chunks: int
    tile_size: int  # of a mosaic (a multiple of the blocksize)
    #: Kernel arguments that only make it slow (same pixels and metadata).
    slow_args: tuple[str, ...] = ()

    def last_point(self) -> str:
        """The pause point of the job's last chunk (one block per chunk)."""
        _, h, w = SMALL_SHAPE
        return f"chunk:{h - SMALL_BLOCK}:{w - SMALL_BLOCK}"

    def cli(self, r: Rig, mode: Mode, target: str, *extra: str, slow: bool = False) -> list[str]:
        kernel, *opts = self.args
        mosaic = ("--tile-size", str(self.tile_size)) if mode.mosaic else ()
        slowly = self.slow_args if slow else ()
        return r.rdask(kernel, self.src, target, *opts, *slowly, *mode.args, *mosaic, *extra)


def run_ok(r: Rig, argv: list[str],
           timeout: float = 300) -> tuple[subprocess.CompletedProcess, Counters, float]:
    """Run a client to success: (result, its bytes on the veth, seconds)."""
    res, moved, seconds = r.run_client(argv, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(argv)}\n{res.stderr[-3000:]}"
    return res, moved, seconds


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Rig]:
    """One rig for the module: 2 one-thread workers with nannies (a
    SIGKILLed worker process is restarted, so the next test has 2 again)."""
    with rig(tmp_path_factory.mktemp("scaleout")) as r:
        r.s3.client().create_bucket(Bucket=BUCKET)
        yield r


@pytest.fixture
def rig_ready(cluster: Rig) -> Rig:
    """The rig with both workers up (after a kill, the nanny's restart)."""
    with cluster.cluster.client() as c:
        c.wait_for_workers(2, timeout=60)
    return cluster


@pytest.fixture(scope="module")
def small(cluster: Rig) -> Job:
    """A slow small job (~3 s of CPU) in the shared dir, slow enough to interrupt."""
    data = synthetic(SMALL_SHAPE, "uint16", seed=7)
    src = write(cluster.shared / "small.tif", data, block=(SMALL_BLOCK, SMALL_BLOCK))
    args = ("reverse-bands", "--blocksize", str(SMALL_BLOCK), "--chunk-mb", str(SMALL_CHUNK_MB),
            "--compress", "zstd", "--no-progress")
    # ~0.15 s of one core per chunk: a kill lands mid-job on any machine.
    slow = ("-a", f"iterations={reverse_bands_iterations(3.0)}")
    return Job(src, args, (SMALL_SHAPE[1] // SMALL_BLOCK) * (SMALL_SHAPE[2] // SMALL_BLOCK),
               tile_size=SMALL_BLOCK, slow_args=slow)


@pytest.fixture(scope="module")
def threaded(cluster: Rig, small: Job, tmp_path_factory) -> np.ndarray:
    """Pixels of the small job run on threads, in this (host) process's view."""
    out = tmp_path_factory.mktemp("threaded") / "threaded.tif"
    kernel, *opts = small.args
    proc = subprocess.run([RDASK, "run", kernel, small.src, str(out), *opts, "-j", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(out) as ds:
        pixels = ds.read()
    with rasterio.open(small.src) as ds:
        assert np.array_equal(pixels, ds.read()[::-1])  # an independent oracle
    return pixels


@pytest.fixture(scope="module")
def uninterrupted(cluster: Rig, small: Job) -> Callable[[Mode], Output]:
    """``uninterrupted(mode)``: the small job's output in ``mode``, run once
    on the rig without faults (the reference of the fault tests)."""
    done: dict[str, Output] = {}

    def get(mode: Mode) -> Output:
        if mode.name not in done:
            target = mode.target(cluster, "plain")
            run_ok(cluster, small.cli(cluster, mode, target))
            done[mode.name] = read_output(cluster, mode, target)
        return done[mode.name]

    return get


def same_output(got: Output, want: Output, mode: Mode) -> None:
    """Same pixels; same metadata (GeoTIFF, mosaic) or Zarr attributes."""
    assert np.array_equal(got.pixels, want.pixels)
    if mode.suffix == ".tif" or mode.mosaic:
        assert got.meta == want.meta
    else:
        assert got.meta["attrs"] == want.meta["attrs"]


# -- 1. the rig ---------------------------------------------------------------


def test_workers_cannot_see_the_clients_files(rig_ready: Rig):
    """Workers see an empty dir where the client's files are, and the shared
    dir; the client sees its files and has no route off the rig."""
    r = rig_ready
    secret = r.hidden / "client-only.txt"
    secret.write_text("only the client sees this\n")
    (r.shared / "everyone.txt").write_text("shared\n")
    with r.cluster.client() as c:
        assert set(c.run(os.path.exists, str(secret)).values()) == {False}
        assert all(v == [] for v in c.run(os.listdir, str(r.hidden)).values())
        assert set(c.run(os.path.exists, str(r.shared / "everyone.txt")).values()) == {True}
    # The client process (in its netns) sees its file, and reaches nothing
    # but the rig: no route out of its namespace.
    probe = ("import os, socket, sys\n"
             "print(os.path.exists(sys.argv[1]))\n"
             "s = socket.socket(); s.settimeout(2)\n"
             "try:\n    s.connect(('10.231.255.254', 9)); print('connected')\n"
             "except OSError as e:\n    print('unreachable', e.errno)\n")
    res, moved, _ = r.run_client([sys.executable, "-c", probe, str(secret)])
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n")
    assert lines[0] == "True" and lines[1].startswith("unreachable"), res.stdout


LEFTOVER_RIG = """
import sys, time
sys.path.insert(0, sys.argv[2])
from isolation import rig
with rig(sys.argv[1], n_workers=1, s3=False) as r:
    print(r.net.netns, r.net.host_if, flush=True)
    time.sleep(600)
"""


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    """A rig whose owner was SIGKILLed (no finally ran) leaves its netns, veth
    and dask processes; the next rig's start removes exactly those."""
    owner = subprocess.Popen([sys.executable, "-c", LEFTOVER_RIG, str(tmp_path),
                              os.path.dirname(__file__)], stdout=subprocess.PIPE, text=True)
    try:
        netns, host_if = owner.stdout.readline().split()
        owner.kill()
        owner.wait(30)
        tagged = isolation._tagged_processes()
        orphans = [pid for pid, who in tagged.items() if who == owner.pid]
        assert len(orphans) >= 2, tagged  # the scheduler and the worker's nanny (+ worker)
        assert netns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                       text=True).stdout
        removed = isolation.remove_leftovers()
        assert f"netns {netns}" in removed, removed
        wait_until(lambda: not any(isolation._alive(p) for p in orphans), "orphans to die",
                   timeout=30)
        assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                           text=True).stdout
        assert not os.path.exists(f"/sys/class/net/{host_if}")
    finally:
        if owner.poll() is None:
            owner.kill()
        isolation.remove_leftovers()


# -- 2. every mode: same pixels as threads -------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_output_equals_threaded_run(request, rig_ready: Rig, threaded: np.ndarray,
                                    uninterrupted: Callable[[Mode], Output], mode: Mode):
    """Every mode completes on workers that cannot see the client's files,
    with the pixels of a threaded run."""
    expect_pending(request, mode)
    out = uninterrupted(mode)
    assert out.pixels.shape == threaded.shape
    assert np.array_equal(out.pixels, threaded)


# -- 3. a worker is SIGKILLed mid-job ------------------------------------------


def _wait_chunks(r: Rig, mode: Mode, target: str, proc: subprocess.Popen, n: int) -> int:
    """Wait until ``n`` chunks of the job on ``target`` are journaled."""
    def done() -> int:
        journal = journal_of(r, mode, target)
        return len(journal_chunks(journal)) if journal else 0

    wait_until(lambda: done() >= n, f"{n} journaled chunks", proc=proc, interval=0.05)
    return done()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_worker_sigkill_mid_job(request, rig_ready: Rig, small: Job,
                                uninterrupted: Callable[[Mode], Output], mode: Mode):
    """A worker process SIGKILLed once chunks are done: its nanny restarts
    it, the job completes, and the output is the uninterrupted one."""
    expect_pending(request, mode)
    r = rig_ready
    want = uninterrupted(mode)
    target = mode.target(r, "workerkill")
    last = small.last_point()
    r.hold(last)  # the job cannot end before the kill
    proc = r.start_client(small.cli(r, mode, target, "--checkpoint-seconds", "0.1", slow=True))
    done = _wait_chunks(r, mode, target, proc, 3)
    with r.cluster.client() as c:
        pids = c.run(os.getpid)
        busy = [a for a, tasks in c.processing().items() if tasks and a in pids]
        victim = busy[0] if busy else next(iter(pids))
        # The worker process, not its nanny (which would take the worker with it).
        assert pids[victim] not in {p.pid for p in r.cluster.nannies}
        os.kill(pids[victim], signal.SIGKILL)
        assert proc.poll() is None and done < small.chunks
        wait_until(lambda: victim not in c.scheduler_info()["workers"], "the worker to be dropped",
                   timeout=60)
    r.release(last)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    same_output(read_output(r, mode, target), want, mode)


# -- 4. the client is SIGKILLed mid-job, then resumed ----------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_client_sigkill_then_resume(request, rig_ready: Rig, small: Job,
                                    uninterrupted: Callable[[Mode], Output], mode: Mode):
    """A worker process SIGKILLed once chunks are done: its nanny restarts
    it, the job completes, and the output is the uninterrupted one."""
    expect_pending(request, mode)
    r = rig_ready
    want = uninterrupted(mode)
    target = mode.target(r, "clientkill")
    argv = small.cli(r, mode, target, "--resume", "--checkpoint-seconds", "0.1", slow=True)
    last = small.last_point()
    r.hold(last)  # the job cannot end before the kill
    proc = r.start_client(argv)
    _wait_chunks(r, mode, target, proc, 4)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    r.release(last)  # the dead client's task there ends (and writes what the resume rewrites)
    journal = journal_of(r, mode, target)
    kept = len(journal_chunks(journal))
    assert 4 <= kept < small.chunks
    before = _chunk_files(Path(target).with_name(f".{Path(target).name}.rdask-partial"))
    res, _, _ = run_ok(r, [*argv[:2], "-v", *argv[2:]])
    resumed = re.search(r"([0-9.]+) Mpx of them resumed", res.stderr)
    assert resumed, res.stderr[-2000:]
    chunk_mpx = SMALL_BLOCK * SMALL_BLOCK / 1e6
    assert float(resumed.group(1)) >= round(kept * chunk_mpx, 1) - 0.05  # the journaled chunks were kept
    if mode.suffix == ".zarr" and mode.place == "s3":
        pass  # the summary above is the evidence: S3 keys have no inode to compare
    elif mode.suffix == ".zarr":
        # rdask's Zarr output logs no "resuming" line (GTiff and mosaic do):
        # instead, the journaled chunks' files must be the ones the killed run wrote.
        kept_files = set(before.items()) & set(_chunk_files(Path(target)).items())
        assert len(kept_files) >= kept, (len(kept_files), kept)
    else:
        assert "resuming" in res.stderr, res.stderr[-2000:]
    same_output(read_output(r, mode, target), want, mode)
    assert not journal.exists()


def _chunk_files(store: Path) -> dict[str, tuple[int, int]]:
    """``{chunk file: (inode, mtime)}`` of a Zarr store's pixel array."""
    root = store / "band_data"
    return {os.path.relpath(os.path.join(d, f), root): (os.stat(os.path.join(d, f)).st_ino,
                                                         os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, fs in os.walk(root) for f in fs if not f.startswith((".z", "zarr.json"))}


# -- 5. what crosses to the client ------------------------------------------------


@pytest.fixture(scope="module")
def big(cluster: Rig) -> Job:
    """The bytes job's input: float32 noise zstd cannot shrink much (stored
    uncompressed in the shared dir, so reading it costs no decoding)."""
    rng = np.random.default_rng(11)
    src = cluster.shared / "big.tif"
    profile = dict(driver="GTiff", width=BIG_SHAPE[2], height=BIG_SHAPE[1], count=BIG_SHAPE[0],
                   dtype="float32", tiled=True, blockxsize=BIG_BLOCK, blockysize=BIG_BLOCK,
                   crs="EPSG:32618", transform=rasterio.Affine(10, 0, 500000, 0, -10, 4000000))
    with rasterio.open(src, "w", **profile) as ds:
        for b in range(BIG_SHAPE[0]):
            ds.write(rng.standard_normal(BIG_SHAPE[1:], dtype=np.float32) * 1000, b + 1)
    args = ("reverse-bands", "--blocksize", str(BIG_BLOCK), "--compress", "zstd", "--no-progress")
    return Job(str(src), args, 0, tile_size=2 * BIG_BLOCK)


TABLE_HEAD = (f"{'mode':8} {'output MB':>9} {'client sent B':>13} {'received B':>11} "
              f"{'% of output':>11} {'wall s':>7}")


def report_row(capsys: pytest.CaptureFixture, row: str) -> None:
    """Print a row of the bytes table past pytest's capture (the lead quotes it)."""
    with capsys.disabled():
        print(f"\n{TABLE_HEAD}\n{row}")


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.timeout(900)  # the job's own timeout (400 s) comes first
def test_client_bytes(request, capsys, rig_ready: Rig, big: Job, mode: Mode):
    """On a >= 200 MB output the client moves <= 1% of it where workers write
    the output, and >= 90% (all of it) where it writes it itself."""
    expect_pending(request, mode, bytes_bound=True)
    r = rig_ready
    target = mode.target(r, "big")
    try:
        _, moved, seconds = run_ok(r, big.cli(r, mode, target), timeout=400)
        size = output_bytes(r, mode, target)
        share = moved.total / size
        report_row(capsys, f"{mode.name:8} {size / 1e6:9.1f} {moved.sent:13d} {moved.received:11d} "
                           f"{100 * share:11.3f} {seconds:7.1f}")
        assert size >= MIN_BIG_OUTPUT, size
        if mode.workers_write:
            assert share <= METADATA_SHARE, f"the client moved {100 * share:.1f}% of the output"
        else:
            assert moved.received >= CLIENT_WRITES_SHARE * size, (moved, size)
    finally:
        remove_output(r, mode, target)
