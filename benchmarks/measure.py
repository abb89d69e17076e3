"""Run one command under ``/usr/bin/time -v`` and collect what it cost.

``time -v`` reports the wall time, the user and system CPU time of the
command and of every descendant it waited for, and the peak resident set
size of the *largest single process* (not a sum).  For commands that start
worker processes (a LocalCluster) a sampler thread also records the peak of
the summed RSS of the whole process tree, polled every 0.2 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

TIME_BIN = "/usr/bin/time"

#: Tree-RSS polling period in seconds.
SAMPLE_PERIOD = 0.2


@dataclass
class RunResult:
    """Cost and outcome of one measured command."""

    returncode: int
    wall: float
    """Elapsed seconds as reported by ``time -v``."""
    user: float
    sys: float
    max_rss_mb: float
    """Peak RSS of the largest single process, MB (2**20 bytes)."""
    tree_rss_mb: float
    """Sampled peak of the summed RSS of the process tree, MB."""
    others_cpu: float = 0.0
    """CPU seconds the rest of the machine (other users, the hypervisor's
    steal) used while the command ran: the noise on a shared machine."""
    error: str = ""
    """Last line of stderr (or the reason) when the command failed."""
    log: str = ""

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.returncode == 0

    @property
    def cpu(self) -> float:
        """User plus system CPU seconds."""
        return self.user + self.sys


def run_measured(
    argv: list[str],
    log: Path,
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> RunResult:
    """Run ``argv`` under ``time -v``, its output going to ``log``.

    Parameters
    ----------
    argv
        The command; ``argv[0]`` is looked up on ``PATH`` unless it is a path.
    log
        File for the command's stdout and stderr (``log`` with suffix
        ``.time`` receives the ``time -v`` report).
    timeout
        Seconds before the command's process group is terminated.
    env
        Variables added to (or replacing in) this process's environment.

    Returns
    -------
    RunResult
        A failed result (``returncode`` != 0, ``error`` set) when the
        program is missing, fails or times out.
    """
    if shutil.which(argv[0]) is None:
        return _failed(127, f"not found: {argv[0]}")
    log.parent.mkdir(parents=True, exist_ok=True)
    report = log.with_suffix(".time")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [TIME_BIN, "-v", "-o", str(report), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
        busy_before = busy_cpu_seconds()
        sampler = TreeRssSampler(proc.pid)
        sampler.start()
        returncode, error = _wait(proc, timeout)
        sampler.stop()
        busy = busy_cpu_seconds() - busy_before
    stats = parse_time_report(report.read_text() if report.exists() else "")
    if returncode != 0 and not error:
        error = last_line(log)
    user = float(stats.get("User time (seconds)", 0.0))
    system = float(stats.get("System time (seconds)", 0.0))
    return RunResult(
        returncode=returncode,
        wall=_elapsed(stats.get("Elapsed (wall clock) time (h:mm:ss or m:ss)", "0:0")),
        user=user,
        sys=system,
        max_rss_mb=int(stats.get("Maximum resident set size (kbytes)", 0)) / 1024,
        tree_rss_mb=sampler.peak_bytes / 2**20,
        others_cpu=max(0.0, busy - user - system),
        error=error,
        log=str(log),
    )


def _wait(proc: subprocess.Popen, timeout: float | None) -> tuple[int, str]:
    """Wait for ``proc``; on timeout end its process group. Returns (status, error)."""
    try:
        return proc.wait(timeout=timeout), ""
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=10)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        return -9, f"timed out after {timeout:.0f} s"


def _failed(returncode: int, error: str) -> RunResult:
    """A result for a command that could not be run at all."""
    return RunResult(returncode, 0.0, 0.0, 0.0, 0.0, 0.0, error=error)


def busy_cpu_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot, steal included."""
    t = psutil.cpu_times()
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return sum(getattr(t, name, 0.0) for name in fields)


def parse_time_report(text: str) -> dict[str, str]:
    """``key: value`` pairs of a ``time -v`` report (keys may contain colons)."""
    pairs = (line.strip().rsplit(": ", 1) for line in text.splitlines() if ": " in line)
    return {key: value for key, value in pairs}


def _elapsed(value: str) -> float:
    """Seconds from ``time``'s ``[h:]mm:ss.ss``."""
    seconds = 0.0
    for part in value.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def last_line(log: Path) -> str:
    """Last non-blank line of ``log`` (where a traceback ends), or ''."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


class TreeRssSampler(threading.Thread):
    """Poll the summed RSS of a process and its descendants; keep the peak."""

    def __init__(self, pid: int, period: float = SAMPLE_PERIOD) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.period = period
        self.peak_bytes = 0
        self._done = threading.Event()

    def run(self) -> None:
        """Sample until :meth:`stop` or the process is gone."""
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            self.peak_bytes = max(self.peak_bytes, _tree_rss(root))
            self._done.wait(self.period)

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._done.set()
        self.join()


def _tree_rss(root: psutil.Process) -> int:
    """Summed RSS of ``root`` and its live descendants, in bytes."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total
