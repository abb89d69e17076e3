"""Jobs that survive faults: real processes, real signals, a real full disk.

No part of rdask is mocked. Jobs run on a real ``dask scheduler`` + ``dask
worker`` cluster or as ``rdask run`` child processes; faults are SIGKILL,
SIGINT, SIGTERM, a kernel that raises on one window, a filesystem that
fills up, thousands of tiny concurrent chunks and a fork after GDAL was
loaded. Every output is compared bit for bit with an independent reference
(the input read whole by plain rasterio, bands reversed with numpy).

The built-in ``reverse-bands`` kernel with ``iterations`` of synthetic work
(calibrated on this machine) makes jobs slow enough to interrupt halfway.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import time

import numpy as np
import pytest
import rasterio
from faultutil import (
    chunk_windows,
    dask_cluster,
    digest,
    journal_chunks,
    journal_tiles,
    listing,
    partial_files,
    reverse_bands_iterations,
    run_rdask,
    signal_and_wait,
    small_disk,
    start_rdask,
    wait_until,
)
from rasters import read, synthetic, write

import rdask
from rdask.errors import ForkSafetyError, KernelError, KernelOutputError

SHAPE = (3, 768, 768)
BLOCK = 128
CHUNK_MB = 0.05  # one 128 x 128 tile per chunk: 36 chunks
#: Wall time a job may take after one of two workers was SIGKILLed: the
#: killed worker's tasks are rescheduled as soon as the scheduler sees its
#: connections close (measured: well under a second), so the rest of the job
#: runs at the speed of the surviving worker. 60 s is the documented bound.
STALL_BOUND = 60.0
#: Chunks a job may start after a signal: those already handed to its two
#: threads (two in flight per thread), and none more.
STARTS_AFTER_SIGNAL = 4

USER_KERNELS = '''
import numba
import numpy as np
import rdask


@rdask.kernel()
@numba.njit(nogil=True)
def poisoned(block, value=65535):
    """reverse-bands, except that a block holding ``value`` raises."""
    for b in range(block.shape[0]):
        for i in range(block.shape[1]):
            for j in range(block.shape[2]):
                if block[b, i, j] == value:
                    raise ValueError("poisoned pixel")
    return block[::-1].copy()


@numba.njit(nogil=True)
def _reverse(block, iterations):
    out = block[::-1].copy()
    acc = 0
    for _ in range(iterations):
        acc += out[0, 0, 0]
    out[0, 0, 0] = out[0, 0, 0] + (acc - acc)
    return out


@rdask.kernel(allow_gil=True)
def logged(block, log="", iterations=0):
    """reverse-bands, first noting in ``log`` that a chunk started (one
    O_APPEND line per chunk, so lines never interleave)."""
    import os

    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, b"start" + bytes([10]))
    finally:
        os.close(fd)
    return _reverse(block, iterations)


@rdask.kernel()
@numba.njit(nogil=True)
def wrong_shape(block):
    return block[:, :-1, :].copy()


@rdask.kernel()
@numba.njit(nogil=True)
def wrong_dtype(block):
    return block.astype(np.float32)
'''


class Job:
    """The shared slow job: its input, plan, reference and iterations."""

    def __init__(self, tmp, iterations: int) -> None:
        self.tmp = tmp
        self.iterations = iterations
        # synthetic() keeps uint16 values <= 60000, so 65535 can be a poison.
        self.data = synthetic(SHAPE, "uint16", seed=3)
        self.src = write(tmp / "in.tif", self.data, block=(BLOCK, BLOCK))
        self.reference = read(self.src)[::-1]  # independent oracle
        chunks = rdask.open_raster(self.src, chunk_mb=CHUNK_MB, tile=BLOCK).data.chunks
        self.windows = chunk_windows(chunks)
        self._threaded = None

    def cli_args(self, src, out, *extra) -> list:
        return ["run", "reverse-bands", src, out, "-a", f"iterations={self.iterations}", "-j", "2",
                "--blocksize", BLOCK, "--chunk-mb", CHUNK_MB, "--no-progress", *extra]

    def api_kwargs(self) -> dict:
        return dict(kernel_args={"iterations": self.iterations}, workers=2, chunk_mb=CHUNK_MB,
                    blocksize=BLOCK)

    @property
    def threaded(self) -> np.ndarray:
        """Pixels of the same job run once, uninterrupted, on threads."""
        if self._threaded is None:
            dst = self.tmp / "threaded.tif"
            rdask.process(self.src, dst, "reverse-bands", **self.api_kwargs())
            self._threaded = read(dst)
            assert np.array_equal(self._threaded, self.reference)
        return self._threaded

    def check(self, path) -> None:
        out = read(path)
        assert np.array_equal(out, self.reference)
        assert np.array_equal(out, self.threaded)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    # ~0.15 s of one core per 128 x 128 x 3 chunk; ~5 s of CPU for the job.
    return Job(tmp_path_factory.mktemp("faults"), reverse_bands_iterations(3.0))


@pytest.fixture(scope="module")
def user_kernels(tmp_path_factory):
    path = tmp_path_factory.mktemp("kernels") / "fault_kernels.py"
    path.write_text(USER_KERNELS)
    return str(path)


@pytest.fixture(scope="module")
def local_runner():
    """A ``local:2`` cluster exactly as rdask starts one."""
    from rdask.schedule import open_runner

    with open_runner("local:2") as runner:
        yield runner


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- 1. a worker is SIGKILLed mid-job ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("nanny", [False, True], ids=["no-nanny", "nanny"])
def test_worker_killed_mid_job_finishes_without_stalling(tmp_path, job, nanny):
    from distributed import Client

    expected = job.threaded
    total = len(job.windows)
    dst = tmp_path / "cluster.tif"
    with dask_cluster(tmp_path, n_workers=2, nanny=nanny) as (address, _), \
            Client(address, timeout="30s") as watcher:
        pids = watcher.run(os.getpid)
        writes: list[float] = []
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["result"] = rdask.process(
                    job.src, dst, "reverse-bands", scheduler=address,
                    progress=lambda done, _total: writes.append(time.monotonic()),
                    **job.api_kwargs())
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        wait_until(lambda: len(writes) >= 2 or not thread.is_alive(), "two chunks written")
        busy = [addr for addr, tasks in watcher.processing().items() if tasks and addr in pids]
        victim = busy[0] if busy else next(iter(pids))
        killed_at = time.monotonic()
        os.kill(pids[victim], signal.SIGKILL)
        written_before = len(writes)
        assert thread.is_alive() and written_before < total, "the job ended before the kill"
        # The scheduler drops the dead worker (its sockets were closed by the kernel).
        detected = wait_until(lambda: victim not in watcher.scheduler_info()["workers"],
                              "the scheduler to drop the killed worker", timeout=STALL_BOUND)
        thread.join(STALL_BOUND)
        finished = time.monotonic() - killed_at
        assert not thread.is_alive(), f"job still running {STALL_BOUND:.0f} s after the kill"
        assert "error" not in outcome, repr(outcome.get("error"))
        after = [t for t in writes if t > killed_at]
        assert after, "no chunk was written after the kill"
        gaps = np.diff([killed_at, *after])
        # No stall: the next chunk arrives, and none waits, more than a few chunk times.
        assert gaps.max() < STALL_BOUND / 2, (detected, gaps.max(), finished)
        assert outcome["result"].chunks == total
        if nanny:  # the nanny restarted the worker under a new address
            watcher.wait_for_workers(2, timeout=60)
        else:
            assert len(watcher.scheduler_info()["workers"]) == 1
        print(f"\nkilled worker ({'nanny' if nanny else 'no nanny'}): dropped after {detected:.2f} s, "
              f"first chunk after {gaps[0]:.2f} s, longest gap {gaps.max():.2f} s, "
              f"done {finished:.2f} s after the kill ({written_before}/{total} chunks before it)")
    out = read(dst)
    assert np.array_equal(out, expected)
    assert np.array_equal(out, job.reference)
    assert [n for n in listing(tmp_path) if "rdask" in n or n.startswith(".")] == []


# -- 2. the rdask process is SIGKILLed mid-write, then resumed --------------


@pytest.mark.slow
def test_sigkill_mid_write_leaves_partial_that_resume_completes(tmp_path, job):
    src = tmp_path / "in.tif"
    shutil.copy(job.src, src)
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "out.tif"
    partial, journal = partial_files(out)

    proc = start_rdask(*job.cli_args(src, out, "--checkpoint-seconds", "0.5"))
    wait_until(lambda: len(journal_chunks(journal)) >= 2, "two journaled chunks", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    # Nothing at the target; only the partial file and its journal beside it.
    assert listing(outdir) == sorted([partial.name, journal.name])
    done = set(journal_chunks(journal))
    total = len(job.windows)
    assert 2 <= len(done) < total, (len(done), total)
    # Every journaled chunk is durably in the partial file.
    placed = journal_tiles(journal)
    if placed:  # the journal says where each tile's bytes are
        assert all(off > 0 and off + n <= partial.stat().st_size for off, n in placed.values())
    else:  # the partial file is a GeoTIFF as of the last checkpoint
        with rasterio.open(partial) as ds:
            for key in done:
                y0, y1, x0, x1 = job.windows[key]
                window = rasterio.windows.Window(x0, y0, x1 - x0, y1 - y0)
                assert np.array_equal(ds.read(window=window), job.reference[:, y0:y1, x0:x1]), key
    state = {p.name: digest(p) for p in (partial, journal)}

    # Two more copies of the interrupted job: for the API, and for a changed input.
    for name in ("api.tif", "moved.tif"):
        for f, g in zip((partial, journal), partial_files(outdir / name), strict=True):
            shutil.copy(f, g)

    # A resume with another kernel argument or other output options is refused,
    # in one line naming what differs, and nothing is touched.
    # (Options given twice: the last one wins, as click does.)
    for extra, what in [
        (["-a", f"iterations={job.iterations + 1}"], "kernel"),
        (["--blocksize", "256"], "options"),
        (["--compress", "zstd"], "options"),
        (["--chunk-mb", str(float(CHUNK_MB) * 4)], "chunk plan"),
    ]:
        proc = run_rdask(*job.cli_args(src, out, "--resume", *extra))
        assert proc.returncode == 1, proc.stderr
        line = one_line(proc.stderr)
        assert line.startswith(f"rdask: error: cannot resume {out}: "), line
        assert f"different {what}" in line and "without --resume" in line, line
        assert not out.exists()
        assert {p.name: digest(p) for p in (partial, journal)} == state

    # The same job resumes: it skips the journaled chunks and completes.
    proc = run_rdask("-v", *job.cli_args(src, out, "--resume"))
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {out}: {len(done)} chunks already written" in proc.stderr, proc.stderr
    job.check(out)
    assert not partial.exists() and not journal.exists()

    # The API resumes too, and writes exactly the chunks that were missing.
    api = outdir / "api.tif"
    calls: list[int] = []
    result = rdask.process(src, api, "reverse-bands", resume=True,
                           progress=lambda done_px, _total: calls.append(done_px),
                           **job.api_kwargs())
    assert len(calls) == total - len(done)
    assert max(calls) == result.pixels
    job.check(api)
    assert not any(p.exists() for p in partial_files(api))

    # A different input (rewritten since the interruption) is refused.
    write(src, synthetic(SHAPE, "uint16", seed=4), block=(BLOCK, BLOCK))
    moved = outdir / "moved.tif"
    before = {p.name: digest(p) for p in partial_files(moved)}
    proc = run_rdask(*job.cli_args(src, moved, "--resume"))
    line = one_line(proc.stderr)
    assert proc.returncode == 1 and "cannot resume" in line and "different input" in line, line
    assert not moved.exists()
    assert {p.name: digest(p) for p in partial_files(moved)} == before


# -- 3. Ctrl-C (SIGINT) and SIGTERM -------------------------------------------


@pytest.mark.parametrize("resume", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["plain", "resume"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_promptly_with_one_line(tmp_path, job, user_kernels, sig, resume):
    """Promptly means: no chunk starts after the signal but those already
    handed to the threads (counted, not timed: the machine may be loaded)."""
    out = tmp_path / "out.tif"
    starts = tmp_path.parent / f"{tmp_path.name}-starts"
    partial, journal = partial_files(out)
    extra = ["--checkpoint-seconds", "0.3"] + (["--resume"] if resume else [])
    args = job.cli_args(job.src, out, *extra)
    args[1] = f"{user_kernels}:logged"
    args[args.index(f"iterations={job.iterations}")] = f"iterations={job.iterations * 100}"
    args += ["-a", f"log={starts}"]
    proc = start_rdask(*args)
    wait_until(lambda: len(journal_chunks(journal)) >= 1, "a journaled chunk", proc=proc)
    started = len(starts.read_text().splitlines())
    _, stderr = signal_and_wait(proc, sig)
    assert len(starts.read_text().splitlines()) - started <= STARTS_AFTER_SIGNAL
    assert len(starts.read_text().splitlines()) < len(job.windows)
    assert proc.returncode == 130, stderr
    line = one_line(stderr)
    assert not out.exists()
    if not resume:
        assert line == "rdask: interrupted"
        assert listing(tmp_path) == []
        return
    assert line == f"rdask: interrupted (partial output kept for --resume: {partial})"
    assert listing(tmp_path) == sorted([partial.name, journal.name])
    done = set(journal_chunks(journal))
    proc = run_rdask("-v", *args)  # the same job, --resume included
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {out}: {len(done)} chunks already written" in proc.stderr
    job.check(out)
    assert listing(tmp_path) == ["out.tif"]


# -- 4. a kernel raises on one chunk -----------------------------------------


def test_kernel_raising_on_one_window_names_kernel_and_window(tmp_path, job, user_kernels):
    data = job.data.copy()
    row, col = 700, 300  # in the last row of chunks, so others are written first
    data[1, row, col] = 65535
    src = write(tmp_path / "poisoned.tif", data, block=(BLOCK, BLOCK))
    (y0, y1, x0, x1), = [w for w in job.windows.values() if w[0] <= row < w[1] and w[2] <= col < w[3]]
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "out.tif"
    proc = run_rdask("run", f"{user_kernels}:poisoned", src, out, "-j", "2", "--blocksize", BLOCK,
                     "--chunk-mb", CHUNK_MB, "--no-progress")
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert line == (f"rdask: error: kernel 'poisoned' failed at window rows {y0}:{y1}, "
                    f"cols {x0}:{x1}: ValueError: poisoned pixel"), line
    assert listing(outdir) == []


# -- 5. a kernel returns the wrong shape or dtype, on a cluster ---------------
# (tests/test_cli.py covers the same on threads, through the CLI.)


@pytest.mark.parametrize("func,pattern", [
    ("wrong_shape", r"kernel 'wrong-shape' returned shape \(3, 127, 128\) at window rows \d+:\d+, "
                    r"cols \d+:\d+, expected \(3, 128, 128\)"),
    ("wrong_dtype", r"kernel 'wrong-dtype' returned dtype float32 at window rows \d+:\d+, "
                    r"cols \d+:\d+, expected uint16"),
    ("poisoned", r"kernel 'poisoned' failed at window rows 640:768, cols 256:384: "
                 r"ValueError: poisoned pixel"),
], ids=["wrong-shape", "wrong-dtype", "raises"])
def test_kernel_errors_cross_process_boundaries_intact(tmp_path, job, user_kernels, local_runner,
                                                       func, pattern):
    data = job.data.copy()
    data[1, 700, 300] = 65535
    src = write(tmp_path / "in.tif", data, block=(BLOCK, BLOCK))
    out = tmp_path / "out" / "out.tif"
    out.parent.mkdir()
    with pytest.raises(KernelError) as info:
        rdask.process(src, out, f"{user_kernels}:{func}", scheduler=local_runner.client,
                      chunk_mb=CHUNK_MB, blocksize=BLOCK)
    assert isinstance(info.value, KernelOutputError) == (func != "poisoned")
    assert re.fullmatch(pattern, str(info.value)), str(info.value)
    assert listing(out.parent) == []


# -- 6. the disk fills up -------------------------------------------------------


@pytest.fixture(scope="module")
def incompressible(tmp_path_factory):
    """25 MB of random uint16: no compression makes it fit in 20 MB."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 65535, size=(3, 2048, 2048), dtype=np.uint16)
    path = tmp_path_factory.mktemp("big") / "random.tif"
    return write(path, data, block=(256, 256), compress=None)


