"""The files kind: rasters GDAL reads (one file, or a stack of files as
bands), as a picklable :class:`FileSource` whose reads keep one open
dataset per thread.

Reads never share a handle, so threads decode in parallel instead of queueing
behind one process-wide lock (GDAL releases the GIL inside ``RasterIO``).
GDAL configuration travels with the source as data and is entered around
every read, so a distributed worker needs no set-up of its own.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rdask.cloud.s3 import S3Endpoint
from rdask.config import READ_GDAL_OPTIONS
from rdask.errors import (
    ForkSafetyError,
    RasterMismatchError,
    RasterOpenError,
    RdaskError,
    first_line,
)
from rdask.io.base import Opened, SourceArray
from rdask.io.blocks import BlockCache, Chunking, Piece, assemble, block_cache, unit_shape
from rdask.io.gdalenv import gdal_env
from rdask.io.guard import READ_OPTIONS
from rdask.io.inspect import inspect
from rdask.io.paths import redact
from rdask.io.remote import check_options, is_remote, is_s3, network_defaults, read_again
from rdask.meta import RasterMeta

if TYPE_CHECKING:
    from rdask.io.tiffblocks import TiffLayout

#: GDAL options entered around every read (remote inputs add network
#: settings, see :mod:`rdask.io.remote`). Local reads let GDAL look for
#: sidecar files (world files, ``.aux.xml``, ``.msk``, ``.ovr``).
DEFAULT_GDAL_OPTIONS: tuple[tuple[str, Any], ...] = READ_GDAL_OPTIONS + READ_OPTIONS

#: Open handles kept per thread; old ones are closed when this is exceeded.
HANDLES_PER_THREAD = 16

class GdalProcess:
    """The process in which rdask first used GDAL: a child forked from it
    must not use GDAL, whose global state (locks, caches, open handles) is
    not fork-safe (the first read can deadlock)."""

    pid: int | None = None


def check_not_forked() -> None:
    """Refuse to touch GDAL in a child forked after rdask used GDAL; called
    before every use, the first of which names this process."""
    if GdalProcess.pid is None:
        GdalProcess.pid = os.getpid()
    elif GdalProcess.pid != os.getpid():
        raise ForkSafetyError(
            "this process was forked after GDAL was loaded, and GDAL is not fork-safe: "
            "start worker processes with the 'spawn' method "
            "(multiprocessing.get_context('spawn'))"
        )


class Handles(threading.local):
    """This thread's open datasets, by path, stamp and GDAL options; the
    oldest are closed beyond :data:`HANDLES_PER_THREAD`. One per process
    (:func:`handles`), each thread seeing its own."""

    def __init__(self) -> None:
        self.open: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, f: FileBands, options: tuple) -> Any:
        """This thread's dataset for ``f`` under ``options``, opened on first use."""
        import rasterio

        check_not_forked()
        # Keyed by the options too: a handle opened under other GDAL
        # settings (credentials, endpoints, sidecar lookup) is another one.
        key = (f.path, f.stamp, options)
        ds = self.open.get(key)
        if ds is not None:
            self.open.move_to_end(key)
            return ds
        try:
            ds = rasterio.open(f.path)
        except Exception as exc:  # noqa: BLE001 - GDAL errors vary; report one line
            raise RasterOpenError(f"cannot open {redact(f.path)}: {first_line(exc)}") from None
        self.open[key] = ds
        while len(self.open) > HANDLES_PER_THREAD:
            self.open.popitem(last=False)[1].close()
        return ds

    def drop(self, f: FileBands, options: tuple) -> None:
        """Close this thread's dataset for ``f`` under ``options``, if open."""
        ds = self.open.pop((f.path, f.stamp, options), None)
        if ds is not None:
            ds.close()

    def close(self) -> None:
        """Close the calling thread's datasets."""
        while self.open:
            self.open.popitem()[1].close()


def handles() -> Handles:
    """This process's :class:`Handles` (a forked child makes its own)."""
    return _handles_of(os.getpid())


@functools.cache
def _handles_of(pid: int) -> Handles:
    return Handles()


@dataclass(frozen=True)
class FileBands:
    """One file of a source and the bands taken from it (1-based)."""

    path: str
    bands: tuple[int, ...]
    stamp: tuple[float, int] = (0.0, 0)  # (mtime, size) of a local file


