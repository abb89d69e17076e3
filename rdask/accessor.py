"""A thin ``.rdask`` accessor on DataArrays: one-line wrappers, nothing more.

Importing :mod:`rdask` does not register it; ``import rdask.accessor`` (or
:func:`rdask.open_raster`, which imports it) does.
"""

from __future__ import annotations

from typing import Any

import xarray as xr


@xr.register_dataarray_accessor("rdask")
class RdaskAccessor:
    """``da.rdask.apply(kernel, **args)`` and ``da.rdask.to_raster(path, **options)``."""

    def __init__(self, data: xr.DataArray) -> None:
        self._data = data

    def apply(self, kernel: Any, **kernel_args: Any) -> xr.DataArray:
        """See :func:`rdask.apply`."""
        from rdask.apply_kernels import apply

        return apply(self._data, kernel, **kernel_args)

    def to_raster(self, path: Any, **options: Any) -> Any:
        """See :func:`rdask.to_raster`."""
        from rdask.pipeline import to_raster

        return to_raster(self._data, path, **options)
