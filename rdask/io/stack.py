"""Several sources on one grid read as one, their bands in order: what a
stack of files on different grids becomes once each is warped onto one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rdask.io.base import SourceArray


@dataclass(frozen=True)
class StackSource(SourceArray):
    """Sources of equal height, width and dtype, stacked as bands."""

    parts: tuple[Any, ...]

    @property
    def count(self) -> int:
        return sum(p.count for p in self.parts)

    @property
    def height(self) -> int:
        return self.parts[0].height

    @property
    def width(self) -> int:
        return self.parts[0].width

    @property
    def dtype(self) -> str:
        return self.parts[0].dtype

    @property
    def files(self) -> tuple:
        return tuple(f for p in self.parts for f in getattr(p, "files", ()))

    @property
    def gdal_options(self) -> tuple:
        return self.parts[0].gdal_options

    per_dataset_mask = False

    def __dask_tokenize__(self) -> tuple:
        return ("rdask.StackSource", tuple(p.__dask_tokenize__() for p in self.parts))

    def env(self) -> Any:
        """The GDAL settings reads enter (each part enters its own too)."""
        return self.parts[0].env()

    def read(self, y0: int, y1: int, x0: int, x1: int, *, bands: tuple[int, int] | None = None) -> np.ndarray:
        """Rows ``y0:y1`` and columns ``x0:x1`` of bands ``bands`` (0-based range)."""
        b0, b1 = bands or (0, self.count)
        out = np.empty((b1 - b0, max(0, y1 - y0), max(0, x1 - x0)), dtype=self.dtype)
        pos = 0
        for part in self.parts:
            lo, hi = max(b0, pos), min(b1, pos + part.count)
            if lo < hi:
                out[lo - b0 : hi - b0] = part.read(y0, y1, x0, x1, bands=(lo - pos, hi - pos))
            pos += part.count
        return out