@dataclass(frozen=True)
class FileSource(SourceArray):
    """A lazily read raster: one file, or a stack of files as bands.

    All files share size, CRS and transform (checked at open). Instances are
    small, immutable and picklable; equal sources tokenize equally.
    """

    files: tuple[FileBands, ...]
    height: int
    width: int
    dtype: str
    gdal_options: tuple[tuple[str, Any], ...] = DEFAULT_GDAL_OPTIONS
    per_dataset_mask: bool = False
    session: Any = field(default=None, compare=False, repr=False)

    @property
    def count(self) -> int:
        return sum(len(f.bands) for f in self.files)

    def __dask_tokenize__(self) -> tuple:
        # File stamps make the token change when a file is rewritten, so a
        # cached graph never serves stale pixels. Secrets never enter it.
        return ("rdask.RasterSource", self.files, self.dtype, self.gdal_options)

    def read(
        self, y0: int, y1: int, x0: int, x1: int, *, bands: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Read rows ``y0:y1`` and columns ``x0:x1`` as ``(bands, y, x)``.

        ``bands`` is a ``(start, stop)`` range of 0-based positions.
        """
        from rasterio.windows import Window

        check_not_forked()  # before rasterio.Env: entering it already calls GDAL
        b0, b1 = bands or (0, self.count)
        out = np.empty((b1 - b0, max(0, y1 - y0), max(0, x1 - x0)), dtype=self.dtype)
        if out.size == 0:
            return out
        window = Window(x0, y0, x1 - x0, y1 - y0)
        pos = 0
        with self.env():
            for f in self.files:
                lo, hi = max(b0, pos), min(b1, pos + len(f.bands))
                if lo < hi:
                    idx = list(f.bands[lo - pos : hi - pos])
                    try:
                        self._read(f, lambda ds, idx=idx, lo=lo, hi=hi: ds.read(
                            idx, window=window, out=out[lo - b0 : hi - b0]))
                    except RdaskError:  # an open that failed, a fork: said already
                        raise
                    except Exception as exc:  # noqa: BLE001 - name file and window
                        raise RasterOpenError(
                            f"cannot read {redact(f.path)} at rows {y0}:{y1}, "
                            f"cols {x0}:{x1}: {first_line(exc)}"
                        ) from None
                pos += len(f.bands)
        return out

    def read_grown(self, y0: int, y1: int, x0: int, x1: int, halo: int,
                   chunking: Chunking | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """The window grown by ``halo`` (see :meth:`SourceArray.read_grown`).

        For a chunk of ``chunking``, the grown window is put together from
        whole blocks that this process's threads share (:mod:`.blocks`):
        each block is decoded once and kept until the last chunk that
        reaches into it has read it, instead of being decoded again by every
        neighbour, each through its own thread's GDAL dataset.
        """
        chunk = None if not halo or chunking is None else chunking.chunk_id(y0, y1, x0, x1)
        if chunk is None:
            return super().read_grown(y0, y1, x0, x1, halo)
        gy0, gx0 = max(0, y0 - halo), max(0, x0 - halo)
        gy1, gx1 = min(self.height, y1 + halo), min(self.width, x1 + halo)
        out = np.empty((self.count, gy1 - gy0, gx1 - gx0), dtype=self.dtype)
        check_not_forked()
        # Here, not at the top: it loads numba, which reading needs only for halos.
        from rdask.io import tiffblocks

        cache = block_cache()
        job = (self.files, self.gdal_options, chunking)
        with self.env(), cache.reading(job, chunk):
            pos = 0
            for f in self.files:
                part = out[pos : pos + len(f.bands)]
                ds = handles().get(f, self.gdal_options)
                block = _block_of(ds, f)
                unit = unit_shape(block)
                tiff = tiffblocks.layout(f.path, f.stamp, ds)
                fetch = functools.partial(self._fetch_unit, cache, job, chunk, chunking, f, block, tiff)
                assemble(part, gy0, gx0, unit, (self.height, self.width), fetch)
                pos += len(f.bands)
        return out, (y0 - gy0, x0 - gx0)

    def _fetch_unit(self, cache: BlockCache, job: tuple, chunk: int, chunking: Chunking,
                    f: FileBands, block: tuple[int, int], tiff: TiffLayout | None,
                    r0: int, r1: int, c0: int, c1: int, wait: bool) -> Piece | None:
        """One unit of caching of file ``f`` for chunk ``chunk`` (see
        :func:`.blocks.assemble`), decoded by rdask (``tiff``) or GDAL.

        A chunk that reaches only the first rows of a unit below it (its
        halo) decodes just those rows, when the codec can stop early: the
        unit is not decoded whole a chunk row before its own chunks need it,
        so what waits in the cache is strips, not a row of blocks.
        """
        unit = unit_shape(block)
        key = (f, self.gdal_options, r0 // unit[0], c0 // unit[1])
        # At most 1/64 of the unit's rows, so that the (up to three) chunks
        # above that each decode a head add a few percent to the decoding.
        head = unit[0] // 64 if tiff is not None and tiff.heads else 0
        if chunking.head_only(chunk, r0, head):
            need = (r0, min(r1, chunking.reach({chunk})[1]), c0, c1)
            piece = cache.peek(key, need)
            data = None if piece is not None else tiff.read(f.bands, *need)  # type: ignore[union-attr]
            if data is not None:
                cache.count_partial((need[1] - r0) * (c1 - c0) / (block[0] * block[1]))
                return Piece(data, r0, c0)
            if piece is not None:
                return piece

        def decode() -> tuple[np.ndarray, int]:
            data = None if tiff is None else tiff.read(f.bands, r0, r1, c0, c1)
            if data is None:
                data = self._read_file(f, r0, r1, c0, c1)
            return data, _blocks_in(block, r0, r1, c0, c1)

        return cache.take(key, job, chunking, chunk, (r0, r1, c0, c1), decode, wait=wait, head=head)

    def _read_file(self, f: FileBands, y0: int, y1: int, x0: int, x1: int,
                   out: np.ndarray | None = None) -> np.ndarray:
        """All bands of ``f`` at rows ``y0:y1``, cols ``x0:x1``, through this
        thread's dataset (inside :meth:`env`)."""
        from rasterio.windows import Window

        ds = handles().get(f, self.gdal_options)
        try:
            return ds.read(list(f.bands), window=Window(x0, y0, x1 - x0, y1 - y0), out=out)
        except Exception as exc:  # noqa: BLE001 - name file and window
            raise RasterOpenError(
                f"cannot read {redact(f.path)} at rows {y0}:{y1}, cols {x0}:{x1}: {first_line(exc)}"
            ) from None

    def read_mask(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Read the per-dataset mask (0 = invalid, 255 = valid) of a window."""
        from rasterio.windows import Window

        check_not_forked()
        with self.env():
            return self._read(self.files[0], lambda ds: ds.dataset_mask(window=Window(x0, y0, x1 - x0, y1 - y0)))

    def _read(self, f: FileBands, read: Any) -> Any:
        """``read(dataset)`` with this thread's dataset of ``f``, again on a
        new one after a network failure (:func:`~rdask.io.remote.read_again`)."""
        return read_again(f.path, dict(self.gdal_options), lambda: read(handles().get(f, self.gdal_options)),
                          lambda: handles().drop(f, self.gdal_options))

    def env(self):
        """A ``rasterio.Env`` with this source's GDAL options (and session),
        which leaves GDAL's configuration as it found it (:mod:`.gdalenv`)."""
        kwargs: dict[str, Any] = dict(self.gdal_options)
        if self.session is not None:
            kwargs["session"] = self.session
        return gdal_env(**kwargs)


def _block_of(ds: Any, f: FileBands) -> tuple[int, int]:
    """The GDAL block shape of ``f``'s bands in ``ds`` (their first band's;
    GeoTIFF bands share one)."""
    return tuple(ds.block_shapes[f.bands[0] - 1])  # type: ignore[return-value]


def _blocks_in(block: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> int:
    """GDAL blocks of shape ``block`` that rows ``y0:y1``, cols ``x0:x1`` touch."""
    (bh, bw) = block
    return ((y1 - 1) // bh - y0 // bh + 1) * ((x1 - 1) // bw - x0 // bw + 1)


def close_thread_handles() -> None:
    """Close the calling thread's cached datasets (tests, long-lived servers)."""
    handles().close()


def merge_options(*layers: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """Merge GDAL option mappings, later ones winning, as a hashable tuple.

    Values stay str, int or bool (rasterio wants an int for GDAL_CACHEMAX).
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            merged[str(k).upper()] = v if isinstance(v, (str, int, bool)) else str(v)
    return tuple(sorted(merged.items()))


# -- the kind ----------------------------------------------------------------------


def accepts(paths: Sequence[str]) -> bool:
    """Anything GDAL may read: the last kind asked."""
    return True


def open(paths: Sequence[str], gdal_options: Mapping[str, Any] | None = None) -> Opened:  # noqa: A001
    """Open one file, or several stacked as bands (same size, CRS,
    transform and dtype), reading their metadata only.

    Raises
    ------
    RasterOpenError, RasterMismatchError
        A file that cannot be read, or files that cannot be stacked.
    """
    options = read_options(paths, gdal_options)
    infos = [inspect(p, options) for p in paths]
    _check_stack(infos)
    first = infos[0]
    source = FileSource(
        files=tuple(FileBands(i.path, i.bands, i.stamp) for i in infos),
        height=first.shape[0],
        width=first.shape[1],
        dtype=_one_dtype(infos),
        gdal_options=options,
        per_dataset_mask=len(infos) == 1 and first.per_dataset_mask,
    )
    block = (math.lcm(*(i.block[0] for i in infos)), math.lcm(*(i.block[1] for i in infos)))
    return Opened(source, stack_meta(infos), block)


def read_options(paths: Sequence[str], gdal_options: Mapping[str, Any] | None) -> tuple:
    """GDAL options for reading ``paths``: rdask's, network ones for remote
    inputs, the S3 endpoint's, then the user's."""
    check_options(gdal_options)
    layers: list[Mapping[str, Any] | None] = [dict(DEFAULT_GDAL_OPTIONS)]
    if any(is_remote(p) for p in paths):
        layers.append(network_defaults())
    if any(is_s3(p) or p.startswith("/vsis3/") for p in paths):
        layers.append(S3Endpoint.from_options(gdal_options).gdal_options())
    return merge_options(*layers, gdal_options)


def _one_dtype(infos: list) -> str:
    dtypes = {d for info in infos for d in info.dtypes}
    if len(dtypes) > 1:
        raise RasterOpenError(
            f"{redact(infos[0].path)}: bands have different dtypes ({', '.join(sorted(dtypes))}); "
            "rdask needs one dtype per raster"
        )
    return dtypes.pop()


def stack_meta(infos: list) -> RasterMeta:
    """The metadata of a stack: the first file's, with every file's bands;
    unnamed bands of a stack are named after their files."""
    first = infos[0].meta
    if len(infos) == 1:
        return first
    bands = []
    for info in infos:
        name = os.path.basename(info.path.rstrip("/"))
        bands.extend(replace(b, description=b.description or name) for b in info.meta.bands)
    return replace(first, bands=tuple(bands))


def _check_stack(infos: list) -> None:
    first = infos[0]
    for other in infos[1:]:
        pairs = (
            ("size", first.shape, other.shape),
            ("CRS", first.meta.crs, other.meta.crs),
            ("transform", first.meta.transform, other.meta.transform),
        )
        for label, a, b in pairs:
            if a != b:
                raise RasterMismatchError(
                    f"cannot stack {redact(first.path)} and {redact(other.path)}: "
                    f"{label} differs ({_fmt(a)} vs {_fmt(b)}); use --grid first (grid='first') "
                    "to warp them onto one grid"
                )
        a, b = sorted(set(first.dtypes)), sorted(set(other.dtypes))
        if a != b:
            raise RasterMismatchError(
                f"cannot stack {redact(first.path)} and {redact(other.path)}: "
                f"dtype differs ({', '.join(a)} vs {', '.join(b)}); rdask needs one dtype per raster"
            )


def _fmt(v: Any) -> str:
    if hasattr(v, "to_gdal"):
        return "(" + ", ".join(repr(x) for x in v.to_gdal()) + ")"
    if hasattr(v, "to_string"):
        return v.to_string()
    return str(v)
