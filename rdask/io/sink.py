"""The locked rasterio sink: one long-lived writer, a temp file, a rename.

Write path, in order:

1. The sink creates a partial tiled GeoTIFF beside the target (same
   directory, so the final rename is atomic and never crosses devices), and
   a journal (:mod:`rdask.io.journal`) that also locks the target.
2. Chunks arrive through ``sink[region] = block`` in any order, from any
   thread. Chunks are aligned to output tiles, so each call covers whole
   tiles and every tile is written exactly once. The lock is held while GDAL
   copies (and, in this sink, compresses) the block; the dataset is opened
   once, never reopened in ``r+`` per chunk. :class:`rdask.io.tilesink.TileSink`,
   the default, takes tiles already encoded by the compute tasks instead and
   keeps this class's file, journal and rename logic; this class remains for
   what only GDAL can encode (masks, JPEG/WEBP/LERC/LZW, band interleave).
3. Every ``checkpoint_seconds`` the sink closes and reopens the dataset
   (``r+``), which puts the tile index on disk, and only then journals the
   chunks written since the last checkpoint. After a SIGKILL the partial
   file and journal agree, and ``resume=True`` writes only what is missing.
4. :meth:`RasterSink.commit` closes the dataset and moves it into place:
   ``os.replace`` with ``overwrite``, otherwise a hard link that fails if
   the target appeared meanwhile, so an existing file is never clobbered.
   :meth:`RasterSink.abort` removes the partial file and journal instead,
   unless asked to keep them for a later resume.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rdask.errors import OutputError, first_line
from rdask.io.journal import JobId, Journal, partial_paths
from rdask.io.meta import RasterMeta, nodata_fits

log = logging.getLogger("rdask")

#: Seconds between checkpoints (close/reopen, then journal). Each costs one
#: tile-index write; a resume redoes at most this much work.
CHECKPOINT_SECONDS = 10.0

#: Writer-side GDAL options. Whole tiles go straight to compression, so a
#: small block cache suffices; it bounds the writer's share of memory.
WRITER_GDAL_OPTIONS = {"GDAL_CACHEMAX": 128, "GDAL_TIFF_INTERNAL_MASK": "YES"}


def creation_options(
    dtype: np.dtype | str,
    blocksize: int,
    compress: str | None,
    extra: Mapping[str, Any] | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """The GTiff creation options rdask writes with: tiled, BigTIFF when
    needed, the compression with rdask's defaults, then the user's ``--co``."""
    opts: dict[str, Any] = {
        "TILED": "YES",
        "BLOCKXSIZE": blocksize,
        "BLOCKYSIZE": blocksize,
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": max(1, int(threads)),
    }
    if compress and compress.lower() != "none":
        opts["COMPRESS"] = compress.upper()
        opts.update(default_compression_options(compress, np.dtype(dtype)))
    for k, v in (extra or {}).items():
        opts[str(k).upper()] = v
    return opts


def default_compression_options(compress: str, dtype: np.dtype) -> dict[str, Any]:
    """rdask's defaults under a compression name; ``--co`` overrides them.

    A predictor (horizontal differencing: 2 for integers, 3 for floats)
    makes rasters markedly smaller, and with a predictor libdeflate's level 1
    compresses about as well as GDAL's default level 6 at a fraction of the
    CPU (on W2's imagery: 25 MB instead of 34 MB per 4096x4096x3, in 0.26 s
    instead of 0.63 s of CPU; on W6's slope: 49 MB instead of 59 MB in 0.44 s
    instead of 0.66 s). Compression is most of the CPU an I/O-bound job
    spends, so this is where speed is won.
    """
    name = compress.upper()
    if name not in ("DEFLATE", "ZSTD", "LZW", "LERC_DEFLATE", "LERC_ZSTD"):
        return {}
    dt = np.dtype(dtype)
    out: dict[str, Any] = {}
    if not name.startswith("LERC") and dt.kind in "iuf" and dt.itemsize <= 8:
        out["PREDICTOR"] = 3 if dt.kind == "f" else 2
    if name == "DEFLATE":
        out["ZLEVEL"] = 1
    return out


def check_target(path: str, *, overwrite: bool) -> str:
    """Validate an output path before any work is done; return it absolute.

    Raises
    ------
    OutputError
        The target exists (without ``overwrite``), is a directory, or its
        directory is missing or not writable.
    """
    target = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(target)
    if os.path.isdir(target):
        raise OutputError(f"output is a directory: {path}")
    if os.path.lexists(target) and not overwrite:
        raise OutputError(f"output exists: {path} (pass overwrite=True / --overwrite to replace it)")
    if not os.path.isdir(parent):
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory is not writable: {parent}")
    return target


class RasterSink:
    """A GeoTIFF being written: ``sink[(bands, ys, xs)] = block``.

    Parameters
    ----------
    target
        Final path; nothing appears there until :meth:`commit`.
    shape
        ``(bands, height, width)``.
    dtype
        Pixel dtype.
    meta
        CRS, transform, nodata, descriptions, tags, mask source.
    blocksize
        Output tile size (a multiple of 16).
    compress
        GDAL compression name, or ``None``.
    creation_options
        Extra GTiff creation options (``PREDICTOR``, ``ZLEVEL``, ...).
    threads
        Threads computing chunks (GDAL's ``NUM_THREADS`` creation option).
    overwrite
        Replace an existing target on commit.
    on_write
        Called with the number of pixels written after each block.
    job
        Fingerprints of the job, checked on resume.
    resume
        Continue the partial output of an interrupted identical job, if any.
    checkpoint_seconds
        Seconds between checkpoints.
    durable
        ``fsync`` the file before it is published (off for scratch files).
    """

    def __init__(
        self,
        target: str,
        shape: tuple[int, int, int],
        dtype: np.dtype | str,
        meta: RasterMeta,
        *,
        blocksize: int = 512,
        compress: str | None = "deflate",
        creation_options: Mapping[str, Any] | None = None,
        threads: int = 2,
        overwrite: bool = False,
        on_write: Callable[[int], None] | None = None,
        job: JobId | None = None,
        resume: bool = False,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        durable: bool = True,
    ) -> None:
        if blocksize % 16:
            raise ValueError(f"blocksize must be a multiple of 16, got {blocksize}")
        self.target = check_target(target, overwrite=overwrite)
        self.tmp, journal_path = partial_paths(self.target)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.meta = meta
        self.blocksize = blocksize
        self.overwrite = overwrite
        self.on_write = on_write
        self.threads = max(1, int(threads))
        self.checkpoint_seconds = checkpoint_seconds
        self.durable = durable
        self._lock = threading.Lock()
        self._written: set[tuple[int, int]] = set()
        self._pending: list[tuple[int, int]] = []
        self._closed = False
        self._options = self._creation_options(compress, creation_options, threads)
        job = job or JobId("", "", "")
        can_resume = resume and os.path.exists(journal_path) and os.path.exists(self.tmp)
        if can_resume:
            self.journal = Journal.resume(journal_path, job, self.target)
            self._ds = self._reopen()
            log.info("resuming %s: %d chunks already written", self.target, len(self.journal.done))
        else:
            if resume:
                log.info("nothing to resume for %s; starting from scratch", self.target)
            self.journal = Journal.start(journal_path, job)
            self._remove_tmp()
            try:
                self._ds = self._create()
            except BaseException:
                # Also for Ctrl-C in the middle of creating the file.
                self._remove_tmp()
                self.journal.close(remove=True)
                raise
        self._written = set(self.journal.done)
        self._last_checkpoint = time.monotonic()

    @property
    def done(self) -> frozenset[tuple[int, int]]:
        """``(row, col)`` offsets of chunks already in the file (on resume)."""
        return frozenset(self.journal.done)

    # -- set-up ------------------------------------------------------------
    def _creation_options(
        self, compress: str | None, extra: Mapping[str, Any] | None, threads: int
    ) -> dict[str, Any]:
        return creation_options(self.dtype, self.blocksize, compress, extra, threads)

    def _reopen(self):
        import rasterio

        try:
            with rasterio_env():
                return rasterio.open(self.tmp, "r+", NUM_THREADS=self.threads)
        except Exception as exc:  # noqa: BLE001 - GDAL errors vary; report one line
            self.journal.close(remove=False)
            raise OutputError(
                f"cannot resume {self.target}: partial file {self.tmp} is unreadable "
                f"({first_line(exc)}); rerun without --resume"
            ) from None

    def _create(self):
        import rasterio

        from rdask.io.source import check_not_forked

        check_not_forked()
        bands, height, width = self.shape
        m = self.meta
        nodata = m.nodata
        if nodata is not None and not nodata_fits(nodata, self.dtype):
            nodata = None
        try:
            with rasterio.Env(**WRITER_GDAL_OPTIONS):
                ds = rasterio.open(
                    self.tmp,
                    "w",
                    driver="GTiff",
                    width=width,
                    height=height,
                    count=bands,
                    dtype=self.dtype,
                    crs=m.crs,
                    transform=m.transform,
                    nodata=nodata,
                    **self._options,
                )
        except Exception as exc:  # noqa: BLE001 - GDAL errors vary; report one line
            self._remove_tmp()
            raise OutputError(f"cannot create {self.target}: {first_line(exc)}") from None
        try:
            if m.tags:
                ds.update_tags(**m.tags)
            for i, d in enumerate(m.descriptions[:bands], start=1):
                if d:
                    ds.set_band_description(i, d)
            if len(m.scales) == bands:
                ds.scales = m.scales
            if len(m.offsets) == bands:
                ds.offsets = m.offsets
            if len(m.units) == bands and any(m.units):
                ds.units = m.units
            if len(m.colorinterp) == bands:
                ds.colorinterp = m.colorinterp
        except Exception:
            ds.close()
            self._remove_tmp()
            raise
        return ds

    # -- writing -----------------------------------------------------------
    def __setitem__(self, key: tuple[slice, slice, slice], block: np.ndarray) -> None:
        from rasterio.windows import Window

        _, ysl, xsl = key
        y0, y1, _ = ysl.indices(self.shape[1])
        x0, x1, _ = xsl.indices(self.shape[2])
        window = Window(x0, y0, x1 - x0, y1 - y0)
        if block.dtype != self.dtype:
            block = block.astype(self.dtype)
        mask = self.meta.mask.read_mask(y0, y1, x0, x1) if self.meta.mask is not None else None
        with self._lock:
            if self._closed:
                raise OutputError(f"{self.target}: write after the job was stopped")
            if (y0, x0) in self._written:
                raise RuntimeError(f"rdask bug: window rows {y0}:{y1} cols {x0}:{x1} written twice")
            self._written.add((y0, x0))
            try:
                with rasterio_env():
                    self._ds.write(block, window=window)
                    if mask is not None:
                        self._ds.write_mask(mask, window=window)
                self._pending.append((y0, x0))
                if time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
                    self._checkpoint()
            except OutputError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. disk full, as one line
                raise OutputError(
                    f"cannot write {self.target}: {first_line(exc)}{_space_note(self.tmp)}"
                ) from None
        if self.on_write is not None:
            self.on_write(block.shape[1] * block.shape[2])

    @property
    def windows_written(self) -> int:
        return len(self._written)

    def _checkpoint(self) -> None:
        """Put the tile index on disk, then journal what it covers (lock held)."""
        with rasterio_env():
            self._ds.close()
        self._ds = self._reopen()
        self.journal.record(self._pending)
        self._pending = []
        self._last_checkpoint = time.monotonic()

    # -- ending --------------------------------------------------------------
    def commit(self, finalize: Callable[[str, str], None] | None = None) -> str:
        """Finish the file and move it to the target path; return the path.

        ``finalize(partial, out)``, if given, turns the complete partial
        GeoTIFF into the file to publish at ``out`` (beside the target), e.g.
        a COG re-layout.
        """
        with self._lock:
            self._closed = True
            # A partial file that a finalizer turns into another file need
            # not reach the disk itself; the file it becomes is synced.
            self.durable = self.durable and finalize is None
            try:
                self._close_dataset()
                problem = self._verify()
            except Exception as exc:  # noqa: BLE001 - GDAL errors vary; report one line
                problem = first_line(exc)
            if problem:
                note = _space_note(self.tmp)
                self._remove_tmp()
                self.journal.close(remove=True)
                raise OutputError(f"cannot finish {self.target}: {problem}{note}") from None
        publish = self.tmp
        try:
            if finalize is not None:
                publish = self.tmp + ".final"
                try:
                    finalize(self.tmp, publish)
                except OSError as exc:
                    raise OutputError(f"cannot finish {self.target}: {exc.strerror or exc}") from None
            if self.overwrite:
                os.replace(publish, self.target)
            else:
                try:
                    os.link(publish, self.target)
                except FileExistsError:
                    raise OutputError(f"output appeared while writing: {self.target}") from None
                except OSError:
                    # No hard links here (some network filesystems): rename,
                    # after checking once more.
                    if os.path.lexists(self.target):
                        raise OutputError(f"output appeared while writing: {self.target}") from None
                    os.rename(publish, self.target)
        finally:
            if publish != self.tmp and os.path.exists(publish):
                os.unlink(publish)
            self._remove_tmp()
            self.journal.close(remove=True)
        return self.target

    def _verify(self) -> str:
        """Reopen the closed partial file; return what is wrong with it, or "".

        With GDAL's multi-threaded compression (``NUM_THREADS`` > 1) a tile
        that fails to reach the disk (a full disk, a quota) is reported
        neither by ``write()`` nor by ``close()``, only logged: without this
        check a truncated file would be committed as a success.
        """
        import rasterio
        from rasterio.errors import RasterBlockError

        size = os.path.getsize(self.tmp)
        sparse = str(self._options.get("SPARSE_OK", "")).upper() in ("TRUE", "YES", "ON", "1")
        with rasterio_env(), rasterio.open(self.tmp) as ds:
            if (ds.count, ds.height, ds.width) != self.shape:
                return f"the written file has shape {(ds.count, ds.height, ds.width)}, expected {self.shape}"
            if sparse:
                return ""
            bands = range(1, ds.count + 1) if ds.interleaving and ds.interleaving.name == "band" else (1,)
            by, bx = ds.block_shapes[0]  # creation options may override blocksize
            for b in bands:
                for i in range(-(-ds.height // by)):
                    for j in range(-(-ds.width // bx)):
                        try:
                            n = ds.block_size(b, i, j)
                            off = int(ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=b) or 0)
                        except RasterBlockError:
                            n = off = 0
                        if n <= 0 or off <= 0 or off + n > size:
                            return f"block at rows {i * by}, cols {j * bx} did not reach the disk"
        return ""

    def abort(self, *, keep_partial: bool = False) -> bool:
        """Stop writing; remove the partial file and journal unless
        ``keep_partial`` (then they are consistent, for a resume).

        Returns whether the partial output was kept. Safe to call twice.
        """
        kept = False
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    kept = self._abort_dataset(keep_partial)
                except Exception:  # noqa: BLE001 - the file is being discarded
                    kept = False
        if not kept:
            self._remove_tmp()
        self.journal.close(remove=not kept)
        return kept

    def _close_dataset(self) -> None:
        """Close the GDAL dataset, flushing everything to the partial file."""
        with rasterio_env():
            self._ds.close()

    def _abort_dataset(self, keep_partial: bool) -> bool:
        """Close after a failure; journal what is on disk if keeping it."""
        with rasterio_env():
            self._ds.close()
        if keep_partial:
            self.journal.record(self._pending)
        return keep_partial

    def _remove_tmp(self) -> None:
        for p in (self.tmp, self.tmp + ".aux.xml", self.tmp + ".msk"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def rasterio_env():
    import rasterio

    return rasterio.Env(**WRITER_GDAL_OPTIONS)


def _space_note(path: str) -> str:
    """Why a write failed when the disk (or quota) beside ``path`` is full.

    GDAL reports a full disk as a generic write error; the errno only
    reaches stderr through libtiff, so name the cause from the free space.
    """
    import shutil

    directory = os.path.dirname(path)
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return ""
    if free >= 1 << 20:
        return ""
    return f" (No space left on device: {free} bytes free in {directory})"
