"""W7, scale-out: the W2 job on a 2-worker cluster with no shared files, per output mode.

Each mode writes W2's job (``rdask run reverse-bands``, ``iterations=0``)
from a client that the workers cannot see the files of, to a different
place: the client's own disk (the old client-writes path), S3 (GeoTIFF,
COG, Zarr), or a shared directory (Zarr, mosaic). For each mode it
measures what the client and the cluster paid: wall time, CPU seconds and
peak RSS of the client, of the workers and of the scheduler; the bytes the
client sent and received (so the share of the output that went through
the client); the size of the output; and every request moto's S3 server
answered, by operation and by who sent it (client or workers).

The machinery is ``tests/isolation.py``'s rig: the client runs in its own
network namespace behind a veth pair whose counters are exactly its
traffic; the ``dask scheduler``, two one-thread ``dask worker`` processes
(each with an empty tmpfs over the client's working directory) and moto's
S3 server run on the host. The input lives outside the client's
directory, so everyone sees it (it plays a shared or object store).

Why W7 has its own runner rather than harness cases: it needs root and the
test venv (``.venv``: boto3, moto, obstore on the client and the workers),
while ``run.py`` runs in ``benchmarks/.venv``, which lacks them on purpose;
one rig (scheduler, workers, S3 server) serves every run, so start-up
is not timed; and most of its numbers (veth counters, the workers' CPU
and peak RSS, S3 requests) come from outside the measured command, which
``measure.run_measured`` cannot see. So ``run.py`` starts this file as a
subprocess under the test venv's Python (:func:`run_w7`), relays its
output and adds its JSON record to ``--json``; the table is in the
report's style (``report.table``). Run by hand as root::

    .venv/bin/python benchmarks/w7.py --input benchmarks/.work/inputs/w2-4096.tif --repeat 1

Like the harness, every mode first runs once untimed and its output is
checked (against a threaded local run of the same job: whole at the quick
size, sampled windows at full size); a mode that fails or writes a wrong
output shows ``FAILED``/``WRONG`` with its one-line reason and is left out
of the timed rounds, which then run the modes in turn (A B C A B C ...).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TESTS = REPO / "tests"
TIME_BIN = "/usr/bin/time"
BUCKET = "w7-bench"
#: Output tile size (rdask's default), the unit of every chunk side.
BLOCK = 512
#: Chunk side: the same chunks in every mode, and mosaic tiles of that side
#: (a mosaic's chunks are whole mosaic tiles). 2048^2 x 3 uint8 = 12.6 MB,
#: about the cluster default (16 MB); 1024 at the quick size so that
#: 16 chunks keep both workers busy.
CHUNK_SIDE_FULL, CHUNK_SIDE_QUICK = 2048, 1024
#: Above this many bytes of pixels the check compares sampled windows.
WHOLE_CHECK_BYTES = 100e6
SAMPLED_WINDOWS = 12
#: Environment variable / option naming the test venv's Python.
PYTHON_VAR = "RDASK_W7_PYTHON"
OK, FAILED, WRONG = "ok", "FAILED", "WRONG"


# -- modes and the job ----------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """One output mode: where the output goes and how to ask for it."""

    name: str
    place: str  # "hidden" (the client's own dir), "shared" or "s3"
    suffix: str  # ".tif", ".zarr" or "" (a mosaic directory)
    args: tuple[str, ...] = ()
    mosaic: bool = False

    @property
    def slug(self) -> str:
        return "-".join("".join(c if c.isalnum() else " " for c in self.name.lower()).split())

    def target(self, hidden: Path, shared: Path) -> str:
        """Where this mode writes (an ``s3://`` URL or a path)."""
        name = f"out-{self.slug}{self.suffix}"
        if self.place == "s3":
            return f"s3://{BUCKET}/{name}"
        return str((hidden if self.place == "hidden" else shared) / name)

    @property
    def zarr(self) -> bool:
        return self.suffix == ".zarr"


MODES = (
    Mode("client-writes", "hidden", ".tif"),
    Mode("s3 GeoTIFF", "s3", ".tif"),
    Mode("s3 COG", "s3", ".tif", ("--driver", "cog")),
    Mode("Zarr (shared)", "shared", ".zarr"),
    Mode("Zarr s3", "s3", ".zarr"),
    # Zarr v3 sharding: one object (one PUT) per rdask chunk, blocksize^2 inner chunks.
    Mode("Zarr s3 sharded", "s3", ".zarr", ("--co", "SHARD=YES")),
    Mode("mosaic (shared)", "shared", "", mosaic=True),
)


@dataclass(frozen=True)
class Job:
    """W2's job on ``src``: reverse-bands, no synthetic work, fixed chunks."""

    src: Path
    side: int
    bands: int
    chunk_side: int

    @classmethod
    def of(cls, src: Path) -> Job:
        import rasterio

        with rasterio.open(src) as ds:
            side, bands = ds.width, ds.count
        chunk = CHUNK_SIDE_FULL if side > 4096 else CHUNK_SIDE_QUICK
        return cls(src, side, bands, min(chunk, side))

    @property
    def chunk_mb(self) -> float:
        """``--chunk-mb`` giving square chunks of ``chunk_side`` (rdask's
        planner takes the square root of the target pixels, rounded up
        to whole 512 blocks)."""
        return self.chunk_side**2 * self.bands / 1e6

    @property
    def chunks(self) -> int:
        return _ceil_div(self.side, self.chunk_side) ** 2

    @property
    def blocks(self) -> int:
        """512-pixel output tiles (all bands) at full resolution."""
        return _ceil_div(self.side, BLOCK) ** 2

    @property
    def pixel_bytes(self) -> int:
        return self.side * self.side * self.bands

    def options(self) -> list[str]:
        """The options every mode shares (no ``--overwrite``: outputs are
        removed between runs, so no deletes are counted)."""
        return ["--kernel-arg", "iterations=0", "--chunk-mb", f"{self.chunk_mb:g}",
                "--no-progress"]

    def argv(self, rdask_run: Callable[..., list[str]], mode: Mode, target: str) -> list[str]:
        """The client's ``rdask run`` command line for ``mode``."""
        mosaic = ["--tile-size", str(self.chunk_side)] if mode.mosaic else []
        return rdask_run("reverse-bands", self.src, target, *self.options(), *mode.args, *mosaic)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# -- per-process costs ------------------------------------------------------------


def cpu_seconds(pid: int, system_only: bool = False) -> float:
    """User + system (or system only) CPU seconds of process ``pid`` so far (0 if gone)."""
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.system if system_only else t.user + t.system


def reset_peak_rss(pid: int) -> None:
    """Reset ``VmHWM`` of ``pid`` to its current RSS (``clear_refs`` 5), so
    the next reading is the peak of the run that follows."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mb(pid: int) -> float:
    """``VmHWM`` of ``pid`` in MB (2**20 bytes), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- S3 requests ----------------------------------------------------------------------


def s3_operation(method: str, path: str, query: str, copy: bool = False) -> str:
    """The S3 API operation of a request, from its method, path and query
    (``copy``: it names a copy source)."""
    q = parse_qs(query, keep_blank_values=True)
    is_bucket = path.strip("/").count("/") == 0
    if method == "POST":
        return ("CreateMultipartUpload" if "uploads" in q else "CompleteMultipartUpload"
                if "uploadId" in q else "DeleteObjects" if "delete" in q else "POST")
    if method == "PUT":
        return (("UploadPartCopy" if copy else "UploadPart") if "partNumber" in q else "CreateBucket" if is_bucket
                else "PutObject")
    if method == "GET":
        return ("ListObjects" if is_bucket and ("list-type" in q or "prefix" in q)
                else "ListMultipartUploads" if "uploads" in q else "GetObject")
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    if method == "HEAD":
        return "HeadBucket" if is_bucket else "HeadObject"
    return method


class RequestLog:
    """Every request moto's server answers (a WSGI wrapper around its app,
    as tests/test_zarr_s3.py does): ``(source address, operation, body bytes)``."""

    def __init__(self, server: object) -> None:
        self.seen: list[tuple[str, str, int]] = []
        wsgi = server._server._server  # HostS3Server -> ThreadedMotoServer -> werkzeug
        app = wsgi.app

        def counting(environ: dict, start_response: Callable) -> object:
            op = s3_operation(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                              environ.get("QUERY_STRING", ""), bool(environ.get("HTTP_X_AMZ_COPY_SOURCE")))
            self.seen.append((environ.get("REMOTE_ADDR", ""), op,
                              int(environ.get("CONTENT_LENGTH") or 0)))
            return app(environ, start_response)

        wsgi.app = counting

    def take(self, client_ip: str) -> dict:
        """Counts since the last call: by operation, for the client and for
        the workers (any other address), and the request body bytes."""
        seen, self.seen = self.seen, []
        who = {"client": [s for s in seen if s[0] == client_ip],
               "workers": [s for s in seen if s[0] != client_ip]}
        return {
            "total": len(seen),
            **{f"{k}_ops": dict(Counter(op for _, op, _ in v)) for k, v in who.items()},
            **{f"{k}_body_bytes": sum(n for _, _, n in v) for k, v in who.items()},
        }


# -- outputs ---------------------------------------------------------------------


def _tree(path: str) -> tuple[int, int]:
    """(bytes, files) of a file or a directory tree."""
    if os.path.isfile(path):
        return os.path.getsize(path), 1
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs]
    return sum(sizes), len(sizes)


