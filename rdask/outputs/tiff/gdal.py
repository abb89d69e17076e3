"""GDAL's own GeoTIFF writer, for what only GDAL can encode (masks,
JPEG/WEBP/LERC/LZW, band interleave): the fallback of the GTiff output.

Workers send pixels (``writer`` is the identity); the client writes each
chunk with one long-lived rasterio dataset, never reopened per chunk, and
GDAL compresses it there. Every ``checkpoint_seconds`` the dataset is
closed and reopened (``r+``), which puts GDAL's tile index on disk, and
only then are the chunks written since journaled, so after a SIGKILL the
partial file and journal agree and a resume writes only what is missing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rdask.config import WRITE_GDAL_OPTIONS
from rdask.errors import OutputError, WriteOptionError, first_line
from rdask.io.files import check_not_forked
from rdask.io.gdalenv import gdal_env as _gdal_env
from rdask.meta import RasterMeta
from rdask.outputs.base import ChunkGrid, Committed, OutputSpec, Publish, RunChunks
from rdask.outputs.staging import Staging, space_note
from rdask.outputs.tiff.gdalmeta import creation_kwargs, creation_options_for, write_meta
from rdask.recipe import Region


def gdal_env():
    """The GDAL settings rdask writes under."""
    return _gdal_env(**WRITE_GDAL_OPTIONS)


def create_dataset(path: str, shape: tuple[int, int, int], dtype: Any, meta: RasterMeta,
                   creation_options: dict[str, Any], shown: str = "", *, mask: bool = False):
    """Have GDAL create the GeoTIFF ``path`` with ``meta``; return it open for writing.

    With ``mask`` and ``NODATA_VALUES`` to write, the per-dataset mask band
    is created first: once ``NODATA_VALUES`` is set, GDAL hands out its
    read-only nodata mask instead, and writing the mask fails ("Write
    operation not permitted"). The file then keeps both, as
    ``gdal_translate`` does (its mask wins).

    Raises
    ------
    OutputError
        GDAL cannot create it (one line naming ``shown``, the target the
        user asked for, rather than the partial file).
    """
    import rasterio

    check_not_forked()
    bands, height, width = shape
    # What the metadata needs (GeoTIFF 1.1 keys for a 3D CRS, RGB or alpha
    # photometrics) wins over the output options.
    options = {**creation_options, **creation_options_for(meta)}
    try:
        with gdal_env(), _CreationOptionWarnings() as refused:
            ds = rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands,
                               dtype=np.dtype(dtype), **creation_kwargs(meta, dtype), **options)
    except Exception as exc:  # noqa: BLE001 - GDAL errors vary; report one line
        reason = first_line(exc).replace(f"{path}: ", "").replace(f"{os.path.basename(path)}: ", "")
        raise OutputError(f"cannot create {shown or path}: {reason}") from None
    try:
        if refused.messages:
            raise WriteOptionError(f"cannot create {shown or path}: {refused.messages[0]}")
        with gdal_env():
            if mask and len(meta.nodata_values) == bands:
                from rasterio.windows import Window

                # Creates the mask band; the chunk at (0, 0) writes this pixel again.
                ds.write_mask(np.zeros((1, 1), np.uint8), window=Window(0, 0, 1, 1))
            write_meta(ds, meta)
    except BaseException:
        ds.close()
        raise
    return ds


class _CreationOptionWarnings(logging.Handler):
    """GDAL's warnings about creation options while this thread creates a
    dataset: GDAL only warns about an unknown name or value and goes on
    without it, which would write an output other than the one asked for."""

    _PREFIX = "CPLE_NotSupported in "

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self._thread = threading.get_ident()
        self._logger = logging.getLogger("rasterio._env")

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        if record.thread == self._thread and "creation option" in text:
            self.messages.append(text.removeprefix(self._PREFIX).rstrip("."))

    def __enter__(self) -> _CreationOptionWarnings:
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)


@dataclass(frozen=True)
class PassThrough:
    """The writer of an output the client encodes: it hands the chunk itself back."""

    def __call__(self, block: np.ndarray, region: Region) -> np.ndarray:
        return block


class GdalOutput:
    """A GeoTIFF written by GDAL in the client (see the module docstring)."""

    writer = PassThrough()

    def __init__(self, spec: OutputSpec, *, durable: bool = True) -> None:
        self.spec, self.durable = spec, durable
        self.dtype = np.dtype(spec.dtype)
        self.staging = Staging(spec.target, spec.job, resume=spec.options.resume,
                               overwrite=spec.options.overwrite)
        self.partial = self.staging.partial
        self.grid = ChunkGrid(spec.chunks)
        self._options = spec.options.gtiff_creation_options(self.dtype, spec.threads)
        self._pending: list[tuple[int, int]] = []
        self._closed = False
        try:
            if self.staging.resuming:
                for y0, x0 in self.staging.journal.done:
                    self.grid.claim(y0, x0)
                self._ds = self._reopen()
            else:
                self._ds = create_dataset(self.partial, spec.shape, self.dtype, spec.meta, self._options,
                                          spec.target, mask=spec.mask is not None)
        except BaseException:
            self.staging.discard(keep_partial=self.staging.resuming)
            raise
        self._last_checkpoint = time.monotonic()

    def is_done(self, region: Region) -> bool:
        return region in self.grid

    def record(self, region: Region, block: np.ndarray) -> None:
        """Write a chunk's pixels (and the source's mask for the window)."""
        from rasterio.windows import Window

        _, ys, xs = region
        if self._closed:
            raise OutputError(f"{self.spec.target}: write after the job was stopped")
        self.grid.claim(ys.start, xs.start)
        window = Window(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
        mask = self.spec.mask
        try:
            with gdal_env():
                self._ds.write(block.astype(self.dtype, copy=False), window=window)
                if mask is not None:
                    self._ds.write_mask(mask.read_mask(ys.start, ys.stop, xs.start, xs.stop), window=window)
        except Exception as exc:  # noqa: BLE001 - e.g. disk full, as one line
            raise OutputError(f"cannot write {self.spec.target}: {first_line(exc)}"
                              f"{space_note(self.partial)}") from None
        self._pending.append((ys.start, xs.start))
        if time.monotonic() - self._last_checkpoint >= self.spec.options.checkpoint_seconds:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Put the tile index on disk, then journal what it covers."""
        with gdal_env():
            self._ds.close()
        self._ds = self._reopen()
        self.staging.journal.record(self._pending)
        self._pending = []
        self._last_checkpoint = time.monotonic()

    def _reopen(self):
        import rasterio

        try:
            with gdal_env():
                return rasterio.open(self.partial, "r+", NUM_THREADS=self.spec.threads)
        except Exception as exc:  # noqa: BLE001 - GDAL errors vary; report one line
            raise OutputError(
                f"cannot resume {self.spec.target}: partial file {self.partial} is unreadable "
                f"({first_line(exc)}); rerun without --resume"
            ) from None

    def close(self) -> None:
        """Finish the partial file; raise if it is not complete on disk."""
        self._closed = True
        try:
            with gdal_env():
                self._ds.close()
            problem = self._verify()
        except Exception as exc:  # noqa: BLE001 - GDAL errors vary; report one line
            problem = first_line(exc)
        if problem:
            note = space_note(self.partial)
            self.staging.discard(keep_partial=False)
            raise OutputError(f"cannot finish {self.spec.target}: {problem}{note}") from None
        if self.durable:
            _fsync(self.partial)

    def commit(self, run: RunChunks) -> Publish:
        self.close()
        return lambda: Committed.of(self.staging.publish())

    def abort(self, *, keep_partial: bool = False) -> bool:
        if not self._closed:
            self._closed = True
            try:
                with gdal_env():
                    self._ds.close()
                if keep_partial:
                    self.staging.journal.record(self._pending)
            except Exception:  # noqa: BLE001 - the file is being discarded
                keep_partial = False
        return self.staging.discard(keep_partial=keep_partial)

    def _verify(self) -> str:
        """Reopen the closed partial file; return what is wrong with it, or "".

        With GDAL's multi-threaded compression (``NUM_THREADS`` > 1) a tile
        that fails to reach the disk (a full disk, a quota) is reported
        neither by ``write()`` nor by ``close()``, only logged: without this
        check a truncated file would be committed as a success.
        """
        import rasterio
        from rasterio.errors import RasterBlockError

        size = os.path.getsize(self.partial)
        with gdal_env(), rasterio.open(self.partial) as ds:
            if (ds.count, ds.height, ds.width) != tuple(self.spec.shape):
                return f"the written file has shape {(ds.count, ds.height, ds.width)}, expected {self.spec.shape}"
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


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
