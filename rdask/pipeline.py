"""The one composer: open -> apply -> write -> run.

:func:`to_raster` writes any ``(band, y, x)`` DataArray through the sink on
the chosen scheduler; :func:`process` is the one-call pipeline the CLI and
the notebooks use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rdask.errors import OutputError

if TYPE_CHECKING:
    import xarray as xr

    from rdask.kernels import Kernel

log = logging.getLogger("rdask")


@dataclass(frozen=True)
class Result:
    """What a finished job wrote."""

    path: str
    seconds: float
    pixels: int
    bytes: int
    chunks: int

    def summary(self) -> str:
        """One line: path, size, time, throughput."""
        mpx = self.pixels / 1e6
        rate = mpx / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"wrote {self.path} ({_human(self.bytes)}) in {self.seconds:.2f} s, "
            f"{mpx:.1f} Mpx at {rate:.1f} Mpx/s"
        )


def to_raster(
    data: xr.DataArray,
    path: str | os.PathLike,
    *,
    compress: str | None = "deflate",
    blocksize: int = 512,
    overwrite: bool = False,
    scheduler: Any = "threads",
    workers: int | None = None,
    creation_options: Mapping[str, Any] | None = None,
    progress: bool | Callable[[int, int], None] = False,
    resume: bool = False,
    checkpoint_seconds: float | None = None,
    gdal_options: Mapping[str, Any] | None = None,
    driver: str = "GTiff",
    overview_levels: int | None = None,
    overview_resampling: str = "nearest",
) -> Result:
    """Write a lazy ``(band, y, x)`` DataArray to a tiled GeoTIFF or COG, streaming.

    Parameters
    ----------
    data
        The array; its chunks are aligned to output tiles if they are not.
    path
        Target path. Written to a temporary file beside it and renamed when
        complete: a failed job leaves nothing at ``path``. An
        ``s3://bucket/key`` target is staged on local disk and uploaded with
        one multipart upload, so the object appears only when complete.
    compress
        GDAL compression (``deflate``, ``lzw``, ``zstd``, ``none``...).
    blocksize
        Output tile size in pixels (a multiple of 16).
    overwrite
        Replace an existing file at ``path``.
    scheduler
        ``"threads"`` (default), ``"sync"``, ``"local[:N]"``, a
        ``tcp://host:port`` address, or a ``distributed.Client``.
    workers
        Threads (or ``local`` worker processes); defaults to the CPU count.
    creation_options
        Extra GTiff creation options, e.g. ``{"PREDICTOR": 2}``.
    progress
        ``True`` shows dask's own progress bar on threads (on a cluster, a
        bar driven by the client-side writer); a callable
        ``(pixels_done, pixels_total)`` is called after every chunk.
    resume
        Continue the partial output an interrupted identical job left beside
        ``path`` (chunks already written are not recomputed), and keep the
        partial output if this job is interrupted too. A partial output of
        a different input, kernel or options is refused.
    checkpoint_seconds
        Seconds between checkpoints of the partial output (default 10).
    gdal_options
        GDAL/S3 settings for the output (e.g. ``AWS_S3_ENDPOINT``), no secrets.
    driver
        ``"GTiff"`` (default) or ``"COG"``: a Cloud Optimized GeoTIFF with
        internal overviews down to one tile, made from the same pass.
    overview_levels
        COG only: number of overview levels instead of "down to one tile".
    overview_resampling
        COG only: ``nearest`` (default), ``average``, ``mode``,
        ``bilinear`` or ``cubic``.

    Returns
    -------
    Result
    """
    from rdask.io.meta import raster_meta
    from rdask.io.open import recipe_of

    if data.ndim == 2:
        data = data.expand_dims("band")
    if data.dims != ("band", "y", "x"):
        raise ValueError(f"expected dims ('band', 'y', 'x'), got {data.dims}")
    recipe = recipe_of(data)
    # Still exactly what rdask built: run its chunks directly. Metadata always
    # comes from the DataArray (the user may have changed it since).
    lazy = recipe if recipe is not None and _aligned_chunks(recipe.chunks, blocksize) else None
    arr = lazy if lazy is not None else _aligned(_as_dask(data), blocksize)
    return _write(
        arr, recipe, raster_meta(data, mask=_mask_of(recipe)), path,
        compress=compress, blocksize=blocksize, overwrite=overwrite, scheduler=scheduler,
        workers=workers, creation_options=creation_options, progress=progress, resume=resume,
        checkpoint_seconds=checkpoint_seconds, gdal_options=gdal_options, driver=driver,
        overview_levels=overview_levels, overview_resampling=overview_resampling,
    )


def _write(arr, recipe, meta, path, *, compress, blocksize, overwrite, scheduler, workers, creation_options,
           progress, resume, checkpoint_seconds, gdal_options, driver, overview_levels,
           overview_resampling) -> Result:
    """Write ``arr`` (a Recipe or an aligned dask array) with ``meta``: the
    body of :func:`to_raster` and :func:`process`."""
    from rdask.io.sink import CHECKPOINT_SECONDS, check_target
    from rdask.schedule import chunk_regions, open_runner

    _check_driver(driver, blocksize, overview_levels, overview_resampling)

    dest = os.fspath(path)
    upload = None
    if dest.startswith("s3://"):
        from rdask.io.remote import S3Upload, staging_path

        upload = S3Upload(dest, gdal_options)
        upload.check(overwrite=overwrite)
        target = staging_path(dest)
        if not resume and os.path.exists(target):
            os.unlink(target)
    else:
        target = check_target(dest, overwrite=overwrite)
    job = _job_id(arr, recipe, meta, blocksize, compress, creation_options)
    total = int(arr.shape[1] * arr.shape[2])
    done = [0]
    t0 = time.perf_counter()
    with open_runner(scheduler, workers) as runner:
        finalize = _cog_finalizer(
            driver, blocksize, overview_levels, overview_resampling, runner,
            compress=compress, creation_options=creation_options, has_mask=meta.mask is not None,
            chunk_mb=max(arr.nbytes / max(1, arr.npartitions), 1.0) / 1e6,
        )
        report = progress
        if progress is True and runner.client is not None:
            from rdask.progress import TerminalProgress

            report = TerminalProgress()

        def on_write(npx: int) -> None:
            done[0] += npx
            if callable(report):
                report(done[0], total)

        sink_kind, extra = _sink_for(arr, meta, blocksize, compress, creation_options)
        sink = None
        try:
            sink = sink_kind(
                target,
                arr.shape,
                arr.dtype,
                meta,
                **extra,
                blocksize=blocksize,
                compress=compress,
                creation_options=creation_options,
                threads=runner.threads,
                overwrite=overwrite,
                # A COG's partial file is re-laid out into the file that is synced.
                durable=finalize is None,
                on_write=on_write,
                job=job,
                resume=resume,
                checkpoint_seconds=CHECKPOINT_SECONDS if checkpoint_seconds is None else checkpoint_seconds,
            )
            if finalize is not None:
                finalize.tap(sink, arr)
            done[0] = sum(
                (ys.stop - ys.start) * (xs.stop - xs.start)
                for _, ys, xs in chunk_regions(arr.chunks)
                if (ys.start, xs.start) in sink.done
            )
            runner.store(_tasks(arr), sink, skip=sink.done, progress=progress is True and runner.client is None)
            if done[0] != total:
                raise OutputError(f"{target}: only {done[0]} of {total} pixels were written")
            sink.commit(finalize)
            if report is not progress:
                report.close()
        except BaseException as exc:
            if finalize is not None:
                finalize.discard()
            if sink is not None and sink.abort(keep_partial=resume):
                exc.add_note(f"partial output kept for --resume: {sink.tmp}")
            raise
    size = os.path.getsize(target)
    if upload is not None:
        try:
            upload.upload(target)
        finally:
            os.unlink(target)
        target = dest
    seconds = time.perf_counter() - t0
    nchunks = int(np.prod([len(c) for c in arr.chunks]))
    return Result(target, seconds, total, size, nchunks)


def process(
    src: str | os.PathLike | Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    kernel: Kernel | str | Sequence[tuple[Kernel | str, Mapping[str, Any]]],
    *,
    kernel_args: Mapping[str, Any] | None = None,
    scheduler: Any = "threads",
    workers: int | None = None,
    chunk_mb: float | None = None,
    compress: str | None = "deflate",
    blocksize: int = 512,
    creation_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool | Callable[[int, int], None] = False,
    gdal_options: Mapping[str, Any] | None = None,
    resume: bool = False,
    checkpoint_seconds: float | None = None,
    driver: str = "GTiff",
    overview_levels: int | None = None,
    overview_resampling: str = "nearest",
) -> Result:
    """Open ``src``, apply ``kernel`` (or a chain), write ``dst``.

    Parameters
    ----------
    src
        Input path or URL, or several to stack as bands.
    dst
        Output GeoTIFF path.
    kernel
        A kernel, a kernel name, or a chain: a sequence of
        ``(kernel, args)`` pairs applied in order in one pass.
    kernel_args
        Arguments for a single kernel.
    chunk_mb
        Target chunk size in MB. By default :data:`rdask.plan.DEFAULT_CHUNK_MB`
        (:data:`rdask.plan.CLUSTER_CHUNK_MB` on a dask.distributed cluster),
        made smaller for small rasters so every thread gets several chunks.

    Other parameters are those of :func:`to_raster`.

    Returns
    -------
    Result
    """
    from rdask.apply_kernels import extend
    from rdask.io.meta import recipe_meta
    from rdask.io.open import open_recipe, replan_recipe
    from rdask.io.sink import check_target
    from rdask.plan import CLUSTER_CHUNK_MB, DEFAULT_CHUNK_MB
    from rdask.schedule import parse_scheduler

    # Fail on a local output before reading anything (S3 is checked by _write).
    if not os.fspath(dst).startswith("s3://"):
        check_target(os.fspath(dst), overwrite=overwrite)
    spec = parse_scheduler(scheduler, workers)
    target_mb = chunk_mb or (CLUSTER_CHUNK_MB if spec.distributed else DEFAULT_CHUNK_MB)
    # A recipe all the way: no DataArray, no dask.array (faster start-up,
    # less memory, and workers that import less).
    recipe = open_recipe(src, chunk_mb=target_mb, tile=blocksize, gdal_options=gdal_options)
    if chunk_mb is None:
        # Small rasters: aim for >= 4 chunks per thread so all cores work.
        per_thread = recipe.nbytes / 1e6 / (4 * spec.workers)
        if per_thread < target_mb:
            recipe = replan_recipe(recipe, chunk_mb=max(per_thread, 0.05), tile=blocksize)
    if isinstance(kernel, (str,)) or hasattr(kernel, "func"):
        chain = [(kernel, dict(kernel_args or {}))]
    else:
        if kernel_args:
            raise ValueError("kernel_args applies to a single kernel; give each step its own args")
        chain = [(k, dict(a)) for k, a in kernel]
    for k, args in chain:
        recipe = extend(recipe, k, **args)
    return _write(
        recipe, recipe, recipe_meta(recipe.meta, recipe.shape[0], mask=_mask_of(recipe)), dst,
        compress=compress, blocksize=blocksize, overwrite=overwrite, scheduler=scheduler,
        workers=workers, creation_options=creation_options, progress=progress, resume=resume,
        checkpoint_seconds=checkpoint_seconds, gdal_options=gdal_options, driver=driver,
        overview_levels=overview_levels, overview_resampling=overview_resampling,
    )


def _mask_of(recipe):
    """The source whose per-dataset mask the output carries, if any: a
    recipe's single file with such a mask, while the band count is kept."""
    if recipe is not None and recipe.source.per_dataset_mask and recipe.source.count == recipe.shape[0]:
        return recipe.source
    return None