def _s3_objects(s3, target: str) -> list[dict]:
    key = target.split("/", 3)[3]
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=key)
    return [o for page in pages for o in page.get("Contents", [])]


def output_size(s3, target: str) -> tuple[int, int]:
    """(bytes, objects or files) of the output as stored."""
    if target.startswith("s3://"):
        objs = _s3_objects(s3, target)
        return sum(o["Size"] for o in objs), len(objs)
    return _tree(target) if os.path.exists(target) else (0, 0)


def remove_output(s3, target: str) -> None:
    """Delete the output, and any multipart upload a failed run left."""
    if target.startswith("s3://"):
        objs = _s3_objects(s3, target)
        for i in range(0, len(objs), 1000):
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": o["Key"]}
                                                                 for o in objs[i:i + 1000]]})
        for up in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=BUCKET, Key=up["Key"], UploadId=up["UploadId"])
    elif os.path.isdir(target):
        shutil.rmtree(target)
    elif os.path.exists(target):
        os.unlink(target)
    # rdask's leftovers of an interrupted job (journal, partial store) beside it.
    if not target.startswith("s3://"):
        t = Path(target)
        for extra in t.parent.glob(f".{t.name}.rdask-*"):
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink()


# -- checking outputs -------------------------------------------------------------


Window = tuple[int, int, int, int]  # row, col, height, width


