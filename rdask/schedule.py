"""Run a store on dask's threaded or synchronous scheduler, or on
dask.distributed, with the write lock that fits.

Thread and lock model:

* threads / sync: chunks are read, computed and handed to the sink by
  dask's worker threads; the sink's own ``threading.Lock`` serialises only
  the hand-over to GDAL.
* distributed (a ``Client``, ``"local[:N]"`` for a ``LocalCluster`` of N
  spawned worker processes, or a ``tcp://`` scheduler address): workers read
  and compute; finished chunks stream back to this process, which is the
  single writer. No lock crosses processes, a killed worker never holds the
  file, and the output is never reopened per chunk. At most a few chunks per
  worker thread are in flight, which bounds memory on both sides.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rdask.errors import SchedulerError

log = logging.getLogger("rdask")

#: Chunks in flight per worker thread on a cluster.
INFLIGHT_PER_THREAD = 2


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed scheduler choice."""

    kind: str  # "threads" | "sync" | "local" | "address" | "client"
    workers: int
    target: Any = None  # address string or Client

    @property
    def distributed(self) -> bool:
        return self.kind in ("local", "address", "client")


def parse_scheduler(scheduler: Any = "threads", workers: int | None = None) -> SchedulerSpec:
    """Normalise a scheduler argument.

    Parameters
    ----------
    scheduler
        ``"threads"``, ``"sync"``, ``"local"`` / ``"local:N"``, a
        ``tcp://host:port`` address, or a ``distributed.Client``.
    workers
        Threads for ``"threads"``; worker processes for ``"local"``.
    """
    n = int(workers) if workers else (os.cpu_count() or 1)
    if n < 1:
        raise SchedulerError(f"workers must be >= 1, got {workers}")
    if not isinstance(scheduler, str):
        if type(scheduler).__name__ == "Client":
            return SchedulerSpec("client", n, scheduler)
        raise SchedulerError(f"unknown scheduler {scheduler!r}")
    s = scheduler.strip()
    if s in ("threads", "threading", "threaded"):
        return SchedulerSpec("threads", n)
    if s in ("sync", "synchronous", "single-threaded"):
        return SchedulerSpec("sync", 1)
    if s == "local" or s.startswith("local:"):
        count = s.partition(":")[2]
        try:
            return SchedulerSpec("local", int(count) if count else n)
        except ValueError:
            raise SchedulerError(f"bad scheduler {scheduler!r}: expected local:N") from None
    if "://" in s:
        return SchedulerSpec("address", n, s)
    raise SchedulerError(
        f"unknown scheduler {scheduler!r}: use threads, sync, local[:N] or tcp://HOST:PORT"
    )


class Runner:
    """Executes a store on one scheduler. Use :func:`open_runner`."""

    def __init__(self, spec: SchedulerSpec, client: Any = None) -> None:
        self.spec = spec
        self.client = client

    @property
    def threads(self) -> int:
        """Threads that will compute chunks (sizes GDAL's compression pool)."""
        if self.client is not None:
            return max(1, sum(self.client.nthreads().values()))
        return self.spec.workers

    def store(
        self,
        arr: Any,
        sink: Any,
        *,
        skip: frozenset[tuple[int, int]] = frozenset(),
        progress: bool = False,
    ) -> None:
        """Compute every chunk of ``arr`` and write it with ``sink[region] = chunk``.

        Chunks whose ``(row, col)`` offset is in ``skip`` (already written by
        an interrupted job) are neither computed nor written.
        """
        todo = [
            (block, region)
            for block, region in zip(arr.to_delayed(optimize_graph=True).ravel(), chunk_regions(arr.chunks), strict=True)
            if (region[1].start, region[2].start) not in skip
        ]
        if self.client is None:
            self._store_local(todo, sink, progress)
        else:
            self._store_distributed(todo, sink)

    def _store_local(self, todo: list, sink: Any, progress: bool) -> None:
        import dask

        # One write task per chunk, fed by that chunk's fused read+kernel
        # task; it encodes the chunk's tiles (if the sink takes encoded
        # tiles) and hands them over; the sink locks for itself.
        encoder = getattr(sink, "encoder", None)
        writes = [
            dask.delayed(_write)(
                sink, encoder, region, block,
                dask_key_name=f"rdask-write-{block.key[0]}-{region[1].start}-{region[2].start}",
            )
            for block, region in todo
        ]
        sched = "sync" if self.spec.kind == "sync" else "threads"
        with _progressbar(progress):
            dask.compute(writes, scheduler=sched, num_workers=self.spec.workers)

    def _store_distributed(self, todo: list, sink: Any) -> None:
        from dask.delayed import Delayed
        from dask.optimization import cull
        from distributed import as_completed

        # Every block of to_delayed() carries the whole graph; submitting it
        # per chunk would ship (and make the scheduler digest) all chunks'
        # tasks once per chunk. Cull each to its own tasks first.
        graph = dict(todo[0][0].__dask_graph__()) if todo else {}
        todo = [(Delayed(block.key, cull(graph, [block.key])[0]), region) for block, region in todo]
        pending = iter(todo)
        limit = max(2, INFLIGHT_PER_THREAD * self.threads)
        where: dict[str, tuple] = {}
        ac = as_completed()
        futures = []

        def submit() -> bool:
            try:
                block, region = next(pending)
            except StopIteration:
                return False
            encoder = getattr(sink, "encoder", None)
            if encoder is not None:
                # Workers encode; only compressed tiles travel to the writer.
                import dask

                block = dask.delayed(encoder)(block, region)
            fut = self.client.compute(block)
            where[fut.key] = region
            futures.append(fut)
            ac.add(fut)
            return True

        for _ in range(limit):
            if not submit():
                break
        try:
            for fut in ac:
                region = where.pop(fut.key)
                sink[region] = fut.result()
                fut.release()
                submit()
        finally:
            for fut in futures:
                fut.cancel()


def _write(sink: Any, encoder: Any, region: tuple[slice, ...], block: Any) -> None:
    sink[region] = block if encoder is None else encoder(block, region)


def chunk_regions(chunks: tuple[tuple[int, ...], ...]) -> Iterator[tuple[slice, ...]]:
    """The slices of every chunk of a dask ``chunks`` spec, row-major."""
    import itertools

    edges = []
    for c in chunks:
        offs, acc = [], 0
        for n in c:
            offs.append(slice(acc, acc + n))
            acc += n
        edges.append(offs)
    yield from itertools.product(*edges)


@contextlib.contextmanager
def _progressbar(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar():
        yield


@contextlib.contextmanager
def open_runner(scheduler: Any = "threads", workers: int | None = None) -> Iterator[Runner]:
    """Yield a :class:`Runner`, starting and stopping a cluster if asked to."""
    spec = parse_scheduler(scheduler, workers)
    if not spec.distributed:
        yield Runner(spec)
        return
    import dask
    import distributed  # noqa: F401 - loads its config defaults before we override one

    # Workers are spawned, never forked after GDAL is loaded in this process.
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        if spec.kind == "client":
            yield Runner(spec, spec.target)
            return
        from distributed import Client, LocalCluster

        if spec.kind == "local":
            cluster = LocalCluster(
                n_workers=spec.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            )
            with cluster, Client(cluster) as client:
                yield Runner(spec, client)
            return
        try:
            client = Client(spec.target, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise SchedulerError(f"cannot reach dask scheduler {spec.target}: {exc}") from None
        with client:
            yield Runner(spec, client)