@pytest.mark.parametrize("compress,workers", [("none", "1"), ("deflate", "2")],
                         ids=["uncompressed", "deflate-threads"])
def test_disk_full_is_one_clear_error_and_leaves_nothing(tmp_path, incompressible, compress, workers):
    # deflate with 2 threads: GDAL compresses on its own thread pool and reports
    # a failed tile write neither from write() nor from close(); rdask must
    # still notice rather than commit a truncated file.
    disk = tmp_path / "small"
    with small_disk(disk, 20) as preexec:
        out = disk / "out.tif"
        proc = run_rdask("run", "reverse-bands", incompressible, out, "--compress", compress,
                         "-j", workers, "--no-progress", preexec_fn=preexec)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        ours = [ln for ln in lines if ln.startswith("rdask:")]
        assert len(ours) == 1 and ours[0] == lines[-1], proc.stderr
        line = ours[0]
        assert line.startswith("rdask: error: ") and str(out) in line, line
        if preexec is None:
            assert "No space left on device" in line, line
        # GDAL's libtiff prints the errno itself, bypassing rdask; nothing else may appear.
        noise = [ln for ln in lines[:-1] if not re.fullmatch(r"_tiff\w+Proc: (No space left on device|"
                                                               r"File too large)\.", ln)]
        assert noise == [], proc.stderr
        assert "Traceback" not in proc.stderr
        assert listing(disk) == []


