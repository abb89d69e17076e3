"""``calc``: band math, as ``gdal_calc.py`` does it, compiled instead of evaluated.

``calc expr="(b2 - b1) / (b2 + b1)" dtype=float32`` computes an expression
over the bands ``b1, b2, ...`` (a stack's bands in input order) with numpy's
semantics (:mod:`rdask.kernels.exprparse` reads it against a whitelist,
:mod:`rdask.kernels.exprcompile` types it with numpy and compiles it to a
numba ``nogil`` loop).  As in ``gdal_calc.py``:

* the output dtype is the input's unless ``dtype=`` is given, and values
  are converted to it as GDAL writes them (rounded, clamped);
* a pixel is nodata where any band the expression reads is nodata (NaN
  counts as nodata too, as in every rdask kernel);
* the output nodata is ``gdal_calc.py``'s default for the output dtype
  (uint8 255, uint16 65535, int16 -32768, uint32 4294967293, int32
  -2147483647, float32 3.402823466e38, float64 1.7976931348623158e308;
  none for int8 and 64-bit integers, which GDAL 3.6 has no default for)
  unless ``nodata=`` is given; ``nodata=none`` writes no nodata and masks
  nothing.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from rdask.errors import KernelError
from rdask.kernels.exprcompile import check_types, compiled, evaluate
from rdask.kernels.exprparse import bands_read, parse
from rdask.kernels.spec import kernel

#: gdal_calc.py's DefaultNDVLookup, by numpy dtype.
DEFAULT_NODATA = {
    "uint8": 255.0, "uint16": 65535.0, "int16": -32768.0, "uint32": 4294967293.0,
    "int32": -2147483647.0, "float32": 3.402823466e38, "float64": 1.7976931348623158e308,
}  # fmt: skip

_GDAL_NAMES = {
    "byte": "uint8", "uint8": "uint8", "int8": "int8", "uint16": "uint16", "int16": "int16", "uint32": "uint32",
    "int32": "int32", "uint64": "uint64", "int64": "int64", "float32": "float32",
    "float64": "float64",
}  # fmt: skip


@functools.lru_cache(maxsize=256)
def _tree(expr: str) -> tuple:
    return parse(expr)


def _dtype_name(text: str) -> str:
    """A numpy dtype name from a numpy or GDAL spelling (``Float32``, ``Byte``)."""
    name = _GDAL_NAMES.get(text.strip().lower())
    if name is None:
        raise ValueError(
            f"dtype={text!r} is not one of " + ", ".join(sorted(set(_GDAL_NAMES.values())))
        )
    return name


def _nodata_text(text: Any) -> str:
    """``""`` (the dtype's default), ``"none"``, or a number as text."""
    if text is None:
        return ""
    text = str(text).strip()
    if text.lower() in ("", "none"):
        return text.lower()
    try:
        return repr(float(text))
    except ValueError:
        raise ValueError(f"nodata={text!r} is not a number or none") from None


def _prepare(args: dict[str, Any]) -> dict[str, Any]:
    _tree(args["expr"])  # refuses what the language does not have, before any work
    if args["dtype"]:
        args["dtype"] = _dtype_name(args["dtype"])
    args["out_nodata"] = _nodata_text(args["out_nodata"])
    return args


def _bands(in_bands: int, expr: str, **_: Any) -> int:
    highest = max(bands_read(_tree(expr)), default=-1) + 1
    if highest > in_bands:
        raise KernelError(
            f"kernel 'calc': expr reads b{highest} but the input has {in_bands} "
            f"band{'s' if in_bands > 1 else ''}"
        )
    return 1


def _out_dtype(in_dtype: np.dtype, expr: str, dtype: str, out_nodata: str) -> np.dtype:
    out = np.dtype(dtype) if dtype else np.dtype(in_dtype)
    tree = _tree(expr)
    try:
        check_types(tree, np.dtype(in_dtype))
        # Compile now, on a one-pixel block, so a failure is reported before any work.
        nb = max(bands_read(tree), default=0) + 1
        compiled(tree, np.dtype(in_dtype).str, out.str)
        evaluate(tree, np.ones((nb, 1, 1), dtype=in_dtype), float("nan"), out, None)
    except ValueError as exc:
        raise KernelError(f"kernel 'calc': {exc}") from None
    return out


def _out_nodata(in_nodata: float | None, in_dtype: Any, expr: str, dtype: str,
                out_nodata: str) -> float | None:
    if out_nodata == "none":
        return None
    if out_nodata:
        return float(out_nodata)
    name = dtype or (np.dtype(in_dtype).name if in_dtype is not None else "")
    return DEFAULT_NODATA.get(name)


@kernel(name="calc", dtype=_out_dtype, bands=_bands, nodata=_out_nodata, keeps_bands=False,
        accepts="real", prepare=_prepare, aliases={"nodata": "out_nodata"}, dispatches=True)
def calc(block: np.ndarray, nodata: float, expr: str = "", dtype: str = "",
         out_nodata: str = "") -> np.ndarray:
    """Band math with numpy semantics over b1, b2, ..., as gdal_calc.py computes it.

    Parameters
    ----------
    block
        ``(bands, y, x)`` array of any real dtype; band ``k`` is ``bk``.
    nodata
        Input nodata (NaN when none); filled in by rdask.
    expr
        The expression: numbers, ``b1, b2, ...``, ``+ - * / // % **``,
        comparisons, ``& | ^ ~``, ``where clip minimum maximum sqrt log log10
        log2 exp abs floor ceil round rint``, the trigonometric functions,
        ``pi e nan inf`` (see :mod:`rdask.kernels.exprparse`).
    dtype
        Output dtype (numpy or GDAL spelling); the input's by default.
    out_nodata
        Output nodata, given as ``nodata=`` (a number, or ``none``);
        ``gdal_calc.py``'s default for the output dtype by default.

    Returns
    -------
    numpy.ndarray
        ``(1, y, x)`` of the output dtype; nodata where a band the
        expression reads is nodata or NaN.
    """
    tree = _tree(expr)
    out = np.dtype(dtype) if dtype else block.dtype
    nd = _out_nodata(None, block.dtype, expr, dtype, out_nodata)
    return evaluate(tree, block, nodata, out, nd)
