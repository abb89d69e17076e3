"""Kernels: numba ``nogil`` functions from ``(bands, y, x)`` blocks to arrays.

The built-in kernels live in :mod:`~rdask.kernels.bands`,
:mod:`~rdask.kernels.focal` and :mod:`~rdask.kernels.terrain`; user kernels are
found by :func:`get_kernel` from ``package.module:function`` or
``path/to/file.py:function``.  Nothing here imports xarray, dask or rasterio,
and the kernel modules (hence numba) are imported on first use only, so
importing :mod:`rdask.kernels.spec` stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, ModuleType

from rdask.errors import KernelError
from rdask.kernels.spec import Kernel, kernel

__all__ = ["Kernel", "builtin_kernels", "get_kernel", "kernel"]


@functools.cache
def builtin_kernels() -> Mapping[str, Kernel]:
    """The built-in kernels by name.

    Returns
    -------
    Mapping[str, Kernel]
        A read-only mapping (it is cached and shared), sorted by name.
    """
    from rdask.kernels import bands, focal, terrain

    found = [
        bands.reverse_bands,
        bands.normalized_difference,
        bands.ndvi,
        focal.focal_mean,
        terrain.slope,
        terrain.hillshade,
    ]
    return MappingProxyType({k.name: k for k in sorted(found, key=lambda k: k.name)})


def get_kernel(name_or_ref: str) -> Kernel:
    """Find a kernel by built-in name or by reference.

    Parameters
    ----------
    name_or_ref
        A built-in name (``"focal-mean"``), ``"package.module:function"``, or
        ``"path/to/file.py:function"``.  The attribute may be a
        :class:`Kernel` or a numba ``nogil`` function, which is wrapped by
        :func:`kernel` with the defaults (same dtype, bands and nodata as the
        input, no halo).

    Returns
    -------
    Kernel

    Raises
    ------
    KernelError
        For an unknown name, a missing or broken module or file, a missing
        attribute, or a function that :func:`kernel` refuses.
    """
    builtins = builtin_kernels()
    if name_or_ref in builtins:
        return builtins[name_or_ref]
    if ":" not in name_or_ref:
        raise KernelError(
            f"unknown kernel {name_or_ref!r}; built-in kernels: {', '.join(builtins)} "
            "(or give package.module:function or path/to/file.py:function)"
        )
    where, _, attr = name_or_ref.rpartition(":")
    if not where or not attr:
        raise KernelError(
            f"kernel {name_or_ref!r}: expected package.module:function or path/to/file.py:function"
        )
    module = _load_module(name_or_ref, where)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise KernelError(f"kernel {name_or_ref!r}: {where} has no attribute {attr!r}") from None
    if isinstance(obj, Kernel):
        return obj
    if not callable(obj):
        raise KernelError(
            f"kernel {name_or_ref!r}: {attr!r} is a {type(obj).__name__}, not a function"
        )
    return kernel(obj)


def _is_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _load_module(ref: str, where: str) -> ModuleType:
    """Import ``where``, a dotted module name or a ``.py`` file path."""
    if not _is_path(where):
        try:
            return importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001 - any import failure is the user's module
            raise KernelError(f"kernel {ref!r}: cannot import {where}: {_one_line(exc)}") from exc
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise KernelError(f"kernel {ref!r}: no such file {where}")
    # One module per file, under a name that cannot clash with a real one; it
    # stays in sys.modules so loading the same file again reuses it.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"rdask_user_kernel_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise KernelError(f"kernel {ref!r}: cannot load {where} as a Python module")
    module = importlib.util.module_from_spec(spec)
    module.__rdask_file__ = True  # not importable by name in other processes
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure is the user's file
        del sys.modules[name]
        raise KernelError(f"kernel {ref!r}: error loading {where}: {_one_line(exc)}") from exc
    return module


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
