"""Run a store on dask's threaded or synchronous scheduler, or on
dask.distributed, with the write lock that fits.

Thread and lock model:

* threads / sync: chunks are read, computed and handed to the sink by
  dask's worker threads; the sink's own ``threading.Lock`` serialises only
  the hand-over to GDAL.
* distributed (a ``Client``, ``"local[:N]"`` for a ``LocalCluster`` of N
  spawned worker processes, or a ``tcp://`` scheduler address): workers read
  and compute, and encode the output tiles. Workers on this machine append
  the encoded tiles to the partial file themselves (one ``O_APPEND`` write
  per chunk, placed atomically by the kernel) and send back only their
  offsets; remote workers send the encoded tiles, which this process writes.
  Either way this process alone records where tiles are and commits the
  file: no lock crosses processes, a killed worker never holds the file
  (at worst it leaves unreferenced bytes), and the output is never
  reopened per chunk. At most a few chunks per worker thread are in
  flight, which bounds memory on both sides.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rdask.errors import SchedulerError

log = logging.getLogger("rdask")

#: glibc settings for the worker processes of a ``local`` cluster. Every chunk
#: allocates a few MB of pixels and tiles; with distributed's default
#: (trim the heap above 64 KB) and glibc's mmap threshold, each such buffer is
#: a fresh mapping, faulted in page by page and unmapped again: about a third
#: of a worker's CPU on W4. Freed chunk buffers are reused instead.
WORKER_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(256 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(512 * 1024 * 1024),
}

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

        ``arr`` is a dask array or :class:`ChunkTasks`. Chunks whose
        ``(row, col)`` offset is in ``skip`` (already written by an
        interrupted job) are neither computed nor written.
        """
        regions = list(chunk_regions(arr.chunks))
        keep = [(region[1].start, region[2].start) not in skip for region in regions]
        encoder = getattr(sink, "encoder", None)
        direct = encoder is not None and self.client is not None and self.shares_files(sink.tmp)
        path = sink.tmp if direct else None
        if isinstance(arr, ChunkTasks):
            tasks = [(region, arr.key(region)) for region, k in zip(regions, keep, strict=True) if k]
            if self.client is None:
                import dask

                writes = [dask.delayed(_compute_write)(sink, encoder, arr.compute, region, dask_key_name=key)
                          for region, key in tasks]
                self._store_local(writes, progress)
            else:
                todo = [
                    (functools.partial(self.client.submit, _on_worker, arr.compute, region, encoder, path,
                                       key=key, pure=False), region)
                    for region, key in tasks
                ]
                self._store_distributed(todo, _hand_over(sink, encoder, direct, boxed=False))
            return
        if self.client is None:
            import dask

            # One write task per chunk, fed by that chunk's fused read+kernel
            # task; it encodes the chunk's tiles (if the sink takes encoded
            # tiles) and hands them over; the sink locks for itself.
            blocks = arr.to_delayed(optimize_graph=True).ravel()
            writes = [
                dask.delayed(_write)(
                    sink, encoder, region, block,
                    dask_key_name=f"rdask-write-{block.key[0]}-{region[1].start}-{region[2].start}",
                )
                for block, region, k in zip(blocks, regions, keep, strict=True) if k
            ]
            self._store_local(writes, progress)
            return
        from dask.delayed import Delayed
        from dask.optimization import cull

        if encoder is not None:
            arr = _finish_on_workers(arr, encoder, path)
        blocks = arr.to_delayed(optimize_graph=True).ravel()
        # Every block of to_delayed() carries the whole graph; submitting it
        # per chunk would ship (and make the scheduler digest) all chunks'
        # tasks once per chunk. Cull each to its own tasks first.
        graph = dict(blocks[0].__dask_graph__()) if len(blocks) else {}
        todo = [
            (functools.partial(self.client.compute, Delayed(block.key, cull(graph, [block.key])[0])), region)
            for block, region, k in zip(blocks, regions, keep, strict=True) if k
        ]
        self._store_distributed(todo, _hand_over(sink, encoder, direct, boxed=True))

    def _store_local(self, writes: list, progress: bool) -> None:
        import dask

        # A callable scheduler: a name would make dask import distributed
        # (~0.1 s, ~20 MB) just to look for a default Client.
        if self.spec.kind == "sync":
            from dask.local import get_sync as sched
        else:
            from dask.threaded import get as sched
        with _progressbar(progress):
            dask.compute(writes, scheduler=sched, num_workers=self.spec.workers)

    def _store_distributed(self, todo: list, finish: Callable[[tuple, Any], None]) -> None:
        """Submit ``(submit, region)`` pairs, a few per worker thread at a
        time, and ``finish(region, result)`` each as it completes."""
        from distributed import as_completed

        pending = iter(todo)
        limit = max(2, INFLIGHT_PER_THREAD * self.threads)
        where: dict[str, tuple] = {}
        ac = as_completed()
        futures = []

        def submit() -> bool:
            try:
                start, region = next(pending)
            except StopIteration:
                return False
            fut = start()
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
                finish(region, fut.result())
                fut.release()
                submit()
        finally:
            for fut in futures:
                fut.cancel()

    def shares_files(self, path: str) -> bool:
        """True when every task of this runner sees ``path`` as this process does:
        threads, a ``local`` cluster, or workers on this host seeing the same file."""
        if self.client is None or self.spec.kind == "local":
            return True
        try:
            seen = self.client.run(file_identity, path)
        except Exception:  # noqa: BLE001 - any doubt means the safe path
            return False
        here = file_identity(path)
        return here is not None and bool(seen) and all(v == here for v in seen.values())


