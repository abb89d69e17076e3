"""Where pixels come from: a picklable description of one or more files and a
window reader that keeps one open dataset per thread.

Reads never share a handle, so threads decode in parallel instead of queueing
behind one process-wide lock (GDAL releases the GIL inside ``RasterIO``).
GDAL configuration travels with the source as data and is entered around
every read, so a distributed worker needs no set-up of its own.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rdask.config import READ_GDAL_OPTIONS
from rdask.errors import ForkSafetyError, RasterOpenError, first_line
from rdask.io.guard import READ_OPTIONS

#: GDAL options entered around every read (remote inputs add network
#: settings, see :mod:`rdask.io.remote`). Local reads let GDAL look for
#: sidecar files (world files, ``.aux.xml``, ``.msk``, ``.ovr``).
DEFAULT_GDAL_OPTIONS: tuple[tuple[str, Any], ...] = READ_GDAL_OPTIONS + READ_OPTIONS

#: Open handles kept per thread; old ones are closed when this is exceeded.
HANDLES_PER_THREAD = 16

_local = threading.local()


class _ForkState:
    """Whether this process was forked from one that had GDAL loaded."""

    tainted = False


def _after_fork_in_child() -> None:
    # GDAL's global state (locks, caches, open handles) is not fork-safe: a
    # child forked after GDAL was loaded can deadlock on the first read.
    if "rasterio" in sys.modules:
        _ForkState.tainted = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def check_not_forked() -> None:
    """Refuse to touch GDAL in a child forked after GDAL was loaded."""
    if _ForkState.tainted:
        raise ForkSafetyError(
            "this process was forked after GDAL was loaded, and GDAL is not fork-safe: "
            "start worker processes with the 'spawn' method "
            "(multiprocessing.get_context('spawn'))"
        )


class SourceShape:
    """``shape`` and ``ndim`` of a source from its ``count``, ``height`` and
    ``width``: what every source (a file, a stack, a warp, a Zarr array...)
    shows ``dask.array.from_array`` and the recipe."""

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.count, self.height, self.width)

    @property
    def ndim(self) -> int:
        return 3


@dataclass(frozen=True)
class FileBands:
    """One file of a source and the bands taken from it (1-based)."""

    path: str
    bands: tuple[int, ...]
    stamp: tuple[float, int] = (0.0, 0)  # (mtime, size) of a local file


@dataclass(frozen=True)
class RasterSource(SourceShape):
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

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        bsl, ysl, xsl = key
        b0, b1, _ = bsl.indices(self.count)
        y0, y1, _ = ysl.indices(self.height)
        x0, x1, _ = xsl.indices(self.width)
        return self.read(y0, y1, x0, x1, bands=(b0, b1))

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
                    ds = self._handle(f)
                    try:
                        ds.read(idx, window=window, out=out[lo - b0 : hi - b0])
                    except Exception as exc:  # noqa: BLE001 - name file and window
                        raise RasterOpenError(
                            f"cannot read {redact(f.path)} at rows {y0}:{y1}, "
                            f"cols {x0}:{x1}: {first_line(exc)}"
                        ) from None
                pos += len(f.bands)
        return out

    def read_mask(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Read the per-dataset mask (0 = invalid, 255 = valid) of a window."""
        from rasterio.windows import Window

        check_not_forked()
        with self.env():
            ds = self._handle(self.files[0])
            return ds.dataset_mask(window=Window(x0, y0, x1 - x0, y1 - y0))

    def env(self):
        """A ``rasterio.Env`` with this source's GDAL options (and session)."""
        import rasterio

        kwargs: dict[str, Any] = dict(self.gdal_options)
        if self.session is not None:
            kwargs["session"] = self.session
        return rasterio.Env(**kwargs)

    def _handle(self, f: FileBands):
        """This thread's open dataset for ``f``, opening it on first use."""
        import rasterio

        check_not_forked()
        cache: OrderedDict = getattr(_local, "handles", None)
        if cache is None:
            cache = _local.handles = OrderedDict()
        # Keyed by the options too: a handle opened under other GDAL
        # settings (credentials, endpoints, sidecar lookup) is another one.
        key = (f.path, f.stamp, self.gdal_options)
        ds = cache.get(key)
        if ds is None:
            try:
                ds = rasterio.open(f.path)
            except Exception as exc:  # noqa: BLE001 - GDAL errors vary; report one line
                raise RasterOpenError(f"cannot open {redact(f.path)}: {first_line(exc)}") from None
            cache[key] = ds
            while len(cache) > HANDLES_PER_THREAD:
                cache.popitem(last=False)[1].close()
        else:
            cache.move_to_end(key)
        return ds


def redact(path: str) -> str:
    """``path`` with any credentials or signed query string removed."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in path:
        return path
    vsi = re.match(r"^(/vsi[a-z0-9_]+/)(.*://.*)$", path)
    if vsi:
        return vsi.group(1) + redact(vsi.group(2))
    parts = urlsplit(path)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def close_thread_handles() -> None:
    """Close the calling thread's cached datasets (tests, long-lived servers)."""
    cache = getattr(_local, "handles", None)
    while cache:
        cache.popitem()[1].close()


def file_stamp(path: str) -> tuple[float, int]:
    """``(mtime, size)`` of a local file, or zeros for a URL or VSI path."""
    try:
        st = os.stat(path)
    except OSError:
        return (0.0, 0)
    return (st.st_mtime, st.st_size)


def merge_options(*layers: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """Merge GDAL option mappings, later ones winning, as a hashable tuple.

    Values stay str, int or bool (rasterio wants an int for GDAL_CACHEMAX).
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            merged[str(k).upper()] = v if isinstance(v, (str, int, bool)) else str(v)
    return tuple(sorted(merged.items()))
