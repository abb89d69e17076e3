"""Kernels: numba ``nogil`` functions from ``(bands, y, x)`` blocks to arrays.

The built-in kernels live in :mod:`~rdask.kernels.bands`,
:mod:`~rdask.kernels.focal` and :mod:`~rdask.kernels.terrain`; user kernels are
found by :func:`get_kernel` from ``package.module:function`` or
``path/to/file.py:function``; :func:`as_kernel` turns whatever a user passes
(a kernel, a name or reference, an undeclared numba function) into a
:class:`Kernel`.  Nothing here imports xarray, dask or rasterio,
and the kernel modules (hence numba) are imported on first use only, so
importing :mod:`rdask.kernels.spec` stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType, ModuleType

from rdask.errors import KernelError
from rdask.kernels.spec import Kernel, compose_band_sources, kernel, probed_kernel

__all__ = [
    "Kernel",
    "as_kernel",
    "builtin_kernels",
    "compose_band_sources",
    "get_kernel",
    "kernel",
]


@functools.cache
def builtin_kernels() -> Mapping[str, Kernel]:
    """The built-in kernels by name.

    Returns
    -------
    Mapping[str, Kernel]
        A read-only mapping (it is cached and shared), sorted by name.
    """
    # Here, not at the top: importing the built-in modules loads (or compiles)
    # their numba functions, ~0.4 s measured, that `rdask --help` and user kernels skip.
    from rdask.kernels import bands, calc, colorrelief, focal, focalstats, terrain

    found = [
        bands.reverse_bands,
        bands.normalized_difference,
        bands.ndvi,
        calc.calc,
        colorrelief.color_relief,
        focal.focal_mean,
        focalstats.focal,
        terrain.slope,
        terrain.aspect,
        terrain.hillshade,
        terrain.tri,
        terrain.tpi,
        terrain.roughness,
    ]
    return MappingProxyType({k.name: k for k in sorted(found, key=lambda k: k.name)})


def as_kernel(obj: Kernel | str | Callable, *, allow_gil: bool = False) -> Kernel:
    """The :class:`Kernel` for whatever a user passes as a kernel.

    Parameters
    ----------
    obj
        A :class:`Kernel` (returned as is); a built-in name or a
        ``module:function`` / ``file.py:function`` reference (resolved by
        :func:`get_kernel`); or a function compiled with
        ``numba.njit(nogil=True)`` but not declared with :func:`kernel`,
        which is run like dask's ``map_blocks`` runs a function: halo 0, the
        input's nodata, and the output dtype and band count found by calling
        it once on a tiny block of the input's dtype and band count (cached
        per dtype, band count and arguments).  Its parameters named
        ``nodata``, ``xres`` and ``yres`` are filled in as for a declared
        kernel; every other one needs a default.
    allow_gil
        Accept a plain Python function or a numba function without
        ``nogil`` (with a warning), as :func:`kernel` does.

    Returns
    -------
    Kernel

    Raises
    ------
    KernelError
        One line: an unknown name or reference, something not callable, or a
        function that would hold the GIL (the message names
        ``allow_gil=True``).
    """
    if isinstance(obj, Kernel):
        return obj
    if isinstance(obj, str):
        return get_kernel(obj, allow_gil=allow_gil)
    if not callable(obj):
        raise KernelError(
            f"a kernel must be an rdask Kernel, a kernel name or a numba function, "
            f"not a {type(obj).__name__}"
        )
    return probed_kernel(obj, allow_gil=allow_gil)


def get_kernel(name_or_ref: str, *, allow_gil: bool = False) -> Kernel:
    """Find a kernel by built-in name or by reference.

    Parameters
    ----------
    name_or_ref
        A built-in name (``"focal-mean"``), ``"package.module:function"``, or
        ``"path/to/file.py:function"``.  The attribute may be a
        :class:`Kernel` or a numba ``nogil`` function, which is wrapped by
        :func:`kernel` with the defaults (same dtype, bands and nodata as the
        input, no halo).
    allow_gil
        Passed to :func:`kernel` for a function found by reference.

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
    return kernel(obj, allow_gil=allow_gil)


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
