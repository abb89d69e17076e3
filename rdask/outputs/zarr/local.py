"""The Zarr output: ``out.zarr``, a Zarr v3 store written chunk by chunk by
the tasks that compute them, published by one rename.

Layout (what ``xarray.open_zarr(..., decode_coords="all")`` with rioxarray
reads as one ``(band, y, x)`` variable, and what GDAL reads)::

    out.zarr/            group: GeoZarr proj:/spatial: attributes (+ multiscales)
      band_data          (band, y, x) pixels; grid_mapping="spatial_ref", _FillValue, _CRS
      x, y               pixel-centre coordinates (float64)
      band               1..n
      spatial_ref        CF grid mapping: crs_wkt, spatial_ref, GeoTransform (exact)
      1/, 2/ ...         overview levels (``overview_levels``), each the same layout

Every array is Zarr v3 (``zarr.json``, written through the zarr package)
and also carries Zarr v2 metadata (``.zarray``/``.zattrs``/``.zgroup``)
describing the *same* chunk files: GDAL up to 3.10 (the one in rasterio's
wheels) implements a v3 draft without the final ``bytes`` codec and cannot
open any v3 array zarr-python writes, but reads v2. Both describe the same
bytes (v2 chunk keys ``0/1/2`` in both, gzip or zstd, little-endian), so a
v3 reader (zarr-python, xarray) and GDAL see identical pixels; v3 readers
pick ``zarr.json``, GDAL picks ``.zarray``.

Every rdask chunk covers whole Zarr chunks (the Zarr chunk is the
``blocksize``, or the largest size dividing every rdask chunk), so no two
tasks ever write one Zarr chunk and nothing is locked. A task writes its
chunks into ``.out.zarr.rdask-partial/`` itself (threads, local workers) or
returns the pixels for the client to write (workers that do not see the
directory). The client journals finished chunks (``--resume`` skips them),
builds the overview levels as chunk jobs of their own, consolidates the
metadata and renames the directory into place: a reader never sees a
half-written store, and an existing one is replaced only by ``overwrite``
(atomically, by exchanging the two directories).

A store at ``s3://bucket/prefix/out.zarr`` is written by
:mod:`rdask.outputs.zarr.s3` (same layout; tasks write chunks to S3
themselves, metadata is written last instead of a rename).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rdask.errors import OutputError
from rdask.io.zarr import DATA, ZarrSource
from rdask.outputs.base import ChunkGrid, Committed, OutputSpec, Publish, RunChunks
from rdask.outputs.journal import Checkpoints, Journal, partial_paths
from rdask.outputs.options import WriteOptions
from rdask.outputs.staging import check_place, libc_function
from rdask.outputs.zarr.layout import (
    ZARR_RESAMPLINGS,
    Layout,
    Level,
    check_resumable,
    consolidate,
    geo_attrs,
    level_job,
    main_level,
    make_overviews,
    overview_levels,
    zarr_asked,
)
from rdask.recipe import Region

__all__ = ["ZARR_RESAMPLINGS", "ZarrOutput", "accepts", "check_target", "open"]


def accepts(target: str, options: WriteOptions) -> bool:
    """A local ``.zarr`` store, or a local path with ``driver="Zarr"``
    (see :func:`~rdask.outputs.zarr.layout.zarr_asked`)."""
    return zarr_asked(target, options) and "://" not in target


def open(spec: OutputSpec) -> ZarrOutput:  # noqa: A001
    return ZarrOutput(spec)


def check_target(path: str, *, overwrite: bool) -> str:
    """Validate an output store path before any work; return it absolute.

    Raises
    ------
    OutputError
        The target exists (without ``overwrite``), or its directory is
        missing or not writable.
    """
    target = os.path.abspath(os.fspath(path)).rstrip("/") or "/"
    return check_place(target, path, overwrite=overwrite)


# -- the worker half -------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """A chunk a task wrote into the store itself."""

    nbytes: int


@dataclass(frozen=True)
class Pixels:
    """A chunk's pixels, for the client to write (the task could not see the store)."""

    block: np.ndarray