# -- 7. thousands of tiny chunks on many threads ---------------------------


@pytest.mark.slow
def test_thousands_of_tiny_chunks_are_written_exactly_once(tmp_path):
    data = synthetic((3, 800, 800), "uint16", seed=7)
    src = write(tmp_path / "tiny.tif", data, block=(16, 16))
    reference = read(src)[::-1]
    ntiles = 50 * 50
    layouts = set()
    for run in range(5):
        dst = tmp_path / f"run{run}.tif"
        da = rdask.open_raster(src, chunks=(16, 16), tile=16)
        assert da.data.numblocks == (1, 50, 50)
        calls: list[int] = []
        lock = threading.Lock()

        def count(done: int, total: int, calls=calls, lock=lock) -> None:
            with lock:
                calls.append(done)

        result = rdask.to_raster(rdask.apply(da, "reverse-bands"), dst, blocksize=16, workers=6,
                                 progress=count)
        # One write per chunk (the sink raises on a window written twice).
        assert result.chunks == ntiles and len(calls) == ntiles
        assert max(calls) == 800 * 800
        assert np.array_equal(read(dst), reference)
        size = os.path.getsize(dst)
        with rasterio.open(dst) as ds:
            assert ds.block_shapes[0] == (16, 16)
            tiles = [(int(ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=1)), ds.block_size(1, i, j))
                     for i in range(50) for j in range(50)]
        offsets = [o for o, _ in tiles]
        assert len(set(offsets)) == ntiles and all(o > 0 and n > 0 for o, n in tiles)
        assert all(o + n <= size for o, n in tiles)
        # A tile written twice would leave its first copy as dead bytes: the file
        # is exactly the tiles plus a fixed header, the same on every run.
        layouts.add((size, size - sum(n for _, n in tiles)))
    assert len(layouts) == 1, layouts


