"""The locked rasterio sink: one long-lived writer, a temp file, a rename.

Write path, in order:

1. The sink creates a temporary tiled GeoTIFF beside the target (same
   directory, so the final rename is atomic and never crosses devices).
2. Chunks arrive through ``sink[region] = block`` (``dask.array.store``) in
   any order, from any thread. Chunks are aligned to output tiles, so each
   call covers whole tiles and every tile is written exactly once. The write
   lock is held only while GDAL copies the block in; compression runs on
   GDAL's own ``NUM_THREADS`` pool, outside our lock, and the dataset is
   opened once (never reopened in ``r+`` per chunk).
3. :meth:`RasterSink.commit` closes the dataset and moves it into place:
   ``os.replace`` with ``overwrite``, otherwise a hard link that fails if
   the target appeared meanwhile, so an existing file is never clobbered.
   :meth:`RasterSink.abort` removes the temporary file instead.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rdask.errors import OutputError
from rdask.io.meta import RasterMeta

#: Writer-side GDAL options. Whole tiles go straight to compression, so a
#: small block cache suffices; it bounds the writer's share of memory.
WRITER_GDAL_OPTIONS = {"GDAL_CACHEMAX": 128, "GDAL_TIFF_INTERNAL_MASK": "YES"}


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


def temp_path_for(target: str) -> str:
    """A fresh hidden temporary path beside ``target``."""
    head, tail = os.path.split(target)
    return os.path.join(head, f".{tail}.{os.getpid()}-{secrets.token_hex(4)}.rdask-tmp")


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
        GDAL compression threads.
    overwrite
        Replace an existing target on commit.
    on_write
        Called with the number of pixels written after each block.
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
    ) -> None:
        if blocksize % 16:
            raise ValueError(f"blocksize must be a multiple of 16, got {blocksize}")
        self.target = check_target(target, overwrite=overwrite)
        self.tmp = temp_path_for(self.target)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.meta = meta
        self.blocksize = blocksize
        self.overwrite = overwrite
        self.on_write = on_write
        self._lock = threading.Lock()
        self._written: set[tuple[int, int]] = set()
        self._closed = False
        self._options = self._creation_options(compress, creation_options, threads)
        self._ds = self._create()

    # -- set-up ------------------------------------------------------------
    def _creation_options(
        self, compress: str | None, extra: Mapping[str, Any] | None, threads: int
    ) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "TILED": "YES",
            "BLOCKXSIZE": self.blocksize,
            "BLOCKYSIZE": self.blocksize,
            "BIGTIFF": "IF_SAFER",
            "NUM_THREADS": max(1, int(threads)),
        }
        if compress and compress.lower() != "none":
            opts["COMPRESS"] = compress.upper()
        for k, v in (extra or {}).items():
            opts[str(k).upper()] = v
        return opts

    def _create(self):
        import rasterio

        bands, height, width = self.shape
        m = self.meta
        nodata = m.nodata
        if nodata is not None and not _fits(nodata, self.dtype):
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
        except Exception as exc:
            self._remove_tmp()
            raise OutputError(f"cannot create {self.target}: {_first_line(exc)}") from None
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
            except Exception as exc:
                raise OutputError(f"cannot write {self.target}: {_first_line(exc)}") from None
        if self.on_write is not None:
            self.on_write(block.shape[1] * block.shape[2])

    @property
    def windows_written(self) -> int:
        return len(self._written)

    # -- ending --------------------------------------------------------------
    def commit(self) -> str:
        """Finish the file and move it to the target path; return the path."""
        with self._lock:
            self._closed = True
            try:
                with rasterio_env():
                    self._ds.close()
            except Exception as exc:
                self._remove_tmp()
                raise OutputError(f"cannot finish {self.target}: {_first_line(exc)}") from None
        try:
            if self.overwrite:
                os.replace(self.tmp, self.target)
            else:
                try:
                    os.link(self.tmp, self.target)
                except FileExistsError:
                    raise OutputError(f"output appeared while writing: {self.target}") from None
                except OSError:
                    # No hard links here (some network filesystems): rename,
                    # after checking once more.
                    if os.path.lexists(self.target):
                        raise OutputError(f"output appeared while writing: {self.target}") from None
                    os.rename(self.tmp, self.target)
        finally:
            self._remove_tmp()
        return self.target

    def abort(self) -> None:
        """Stop writing and remove the temporary file. Safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._ds.close()
                except Exception:  # noqa: BLE001 - the file is being discarded
                    pass
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        for p in (self.tmp, self.tmp + ".aux.xml", self.tmp + ".msk"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def rasterio_env():
    import rasterio

    return rasterio.Env(**WRITER_GDAL_OPTIONS)


def _fits(value: float, dtype: np.dtype) -> bool:
    if np.isnan(value):
        return dtype.kind == "f"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