@dataclass(frozen=True)
class ZarrWriter:
    """Write a chunk into ``array`` of the store at ``root``; without ``root``
    return the pixels for the client."""

    root: str | None
    array: str = DATA
    target: str = ""  # named in errors

    def __call__(self, block: np.ndarray, region: Region) -> Written | Pixels:
        if self.root is None:
            return Pixels(np.ascontiguousarray(block))
        write_block(self.root, self.array, block, region, self.target)
        return Written(block.nbytes)


def write_block(root: str, array: str, block: np.ndarray, region: Region, target: str = "") -> None:
    """``block`` into ``region`` of ``root``/``array`` (whole Zarr chunks)."""
    import zarr

    try:
        arr = zarr.open_array(os.path.join(root, array), mode="r+", zarr_format=3,
                              config={"write_empty_chunks": True})
        arr[region] = block
    except OSError as exc:
        raise OutputError(f"cannot write {target or root}: {exc.strerror or exc}") from None


# -- the client half -------------------------------------------------------------


class ZarrOutput:
    """A Zarr store being written (see the module docstring)."""

    def __init__(self, spec: OutputSpec) -> None:
        # A .zarr target chosen by its suffix is checked as a Zarr output too.
        spec = replace(spec, options=WriteOptions.of(spec.options, driver="Zarr"))
        self.spec = spec
        opts = spec.options
        self.target = check_target(spec.target, overwrite=opts.overwrite)
        self.partial, journal_path = partial_paths(self.target)
        self.grid = ChunkGrid(spec.chunks)
        self.main = main_level(spec)
        resuming = (opts.resume and os.path.exists(journal_path)
                    and os.path.exists(os.path.join(self.partial, DATA, "zarr.json")))
        self.journal = (Journal.resume(journal_path, spec.job, self.target) if resuming
                        else Journal.start(journal_path, spec.job))
        self.resuming = resuming
        self.checkpoints = Checkpoints(self.journal, spec.options.checkpoint_seconds)
        self._closed = False
        try:
            if resuming:
                check_resumable(self.partial, self.main, spec.dtype, spec.target, "partial")
                for y0, x0 in self.journal.done:
                    self.grid.claim(y0, x0)
                self.journal.done.clear()
            else:
                remove_tree(self.partial)
                os.mkdir(self.partial)
                layout = Layout(self.partial, spec)
                layout.create_root(self._root_attrs())
                layout.create_level(self.main)
        except OSError as exc:
            self.abort(keep_partial=resuming)
            raise OutputError(f"cannot write {spec.target}: {exc.strerror or exc}") from None
        except BaseException:
            self.abort(keep_partial=resuming)
            raise
        root = self.partial if spec.shares_files(self.partial) else None
        self.writer = ZarrWriter(root, DATA, spec.target)

    def _root_attrs(self) -> dict[str, Any]:
        _, h, w = self.spec.shape
        return geo_attrs(self.spec.meta, self.spec.meta.transform, (h, w))

    def is_done(self, region: Region) -> bool:
        return region in self.grid

    def record(self, region: Region, result: Written | Pixels) -> None:
        """Note a chunk written (writing it first if the task could not)."""
        if self._closed:
            raise OutputError(f"{self.spec.target}: write after the job was stopped")
        _, ys, xs = region
        self.grid.claim(ys.start, xs.start)
        if isinstance(result, Pixels):
            write_block(self.partial, DATA, result.block, region, self.spec.target)
        self.checkpoints.add((ys.start, xs.start))

    def commit(self, run: RunChunks) -> Publish:
        """Make the overview levels, consolidate the metadata, sync; publishing
        renames the store into place."""
        self.checkpoints.flush()
        self._closed = True
        try:
            levels = overview_levels(self.main, self.spec.options.overview_levels)
            if levels:
                self._overviews(levels, run)
            consolidate(self.partial)
            sync_tree(self.partial)
        except OSError as exc:
            raise OutputError(f"cannot finish {self.spec.target}: {exc.strerror or exc}") from None
        return self._publish

    def _publish(self) -> Committed:
        try:
            place(self.partial, self.target, overwrite=self.spec.options.overwrite)
        except OSError as exc:
            raise OutputError(f"cannot finish {self.spec.target}: {exc.strerror or exc}") from None
        self.journal.close(remove=True)
        return Committed(self.target, tree_size(self.target))

    def _overviews(self, levels: list[Level], run: RunChunks) -> None:
        spec, opts = self.spec, self.spec.options

        def run_level(level: Level, above: Level, chunk_mb: float) -> None:
            source = ZarrSource.of_array(self.partial, above.data)
            job = level_job(source, level, opts.overview_resampling, spec.meta.nodata, opts.blocksize,
                            chunk_mb)
            if self.writer.root is None:
                # The tasks cannot read the store (workers elsewhere): the
                # levels, a third of the main pass at most, are made here.
                for task in job.tasks():
                    write_block(self.partial, level.data, task.compute(task.region), task.region,
                                spec.target)
            else:
                run(job, LocalLevelSink(ZarrWriter(self.partial, level.data, spec.target), self.partial,
                                      level.data, spec.target))

        make_overviews(self.partial, spec, self.main, levels, run_level)

    def abort(self, *, keep_partial: bool = False) -> bool:
        """Stop; keep the partial store and journal for a resume, or remove them."""
        self._closed = True
        if keep_partial:
            with contextlib.suppress(OSError):
                self.checkpoints.flush()
        else:
            remove_tree(self.partial)
        self.journal.close(remove=not keep_partial)
        return keep_partial and os.path.isdir(self.partial) and os.path.exists(self.journal.path)