def file_identity(path: str) -> tuple[str, int, int] | None:
    """``(host, device, inode)`` of ``path`` as this process sees it, or None."""
    import socket

    try:
        st = os.stat(path)
    except OSError:
        return None
    return socket.gethostname(), st.st_dev, st.st_ino


@dataclass(frozen=True)
class ChunkTasks:
    """Chunks made by one picklable function of the chunk's region.

    What the pipeline runs for a :class:`~rdask.io.open.Recipe`: one task per
    chunk, no dask array and no graph to optimise, so neither this process
    nor a worker imports ``dask.array``.
    """

    compute: Callable[[tuple[slice, ...]], Any]
    chunks: tuple[tuple[int, ...], ...]
    name: str

    def key(self, region: tuple[slice, ...]) -> str:
        return f"rdask-chunk-{self.name}-{region[1].start}-{region[2].start}"


def _finish_on_workers(arr: Any, encoder: Any, path: str | None) -> Any:
    """``arr`` extended with the steps workers run after the kernel.

    Workers encode each chunk's tiles and, if ``path`` (they run on this
    machine), append them to the partial file themselves
    (:func:`~rdask.io.tilesink.append_tiles`), returning only the offsets.
    These steps go into the array's graph as one more blockwise layer so that
    dask fuses them with the read and the kernel: one task per chunk for the
    scheduler, not three.
    """
    import uuid

    import numpy as np

    one = tuple((1,) * len(c) for c in arr.chunks)
    return arr.map_blocks(
        _finish_chunk,
        encoder,
        path,
        dtype=object,
        chunks=one,
        meta=np.empty((0,) * arr.ndim, dtype=object),
        # Unique per store: the same array written twice is two jobs.
        name=f"rdask-finish-{arr.name}-{uuid.uuid4().hex[:8]}",
    )


def _hand_over(sink: Any, encoder: Any, direct: bool, *, boxed: bool) -> Callable[[tuple, Any], None]:
    """How this process takes a worker's result for ``region``: pixels, encoded
    tiles or (``direct``) the offsets of tiles the worker appended itself."""
    if encoder is None:
        return sink.__setitem__
    put = sink.place if direct else sink.__setitem__
    if not boxed:
        return put
    return lambda region, result: put(region, result.item())


def _deliver(block: Any, region: tuple[slice, ...], encoder: Any, path: str | None) -> Any:
    """Encode a chunk's tiles; with ``path``, append them and return their offsets."""
    tiles = encoder(block, region)
    if path is None:
        return tiles
    from rdask.io.tilesink import append_tiles

    return append_tiles(path, tiles)


def _on_worker(compute: Callable, region: tuple[slice, ...], encoder: Any, path: str | None) -> Any:
    """A :class:`ChunkTasks` chunk on a worker: its pixels, or what :func:`_deliver` makes of them."""
    block = compute(region)
    return block if encoder is None else _deliver(block, region, encoder, path)


def _finish_chunk(block: Any, encoder: Any, path: str | None, block_info: Any = None) -> Any:
    """:func:`_deliver` as a blockwise step: a 1x1x1 object array."""
    import numpy as np

    region = tuple(slice(a, b) for a, b in block_info[0]["array-location"])
    out = np.empty((1,) * block.ndim, dtype=object)
    out.reshape(-1)[0] = _deliver(block, region, encoder, path)
    return out


def _write(sink: Any, encoder: Any, region: tuple[slice, ...], block: Any) -> None:
    sink[region] = block if encoder is None else encoder(block, region)


def _compute_write(sink: Any, encoder: Any, compute: Callable, region: tuple[slice, ...]) -> None:
    _write(sink, encoder, region, compute(region))


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
    if spec.kind == "client":
        yield Runner(spec, spec.target)
        return
    if not spec.distributed:
        yield Runner(spec)
        return
    from distributed import Client

    if spec.kind == "local":
        with local_cluster(spec.workers) as cluster, Client(cluster) as client:
            from rdask.worker_exit import QuickExit

            client.register_plugin(QuickExit(), name="rdask-quick-exit")
            yield Runner(spec, client)
        return
    try:
        client = Client(spec.target, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(f"cannot reach dask scheduler {spec.target}: {exc}") from None
    with client:
        yield Runner(spec, client)


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A ``LocalCluster`` of ``workers`` spawned single-threaded worker processes."""
    import dask
    import distributed  # noqa: F401 - loads its config defaults before we override one
    from distributed import LocalCluster

    # Workers are spawned, never forked after GDAL is loaded in this process,
    # and get the allocator settings the CLI gives itself (WORKER_MALLOC)
    # instead of distributed's aggressive trimming.
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_MALLOC}
    settings = {
        "distributed.worker.multiprocessing-method": "spawn",
        "distributed.nanny.pre-spawn-environ": environ,
    }
    # Kept for the cluster's lifetime: a nanny restarting a dead worker
    # reads the method again.
    with dask.config.set(settings), LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster
