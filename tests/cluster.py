"""A real dask cluster of separate processes on 127.0.0.1, for tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager

BIN = os.path.dirname(sys.executable)


@contextmanager
def dask_cluster(tmp_path, n_workers: int = 2, nthreads: int = 1, *, nanny: bool = False):
    """Start ``dask scheduler`` and ``n_workers`` ``dask worker`` processes.

    With ``nanny=False`` (``--no-nanny``) a killed worker stays dead; with
    ``nanny=True`` a nanny restarts it. Yields ``(address, procs)`` where
    ``procs["workers"]`` are the worker (or nanny) processes, which tests
    may kill.
    """
    sched_file = str(tmp_path / "scheduler.json")
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    log = open(tmp_path / "cluster.log", "w")
    sched = subprocess.Popen(
        [os.path.join(BIN, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", sched_file],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    procs = {"scheduler": sched, "workers": []}
    try:
        deadline = time.time() + 60
        while not (os.path.exists(sched_file) and os.path.getsize(sched_file) > 0):
            if time.time() > deadline or sched.poll() is not None:
                raise RuntimeError("dask scheduler did not start: " + (tmp_path / "cluster.log").read_text())
            time.sleep(0.1)
        time.sleep(0.2)
        address = json.load(open(sched_file))["address"]
        for _ in range(n_workers):
            procs["workers"].append(subprocess.Popen(
                [os.path.join(BIN, "dask"), "worker", address, "--nthreads", str(nthreads),
                 "--nanny" if nanny else "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            ))
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(n_workers, timeout=90)
        yield address, procs
    finally:
        for p in procs["workers"] + [sched]:
            if p.poll() is None:
                p.terminate()
        for p in procs["workers"] + [sched]:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()
