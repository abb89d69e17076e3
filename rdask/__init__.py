"""rdask: out-of-core raster processing with rasterio, xarray, dask and numba.

Stages, in the order data flows::

    open_raster -> apply -> to_raster (on a scheduler)     # or: process()

The public names are imported lazily, so ``import rdask`` (and the CLI's
``--help``) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0.dev0"

_EXPORTS = {
    "open_raster": "rdask.xr",
    "apply": "rdask.xr",
    "warp": "rdask.xr",
    "to_raster": "rdask.xr",
    "process": "rdask.pipeline",
    "Result": "rdask.pipeline",
    "WriteOptions": "rdask.writeoptions",
    "RasterMeta": "rdask.meta",
    "BandMeta": "rdask.meta",
    "kernel": "rdask.kernels.spec",
    "Kernel": "rdask.kernels.spec",
    "get_kernel": "rdask.kernels",
    "as_kernel": "rdask.kernels",
    "builtin_kernels": "rdask.kernels",
    "plan_chunks": "rdask.plan",
    "make_sample": "rdask.sample",
    "ChunkPlan": "rdask.plan",
    "RdaskError": "rdask.errors",
    "RasterOpenError": "rdask.errors",
    "RasterMismatchError": "rdask.errors",
    "OutputError": "rdask.errors",
    "KernelError": "rdask.errors",
    "KernelOutputError": "rdask.errors",
    "SchedulerError": "rdask.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rdask' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