def _sink_for(arr, meta, blocksize, compress, creation_options):
    """The tile sink (tiles encoded in the compute tasks) when rdask can
    encode what was asked for, else GDAL's writer (masks, other codecs)."""
    from rdask.io.sink import RasterSink
    from rdask.io.sink import creation_options as build
    from rdask.io.tiles import encoder_for
    from rdask.io.tilesink import TileSink

    if meta.mask is None:
        opts = build(arr.dtype, blocksize, compress, creation_options)
        encoder = encoder_for(opts, arr.dtype, arr.shape[0], arr.shape[2], blocksize)
        if encoder is not None:
            return TileSink, {"encoder": encoder}
    return RasterSink, {}


def _check_driver(driver: str, blocksize: int, levels: int | None, resampling: str) -> None:
    """Refuse bad output-format options before any work is done."""
    kind = driver.upper()
    if kind not in ("GTIFF", "COG"):
        raise ValueError(f"unknown driver {driver!r}: use GTiff or COG")
    if kind == "GTIFF":
        return
    from rdask.io.cog import RESAMPLINGS

    if resampling not in RESAMPLINGS:
        raise ValueError(f"unknown overview resampling {resampling!r}; use one of {', '.join(RESAMPLINGS)}")
    if levels is not None and levels < 0:
        raise ValueError(f"overview_levels must be >= 0, got {levels}")
    if blocksize < 64 or blocksize > 4096 or blocksize & (blocksize - 1):
        # GDAL's overview tiles (GDAL_TIFF_OVR_BLOCKSIZE) must be such a size.
        raise ValueError(f"a COG needs a blocksize that is a power of 2 from 64 to 4096, got {blocksize}")


