"""A worker plugin for rdask's own local clusters: closed workers exit at once."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class QuickExit(WorkerPlugin):
    """A closed worker process ends without interpreter teardown.

    After a job the cluster closes and waits for its worker processes; their
    normal exit spends ~0.2 s of CPU each, mostly numba disposing of its LLVM
    state, while the job waits. When the worker closes (``teardown`` runs in
    its close, which also removes its directory), an exit handler is
    registered; registered last, it runs first, once the process is exiting
    anyway: it flushes logging and the standard streams and leaves with
    ``os._exit(0)``. Clusters rdask does not own are never given it.
    """

    def teardown(self, worker: Any) -> None:
        atexit.register(_exit_now)


def _exit_now() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)
