"""Run chunk jobs on threads, synchronously, or on dask.distributed.

The scheduler knows the write contract (:mod:`rdask.outputs.base`) and
nothing more: for every chunk an output does not hold yet it runs the
chunk's task followed by the output's ``writer`` where the chunk is
computed, and hands each result to ``output.record`` in this process, as
results arrive. Tasks are made lazily and fed through a bounded window (a
few per computing thread), on every scheduler, so neither memory nor
scheduler work grows with the number of chunks.

* threads: a pool of this process's threads computes chunks and runs the
  writer; this thread records. sync: this thread does all of it, one chunk
  at a time.
* distributed (a ``Client``, ``"local[:N]"`` for a ``LocalCluster`` of N
  spawned worker processes, or a ``tcp://`` scheduler address): each chunk
  is one task whose graph is the chunk's computation followed by the
  writer, so workers read, compute and encode, and append to the partial
  file themselves when they see it. This process alone records and
  commits: no lock crosses processes, and a killed worker's chunk is simply
  recomputed elsewhere.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import os
import queue
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rdask import interrupts
from rdask.errors import SchedulerError
from rdask.recipe import ChunkJob, region_pixels

if TYPE_CHECKING:
    # The scheduler sees outputs only through the write contract's methods.
    from rdask.outputs.base import ChunkSink

log = logging.getLogger("rdask")

#: Chunks in flight per computing thread.
INFLIGHT_PER_THREAD = 2

#: Seconds an abort waits for the tasks still running before it cleans up.
FENCE_SECONDS = 120.0
#: The same on rdask's own ``local`` cluster, whose workers it then restarts.
LOCAL_FENCE_SECONDS = 20.0
#: Seconds a ``local`` cluster's worker has to close before its nanny kills it.
WORKER_CLOSE_SECONDS = 30.0


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
    n = (os.cpu_count() or 1) if workers is None else int(workers)
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
            count = int(count) if count else n
        except ValueError:
            count = 0
        if count < 1:
            raise SchedulerError(f"bad scheduler {scheduler!r}: expected local:N with N >= 1")
        return SchedulerSpec("local", count)
    if "://" in s:
        return SchedulerSpec("address", n, s)
    raise SchedulerError(
        f"unknown scheduler {scheduler!r}: use threads, sync, local[:N] or tcp://HOST:PORT"
    )


class Runner:
    """Runs chunk jobs on one scheduler. Use :func:`open_runner`."""

    def __init__(self, spec: SchedulerSpec, client: Any = None) -> None:
        self.spec = spec
        self.client = client
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: dict[int, Any] = {}  # futures submitted and not yet recorded

    @property
    def threads(self) -> int:
        """Threads that compute chunks at once."""
        if self.client is not None:
            return max(1, sum(self.client.nthreads().values()))
        return self.spec.workers

    def run(self, job: ChunkJob, output: ChunkSink, on_chunk: Callable[[int], None] | None = None) -> int:
        """Compute every chunk of ``job`` that ``output`` does not hold yet and
        record it; return the pixels (per band) recorded.

        ``on_chunk(pixels)`` is called after each chunk is recorded. On an
        error or a signal the tasks still in flight are left running:
        :meth:`fence` waits for them before anything is cleaned up.
        """
        writer = output.writer
        tasks: Iterable[Any] = job.tasks(skip=output.is_done)
        bands = None
        if self.client is not None:
            bands = Bands(job, sorted(self.client.nthreads()))
            tasks = bands.tasks(job, output.is_done)
        submit = self._submitter(writer, bands)
        pixels = 0

        def record(task: Any, result: Any) -> None:
            nonlocal pixels
            output.record(task.region, result)
            if bands is not None:
                bands.done(task.region)
            n = region_pixels(task.region)
            pixels += n
            if on_chunk is not None:
                on_chunk(n)

        limit = 1 if self.spec.kind == "sync" else max(2, INFLIGHT_PER_THREAD * self.threads)
        drain(tasks, submit, record, limit, self._inflight)
        return pixels

    def fence(self, timeout: float = FENCE_SECONDS) -> int:
        """Make sure no task of this runner writes any more: tasks not started
        are cancelled, running ones are waited for (a thread cannot be stopped,
        and a cluster worker that was sent a task runs it to the end); the
        workers of rdask's own ``local`` cluster that are still busy after
        :data:`LOCAL_FENCE_SECONDS` are restarted, which stops them for sure.
        Return how many tasks may still write: their writes may land after
        the abort's clean-up, which is why every output also cleans up what a
        killed job left on its next run."""
        futures = list(self._inflight.values())
        self._inflight.clear()
        if not futures:
            return 0
        if self.client is None:
            for fut in futures:
                fut.cancel()  # only those not started yet
            _, running = concurrent.futures.wait(futures, timeout)
            left = len(running)
        elif self.spec.kind == "local":
            left = _wait_distributed(futures, min(timeout, LOCAL_FENCE_SECONDS))
            if left:
                log.info("restarting the local cluster's workers: %d chunk tasks still running", left)
                self.client.restart(wait_for_workers=False)
                left = 0
        else:
            left = _wait_distributed(futures, timeout)
        if left:
            log.warning("%d chunk tasks were still running %.0f s after the job stopped", left, timeout)
        return left

    def _submitter(self, writer: Callable, bands: Bands | None = None) -> Callable[[Any], Any]:
        """``submit(task) -> future`` for this scheduler."""
        if self.client is not None:
            client = self.client

            def submit(task: Any) -> Any:
                worker = bands.worker(task.region) if bands else None
                if worker is None:
                    return client.get(*task.graph(writer), sync=False)
                return client.get(*task.graph(writer), sync=False, workers=[worker],
                                  allow_other_workers=True)

            return submit
        if self.spec.kind == "sync":
            return lambda task: _done(task.run, writer)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.spec.workers, thread_name_prefix="rdask")
        pool = self._pool
        return lambda task: pool.submit(task.run, writer)

    def close(self, *, wait: bool = True) -> None:
        """Stop this runner's threads (waiting for running chunks with ``wait``)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None

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