def _cog_finalizer(driver, blocksize, levels, resampling, runner, *, compress, creation_options, has_mask,
                   chunk_mb):
    """``None`` for a GeoTIFF; for a COG, the step that makes the overviews
    and re-lays the finished partial file out as a COG."""
    if driver.upper() == "GTIFF":
        return None
    return _CogFinish(blocksize, levels, resampling, runner, compress, dict(creation_options or {}),
                      has_mask, chunk_mb)


class _CogFinish:
    """Overviews and COG layout for a finished partial GeoTIFF."""

    def __init__(self, blocksize, levels, resampling, runner, compress, creation_options, has_mask,
                 chunk_mb):
        self.blocksize, self.levels, self.resampling, self.runner = blocksize, levels, resampling, runner
        self.compress, self.creation_options = compress, creation_options
        self.has_mask, self.chunk_mb = has_mask, chunk_mb
        self.scratch = None  # LevelPieces of an in-pass level 1

    def tap(self, sink, arr) -> None:
        """Let the main pass make level 1 (nearest, tile sink, fresh job, shared files)."""
        from rdask.io.cog import overview_factors
        from rdask.io.overviews import LevelPieces, LevelTap

        # A scratch file left by a killed job is stale either way.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(LevelPieces.path_for(sink.tmp))
        encoder = getattr(sink, "encoder", None)
        if (
            self.resampling != "nearest" or self.has_mask or encoder is None or sink.done
            or not overview_factors(arr.shape[1], arr.shape[2], self.blocksize, self.levels)
            or not self.runner.shares_files(sink.tmp)
        ):
            return
        self.scratch = LevelPieces.create(sink.tmp, arr.shape, arr.chunks, sink.dtype)
        sink.encoder = LevelTap(encoder, self.scratch)

    def discard(self) -> None:
        if self.scratch is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.scratch.path)
            self.scratch = None

    def __call__(self, partial: str, out: str) -> None:
        import rasterio

        from rdask.io.cog import assemble_cog, build_overviews, overview_factors
        from rdask.io.overviews import nearest_levels

        try:
            with rasterio.open(partial) as ds:
                factors = overview_factors(ds.height, ds.width, self.blocksize, self.levels)
            if self.resampling == "nearest" and not self.has_mask:
                # rdask's own level pass: each tile decoded once, in parallel.
                files = nearest_levels(partial, factors, blocksize=self.blocksize, compress=self.compress,
                                       creation_options=self.creation_options, runner=self.runner,
                                       chunk_mb=self.chunk_mb, level1=self.scratch)
                self.discard()
                try:
                    assemble_cog(partial, out, files)
                finally:
                    for f in files:
                        os.unlink(f)
            else:
                build_overviews(partial, factors, self.resampling, self.blocksize, self.runner.threads)
                assemble_cog(partial, out)
        finally:
            self.discard()


