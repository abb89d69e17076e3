"""SIGINT and SIGTERM during a job, and the one point where they stop counting.

A job is interruptible from its start until its output is published: a
signal raises :class:`KeyboardInterrupt` in the main thread, the job is
aborted (every task already writing is waited for, then the partial output
is removed, or kept with ``resume``) and the CLI exits 130. Publishing (one
rename, ``CompleteMultipartUpload``, the root ``zarr.json``) is the line:
:meth:`JobSignals.publishing` looks once more for a signal, then publishes
with signals held, so a signal either arrived before the line (nothing is
published, even if some library swallowed the ``KeyboardInterrupt``) or
after it (the output stands and the job reports success). A few short
steps whose half-done state could not be cleaned up (submitting a task and
noting it in flight, opening the output) defer a signal to their end, and
an abort's clean-up ignores further signals, so a second Ctrl-C cannot cut
it short.

Only dispositions that are Python's defaults are taken over, and only for
the job's duration: SIGINT ignored at start (a shell's background job)
stays ignored, a handler of the caller's own stays in place, and every
handler is restored when the job ends. Handlers can only be set from the
main thread; a job run from another thread leaves signals alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: The signals a job takes over while it runs.
JOB_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class JobSignals:
    """The running job's handler of SIGINT and SIGTERM."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.state = "running"  # then "aborting" or "published": nothing raises any more
        self._deferring = 0
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = signum
        if self.state == "running" and not self._deferring:
            raise KeyboardInterrupt

    def install(self) -> None:
        """Take over the signals whose disposition is Python's default (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in JOB_SIGNALS:
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            current = signal.getsignal(sig)
            if current is default:
                self._previous[sig] = current
                signal.signal(sig, self)

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def check(self) -> None:
        """Raise :class:`KeyboardInterrupt` if a signal has arrived in this job."""
        if self.received is not None and self.state == "running":
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A short step a signal must not cut in two: one arriving during it
        is raised at its end."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if not self._deferring:
            self.check()

    @contextlib.contextmanager
    def aborting(self) -> Iterator[None]:
        """The abort's clean-up: later signals are noted, never raised."""
        self.state = "aborting"
        yield

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """The point of no return (see the module docstring)."""
        self._deferring += 1
        try:
            self.check()
            yield
            self.state = "published"
        finally:
            self._deferring -= 1


class _NoSignals(JobSignals):
    """What :func:`active` gives outside a job: nothing deferred, nothing raised."""

    def __call__(self, signum: int, frame: Any) -> None:  # pragma: no cover - never installed
        return None


def active() -> JobSignals:
    """The :class:`JobSignals` of the job running in this process, if any
    took over a signal; else a stand-in whose methods change nothing."""
    for sig in JOB_SIGNALS:
        handler = signal.getsignal(sig)
        if isinstance(handler, JobSignals):
            return handler
    return _NoSignals()


@contextlib.contextmanager
def job_signals() -> Iterator[JobSignals]:
    """The job's :class:`JobSignals`: installed for the job's duration, or
    the one an enclosing call (the CLI's whole run) already installed."""
    current = active()
    if not isinstance(current, _NoSignals):
        yield current
        return
    signals = JobSignals()
    signals.install()
    try:
        yield signals
    finally:
        signals.restore()