class Bands:
    """On a cluster, each worker computes one band of consecutive chunks
    (row-major), so the chunks that share input blocks (neighbours, through
    their halos) mostly run in one process and decode those blocks once
    (:mod:`rdask.io.blocks`, one cache per process). A hint only: an idle
    worker may still take a band's chunks, and a lost one's go elsewhere.

    :meth:`tasks` hands out the next chunk of the band with the fewest in
    flight (each band's in row-major order), so that every worker keeps its
    share of the window; :meth:`done` is told of each chunk recorded.
    """

    def __init__(self, job: ChunkJob, workers: list[str]) -> None:
        self.rows = tuple(itertools.accumulate(job.chunks[1], initial=0))
        self.cols = tuple(itertools.accumulate(job.chunks[2], initial=0))
        self.workers = tuple(workers)
        self.inflight = [0] * len(self.workers)

    def band(self, region: Any) -> int:
        """The band of the chunk at ``region``."""
        row = bisect.bisect_right(self.rows, region[1].start) - 1
        col = bisect.bisect_right(self.cols, region[2].start) - 1
        across = len(self.cols) - 1
        chunks = (len(self.rows) - 1) * across
        return (row * across + col) * len(self.workers) // chunks

    def worker(self, region: Any) -> str | None:
        return self.workers[self.band(region)] if len(self.workers) > 1 else None

    def done(self, region: Any) -> None:
        self.inflight[self.band(region)] -= 1

    def tasks(self, job: ChunkJob, skip: Callable[[Any], bool]) -> Iterator[Any]:
        """``job``'s tasks not in ``skip``, the next always from the band
        with the fewest chunks in flight."""
        left = {k: job.tasks(skip=lambda r, k=k: skip(r) or self.band(r) != k)
                for k in range(len(self.workers))}
        while left:
            k = min(left, key=lambda k: self.inflight[k])
            task = next(left[k], None)
            if task is None:
                del left[k]
                continue
            self.inflight[k] += 1
            yield task


def drain(tasks: Iterable[Any], submit: Callable[[Any], Any], record: Callable[[Any, Any], None],
          limit: int, inflight: dict[int, Any] | None = None) -> None:
    """Submit ``tasks``, at most ``limit`` in flight, and ``record(task,
    result)`` each in this thread as it completes (in completion order).

    Works with any future that has ``add_done_callback`` and ``result``
    (``concurrent.futures`` and ``distributed``). ``inflight`` holds the
    futures submitted and not yet recorded; on an error or a signal they
    stay there, still running, for the caller to fence (see
    :meth:`Runner.fence`): cancelling a cluster future would not stop its
    task, only hide it.
    """
    finished: queue.SimpleQueue = queue.SimpleQueue()
    pending = iter(tasks)
    inflight = {} if inflight is None else inflight
    signals = interrupts.active()

    def start() -> bool:
        # Submitting and noting the future in flight is one step: a signal
        # between the two would leave a task running that no fence knows of.
        with signals.deferred():
            task = next(pending, None)
            if task is None:
                return False
            fut = submit(task)
            inflight[id(fut)] = fut
            fut.add_done_callback(lambda f, task=task: finished.put((task, f)))
        return True

    while len(inflight) < limit and start():
        pass
    while inflight:
        task, fut = _next(finished)
        result = fut.result()
        del inflight[id(fut)]
        record(task, result)
        start()


