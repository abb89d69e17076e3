"""The read contract: what every input kind is, and how one is opened.

A *source* is a lazily read ``(bands, y, x)`` raster: small, frozen and
picklable (it is what a task carries to a worker), tokenized from what
identifies its pixels (never a secret), and read one window at a time.
Every kind implements :class:`Source`: files GDAL reads
(:mod:`.files`, one file or a stack of files as bands), Zarr arrays
(:mod:`.zarr`), sources of one grid stacked as bands (:mod:`.stack`), a
reprojection of another source (:mod:`.warped`), kernel steps computed
over another source (:mod:`.steps`), and any dask array (the xarray face's
``ArraySource``). :class:`SourceArray` gives each the same ``shape``,
``ndim``, ``__getitem__`` (what ``dask.array.from_array`` uses) and halo
read.

Kinds opened from paths are modules with ``accepts(paths)`` and
``open(paths, gdal_options) -> Opened``; :func:`open_source` asks them in
the order of :data:`KINDS`, as :func:`rdask.outputs.open_output` asks the
output kinds. Adding an input format means adding its module and naming it
there.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rdask.errors import RasterOpenError
from rdask.io.blocks import Chunking
from rdask.meta import RasterMeta

#: Input kinds opened from paths, most specific first.
KINDS = (
    "rdask.io.zarr",
    "rdask.io.files",
)


@runtime_checkable
class Source(Protocol):
    """A lazily read ``(bands, y, x)`` raster (see the module docstring)."""

    @property
    def count(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def dtype(self) -> str: ...

    @property
    def files(self) -> tuple:
        """The files its pixels come from (``FileBands``), for provenance."""

    @property
    def per_dataset_mask(self) -> bool:
        """Whether it has a per-dataset mask (:meth:`read_mask` of a file source)."""

    @property
    def gdal_options(self) -> tuple[tuple[str, Any], ...]: ...

    def read(self, y0: int, y1: int, x0: int, x1: int, *, bands: tuple[int, int] | None = None) -> np.ndarray:
        """Rows ``y0:y1``, columns ``x0:x1`` of bands ``bands`` (a 0-based range), as ``(bands, y, x)``."""

    def env(self) -> AbstractContextManager:
        """The GDAL settings its reads enter (a null context when none)."""

    def __dask_tokenize__(self) -> Hashable: ...


class SourceArray:
    """What every source shows ``dask.array.from_array`` and the recipe,
    from its ``count``, ``height``, ``width`` and ``read``. (No defaults
    for the other members here: a dataclass would take them for its
    fields' defaults.)"""

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.count, self.height, self.width)  # type: ignore[attr-defined]

    @property
    def ndim(self) -> int:
        return 3

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        bsl, ysl, xsl = key
        b0, b1, _ = bsl.indices(self.count)  # type: ignore[attr-defined]
        y0, y1, _ = ysl.indices(self.height)  # type: ignore[attr-defined]
        x0, x1, _ = xsl.indices(self.width)  # type: ignore[attr-defined]
        return self.read(y0, y1, x0, x1, bands=(b0, b1))  # type: ignore[attr-defined]

    def read_grown(self, y0: int, y1: int, x0: int, x1: int, halo: int,
                   chunking: Chunking | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """The window grown by ``halo`` pixels on every side, clipped at the
        raster's edges, and where the window starts inside it ``(dy, dx)``.

        ``chunking`` says which chunks the job reads (its edges and halo);
        a source may use it to decode each of its blocks about once although
        neighbouring chunks' grown windows overlap (files do, see
        :mod:`rdask.io.blocks`). The pixels never depend on it."""
        gy0, gx0 = max(0, y0 - halo), max(0, x0 - halo)
        gy1, gx1 = min(self.height, y1 + halo), min(self.width, x1 + halo)  # type: ignore[attr-defined]
        return self.read(gy0, gy1, gx0, gx1), (y0 - gy0, x0 - gx0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Opened:
    """What opening paths gives: the source, its metadata and its block
    shape (the unit chunks are planned in)."""

    source: Source
    meta: RasterMeta
    block: tuple[int, int]


def open_source(paths: Sequence[str], gdal_options: Mapping[str, Any] | None = None) -> Opened:
    """Open ``paths`` (one raster, or several stacked as bands) with the
    first kind, in :data:`KINDS` order, that accepts them.

    Raises
    ------
    RasterOpenError
        No kind opens them, or the kind cannot.
    """
    for name in KINDS:
        kind = import_module(name)
        if kind.accepts(paths):
            return kind.open(paths, gdal_options)
    raise RasterOpenError(f"rdask cannot read {', '.join(paths)}")
