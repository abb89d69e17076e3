"""Kernel specs: a numba ``nogil`` function plus what the pipeline must know.

A kernel is a plain numba function ``func(block, [nodata], [xres], [yres],
**args)`` from a ``(bands, y, x)`` block to an ``(out_bands, y, x)`` array of
the same ``y, x`` shape.  It treats the edges of its block as the edges of the
raster: the pipeline hands halo kernels blocks grown by the halo and clipped
at the raster edge, and trims the seam pixels afterwards, so the result never
depends on the chunking.

Parameters named ``nodata`` (the input's nodata as a float, NaN when it has
none), ``xres`` and ``yres`` (pixel size from the geotransform, GDAL's
``gt[1]`` and ``-gt[5]``: positive for a north-up raster) are filled in
by the pipeline; every other parameter must have a default and is a user
argument.  This module imports nothing from xarray, dask or rasterio.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from rdask.errors import KernelError, KernelOutputError

#: Parameters the pipeline fills in from the raster, never from the user.
CONTEXT_PARAMS = ("nodata", "xres", "yres")

#: Output nodata that copies the input's nodata.
INPUT_NODATA = "input"


@dataclass(frozen=True)
class Kernel:
    """A kernel function with its declared output and neighbourhood.

    Build one with :func:`kernel` rather than directly.
    """

    name: str
    func: Callable[..., np.ndarray] = field(repr=False, compare=False)
    dtype: np.dtype | None
    bands: int | Callable[..., int] | None = field(compare=False)
    halo: int | str
    nodata: float | str | None
    params: tuple[str, ...]
    defaults: tuple[tuple[str, Any], ...]
    context: tuple[str, ...]
    keeps_bands: bool
    doc: str = field(default="", repr=False, compare=False)
    token: str = ""

    def __reduce_ex__(self, protocol: int) -> Any:
        # numba pickles a dispatcher as its Python function and rebuilds a
        # new dispatcher without the on-disk cache, so every worker process
        # would compile the kernel from scratch (~4 s for reverse-bands).
        # A kernel from an importable module travels as a reference instead:
        # the worker imports the module and gets its cached dispatcher.
        where = _module_ref(self.func)
        if where is None:
            return super().__reduce_ex__(protocol)
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "func"}
        return (_rebuild_kernel, (*where, state))

    def __dask_tokenize__(self) -> tuple:
        # Equal kernels must give equal graph keys; the function object itself
        # is not deterministic to hash, its qualified name is.
        return ("rdask.Kernel", self.name, self.token, str(self.dtype), self.halo, self.defaults)

    # -- arguments ---------------------------------------------------------
    def resolve_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Merge user arguments over the defaults, coercing CLI strings.

        Raises
        ------
        KernelError
            For an unknown argument or a value of the wrong type.
        """
        defaults = dict(self.defaults)
        unknown = sorted(set(args) - set(defaults))
        if unknown:
            known = ", ".join(defaults) or "none"
            raise KernelError(
                f"kernel {self.name!r} has no argument {unknown[0]!r} (arguments: {known})"
            )
        out = dict(defaults)
        for key, value in args.items():
            out[key] = _coerce(self.name, key, value, defaults[key])
        return out

    def halo_for(self, args: Mapping[str, Any]) -> int:
        """Halo depth in pixels for resolved ``args``."""
        halo = int(args[self.halo]) if isinstance(self.halo, str) else int(self.halo)
        if halo < 0:
            raise KernelError(f"kernel {self.name!r}: halo must be >= 0, got {halo}")
        return halo

    def out_bands(self, in_bands: int, args: Mapping[str, Any]) -> int:
        """Number of output bands for ``in_bands`` input bands."""
        if self.bands is None:
            return in_bands
        if callable(self.bands):
            return int(self.bands(in_bands, **args))
        return int(self.bands)

    def out_dtype(self, in_dtype: np.dtype) -> np.dtype:
        """Output dtype for an input of ``in_dtype``."""
        return np.dtype(in_dtype) if self.dtype is None else self.dtype

    def out_nodata(self, in_nodata: float | None) -> float | None:
        """Nodata value of the output, given the input's."""
        if isinstance(self.nodata, str) and self.nodata == INPUT_NODATA:
            return in_nodata
        return self.nodata

    # -- running -----------------------------------------------------------
    def __call__(
        self,
        block: np.ndarray,
        *,
        nodata: float | None = None,
        xres: float = 1.0,
        yres: float = 1.0,
        where: str = "",
        **args: Any,
    ) -> np.ndarray:
        """Run on one ``(bands, y, x)`` block and check the result.

        ``where`` names the window for error messages.
        """
        resolved = self.resolve_args(args)
        ctx = {
            "nodata": math.nan if nodata is None else float(nodata),
            "xres": float(xres),
            "yres": float(yres),
        }
        kwargs = {k: ctx[k] for k in self.context}
        kwargs.update(resolved)
        try:
            out = self.func(block, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the window named
            at = f" at {where}" if where else ""
            raise KernelError(
                f"kernel {self.name!r} failed{at}: {type(exc).__name__}: {exc}"
            ) from exc
        self.check_output(block, out, resolved, where)
        return out

    def check_output(
        self, block: np.ndarray, out: Any, args: Mapping[str, Any], where: str = ""
    ) -> None:
        """Raise :class:`KernelOutputError` unless ``out`` is what was declared."""
        at = f" at {where}" if where else ""
        if not isinstance(out, np.ndarray):
            raise KernelOutputError(
                f"kernel {self.name!r} returned {type(out).__name__}{at}, expected a numpy array"
            )
        want_shape = (self.out_bands(block.shape[0], args), *block.shape[1:])
        if out.shape != want_shape:
            raise KernelOutputError(
                f"kernel {self.name!r} returned shape {out.shape}{at}, expected {want_shape}"
            )
        want_dtype = self.out_dtype(block.dtype)
        if out.dtype != want_dtype:
            raise KernelOutputError(
                f"kernel {self.name!r} returned dtype {out.dtype}{at}, expected {want_dtype}"
            )


def _module_ref(func: Callable) -> tuple[str, str] | None:
    """``(module, attribute)`` under which another process finds ``func``, or None."""
    module_name = getattr(func, "__module__", None)
    attr = getattr(func, "__name__", None)
    module = sys.modules.get(module_name or "")
    # __main__ and rdask's modules made from .py files cannot be imported by
    # name elsewhere; they keep numba's own pickling (by value).
    if module is None or attr is None or module_name == "__main__" or getattr(
        module, "__rdask_file__", False
    ):
        return None
    obj = getattr(module, attr, None)
    if obj is func or (isinstance(obj, Kernel) and obj.func is func):
        return module_name, attr
    return None


def _rebuild_kernel(module_name: str, attr: str, state: dict[str, Any]) -> Kernel:
    obj = getattr(importlib.import_module(module_name), attr)
    return Kernel(func=obj.func if isinstance(obj, Kernel) else obj, **state)


def kernel(
    func: Callable | None = None,
    *,
    name: str | None = None,
    dtype: Any = None,
    bands: int | Callable[..., int] | None = None,
    halo: int | str = 0,
    nodata: float | str | None = INPUT_NODATA,
    keeps_bands: bool | None = None,
    allow_gil: bool = False,
) -> Any:
    """Declare a numba ``nogil`` function as an rdask kernel.

    Parameters
    ----------
    func
        A function compiled with ``numba.njit(nogil=True)``.
    name
        Name shown in errors and listings; defaults to the function's name
        with underscores as dashes.
    dtype
        Output dtype; ``None`` keeps the input dtype.
    bands
        Output band count: ``None`` keeps the input's, an int, or a callable
        ``(in_bands, **args) -> int``.
    halo
        Neighbourhood depth in pixels, or the name of an int argument that
        gives it (e.g. ``"radius"``).
    nodata
        Output nodata: a number, ``None`` for none, or ``"input"`` to keep
        the input's.
    keeps_bands
        Whether output band ``i`` describes input band ``i`` (so band
        descriptions and the mask carry over). Defaults to ``bands is None``.
    allow_gil
        Accept a plain Python function or a numba function without
        ``nogil``; a warning says threads will not scale.

    Returns
    -------
    Kernel, or a decorator making one when ``func`` is omitted.

    Examples
    --------
    >>> @rdask.kernel(dtype="float32", halo="radius", nodata=float("nan"))
    ... @numba.njit(nogil=True)
    ... def my_mean(block, nodata, radius=1): ...
    """

    def wrap(f: Callable) -> Kernel:
        return _make(f, name, dtype, bands, halo, nodata, keeps_bands, allow_gil)

    return wrap if func is None else wrap(func)


def _make(f, name, dtype, bands, halo, nodata, keeps_bands, allow_gil) -> Kernel:
    label = name or getattr(f, "__name__", "kernel").replace("_", "-")
    py_func = getattr(f, "py_func", None)
    nogil = bool(getattr(f, "targetoptions", {}).get("nogil", False))
    if py_func is None or not nogil:
        what = "a plain Python function" if py_func is None else "compiled without nogil=True"
        if not allow_gil:
            raise KernelError(
                f"kernel {label!r} is {what}: decorate it with @numba.njit(nogil=True) "
                "so threads run it in parallel, or pass allow_gil=True"
            )
        warnings.warn(
            f"kernel {label!r} is {what}; it holds the GIL, so threads will not scale",
            RuntimeWarning,
            stacklevel=3,
        )
    sig = inspect.signature(py_func or f)
    names = list(sig.parameters)
    if not names:
        raise KernelError(f"kernel {label!r} must take the block as its first argument")
    context, params, defaults = [], [], []
    for pname in names[1:]:
        p = sig.parameters[pname]
        if pname in CONTEXT_PARAMS:
            context.append(pname)
        elif p.default is inspect.Parameter.empty:
            raise KernelError(
                f"kernel {label!r}: argument {pname!r} needs a default "
                f"(only {', '.join(CONTEXT_PARAMS)} are filled in by rdask)"
            )
        else:
            params.append(pname)
            defaults.append((pname, p.default))
    if isinstance(halo, str) and halo not in params:
        raise KernelError(f"kernel {label!r}: halo names unknown argument {halo!r}")
    return Kernel(
        name=label,
        func=f,
        dtype=None if dtype is None else np.dtype(dtype),
        bands=bands,
        halo=halo,
        nodata=nodata,
        params=tuple(params),
        defaults=tuple(defaults),
        context=tuple(context),
        keeps_bands=(bands is None) if keeps_bands is None else bool(keeps_bands),
        doc=inspect.getdoc(py_func or f) or "",
        token=f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', label)}",
    )


def _coerce(kname: str, key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default`` (CLI values arrive as str)."""
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
    except (TypeError, ValueError):
        raise KernelError(
            f"kernel {kname!r}: argument {key}={value!r} is not a valid {kind.__name__}"
        ) from None
    return value