def check_windows(job: Job, seed: int = 7) -> list[Window]:
    """The whole raster if cheap, else sampled windows (not block-aligned)
    plus the bottom-right corner."""
    import numpy as np

    if job.pixel_bytes <= WHOLE_CHECK_BYTES:
        return [(0, 0, job.side, job.side)]
    rng = np.random.default_rng(seed)
    h, w = 700, 900
    wins = [(int(rng.integers(0, job.side - h)), int(rng.integers(0, job.side - w)), h, w)
            for _ in range(SAMPLED_WINDOWS)]
    return [*wins, (job.side - 333, job.side - 333, 333, 333)]


def _read_gdal(path: str, wins: Sequence[Window]) -> tuple[tuple, list]:
    import rasterio
    from rasterio.windows import Window as RWindow

    with rasterio.open(path) as ds:
        shape = (ds.count, ds.height, ds.width)
        return shape, [ds.read(window=RWindow(c, r, w, h)) for r, c, h, w in wins]


def _zarr_array(target: str):
    import zarr

    if not target.startswith("s3://"):
        return zarr.open_array(os.path.join(target, "band_data"), mode="r", zarr_format=3)
    import obstore.store
    from zarr.storage import ObjectStore

    bucket, _, prefix = target[len("s3://"):].partition("/")
    store = obstore.store.S3Store(bucket, prefix=prefix,
                                  endpoint=f"http://{os.environ['AWS_S3_ENDPOINT']}",
                                  client_options={"allow_http": True},
                                  virtual_hosted_style_request=False)
    return zarr.open_array(ObjectStore(store, read_only=True), path="band_data", mode="r",
                           zarr_format=3)


def read_output(mode: Mode, target: str, wins: Sequence[Window]) -> tuple[tuple, list]:
    """Shape ``(bands, rows, cols)`` of the output and its pixels in ``wins``."""
    if mode.zarr:
        arr = _zarr_array(target)
        return tuple(arr.shape), [arr[:, r:r + h, c:c + w] for r, c, h, w in wins]
    if mode.mosaic:
        return _read_gdal(os.path.join(target, "index.vrt"), wins)
    if target.startswith("s3://"):
        return _read_gdal("/vsis3/" + target[len("s3://"):], wins)
    return _read_gdal(target, wins)