# -- 8. fork safety -------------------------------------------------------------


def test_local_cluster_workers_are_spawned_not_forked(local_runner):
    import rasterio  # noqa: F401 - GDAL is loaded in this (the parent) process

    def state():
        from rdask.io.files import GdalProcess

        return os.getppid(), GdalProcess.pid not in (None, os.getpid())

    pids = local_runner.client.run(os.getpid)
    assert len(pids) == 2
    for pid in pids.values():
        # A forked child would show this process's command line (pytest).
        cmdline = open(f"/proc/{pid}/cmdline").read().split("\0")
        assert any("spawn_main" in part or "forkserver" in part for part in cmdline), cmdline
    for ppid, tainted in local_runner.client.run(state).values():
        # Started by this process, which has GDAL loaded; a fork of it would
        # be marked tainted by rdask's at-fork hook.
        assert ppid == os.getpid() and not tainted


def _read_in_forked_child(conn, data, source) -> None:
    touched: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and f"{os.sep}rasterio{os.sep}" in frame.f_code.co_filename:
            touched.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    results = []
    for how in ("dask", "source"):
        sys.setprofile(profile)
        try:
            if how == "dask":
                data[:, :16, :16].compute(scheduler="sync")
            else:
                source.read(0, 16, 0, 16)
            results.append((how, "", "no error"))
        except BaseException as exc:  # noqa: BLE001 - sent to the parent
            results.append((how, type(exc).__name__, str(exc)))
        finally:
            sys.setprofile(None)
    conn.send((results, touched))


def test_read_in_forked_child_is_refused_before_touching_gdal(job):
    from rdask.xr import recipe_of

    data = rdask.open_raster(job.src)
    # GDAL is in use in this process (threads: a Client another test left
    # as dask's default would read on its workers instead).
    window = data[:, :16, :16].compute(scheduler="threads").values
    assert np.array_equal(window, job.data[:, :16, :16])
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_read_in_forked_child, args=(child, data, recipe_of(data).source))
    proc.start()
    try:
        assert parent.poll(60), "forked child did not answer"
        results, touched = parent.recv()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    for how, kind, message in results:
        assert kind == ForkSafetyError.__name__, (how, kind, message)
        assert "forked after GDAL was loaded" in message and "spawn" in message
    assert touched == []
    # The parent is unaffected.
    assert np.array_equal(data[:, -16:, -16:].values, job.data[:, -16:, -16:])
