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

Besides running a kernel, a :class:`Kernel` answers what the pipeline asks
before any work: the halo, the output dtype and band count (declared, or
probed on a tiny block for an undeclared function), whether it takes the
input's dtype (:meth:`Kernel.check_input`) and which input band each output
band comes from (:meth:`Kernel.band_sources`), so band metadata can follow.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from rdask.errors import KernelError, KernelOutputError
from rdask.kernels import checks

#: Parameters the pipeline fills in from the raster, never from the user.
CONTEXT_PARAMS = ("nodata", "xres", "yres")

#: Output nodata that copies the input's nodata.
INPUT_NODATA = "input"

#: ``bands_from`` values: output band ``i`` is input band ``i``, or the
#: input's bands in reverse order.
SAME_BANDS = "same"
REVERSED_BANDS = "reversed"

#: A ``bands_from`` callable: ``(in_bands, **args) -> input band per output band``.
BandsFrom = Callable[..., Sequence[int]]


@dataclass(frozen=True)
class Kernel:
    """A kernel function with its declared output and neighbourhood.

    Build one with :func:`kernel` (declared) or :func:`rdask.kernels.as_kernel`
    (which also takes an undeclared numba function) rather than directly.  A
    *probed* kernel declares nothing about its output: like dask's
    ``map_blocks`` it is called once per input dtype, band count and
    arguments on a tiny block, and its output dtype and band count are read
    off the result.
    """

    name: str
    func: Callable[..., np.ndarray] = field(repr=False, compare=False)
    dtype: np.dtype | Callable[..., Any] | None = field(compare=False)
    bands: int | Callable[..., int] | None = field(compare=False)
    halo: int | str
    nodata: float | str | Callable[..., float | None] | None = field(compare=False)
    params: tuple[str, ...]
    defaults: tuple[tuple[str, Any], ...]
    context: tuple[str, ...]
    keeps_bands: bool
    doc: str = field(default="", repr=False, compare=False)
    token: str = ""
    bands_from: str | BandsFrom | None = field(default=None, compare=False)
    accepts: str | tuple[np.dtype, ...] | None = None
    probed: bool = False
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()
    dispatches: bool = False
    aliases: tuple[tuple[str, str], ...] = ()
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = field(
        default=None, repr=False, compare=False
    )
    # Probe results by (what, dtype, bands, args); shared by copies of the
    # kernel in one process and carried along when it is pickled.
    memo: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __reduce_ex__(self, protocol: int) -> Any:
        # numba pickles a dispatcher as its Python function and rebuilds a
        # new dispatcher without the on-disk cache, so every worker process
        # would compile the kernel from scratch (~4 s for reverse-bands).
        # A kernel from an importable module travels as a reference instead:
        # the worker imports the module and gets its cached dispatcher.
        where = _module_ref(self.func)
        if where is None:
            return super().__reduce_ex__(protocol)
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.init and f.name != "func"}
        return (_rebuild_kernel, (*where, state, dict(self.memo)))

    def __dask_tokenize__(self) -> tuple:
        # Equal kernels must give equal graph keys; the function object itself
        # is not deterministic to hash, its qualified name is.
        return ("rdask.Kernel", self.name, self.token, _describe(self.dtype), self.halo,
                self.defaults)

    # -- arguments ---------------------------------------------------------
    def resolve_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Merge user arguments over the defaults, coercing CLI strings.

        Raises
        ------
        KernelError
            For an unknown argument or a value of the wrong type.
        """
        defaults = dict(self.defaults)
        if self.aliases:
            names = dict(self.aliases)
            args = {names.get(k, k): v for k, v in args.items()}
        unknown = sorted(set(args) - set(defaults))
        if unknown:
            known = ", ".join(defaults) or "none"
            raise KernelError(
                f"kernel {self.name!r} has no argument {unknown[0]!r} (arguments: {known})"
            )
        out = dict(defaults)
        for key, value in args.items():
            out[key] = _coerce(self.name, key, value, defaults[key])
        for key, allowed in self.choices:
            if out[key] not in allowed:
                raise KernelError(
                    f"kernel {self.name!r}: {key}={out[key]!r} is not one of {'|'.join(allowed)}"
                )
        if self.prepare is not None:
            try:
                out = self.prepare(out)
            except (TypeError, ValueError, OSError) as exc:
                if isinstance(exc, KernelError):
                    raise
                raise KernelError(f"kernel {self.name!r}: {exc}") from None
        return out

    def halo_for(self, args: Mapping[str, Any]) -> int:
        """Halo depth in pixels for resolved ``args``."""
        halo = int(args[self.halo]) if isinstance(self.halo, str) else int(self.halo)
        if halo < 0:
            raise KernelError(f"kernel {self.name!r}: halo must be >= 0, got {halo}")
        return halo

    # -- output ------------------------------------------------------------
    def out_bands(
        self, in_bands: int, args: Mapping[str, Any], in_dtype: Any = None
    ) -> int:
        """Number of output bands for ``in_bands`` input bands.

        ``in_dtype`` is needed by probed kernels only (their band count is
        found by running them on a block of that dtype).
        """
        if self.probed:
            return self._probe(in_dtype, in_bands, args, "out_bands")[1]
        if self.bands is None:
            return in_bands
        if callable(self.bands):
            return int(self.bands(in_bands, **args))
        return int(self.bands)

    def out_dtype(
        self,
        in_dtype: Any,
        in_bands: int | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> np.dtype:
        """Output dtype for an input of ``in_dtype``.

        ``in_bands`` (and ``args``, defaults if omitted) are needed by probed
        kernels only.
        """
        if self.probed:
            return self._probe(in_dtype, in_bands, args or {}, "out_dtype")[0]
        if callable(self.dtype):
            return np.dtype(self.dtype(np.dtype(in_dtype), **self.resolve_args(args or {})))
        return np.dtype(in_dtype) if self.dtype is None else self.dtype

    def out_nodata(
        self, in_nodata: float | None, args: Mapping[str, Any] | None = None,
        in_dtype: Any = None,
    ) -> float | None:
        """Nodata value of the output, given the input's (and the arguments
        and input dtype, for kernels whose nodata depends on them, such as
        ``calc``)."""
        if isinstance(self.nodata, str) and self.nodata == INPUT_NODATA:
            return in_nodata
        if callable(self.nodata):
            dtype = None if in_dtype is None else np.dtype(in_dtype)
            return self.nodata(in_nodata, dtype, **self.resolve_args(args or {}))
        return self.nodata

    def band_sources(self, in_bands: int, args: Mapping[str, Any]) -> tuple[int, ...] | None:
        """The input band each output band comes from, or None for new bands.

        Band metadata (description, scale, offset, unit, colour
        interpretation, band tags) may follow these indices; a chain's
        provenance is :func:`compose_band_sources` of its steps'.

        Parameters
        ----------
        in_bands
            Number of input bands.
        args
            Kernel arguments (resolved, or a subset of them).

        Returns
        -------
        tuple of int or None
            0-based input band per output band; None when the output bands
            are new quantities (``slope``, ``ndvi``) or undeclared (a probed
            kernel).

        Raises
        ------
        KernelError
            If a ``bands_from`` callable gives indices out of range or a
            count other than :meth:`out_bands`.
        """
        if self.bands_from == REVERSED_BANDS:
            return tuple(range(in_bands - 1, -1, -1))
        if callable(self.bands_from):
            return self._declared_sources(in_bands, self.resolve_args(args))
        if self.bands_from == SAME_BANDS or (self.keeps_bands and not self.probed):
            # Like the pipeline, keeps_bands holds only while the count does.
            same = self.out_bands(in_bands, self.resolve_args(args)) == in_bands
            return tuple(range(in_bands)) if same else None
        return None

    def _declared_sources(self, in_bands: int, args: dict[str, Any]) -> tuple[int, ...]:
        """Validated result of the ``bands_from`` callable."""
        try:
            sources = tuple(int(i) for i in self.bands_from(in_bands, **args))
        except (TypeError, ValueError) as exc:
            raise KernelError(
                f"kernel {self.name!r}: bands_from must give band indices: {_one_line(exc)}"
            ) from exc
        want = self.out_bands(in_bands, args)
        if len(sources) != want or any(not 0 <= i < in_bands for i in sources):
            raise KernelError(
                f"kernel {self.name!r}: bands_from gave {list(sources)} for {in_bands} input "
                f"bands; expected {want} indices in 0..{in_bands - 1}"
            )
        return sources

    # -- input -------------------------------------------------------------
    def check_input(self, dtype: Any, bands: int) -> None:
        """Refuse an input the kernel cannot take, before any work.

        A declared ``accepts`` policy is applied as is.  Otherwise a numba
        kernel is compiled for ``dtype`` by calling it once on a tiny block
        (cached per dtype and band count); a typing failure becomes the
        refusal.  A probed kernel must also run on that block, since its
        output is read off the result.

        Parameters
        ----------
        dtype
            Input dtype.
        bands
            Number of input bands.

        Raises
        ------
        KernelError
            One line naming the kernel and the dtype, e.g. ``kernel 'slope'
            cannot take complex64 input (it needs real numbers)``.
        """
        dtype = np.dtype(dtype)
        self._check_policy(dtype)
        if int(bands) < 1:
            raise KernelError(f"kernel {self.name!r} needs at least one input band, got {bands}")
        if self.probed:
            self._probe(dtype, bands, {}, "check_input")
        elif self.accepts is None and _is_numba(self.func):
            found = self._cached(("input", dtype.str, int(bands)), self._compiles, dtype, bands)
            if isinstance(found, str):
                raise KernelError(found)

    def _check_policy(self, dtype: np.dtype) -> None:
        why = checks.refusal(dtype, self.accepts, self.dispatches or _is_numba(self.func))
        if why is not None:
            raise KernelError(self._refused(dtype, why))

    def _refused(self, dtype: np.dtype, why: str) -> str:
        return f"kernel {self.name!r} cannot take {dtype} input ({why})"

    def _compiles(self, dtype: np.dtype, bands: int) -> str | None:
        """None if the kernel compiles for ``dtype``, else the refusal.

        Errors other than numba's (say a band number out of range for the
        probe's band count) are left for the real run to report.
        """
        try:
            self.func(checks.probe_block(dtype, bands), **self._kwargs(self.resolve_args({})))
        except Exception as exc:  # noqa: BLE001 - only compile failures matter here
            why = checks.compile_failure(exc)
            return None if why is None else self._refused(dtype, why)
        return None

    # -- probing -----------------------------------------------------------
    def _probe(
        self, dtype: Any, bands: int | None, args: Mapping[str, Any], caller: str
    ) -> tuple[np.dtype, int]:
        """Output ``(dtype, bands)`` of a probed kernel for this input."""
        if dtype is None or bands is None:
            raise KernelError(
                f"kernel {self.name!r} declares no output, so {caller} needs the input dtype and "
                "band count: call out_dtype(in_dtype, in_bands, args) and "
                "out_bands(in_bands, args, in_dtype)"
            )
        dtype = np.dtype(dtype)
        self._check_policy(dtype)
        resolved = self.resolve_args(args)
        key = ("probe", dtype.str, int(bands), _frozen(resolved))
        found = self._cached(key, self._run_probe, dtype, int(bands), resolved)
        if isinstance(found, str):
            raise KernelError(found)
        return found

    def _run_probe(
        self, dtype: np.dtype, bands: int, args: dict[str, Any]
    ) -> tuple[np.dtype, int] | str:
        """Call the kernel on a probe block: its output, or a one-line error."""
        block = checks.probe_block(dtype, bands)
        try:
            out = self.func(block, **self._kwargs(args))
        except Exception as exc:  # noqa: BLE001 - reported in one line
            why = checks.compile_failure(exc)
            if why is not None:
                return self._refused(dtype, why)
            return (
                f"kernel {self.name!r} failed on the {block.shape} {dtype} block rdask runs to "
                f"learn its output dtype and band count ({_one_line(exc)[:100]}); declare them "
                "with rdask.kernel(dtype=..., bands=...)"
            )
        if not isinstance(out, np.ndarray) or out.ndim != 3 or out.shape[1:] != block.shape[1:]:
            got = getattr(out, "shape", type(out).__name__)
            return (
                f"kernel {self.name!r} returned {got} for a {block.shape} block; expected a "
                f"numpy array (bands, {block.shape[1]}, {block.shape[2]})"
            )
        return out.dtype, out.shape[0]

    def _cached(self, key: tuple | None, compute: Callable[..., Any], *how: Any) -> Any:
        if key is None:  # unhashable arguments: probe every time
            return compute(*how)
        if key not in self.memo:
            self.memo[key] = compute(*how)
        return self.memo[key]

    # -- running -----------------------------------------------------------
    def _kwargs(
        self,
        args: Mapping[str, Any],
        nodata: float | None = None,
        xres: float = 1.0,
        yres: float = 1.0,
    ) -> dict[str, Any]:
        """Keyword arguments of ``func``: the context it asks for, then ``args``."""
        ctx = {
            "nodata": math.nan if nodata is None else float(nodata),
            "xres": float(xres),
            "yres": float(yres),
        }
        kwargs = {k: ctx[k] for k in self.context}
        kwargs.update(args)
        return kwargs

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
        self._check_policy(block.dtype)
        try:
            out = self.func(block, **self._kwargs(resolved, nodata, xres, yres))
        except Exception as exc:  # noqa: BLE001 - re-raised with the window named
            why = checks.compile_failure(exc)
            if why is not None:
                raise KernelError(self._refused(block.dtype, why)) from exc
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
        nb = block.shape[0]
        want_shape = (self.out_bands(nb, args, block.dtype), *block.shape[1:])
        if out.shape != want_shape:
            raise KernelOutputError(
                f"kernel {self.name!r} returned shape {out.shape}{at}, expected {want_shape}"
            )
        want_dtype = self.out_dtype(block.dtype, nb, args)
        if out.dtype != want_dtype:
            raise KernelOutputError(
                f"kernel {self.name!r} returned dtype {out.dtype}{at}, expected {want_dtype}"
            )


def compose_band_sources(
    first: tuple[int, ...] | None, then: tuple[int, ...] | None
) -> tuple[int, ...] | None:
    """Band provenance of two kernels in a row.

    Parameters
    ----------
    first, then
        :meth:`Kernel.band_sources` of the first kernel (for the chain's
        input) and of the next one (for the first one's output).

    Returns
    -------
    tuple of int or None
        The chain's input band per output band; None if either makes new
        bands.  ``reverse-bands`` twice gives the identity.
    """
    if first is None or then is None:
        return None
    return tuple(first[i] for i in then)


def _describe(value: Any) -> str:
    """A deterministic text for a declaration (a callable by its qualified name)."""
    if callable(value) and not isinstance(value, np.dtype):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
    return str(value)


def _is_numba(func: Callable) -> bool:
    return getattr(func, "py_func", None) is not None


def _frozen(args: Mapping[str, Any]) -> tuple | None:
    """``args`` as a hashable memo key, or None when a value is unhashable."""
    key = tuple(sorted(args.items()))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


def _rebuild_kernel(
    module_name: str, attr: str, state: dict[str, Any], memo: dict | None = None
) -> Kernel:
    obj = getattr(importlib.import_module(module_name), attr)
    out = Kernel(func=obj.func if isinstance(obj, Kernel) else obj, **state)
    out.memo.update(memo or {})  # the probes need not run again on a worker
    return out


def kernel(
    func: Callable | None = None,
    *,
    name: str | None = None,
    dtype: Any = None,
    bands: int | Callable[..., int] | None = None,
    halo: int | str = 0,
    nodata: float | str | None = INPUT_NODATA,
    keeps_bands: bool | None = None,
    bands_from: str | BandsFrom | None = None,
    accepts: str | Sequence[Any] | None = None,
    allow_gil: bool = False,
    choices: Mapping[str, Sequence[str]] | None = None,
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    dispatches: bool = False,
    aliases: Mapping[str, str] | None = None,
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
        Output dtype; ``None`` keeps the input dtype; or a callable
        ``(in_dtype, **args) -> dtype``.
    bands
        Output band count: ``None`` keeps the input's, an int, or a callable
        ``(in_bands, **args) -> int``.
    halo
        Neighbourhood depth in pixels, or the name of an int argument that
        gives it (e.g. ``"radius"``).
    nodata
        Output nodata: a number, ``None`` for none, ``"input"`` to keep
        the input's, or a callable ``(in_nodata, in_dtype, **args) -> number
        or None``.
    keeps_bands
        Whether output band ``i`` describes input band ``i`` (so band
        descriptions and the mask carry over). Defaults to ``bands is None``,
        or to ``bands_from == "same"`` when that is given.
    bands_from
        Which input band each output band comes from, so its metadata
        (description, scale, offset, unit, colour interpretation, band tags)
        can follow it: ``"same"`` (output band ``i`` is input band ``i``),
        ``"reversed"`` (the input's bands in reverse order), or a callable
        ``(in_bands, **args) -> sequence of 0-based input band indices``,
        one per output band.  Omitted: ``"same"`` if ``keeps_bands``, else
        the output bands are new (see :meth:`Kernel.band_sources`).
    accepts
        Input dtypes the kernel takes: ``"real"`` (bool, integers and
        floats; complex input is refused), ``"any"`` (complex too), or a
        sequence of dtypes.  ``None`` (the default): whatever numba can
        compile it for, found by :meth:`Kernel.check_input` compiling it on
        a tiny block of the input's dtype.
    allow_gil
        Accept a plain Python function or a numba function without
        ``nogil``; a warning says threads will not scale.
    choices
        For string arguments, the values each may take
        (``{"stat": ("min", "max")}``); anything else is refused before any
        work, and ``rdask kernels`` lists them.
    prepare
        Called with the resolved arguments (after ``choices``), returns them
        checked and normalised (say, a parsed expression or a colour file
        read into a table); its ``ValueError``, ``TypeError`` or ``OSError``
        becomes a one-line :class:`KernelError` before any work.  It must
        accept its own output again.
    dispatches
        ``func`` is a plain Python function that only picks, per block, the
        numba ``nogil`` function doing the work (one specialised per
        argument or dtype) and calls it: it holds the GIL for microseconds
        per block, so it is accepted without ``allow_gil``.
    aliases
        Other names users may give an argument by, ``{"nodata": "out_nodata"}``
        (``nodata`` itself is the input's, filled in by rdask).

    Returns
    -------
    Kernel, or a decorator making one when ``func`` is omitted.

    Raises
    ------
    KernelError
        For a function holding the GIL (without ``allow_gil``), an argument
        without a default, or contradictory declarations.

    Examples
    --------
    >>> @rdask.kernel(dtype="float32", halo="radius", nodata=float("nan"))
    ... @numba.njit(nogil=True)
    ... def my_mean(block, nodata, radius=1): ...

    >>> @rdask.kernel(bands=2, bands_from=lambda n, first=1: (first - 1, n - 1))
    ... @numba.njit(nogil=True)
    ... def first_and_last(block, first=1): ...
    """

    def wrap(f: Callable) -> Kernel:
        label = _label(f, name)
        if not dispatches:
            _check_gil(f, label, allow_gil, "pass allow_gil=True")
        keeps, source = _provenance(label, bands, keeps_bands, bands_from)
        try:
            policy = checks.normalize_accepts(accepts)
        except (TypeError, ValueError) as exc:
            raise KernelError(f"kernel {label!r}: {_one_line(exc)}") from exc
        out_dtype = dtype if dtype is None or callable(dtype) else np.dtype(dtype)
        return _build(
            f, label, dtype=out_dtype, bands=bands, halo=halo, nodata=nodata, keeps_bands=keeps,
            bands_from=source, accepts=policy, prepare=prepare, dispatches=dispatches,
            choices=tuple((k, tuple(v)) for k, v in (choices or {}).items()),
            aliases=tuple((aliases or {}).items()),
        )

    return wrap if func is None else wrap(func)


def probed_kernel(func: Callable, *, allow_gil: bool = False) -> Kernel:
    """Make a kernel of an undeclared function, the way dask's ``map_blocks`` does.

    Halo 0, the input's nodata, no band provenance; the output dtype and
    band count are found by calling ``func`` on a tiny block of the input's
    dtype and band count (see :class:`Kernel`).

    Raises
    ------
    KernelError
        For a function holding the GIL (without ``allow_gil``) or an
        argument without a default.
    """
    label = _label(func, None)
    _check_gil(func, label, allow_gil, "wrap it with rdask.kernel(..., allow_gil=True)")
    return _build(
        func, label, dtype=None, bands=None, halo=0, nodata=INPUT_NODATA, keeps_bands=False,
        bands_from=None, accepts=None, probed=True,
    )


def _label(f: Callable, name: str | None) -> str:
    return name or getattr(f, "__name__", "kernel").replace("_", "-")


def _check_gil(f: Callable, label: str, allow_gil: bool, hint: str) -> None:
    """Refuse (or, with ``allow_gil``, warn about) a function that holds the GIL."""
    py_func = getattr(f, "py_func", None)
    nogil = bool(getattr(f, "targetoptions", {}).get("nogil", False))
    if py_func is not None and nogil:
        return
    what = "a plain Python function" if py_func is None else "compiled without nogil=True"
    if not allow_gil:
        raise KernelError(
            f"kernel {label!r} is {what}: it would hold the GIL and run on one core; "
            f"decorate it with @numba.njit(nogil=True), or {hint}"
        )
    warnings.warn(
        f"kernel {label!r} is {what}; it holds the GIL, so threads will not scale",
        RuntimeWarning,
        stacklevel=4,
    )


def _provenance(
    label: str, bands: Any, keeps_bands: bool | None, bands_from: Any
) -> tuple[bool, str | BandsFrom | None]:
    """``keeps_bands`` and ``bands_from`` made consistent, or a KernelError."""
    if bands_from is None:
        return ((bands is None) if keeps_bands is None else bool(keeps_bands)), None
    named = isinstance(bands_from, str)
    if named and bands_from not in (SAME_BANDS, REVERSED_BANDS) or not (named or callable(bands_from)):
        raise KernelError(
            f"kernel {label!r}: bands_from must be {SAME_BANDS!r}, {REVERSED_BANDS!r} or a "
            f"callable (in_bands, **args) -> band indices, got {bands_from!r}"
        )
    if named and bands is not None:
        raise KernelError(
            f"kernel {label!r}: bands_from={bands_from!r} keeps the band count; leave bands unset"
        )
    same = bands_from == SAME_BANDS
    if keeps_bands is not None and bool(keeps_bands) != same:
        raise KernelError(
            f"kernel {label!r}: keeps_bands={keeps_bands} contradicts bands_from={bands_from!r}"
        )
    return same, bands_from


def _build(f: Callable, label: str, *, probed: bool = False, **declared: Any) -> Kernel:
    """The :class:`Kernel` of ``f``: its signature split into context and arguments."""
    py_func = getattr(f, "py_func", None)
    context, defaults = _parameters(label, inspect.signature(py_func or f))
    halo = declared["halo"]
    if isinstance(halo, str) and halo not in dict(defaults):
        raise KernelError(f"kernel {label!r}: halo names unknown argument {halo!r}")
    token = f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', label)}"
    return Kernel(
        name=label,
        func=f,
        params=tuple(p for p, _ in defaults),
        defaults=defaults,
        context=context,
        doc=inspect.getdoc(py_func or f) or "",
        # The same function declared and probed may differ in output, so
        # their dask keys must differ too.
        token=token + ":probed" if probed else token,
        probed=probed,
        **declared,
    )


def _parameters(
    label: str, sig: inspect.Signature
) -> tuple[tuple[str, ...], tuple[tuple[str, Any], ...]]:
    """Context parameters and ``(argument, default)`` pairs of a kernel's signature."""
    names = list(sig.parameters)
    if not names:
        raise KernelError(f"kernel {label!r} must take the block as its first argument")
    context, defaults = [], []
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
            defaults.append((pname, p.default))
    return tuple(context), tuple(defaults)


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
