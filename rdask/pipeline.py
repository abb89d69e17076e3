"""The one composer: recipe -> output -> schedule.

:func:`process` opens the input as a recipe, adds the kernel steps and
writes it; :func:`write` runs any :class:`~rdask.recipe.ChunkJob` into the
output its target and :class:`~rdask.outputs.WriteOptions` select, on the
chosen scheduler. The xarray face (:func:`rdask.to_raster`) and the CLI
both end here.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dask.base import tokenize

from rdask.chain import is_chain, parse_chain
from rdask.errors import OutputError, first_line
from rdask.interrupts import JobSignals, job_signals
from rdask.io.base import Source
from rdask.io.blocks import block_cache
from rdask.io.remote import forget, is_remote
from rdask.io.warped import DEFAULT_ERROR_THRESHOLD
from rdask.kernels import Kernel
from rdask.meta import RasterMeta
from rdask.outputs import OutputSpec, kind_for, open_output
from rdask.outputs.base import Committed, Output
from rdask.outputs.journal import JobId
from rdask.outputs.options import WriteOptions
from rdask.outputs.staging import check_target
from rdask.pauses import pause
from rdask.plan import CLUSTER_CHUNK_MB, DEFAULT_CHUNK_MB
from rdask.progress import TerminalProgress
from rdask.recipe import (
    ChunkJob,
    Recipe,
    chunk_regions,
    extend,
    open_recipe,
    region_pixels,
    replan,
    warp,
    warp_args,
)
from rdask.schedule import Runner, open_runner, parse_scheduler

log = logging.getLogger("rdask")

#: ``progress=``: True for a bar on stderr, or ``callable(pixels_done, pixels_total)``.
Progress = bool | Callable[[int, int], None]


@dataclass(frozen=True)
class Result:
    """What a finished job wrote."""

    path: str
    seconds: float
    pixels: int
    bytes: int
    chunks: int
    resumed: int = 0  # of ``pixels``, those an interrupted earlier run wrote

    def summary(self) -> str:
        """One line: path, size, time, throughput (of the pixels computed in this run)."""
        mpx = self.pixels / 1e6
        now = (self.pixels - self.resumed) / 1e6
        rate = now / self.seconds if self.seconds > 0 else float("inf")
        kept = f", {self.resumed / 1e6:.1f} Mpx of them resumed" if self.resumed else ""
        return (
            f"wrote {self.path} ({_human(self.bytes)}) in {self.seconds:.2f} s, "
            f"{mpx:.1f} Mpx{kept}, {rate:.1f} Mpx/s"
        )


@dataclass(frozen=True)
class JobInputs:
    """What a job's chunks are computed from, for its fingerprint and mask:
    ``input``/``kernel`` tokens a resumed job must match, and the source of
    the per-dataset mask the output carries (or None)."""

    input: str
    kernel: str
    mask: Source | None = None

    @classmethod
    def of(cls, recipe: Recipe) -> JobInputs:
        return cls(tokenize(recipe.source), tokenize(recipe.steps), recipe.mask_source)


def process(
    src: str | os.PathLike | Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    kernel: Kernel | str | Callable | Sequence[tuple[Kernel | str | Callable, Mapping[str, Any]]],
    *,
    kernel_args: Mapping[str, Any] | None = None,
    scheduler: Any = "threads",
    workers: int | None = None,
    chunk_mb: float | None = None,
    progress: Progress = False,
    gdal_options: Mapping[str, Any] | None = None,
    grid: str | os.PathLike | None = None,
    resampling: str = "nearest",
    grid_et: float = DEFAULT_ERROR_THRESHOLD,
    options: WriteOptions | None = None,
    **write_options: Any,
) -> Result:
    """Open ``src``, apply ``kernel`` (or a chain), write ``dst``.

    Parameters
    ----------
    src
        Input path or URL, or several to stack as bands.
    dst
        Output path (``s3://bucket/key`` too).
    kernel
        A kernel, a kernel name, a numba function, or a chain: a sequence of
        ``(kernel, args)`` pairs applied in order in one pass, or the
        same chain as the CLI's text (``"warp crs=EPSG:3857 res=30 | slope"``,
        argument values as strings). A step named
        ``"warp"`` reprojects (arguments of :func:`rdask.recipe.warp`, or
        the CLI's ``crs=``, ``res=``, ``bounds=``, ``like=``,
        ``resampling=``, ``nodata=``, ``et=``).
    kernel_args
        Arguments for a single kernel.
    scheduler, workers
        See :func:`rdask.to_raster`.
    chunk_mb
        Target chunk size in MB. By default :data:`rdask.plan.DEFAULT_CHUNK_MB`
        (:data:`rdask.plan.CLUSTER_CHUNK_MB` on a dask.distributed cluster),
        made smaller for small rasters so every thread gets several chunks.
    progress
        ``True`` for a progress bar on stderr, or a callable
        ``(pixels_done, pixels_total)`` called after every chunk.
    gdal_options
        GDAL/S3 settings for reading and writing (no secrets).
    grid, resampling, grid_et
        For a stack of files on different grids: ``"first"`` (the first
        file's grid) or the path of a raster whose grid to use; every other
        file is warped onto it with ``resampling`` and error threshold
        ``grid_et`` (0: exact; see :func:`rdask.recipe.warp`).
    options, **write_options
        How to write: a :class:`~rdask.outputs.WriteOptions`, and/or its
        fields by name (``driver="COG"``, ``overwrite=True``...).

    Returns
    -------
    Result
    """
    opts = WriteOptions.of(options, **write_options)
    dst = os.fspath(dst)
    _check_output(dst, opts)
    sched = parse_scheduler(scheduler, workers)
    # Chunks are whole output tiles; in a mosaic, whole mosaic tiles.
    tile = opts.tile_size or opts.blocksize
    size = functools.partial(_sized, chunk_mb=chunk_mb, distributed=sched.distributed,
                             workers=sched.workers, tile=tile)
    recipe = size(open_recipe(src, chunk_mb=_target_mb(chunk_mb, sched.distributed), tile=tile,
                              gdal_options=gdal_options, grid=grid, resampling=resampling,
                              grid_et=grid_et))
    for k, args in _chain(kernel, kernel_args):
        if k == "warp":
            recipe = size(warp(recipe, **warp_args(args), tile=tile,
                               chunk_mb=_target_mb(chunk_mb, sched.distributed)))
        else:
            recipe = extend(recipe, k, **args)
    return write(recipe.job(), recipe.meta, dst, opts, JobInputs.of(recipe), scheduler=scheduler,
                 workers=workers, progress=progress, gdal_options=gdal_options)


def write(job: ChunkJob, meta: RasterMeta, dst: str | os.PathLike, options: WriteOptions,
          source: JobInputs, *, scheduler: Any = "threads", workers: int | None = None,
          progress: Progress = False, gdal_options: Mapping[str, Any] | None = None) -> Result:
    """Compute every chunk of ``job`` into the output at ``dst``; commit it.

    The output is chosen by ``dst`` and ``options``; on any error or Ctrl-C
    it is aborted (its partial file kept for a resume with ``resume``).
    """
    dst = os.fspath(dst)
    _check_output(dst, options)
    total = job.shape[1] * job.shape[2]
    t0 = time.perf_counter()
    with job_signals() as signals, open_runner(scheduler, workers) as runner:
        spec = OutputSpec(
            target=dst, shape=job.shape, dtype=job.dtype, chunks=job.chunks, meta=meta,
            options=options, job=job_id(job, meta, options, source), threads=runner.threads,
            shares_files=runner.shares_files, mask=source.mask,
            gdal_options=tuple(sorted((gdal_options or {}).items())),
        )
        report = _Reporter(progress, total)
        output: Output | None = None
        try:
            with signals.deferred():  # a signal here is raised once the output can be aborted
                output = open_output(spec)
            resumed, committed = _run_job(job, output, runner, signals, report, total, dst)
        except BaseException as exc:
            # Every task still writing is waited for before anything is removed.
            with signals.aborting():
                pause("abort")
                _fence(runner)
                if output is not None and output.abort(keep_partial=options.resume):
                    exc.add_note(f"partial output kept for --resume: {output.partial}")
            raise
        finally:
            report.close()
            block_cache().release_idle()
    if is_remote(committed.path):
        # GDAL caches a remote file's bytes by URL for the process's life:
        # reading back what was just written here (a file, or a store's
        # keys under its prefix) must not see an older object.
        forget(committed.path)
    nchunks = job.grid[0] * job.grid[1]
    return Result(committed.path, time.perf_counter() - t0, total, committed.bytes, nchunks, resumed)


def _fence(runner: Runner) -> None:
    """Wait for the tasks still writing; a fence that fails (a lost
    scheduler) must not keep the abort from cleaning up what it can."""
    try:
        runner.fence()
    except Exception as exc:  # noqa: BLE001 - the job's own error is what the user sees
        log.warning("could not wait for the tasks still running: %s", first_line(exc))


def _run_job(job: ChunkJob, output: Output, runner: Runner, signals: JobSignals, report: _Reporter,
             total: int, dst: str) -> tuple[int, Committed]:
    """Compute and record every chunk, commit, publish; return the pixels an
    earlier run had written and what was published."""
    # Chunks an interrupted job already wrote (on resume) count as done.
    resumed = sum(region_pixels(r) for r in chunk_regions(job.chunks) if output.is_done(r))
    report.resumed(resumed)
    done = resumed + runner.run(job, output, report.add)
    if done != total:
        raise OutputError(f"{dst}: only {done} of {total} pixels were written")
    pause("commit")
    publish = output.commit(runner.run)
    pause("publish")
    with signals.publishing():
        pause("publishing")
        return resumed, publish()


def job_id(job: ChunkJob, meta: RasterMeta, options: WriteOptions, source: JobInputs) -> JobId:
    """Fingerprints a resumed job must match: input, kernel chain, output
    options and georeferencing, chunk plan."""
    crs = meta.crs.to_wkt() if meta.crs else None
    # repr of a float: a NumPy scalar nodata and a plain float give one job.
    nodata = None if meta.nodata is None else repr(float(meta.nodata))
    opts = tokenize(str(job.dtype), options.blocksize, options.compress, options.codec_level,
                    options.creation_options, crs, tuple(meta.transform), nodata)
    return JobId(source.input, source.kernel, opts, tokenize(job.shape, job.chunks))


def _check_output(dst: str, options: WriteOptions) -> None:
    """Refuse an output that cannot be written before reading anything (S3
    targets are checked when the output opens)."""
    kind = kind_for(dst, options)
    # A kind whose target is not one file (a mosaic's directory) checks it itself.
    check = getattr(kind, "check_target", None)
    if check is not None:
        check(dst, overwrite=options.overwrite)
    elif "://" not in dst:
        check_target(dst, overwrite=options.overwrite)


def _target_mb(chunk_mb: float | None, distributed: bool) -> float:
    return chunk_mb or (CLUSTER_CHUNK_MB if distributed else DEFAULT_CHUNK_MB)


def _sized(recipe: Recipe, *, chunk_mb: float | None, distributed: bool, workers: int,
           tile: int) -> Recipe:
    """``recipe`` (before any kernel) with chunks sized for the scheduler:
    small rasters get >= 4 chunks per thread so all cores work."""
    target_mb = _target_mb(chunk_mb, distributed)
    if chunk_mb is None:
        per_thread = recipe.nbytes / 1e6 / (4 * workers)
        if per_thread < target_mb:
            recipe = replan(recipe, chunk_mb=max(per_thread, 0.05), tile=tile)
    return recipe


def _chain(kernel: Any, kernel_args: Mapping[str, Any] | None) -> list[tuple[Any, dict[str, Any]]]:
    """``kernel`` as a list of ``(kernel, args)`` steps."""
    if isinstance(kernel, str) and is_chain(kernel):
        steps = parse_chain(kernel)
        if kernel_args and len(steps) > 1:
            raise ValueError("kernel_args applies to a single kernel; put arguments in the chain")
        steps[0][1].update(kernel_args or {})
        return steps
    if isinstance(kernel, (list, tuple)):
        if kernel_args:
            raise ValueError("kernel_args applies to a single kernel; give each step its own args")
        return [(k, dict(a)) for k, a in kernel]
    return [(kernel, dict(kernel_args or {}))]


class _Reporter:
    """Counts recorded pixels and tells ``progress``."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.total, self.done = total, 0
        self.bar = TerminalProgress() if progress is True else None
        self.callback = self.bar or (progress if callable(progress) else None)

    def resumed(self, pixels: int) -> None:
        """Count ``pixels`` an interrupted run wrote as done (not in the rate)."""
        self.done = pixels
        if self.bar is not None:
            self.bar.base = pixels

    def add(self, pixels: int) -> None:
        self.done += pixels
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TB"
