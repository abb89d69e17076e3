"""Helpers for the fault tests: real processes, real signals, a small disk.

Nothing here replaces a part of rdask: jobs run as ``rdask run`` child
processes or on a real ``dask scheduler`` + ``dask worker`` cluster, faults
are real signals (``SIGKILL``, ``SIGINT``, ``SIGTERM``) and a real full
filesystem (a size-limited tmpfs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cli
import numpy as np

#: Seconds any single wait in these tests may take before it is a failure
#: (generous: the machine may be shared and loaded).
PATIENCE = 120.0


# -- rdask as a child process ---------------------------------------------


def start_rdask(*args, cwd=None, preexec_fn=None) -> subprocess.Popen:
    """``rdask ARGS...`` as a child process, stdout and stderr captured."""
    return cli.start(*args, cwd=cwd, preexec_fn=preexec_fn)


def run_rdask(*args, cwd=None, preexec_fn=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``rdask ARGS...`` to completion."""
    return cli.run(*args, cwd=cwd, preexec_fn=preexec_fn, timeout=timeout)


def wait_until(predicate: Callable[[], bool], what: str, *, proc: subprocess.Popen | None = None,
               timeout: float = PATIENCE, interval: float = 0.02) -> float:
    """Poll ``predicate`` until true; return the seconds waited.

    Fails (with the child's stderr) if ``proc`` ends first or time runs out.
    """
    t0 = time.monotonic()
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}: {err}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - t0


def signal_and_wait(proc: subprocess.Popen, sig: int, timeout: float = PATIENCE) -> tuple[float, str]:
    """Send ``sig``; return (seconds until the process ended, its stderr)."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"rdask did not stop within {timeout:.0f} s of signal {sig}") from None
    return time.monotonic() - t0, err


# -- the files a job leaves beside its target -----------------------------


def partial_files(target: str | os.PathLike) -> tuple[Path, Path]:
    """``(partial, journal)`` paths rdask uses beside ``target`` (as documented)."""
    t = Path(target)
    return t.with_name(f".{t.name}.rdask-partial"), t.with_name(f".{t.name}.rdask-journal")


def _journal_lines(journal: str | os.PathLike) -> list[list[str]]:
    """Complete chunk lines of a job journal, split: ``row col`` or
    ``row col index:offset:bytes ... .`` (header and a torn last line skipped)."""
    try:
        lines = Path(journal).read_text().splitlines()
    except FileNotFoundError:
        return []
    if not lines:
        return []
    json.loads(lines[0])  # the header is one JSON line naming the job
    out = []
    for line in lines[1:]:
        parts = line.split()
        if (len(parts) == 2 or (len(parts) > 3 and parts[-1] == ".")) and \
                parts[0].isdigit() and parts[1].isdigit():
            out.append(parts)
    return out


def journal_chunks(journal: str | os.PathLike) -> list[tuple[int, int]]:
    """``(row, col)`` offsets of the chunks a job journal records."""
    return [(int(p[0]), int(p[1])) for p in _journal_lines(journal)]


def journal_tiles(journal: str | os.PathLike) -> dict[int, tuple[int, int]]:
    """``{tile index: (offset, bytes)}`` when the journal records tile placements."""
    tiles = {}
    for parts in _journal_lines(journal):
        for item in parts[2:-1]:
            i, off, n = (int(v) for v in item.split(":"))
            tiles[i] = (off, n)
    return tiles


def listing(directory: str | os.PathLike) -> list[str]:
    return sorted(os.listdir(directory))


def digest(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- slow jobs --------------------------------------------------------------


def reverse_bands_iterations(seconds_per_megavalue: float) -> int:
    """``iterations`` for the built-in ``reverse-bands`` kernel such that one
    million values cost about ``seconds_per_megavalue`` of one core, measured
    here (so the jobs are slow enough to interrupt on any machine)."""
    import rdask

    k = rdask.get_kernel("reverse-bands")
    block = np.ones((1, 64, 64), np.uint16)
    k(block, iterations=10)  # compiled (or loaded from numba's cache) outside the timing
    probe = 20000
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        k(block, iterations=probe)
        best = min(best, time.perf_counter() - t0)
    per_megavalue = best / block.size * 1e6
    return int(min(400_000, max(2000, probe * seconds_per_megavalue / per_megavalue)))


def chunk_windows(chunks: tuple[tuple[int, ...], ...]) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """``{(row, col): (y0, y1, x0, x1)}`` of a dask ``(bands, ys, xs)`` chunk grid."""
    ys = np.cumsum((0,) + tuple(chunks[1]))
    xs = np.cumsum((0,) + tuple(chunks[2]))
    return {(int(ys[i]), int(xs[j])): (int(ys[i]), int(ys[i + 1]), int(xs[j]), int(xs[j + 1]))
            for i in range(len(ys) - 1) for j in range(len(xs) - 1)}


# -- a real cluster ---------------------------------------------------------


@contextlib.contextmanager
def dask_cluster(tmp_path: Path, n_workers: int = 2, *, nanny: bool = False) -> Iterator[tuple[str, dict]]:
    """A ``dask scheduler`` and ``n_workers`` one-thread ``dask worker``
    processes: :func:`cluster.dask_cluster`, with or without a nanny."""
    from cluster import dask_cluster as start

    with start(tmp_path, n_workers=n_workers, nanny=nanny) as cluster:
        yield cluster


# -- a full disk ----------------------------------------------------------


@contextlib.contextmanager
def small_disk(directory: Path, size_mb: int) -> Iterator[Callable[[], None] | None]:
    """Make writes under ``directory`` fail after about ``size_mb`` MB.

    As root, a real ``tmpfs`` of that size is mounted on ``directory`` (and
    unmounted afterwards); yields ``None``. Otherwise (or with
    ``RDASK_TEST_NO_TMPFS=1``) yields a ``preexec_fn`` for a child process
    that limits the size of files it writes (``RLIMIT_FSIZE``, with
    ``SIGXFSZ`` ignored so the write fails with an error instead).
    """
    directory.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and not os.environ.get("RDASK_TEST_NO_TMPFS"):
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(directory)],
                              capture_output=True, text=True)
        mounted = proc.returncode == 0
    try:
        if mounted:
            yield None
        else:
            limit = size_mb * 1024 * 1024

            def preexec() -> None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

            yield preexec
    finally:
        if mounted:
            if subprocess.run(["umount", str(directory)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(directory)], capture_output=True)