class LocalLevelSink:
    """An overview level's chunks, run through the job's scheduler."""

    def __init__(self, writer: ZarrWriter, root: str, array: str, target: str) -> None:
        self.writer, self.root, self.array, self.target = writer, root, array, target
        self.partial = root

    def is_done(self, region: Region) -> bool:
        return False

    def record(self, region: Region, result: Written | Pixels) -> None:
        if isinstance(result, Pixels):
            write_block(self.root, self.array, result.block, region, self.target)


# -- publishing -------------------------------------------------------------------


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _rename2(src: str, dst: str, flags: int) -> bool:
    """Linux ``renameat2``; False where it is not available (then the caller falls back)."""
    fn = libc_function("renameat2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem cannot
        return False
    raise OSError(err, os.strerror(err), dst)


def place(partial: str, target: str, *, overwrite: bool) -> None:
    """Move the finished store to ``target`` in one step; never clobber
    without ``overwrite``, and with it exchange the two atomically."""
    if os.path.lexists(target):
        if not overwrite:
            raise OutputError(f"output appeared while writing: {target}")
        if _rename2(partial, target, _RENAME_EXCHANGE):
            remove_tree(partial)  # now the old store
            return
        old = f"{partial}.old"
        remove_tree(old)
        os.rename(target, old)
        os.rename(partial, target)
        remove_tree(old)
        return
    try:
        if _rename2(partial, target, _RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise OutputError(f"output appeared while writing: {target}") from None
    if os.path.lexists(target):
        raise OutputError(f"output appeared while writing: {target}")
    os.rename(partial, target)


def remove_tree(path: str) -> None:
    """Remove a store (or a file) if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def sync_tree(root: str) -> None:
    """Put the store on disk before it is published: the whole filesystem
    once (``syncfs``), not one ``fsync`` per chunk file."""
    fd = os.open(root, os.O_RDONLY)
    try:
        fn = libc_function("syncfs", ctypes.c_int)
        if fn is None or fn(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def tree_size(root: str) -> int:
    """Bytes of every file under ``root``."""
    total = 0
    for folder, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(folder, f))
    return total