def _done(fn: Callable, *args: Any) -> Future:
    """``fn(*args)`` run here, now, as a finished future (the sync scheduler:
    chunks run in the calling thread, one at a time, for debuggers and
    profilers)."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except Exception as exc:  # noqa: BLE001 - delivered through the future, as on threads
        fut.set_exception(exc)
    return fut


def _next(finished: queue.SimpleQueue) -> Any:
    # A timeout keeps Ctrl-C responsive while waiting.
    while True:
        with contextlib.suppress(queue.Empty):
            return finished.get(timeout=0.2)


def _wait_distributed(futures: list[Any], timeout: float) -> int:
    """Wait for cluster futures to finish, however they end; return how many
    had not after ``timeout`` (or all, when the cluster cannot be asked)."""
    from distributed import wait

    try:
        wait(futures, timeout=timeout)
    except TimeoutError:
        pass
    except Exception:  # noqa: BLE001 - a lost scheduler: nothing more can be known
        return sum(1 for f in futures if f.status == "pending")
    return sum(1 for f in futures if f.status == "pending")


def file_identity(path: str) -> tuple[str, int, int] | None:
    """``(host, device, inode)`` of ``path`` as this process sees it, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return socket.gethostname(), st.st_dev, st.st_ino


@contextlib.contextmanager
def open_runner(scheduler: Any = "threads", workers: int | None = None) -> Iterator[Runner]:
    """Yield a :class:`Runner`, starting and stopping a cluster if asked to."""
    spec = parse_scheduler(scheduler, workers)
    if spec.kind == "client":
        _tune_workers(spec.target)
        yield Runner(spec, spec.target)
        return
    if not spec.distributed:
        runner = Runner(spec)
        try:
            yield runner
        except BaseException:
            # Chunks still computing are abandoned, not waited for (Ctrl-C).
            runner.close(wait=False)
            raise
        runner.close()
        return
    from distributed import Client

    if spec.kind == "local":
        with local_cluster(spec.workers) as cluster, Client(cluster) as client:
            # Here, not at the top: it imports distributed (~0.1 s), which a
            # threaded run never needs.
            from rdask.worker_exit import QuickExit

            client.register_plugin(QuickExit(), name="rdask-quick-exit")
            _tune_workers(client)
            yield Runner(spec, client)
        return
    try:
        client = Client(spec.target, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(f"cannot reach dask scheduler {spec.target}: {exc}") from None
    with client:
        _tune_workers(client)
        yield Runner(spec, client)


def _tune_workers(client: Any) -> None:
    """Give a cluster's workers rdask's allocator settings (the ones
    ``local:N`` workers get from their environment): a plugin, so workers
    that join later get them too. Harmless to repeat (one name)."""
    from rdask.worker_malloc import TuneMalloc

    client.register_plugin(TuneMalloc(), name=TuneMalloc.name)


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A ``LocalCluster`` of ``workers`` spawned single-threaded worker processes.

    Workers are spawned, never forked after GDAL is loaded in this process.
    Their settings reach them without passing through this process's
    environment (see :func:`spawn_nanny`); rdask's allocator settings are
    the worker plugin's (:func:`_tune_workers`), as on any cluster.
    """
    import dask
    import distributed  # noqa: F401 - loads its config defaults before we override one
    from distributed import LocalCluster

    # Kept for the cluster's lifetime: a nanny restarting a dead worker
    # reads the method again. The workers' scratch space is the cluster's
    # own and goes with it.
    with _kept_environ("__DASK_PARENT_PID"), tempfile.TemporaryDirectory(prefix="rdask-cluster-") as scratch, dask.config.set({
        "distributed.worker.multiprocessing-method": "spawn",
        "temporary-directory": scratch,
    }), LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        # rdask reports a failed chunk itself, in one line; the workers say nothing.
        silence_logs=logging.CRITICAL,
        worker_class=spawn_nanny(),
    ) as cluster:
        yield cluster


@contextlib.contextmanager
def _kept_environ(*names: str) -> Iterator[None]:
    """Put ``names`` back as they were in ``os.environ`` (a nanny marks this
    process as the parent of dask processes, for their titles in ``ps``)."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@functools.cache
def spawn_nanny() -> type:
    """distributed's ``Nanny``, but for where its pre-spawn settings go.

    A nanny copies ``distributed.nanny.pre-spawn-environ`` (and a fixed
    ``PYTHONHASHSEED``) into *this* process's ``os.environ`` before it
    spawns a worker and never takes them out, so every later subprocess of
    the caller (a notebook's, a test suite's) would inherit them. This one
    gives the same settings to the worker's own environment instead, which
    it applies as it starts. It also gives a closing worker
    :data:`WORKER_CLOSE_SECONDS` before killing it (distributed: 4 s).
    """
    from distributed import Nanny

    class SpawnNanny(Nanny):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # self.env already holds the pre-spawn settings (merged in by
            # Nanny); emptied, nothing is copied into os.environ.
            self.pre_spawn_env = {}

        async def close(self, timeout: float = WORKER_CLOSE_SECONDS, reason: str = "nanny-close") -> str:
            # distributed kills a worker still closing after 4 s of its 5;
            # on a loaded machine a healthy one can take longer.
            return await super().close(timeout=timeout, reason=reason)

    return SpawnNanny