def check_output(mode: Mode, target: str, reference: Path, job: Job) -> str:
    """'' if the output's pixels equal ``reference``'s, else the problem."""
    import numpy as np

    wins = check_windows(job)
    want_shape, want = _read_gdal(str(reference), wins)
    try:
        shape, got = read_output(mode, target, wins)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
        return f"cannot read the output: {type(exc).__name__}: {str(exc)[:200]}"
    if shape != want_shape:
        return f"shape {shape}, expected {want_shape}"
    bad = [w for w, a, b in zip(wins, got, want, strict=True) if not np.array_equal(a, b)]
    if bad:
        return f"pixels differ from the threaded run in {len(bad)}/{len(wins)} windows"
    if "cog" in mode.args:
        import rasterio

        # rdask's COG has no GDAL ghost header (no LAYOUT=COG): check what W5's
        # rio-cogeo validation cannot run here without, its tiles and overviews.
        with rasterio.open("/vsis3/" + target[len("s3://"):]) as ds:
            if not ds.overviews(1) or ds.block_shapes[0] != (BLOCK, BLOCK):
                return f"not a tiled COG with overviews: {ds.block_shapes[0]}, {ds.overviews(1)}"
    return ""


def reference_output(job: Job, workdir: Path, rdask: str, log: Callable[[str], None]) -> Path:
    """The job run on threads (``-j 2``) on this host, cached beside the
    input's manifest; checked once against the input (bands reversed)."""
    import numpy as np

    ref = workdir / "ref" / f"{job.src.stem}-reversed.tif"
    if ref.exists() and ref.stat().st_mtime > job.src.stat().st_mtime:
        return ref
    ref.parent.mkdir(parents=True, exist_ok=True)
    log(f"  reference: threaded run of the job -> {ref}")
    proc = subprocess.run([rdask, "run", "reverse-bands", str(job.src), str(ref), "-j", "2",
                           *job.options(), "--overwrite"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the threaded reference run failed: {proc.stderr[-2000:]}")
    wins = check_windows(job)
    _, got = _read_gdal(str(ref), wins)
    _, src = _read_gdal(str(job.src), wins)
    if not all(np.array_equal(a, b[::-1]) for a, b in zip(got, src, strict=True)):
        ref.unlink()
        raise RuntimeError("the threaded reference is not the input with its bands reversed")
    return ref


# -- one run -----------------------------------------------------------------------


@dataclass
class Run:
    """What one run of one mode cost."""

    ok: bool
    error: str = ""
    wall: float = 0.0
    client_cpu: float = 0.0
    client_rss_mb: float = 0.0
    workers_cpu: float = 0.0
    workers_sys_cpu: float = 0.0
    """The system (kernel) part of ``workers_cpu``."""
    workers_rss_mb: float = 0.0
    """Peak RSS of the larger worker process."""
    workers_rss_sum_mb: float = 0.0
    scheduler_cpu: float = 0.0
    s3_server_cpu: float = 0.0
    """CPU of this process during the run: moto's threads (and the request log)."""
    others_cpu: float = 0.0
    """CPU the rest of the machine used meanwhile (other users: the noise)."""
    sent: int = 0
    received: int = 0
    output_bytes: int = 0
    output_objects: int = 0
    requests: dict = field(default_factory=dict)

    def value(self, name: str) -> float:
        return float(getattr(self, name))


def _time_report(path: Path) -> dict[str, str]:
    from measure import parse_time_report

    return parse_time_report(path.read_text()) if path.exists() else {}


def measure_run(r, job: Job, mode: Mode, reqlog: RequestLog, logdir: Path, tag: str,
                timeout: float) -> Run:
    """Run ``mode`` once on rig ``r`` from a clean slate; the output stays."""
    s3 = r.s3.client()
    target = mode.target(r.hidden, r.shared)
    remove_output(s3, target)
    workers = list(r.cluster.worker_pids().values())
    sched = r.cluster.scheduler.pid
    for pid in workers:
        reset_peak_rss(pid)
    report = logdir / f"{mode.slug}.{tag}.time"
    argv = [TIME_BIN, "-v", "-o", str(report), *job.argv(r.rdask, mode, target)]
    from measure import busy_cpu_seconds

    busy = busy_cpu_seconds()
    before = {pid: cpu_seconds(pid) for pid in [*workers, sched, os.getpid()]}
    sys_before = {pid: cpu_seconds(pid, system_only=True) for pid in workers}
    reqlog.take(r.net.client_ip)
    try:
        res, moved, wall = r.run_client(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Run(False, f"timed out after {timeout:.0f} s")
    cpu = {pid: cpu_seconds(pid) - t0 for pid, t0 in before.items()}
    workers_sys = sum(cpu_seconds(pid, system_only=True) - t0 for pid, t0 in sys_before.items())
    busy = busy_cpu_seconds() - busy
    requests = reqlog.take(r.net.client_ip)
    (logdir / f"{mode.slug}.{tag}.log").write_text(f"{' '.join(argv)}\n{res.stdout}\n{res.stderr}")
    if res.returncode != 0:
        lines = [x.strip() for x in res.stderr.splitlines() if x.strip()]
        return Run(False, lines[-1] if lines else f"exit status {res.returncode}", wall=wall)
    stats = _time_report(report)
    size, objects = output_size(s3, target)
    peaks = [peak_rss_mb(pid) for pid in workers]
    return Run(
        True, wall=wall,
        client_cpu=float(stats.get("User time (seconds)", 0)) + float(stats.get("System time (seconds)", 0)),
        client_rss_mb=int(stats.get("Maximum resident set size (kbytes)", 0)) / 1024,
        workers_cpu=sum(cpu[p] for p in workers), workers_sys_cpu=workers_sys,
        workers_rss_mb=max(peaks, default=0.0),
        workers_rss_sum_mb=sum(peaks), scheduler_cpu=cpu[sched], s3_server_cpu=cpu[os.getpid()],
        others_cpu=max(0.0, busy - sum(cpu.values()) - float(stats.get("User time (seconds)", 0))
                       - float(stats.get("System time (seconds)", 0))),
        sent=moved.sent, received=moved.received, output_bytes=size, output_objects=objects,
        requests=requests)


# -- the whole workload ------------------------------------------------------------


def rdask_revision() -> str:
    """The git commit of the rdask checkout the rig imports (``+dirty`` if
    its ``rdask/`` has changes), or '' outside a checkout. Taken at the
    start and end of a run: an editable install follows its working tree,
    so a merge there mid-run mixes versions (and a client and workers of
    different versions fail to deserialize each other's graphs)."""
    import rdask

    root = Path(rdask.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    return head + ("+dirty" if head and git("status", "--porcelain", "--", "rdask") else "")


@dataclass
class ModeResult:
    """A mode's check run, timed runs and status."""

    mode: Mode
    target: str = ""
    argv: list[str] = field(default_factory=list)
    status: str = OK
    detail: str = ""
    check_run: Run | None = None
    runs: list[Run] = field(default_factory=list)

    def median(self, name: str) -> float | None:
        if self.status != OK or not self.runs:
            return None
        if name in ("workers_rss_mb", "workers_rss_sum_mb", "client_rss_mb"):
            return max(r.value(name) for r in self.runs)  # memory: the worst run
        return statistics.median(r.value(name) for r in self.runs)

    def summary(self) -> dict:
        """Medians (peaks: maxima) and the derived shares and per-GB costs."""
        names = [f for f in Run.__dataclass_fields__ if f not in ("ok", "error", "requests")]
        out = {n: self.median(n) for n in names}
        size = out["output_bytes"]
        if size:
            gb = size / 1e9
            out["client_received_per_gb"] = out["received"] / gb
            out["client_sent_per_gb"] = out["sent"] / gb
            out["client_cpu_per_gb"] = out["client_cpu"] / gb
            out["client_share_percent"] = 100 * (out["sent"] + out["received"]) / size
        if out["wall"]:
            # As the harness's "others %": of the machine's CPU over the run.
            out["others_percent"] = 100 * out["others_cpu"] / (out["wall"] * (os.cpu_count() or 1))
        if self.runs and self.status == OK:
            out["requests"] = self.runs[len(self.runs) // 2].requests
        return out


def _say(line: str = "") -> None:
    print(line, flush=True)


def run_modes(job: Job, modes: Sequence[Mode], workdir: Path, *, repeat: int, timeout: float,
              malloc: str = "dask",
              log: Callable[[str], None] = _say) -> tuple[dict[str, ModeResult], dict]:
    """Check, then time, every mode on one rig. Returns results and rig facts."""
    sys.path.insert(0, str(TESTS))
    import isolation

    rdask = os.path.join(isolation.BIN, "rdask")
    reference = reference_output(job, workdir, rdask, log)
    logdir = workdir / "logs" / "W7"
    logdir.mkdir(parents=True, exist_ok=True)
    results = {m.name: ModeResult(m) for m in modes}
    revision = rdask_revision()
    base = workdir / "w7-rig"
    shutil.rmtree(base, ignore_errors=True)
    with s3_rig(isolation, base, malloc) as r:
        r.s3.client().create_bucket(Bucket=BUCKET)
        reqlog = RequestLog(r.s3)
        facts = {"rdask": rdask, "python": sys.executable, "workers": 2, "threads_per_worker": 1,
                 "scheduler": r.address, "client_ip": r.net.client_ip,
                 "worker_malloc": malloc}
        for mode in modes:
            res = results[mode.name]
            res.target = mode.target(r.hidden, r.shared)
            res.argv = job.argv(r.rdask, mode, res.target)
            run = measure_run(r, job, mode, reqlog, logdir, "check", timeout)
            res.check_run = run
            if not run.ok:
                res.status, res.detail = FAILED, run.error
            elif problem := check_output(mode, res.target, reference, job):
                res.status, res.detail = WRONG, problem
            log(f"  [check] {describe(mode.name, run)}"
                + (" -> output correct" if res.status == OK else f" -> {res.status}: {res.detail}"))
            remove_output(r.s3.client(), res.target)
        for round_no in range(1, repeat + 1):
            for mode in modes:
                res = results[mode.name]
                if res.status != OK:
                    continue
                run = measure_run(r, job, mode, reqlog, logdir, f"run{round_no}", timeout)
                remove_output(r.s3.client(), res.target)
                log(f"  [{round_no}/{repeat}] {describe(mode.name, run)}")
                if run.ok:
                    res.runs.append(run)
                else:
                    res.status, res.detail = FAILED, run.error
    shutil.rmtree(base, ignore_errors=True)
    facts["rdask_revision"] = revision
    if (after := rdask_revision()) != revision:
        facts["rdask_revision_after"] = after
        log(f"  WARNING: rdask changed during the run ({revision} -> {after}): rows may mix versions")
    return results, facts


#: ``--worker-malloc rdask``: the allocator settings rdask gives its own
#: processes and its ``local:N`` workers (``rdask.config.WORKER_MALLOC``),
#: instead of what distributed's nanny gives a plain ``dask worker``
#: (``MALLOC_TRIM_THRESHOLD_=65536``, under which every large buffer is
#: mmapped and unmapped again, paying its page faults each time).
RDASK_MALLOC_YAML = """distributed:
  nanny:
    pre-spawn-environ:
      MALLOC_TRIM_THRESHOLD_: "536870912"
      MALLOC_MMAP_THRESHOLD_: "268435456"
"""


def worker_config(base: Path, malloc: str) -> Path | None:
    """A ``DASK_CONFIG`` directory for the workers (None: distributed's defaults)."""
    if malloc == "dask":
        return None
    conf = base / "dask-config"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "w7-malloc.yaml").write_text(RDASK_MALLOC_YAML)
    return conf


@contextlib.contextmanager
def s3_rig(isolation, base: Path, malloc: str = "dask") -> Iterator:
    """``isolation.rig(base)`` (2 one-thread workers, S3), except that the
    workers get the S3 server's settings and credentials in their
    environment, as workers on a cloud would have their own (an IAM role):
    rdask ships no secret to them, and outputs whose tasks write to S3
    themselves (Zarr s3, S3 multipart parts) need them. It composes the
    rig's parts itself (the server first, then the workers with its
    settings in this process's environment) so that it works with
    ``isolation`` before and after ``isolated_cluster(worker_env=...)``,
    and adds ``--worker-malloc``'s ``DASK_CONFIG``.

    This process keeps the S3 settings too: the checks read S3 through
    GDAL and obstore.
    """
    isolation.remove_leftovers()
    hidden, shared = base / "hidden", base / "shared"
    pauses = shared / "pauses"  # rdask.pauses' directory: no job is held here
    for d in (hidden / "tmp", shared, pauses):
        d.mkdir(parents=True, exist_ok=True)
    with isolation.client_net() as net, contextlib.ExitStack() as stack:
        server = isolation.s3_server(net.host_ip).start()
        stack.callback(server.stop)
        os.environ.update(server.env)
        if conf := worker_config(base, malloc):
            os.environ["DASK_CONFIG"] = str(conf)
        cluster = stack.enter_context(isolation.isolated_cluster(
            net.host_ip, hidden, base / "cluster", n_workers=2, nthreads=1, nanny=True))
        r = isolation.Rig(net, cluster, server, base, hidden, shared, pauses)
        try:
            yield r
        finally:
            for proc in r.processes:
                if proc.poll() is None:
                    isolation.stop(proc)


def describe(name: str, run: Run) -> str:
    """One progress line."""
    if not run.ok:
        return f"{name:<16} FAILED ({run.error})"
    return (f"{name:<16} wall {run.wall:6.2f} s  client CPU {run.client_cpu:6.2f} s  "
            f"client rx {run.received / 1e6:8.1f} MB  output {run.output_bytes / 1e6:7.1f} MB")


# -- the report -------------------------------------------------------------------


def table(results: dict[str, ModeResult]) -> str:
    """The W7 table in the report's style (``report.table``)."""
    from report import table as aligned

    headers = ["mode", "output MB", "objects", "wall s", "client CPU s", "client RSS MB",
               "worker RSS MB", "workers CPU s", "sched CPU s", "client rx MB", "client tx MB", "% of output",
               "rx MB/GB", "client CPU s/GB", "others %", "runs", "status"]
    rows = []
    for res in results.values():
        s = res.summary() if res.status == OK and res.runs else None
        if s is None:
            size = res.check_run.output_bytes if res.check_run and res.check_run.ok else None
            rows.append([res.mode.name, "-" if not size else f"{size / 1e6:.1f}",
                         *["-"] * (len(headers) - 4), str(len(res.runs)), res.status])
            continue
        rows.append([
            res.mode.name, f"{s['output_bytes'] / 1e6:.1f}", f"{s['output_objects']:.0f}",
            f"{s['wall']:.2f}", f"{s['client_cpu']:.2f}", f"{s['client_rss_mb']:.0f}",
            f"{s['workers_rss_mb']:.0f}", f"{s['workers_cpu']:.2f}", f"{s['scheduler_cpu']:.2f}",
            f"{s['received'] / 1e6:.2f}", f"{s['sent'] / 1e6:.2f}",
            f"{s['client_share_percent']:.2f}", f"{s['client_received_per_gb'] / 1e6:.1f}",
            f"{s['client_cpu_per_gb']:.1f}", f"{s['others_percent']:.0f}", str(len(res.runs)),
            res.status])
    notes = [f"  ! {res.mode.name}: {res.status}: {res.detail}"
             for res in results.values() if res.status != OK]
    return "\n".join([aligned(headers, rows), *notes])


def requests_table(results: dict[str, ModeResult]) -> str:
    """S3 requests of the median run, per mode: by operation, client / workers."""
    lines = []
    for res in results.values():
        s = res.summary() if res.status == OK and res.runs else None
        if not s or not s.get("requests", {}).get("total"):
            continue
        req = s["requests"]
        for who in ("client", "workers"):
            ops = ", ".join(f"{op} {n}" for op, n in sorted(req[f"{who}_ops"].items()))
            lines.append(f"  {res.mode.name:<16} {who:<8} {ops or '-'}; "
                         f"body {req[f'{who}_body_bytes'] / 1e6:.1f} MB")
    return "\n".join(["S3 requests (median run; by the client / by the workers):", *lines]) \
        if lines else "S3 requests: none counted"


def record(job: Job, results: dict[str, ModeResult], facts: dict, repeat: int) -> dict:
    """The JSON record (a case record of ``run.py``'s ``--json``)."""
    return {
        "id": "W7",
        "title": f"scale-out, synthetic {job.side}x{job.side}x{job.bands} deflate (the W2 input)",
        "input": str(job.src),
        "job": {"side": job.side, "bands": job.bands, "chunk_side": job.chunk_side,
                "chunk_mb": job.chunk_mb, "chunks": job.chunks, "blocks_512": job.blocks,
                "pixel_bytes": job.pixel_bytes, "options": job.options()},
        "rig": facts,
        "repeat": repeat,
        "modes": [{"name": res.mode.name, "target": res.target, "argv": res.argv,
                   "status": res.status, "detail": res.detail,
                   "check_run": asdict(res.check_run) if res.check_run else None,
                   "runs": [asdict(x) for x in res.runs],
                   "summary": res.summary() if res.status == OK and res.runs else None}
                  for res in results.values()],
    }


def failed_record(job_src: Path, why: str, modes: Sequence[Mode] = MODES) -> dict:
    """The record of a W7 that could not run at all (every mode FAILED)."""
    return {"id": "W7", "title": "scale-out", "input": str(job_src), "error": why,
            "modes": [{"name": m.name, "status": FAILED, "detail": why} for m in modes]}


# -- entry points -------------------------------------------------------------------


def select_modes(spec: str | None) -> list[Mode]:
    """Modes named (comma-separated, by name or slug) in ``spec``; all if empty."""
    if not spec:
        return list(MODES)
    wanted = [w.strip().lower() for w in spec.split(",") if w.strip()]
    found = [m for m in MODES if m.name.lower() in wanted or m.slug in wanted]
    if len(found) != len(wanted):
        raise SystemExit(f"unknown mode in {spec!r}; known: {[m.slug for m in MODES]}")
    return found


def main(argv: list[str] | None = None) -> int:
    """Driver: run W7 on ``--input`` (as root, under the test venv's Python)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="the W2 raster")
    parser.add_argument("--workdir", type=Path, default=HERE / ".work")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--modes", default=None, help="comma-separated subset (slugs)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker-malloc", choices=("dask", "rdask"), default="dask",
                        help="workers' allocator settings: a plain `dask worker`'s (default) "
                        "or rdask's own (see RDASK_MALLOC_YAML)")
    args = parser.parse_args(argv)
    # The client works in the rig's own directory: paths must be absolute.
    args.input, args.workdir = args.input.resolve(), args.workdir.resolve()
    sys.path.insert(0, str(HERE))
    modes = select_modes(args.modes)
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "unshare", "mount")):
        rec = failed_record(args.input, "W7 needs root and ip, unshare, mount", modes)
        _say(f"W7: {rec['error']}")
    else:
        job = Job.of(args.input)
        _say(f"  job: {job.side}x{job.side}x{job.bands}, {job.chunks} chunks of "
             f"{job.chunk_side}^2 (--chunk-mb {job.chunk_mb:g}), 2 workers x 1 thread, "
             f"workers started with {args.worker_malloc}'s malloc settings "
             "(a job gives them rdask's through its rdask-malloc plugin)")
        results, facts = run_modes(job, modes, args.workdir, repeat=args.repeat,
                                   timeout=args.timeout, malloc=args.worker_malloc)
        rec = record(job, results, facts, args.repeat)
        _say()
        _say(table(results))
        _say(requests_table(results))
    if args.json:
        args.json.write_text(json.dumps(rec, indent=1, default=str))
    return 0


def test_python() -> str:
    """The test venv's Python (``$RDASK_W7_PYTHON``, else the repo's ``.venv``)."""
    return os.environ.get(PYTHON_VAR) or str(REPO / ".venv" / "bin" / "python")


def run_w7(src: Path, workdir: Path, *, repeat: int, timeout: float, python: str | None = None,
           log: Callable[[str], None] = _say) -> dict:
    """``run.py``'s side: run the driver under the test venv's Python,
    relay its lines, return its JSON record (a FAILED one if it cannot run)."""
    python = os.path.abspath(python or test_python())  # not resolved: a venv is a symlink
    if not os.path.exists(python):
        why = (f"no test venv Python at {python}: run `make .venv/.rdask-installed` "
               f"(pip install -e .[test]) or set {PYTHON_VAR}")
        log(f"  W7 FAILED: {why}")
        return failed_record(src, why)
    out = workdir / "w7.json"
    out.unlink(missing_ok=True)
    argv = [python, str(Path(__file__).resolve()), "--input", str(src), "--workdir",
            str(workdir), "--repeat", str(repeat), "--timeout", str(timeout), "--json", str(out)]
    with _lines(argv) as lines:
        for line in lines:
            log(line)
    if not out.exists():
        return failed_record(src, "the W7 driver wrote no record (see its output above)")
    return json.loads(out.read_text())


@contextlib.contextmanager
def _lines(argv: list[str]) -> Iterator[Iterator[str]]:
    """The stdout+stderr lines of ``argv`` as they come."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield (line.rstrip("\n") for line in proc.stdout)
    finally:
        proc.wait()


if __name__ == "__main__":
    sys.exit(main())