def _job_id(arr, recipe, meta, blocksize, compress, creation_options):
    """Fingerprints a resumed job must match: input, kernel chain, chunk plan, options."""
    from dask.base import tokenize

    from rdask.io.journal import JobId

    if recipe is not None:
        inp, kern = tokenize(recipe.source), tokenize(recipe.steps)
    else:
        inp, kern = arr.name, ""
    crs = meta.crs.to_wkt() if meta.crs else None
    # repr of a float: a NumPy scalar nodata (the DataArray path) and a plain
    # float (the recipe path) must give the same job.
    nodata = None if meta.nodata is None else repr(float(meta.nodata))
    opts = tokenize(str(arr.dtype), blocksize, compress, sorted((creation_options or {}).items()), crs,
                    tuple(meta.transform), nodata)
    return JobId(inp, kern, opts, tokenize(arr.shape, arr.chunks))


def _as_dask(data: xr.DataArray):
    import dask.array as da

    arr = data.data
    if not isinstance(arr, da.Array):
        # An in-memory array is already materialised; chunking it is free.
        arr = da.from_array(np.asarray(arr), chunks=(-1, 2048, 2048))
    return arr


def _aligned(arr, blocksize: int):
    """Rechunk so every chunk edge (but the last) falls on an output tile edge."""
    if _aligned_chunks(arr.chunks, blocksize):
        return arr
    side = max(blocksize, (2048 // blocksize) * blocksize)
    log.debug("rechunking to %d px to align chunks with %d px output tiles", side, blocksize)
    return arr.rechunk({0: -1, 1: side, 2: side})


def _aligned_chunks(chunks: tuple[tuple[int, ...], ...], blocksize: int) -> bool:
    """One band chunk, and every y/x chunk edge but the last on a tile edge."""
    return len(chunks[0]) == 1 and all(c % blocksize == 0 for axis in chunks[1:] for c in axis[:-1])


def _tasks(arr):
    """What the runner stores: a recipe's chunks as :class:`ChunkTasks`, a dask array as is."""
    from rdask.io.open import Recipe

    if not isinstance(arr, Recipe):
        return arr
    import uuid

    from rdask.apply_kernels import ChunkReader
    from rdask.schedule import ChunkTasks

    # Unique per job: two jobs of one recipe on one cluster are not one.
    return ChunkTasks(ChunkReader.of(arr), arr.chunks, f"{arr.name}-{uuid.uuid4().hex[:8]}")


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TB"
