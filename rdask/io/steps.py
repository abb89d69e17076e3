"""Kernel steps over another source, read like a source: what a warp
after kernel steps reads from (``rdask.warp`` of a recipe with steps)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from rdask.io.base import Source, SourceArray


@dataclass(frozen=True)
class StepsSource(SourceArray):
    """Windows of ``inner`` with the kernel steps applied: each read is one
    call of ``compute`` (a recipe's chunk reader: the window grown by the
    steps' halo, read once, the steps run, trimmed). ``token`` identifies
    the source and the steps."""

    compute: Callable[[tuple[slice, slice, slice]], np.ndarray]
    inner: Source
    token: str
    count: int
    height: int
    width: int
    dtype: str

    @property
    def files(self) -> tuple:
        return self.inner.files

    @property
    def gdal_options(self) -> tuple:
        return self.inner.gdal_options

    @property
    def per_dataset_mask(self) -> bool:
        return False  # the steps' output has no mask of its own

    def __dask_tokenize__(self) -> tuple:
        return ("rdask.StepsSource", self.token, self.dtype)

    def env(self) -> AbstractContextManager[Any]:
        """The GDAL settings of the source the steps read from."""
        return self.inner.env()

    def read(self, y0: int, y1: int, x0: int, x1: int, *, bands: tuple[int, int] | None = None) -> np.ndarray:
        block = self.compute((slice(0, self.count), slice(y0, y1), slice(x0, x1)))
        return block if bands is None else block[bands[0] : bands[1]]
