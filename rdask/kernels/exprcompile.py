"""Parsed band-math expressions compiled to numba ``nogil`` kernels.

Typing: numpy decides.  Each node of the tree is applied, with numpy's own
function, to one-element arrays of the input dtype (numbers stay Python
numbers, so numpy treats them as it treats literals), which gives each
node's dtype and refuses, before any work, what numpy refuses
(``~`` of a float, ``b1 + 100000`` on int16 ...).  A subtree without bands
is folded to its numpy value.

Code: every node becomes a small numba function ``f(block, i, j)`` that
computes its value for one pixel in the dtype numpy computes in: operands
cast to the loop's dtype, the operation, the result cast to the node's
dtype, so integers wrap as in numpy and float32 stays float32 (float16,
which numba lacks, is computed in float32 and rounded to half precision
after each operation, as numpy's half loops do).  The nodes are composed
as closures, never as source text, and one driver loops over the block.
The result goes to the output dtype as GDAL writes it (``gdal_calc.py``
writes through GDAL): floats rounded half away from zero and clamped to an
integer dtype's range, NaN as 0; integers clamped.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

from rdask.kernels.bands import nodata_like

# -- typing -------------------------------------------------------------------

_NUMPY = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply,
    "true_divide": np.true_divide, "floor_divide": np.floor_divide,
    "remainder": np.remainder, "power": np.power, "bitwise_and": np.bitwise_and,
    "bitwise_or": np.bitwise_or, "bitwise_xor": np.bitwise_xor, "less": np.less,
    "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
    "equal": np.equal, "not_equal": np.not_equal, "negative": np.negative,
    "positive": np.positive, "invert": np.invert, "where": np.where, "clip": np.clip,
    "minimum": np.minimum, "maximum": np.maximum, "arctan2": np.arctan2, "hypot": np.hypot,
    "sqrt": np.sqrt, "log": np.log, "log10": np.log10, "log2": np.log2, "exp": np.exp,
    "abs": np.abs, "floor": np.floor, "ceil": np.ceil, "round": np.round, "rint": np.rint,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "arcsin": np.arcsin, "arccos": np.arccos,
    "arctan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "degrees": np.degrees, "radians": np.radians,
}  # fmt: skip
_COMPARISONS = ("less", "less_equal", "greater", "greater_equal", "equal", "not_equal")


def _sample(node: tuple, dtype: np.dtype) -> Any:
    """numpy's value of ``node`` on one-element band arrays (its dtype is the node's)."""
    kind = node[0]
    if kind == "band":
        return np.ones(1, dtype=dtype)
    if kind == "const":
        return node[1]
    args = [_sample(c, dtype) for c in node[2:]]
    with np.errstate(all="ignore"):
        return _NUMPY[node[1]](*args)


def check_types(node: tuple, dtype: np.dtype) -> np.dtype:
    """The dtype numpy gives ``node`` on bands of ``dtype``, or ValueError."""
    try:
        out = _sample(node, dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        text = " ".join(str(exc).split())
        raise ValueError(f"expr cannot be computed on {dtype} bands: {text}") from None
    return np.asarray(out).dtype


# -- one-pixel numba functions -------------------------------------------------


@njit(nogil=True, cache=True)
def _half(x):
    """float32 ``x`` rounded to float16 precision (nearest, ties to even)."""
    v = np.float64(x)
    a = abs(v)
    if a != a or a == math.inf:
        return np.float32(v)
    if a >= 65520.0:
        return np.float32(math.copysign(math.inf, v))
    if a < 6.103515625e-05:
        q = 5.960464477539063e-08  # subnormal halves: steps of 2**-24
    else:
        q = 2.0 ** (math.floor(math.log2(a)) - 10)
    y = a / q
    f = math.floor(y)
    d = y - f
    if d > 0.5 or (d == 0.5 and f % 2 == 1):
        f += 1.0
    return np.float32(math.copysign(f * q, v))


def _caster(dtype: np.dtype) -> Callable:
    """A numba-callable conversion to ``dtype`` (float16: float32 rounded)."""
    if dtype == np.float16:
        return _to_half
    return dtype.type


@njit(nogil=True, cache=True, inline="always")
def _to_half(x):
    return _half(np.float32(x))


def _leaf_band(k: int) -> Callable:
    @njit(nogil=True)
    def f(block, i, j):
        return block[k, i, j]

    return f


def _leaf_const(value: Any) -> Callable:
    @njit(nogil=True)
    def f(block, i, j):
        return value

    return f


def _unary(op: Callable, fa: Callable, loop: Callable, cast: Callable) -> Callable:
    @njit(nogil=True, error_model="numpy")
    def f(block, i, j):
        return cast(op(loop(fa(block, i, j))))

    return f


def _binary(op: Callable, fa: Callable, fb: Callable, loop: Callable, cast: Callable) -> Callable:
    @njit(nogil=True, error_model="numpy")
    def f(block, i, j):
        return cast(op(loop(fa(block, i, j)), loop(fb(block, i, j))))

    return f


def _ternary(op: Callable, fa: Callable, fb: Callable, fc: Callable, loops: tuple,
             cast: Callable) -> Callable:
    la, lb, lc = loops

    @njit(nogil=True, error_model="numpy")
    def f(block, i, j):
        return cast(op(la(fa(block, i, j)), lb(fb(block, i, j)), lc(fc(block, i, j))))

    return f


# -- the operations, per loop dtype -------------------------------------------

_J = {"nogil": True, "cache": True, "inline": "always", "error_model": "numpy"}


@njit(**_J)
def _add(a, b):
    return a + b


@njit(**_J)
def _sub(a, b):
    return a - b


@njit(**_J)
def _mul(a, b):
    return a * b


@njit(**_J)
def _div(a, b):
    return a / b


@njit(**_J)
def _idiv(a, b):
    # numpy: an integer divided by zero is 0
    return a // b if b != 0 else a - a


@njit(**_J)
def _imod(a, b):
    return a % b if b != 0 else a - a


@njit(**_J)
def _fdiv(a, b):
    return a // b


@njit(**_J)
def _fmod(a, b):
    return a % b


@njit(**_J)
def _fpow(a, b):
    return a**b


@njit(nogil=True, cache=True)
def _ipow(a, b):
    if b < 0:
        raise ValueError("Integers to negative integer powers are not allowed.")
    result = a - a + 1
    base = a
    while b > 0:
        if b & 1:
            result = result * base
        base = base * base
        b >>= 1
    return result


@njit(**_J)
def _and(a, b):
    return a & b


@njit(**_J)
def _or(a, b):
    return a | b


@njit(**_J)
def _xor(a, b):
    return a ^ b


@njit(**_J)
def _lt(a, b):
    return a < b


@njit(**_J)
def _le(a, b):
    return a <= b


@njit(**_J)
def _gt(a, b):
    return a > b


@njit(**_J)
def _ge(a, b):
    return a >= b


@njit(**_J)
def _eq(a, b):
    return a == b


@njit(**_J)
def _ne(a, b):
    return a != b


@njit(**_J)
def _neg(a):
    return -a


@njit(**_J)
def _pos(a):
    return a


@njit(**_J)
def _inv(a):
    return ~a


@njit(**_J)
def _not(a):
    return not a


@njit(**_J)
def _min(a, b):
    if a != a:
        return a
    if b != b:
        return b
    return a if a <= b else b


@njit(**_J)
def _max(a, b):
    if a != a:
        return a
    if b != b:
        return b
    return a if a >= b else b


@njit(**_J)
def _clip(a, lo, hi):
    return _min(_max(a, lo), hi)


@njit(**_J)
def _where(c, a, b):
    return a if c else b


@njit(**_J)
def _abs(a):
    return np.abs(a)


@njit(**_J)
def _round(a):
    # numpy rounds halves to even
    r = math.floor(a + 0.5)
    if r - a == 0.5 and r % 2 != 0:
        r -= 1.0
    return r if a == a and abs(a) != math.inf else a


@njit(**_J)
def _floor(a):
    return np.floor(a)


@njit(**_J)
def _ceil(a):
    return np.ceil(a)


_FLOAT_FUNCS = {
    "sqrt": njit(**_J)(lambda a: np.sqrt(a)), "log": njit(**_J)(lambda a: np.log(a)),
    "log10": njit(**_J)(lambda a: np.log10(a)), "log2": njit(**_J)(lambda a: np.log2(a)),
    "exp": njit(**_J)(lambda a: np.exp(a)), "sin": njit(**_J)(lambda a: np.sin(a)),
    "cos": njit(**_J)(lambda a: np.cos(a)), "tan": njit(**_J)(lambda a: np.tan(a)),
    "arcsin": njit(**_J)(lambda a: np.arcsin(a)), "arccos": njit(**_J)(lambda a: np.arccos(a)),
    "arctan": njit(**_J)(lambda a: np.arctan(a)), "sinh": njit(**_J)(lambda a: np.sinh(a)),
    "cosh": njit(**_J)(lambda a: np.cosh(a)), "tanh": njit(**_J)(lambda a: np.tanh(a)),
    "degrees": njit(**_J)(lambda a: np.degrees(a)),
    "radians": njit(**_J)(lambda a: np.radians(a)),
    "arctan2": njit(**_J)(lambda a, b: np.arctan2(a, b)),
    "hypot": njit(**_J)(lambda a, b: np.hypot(a, b)),
}  # fmt: skip

_SIMPLE = {
    "add": _add, "subtract": _sub, "multiply": _mul, "true_divide": _div,
    "bitwise_and": _and, "bitwise_or": _or, "bitwise_xor": _xor, "less": _lt,
    "less_equal": _le, "greater": _gt, "greater_equal": _ge, "equal": _eq,
    "not_equal": _ne, "negative": _neg, "positive": _pos, "minimum": _min,
    "maximum": _max, "clip": _clip, "abs": _abs, "where": _where,
}  # fmt: skip


def _operation(name: str, loop: np.dtype) -> Callable:
    """The numba function of ``name`` for operands of dtype ``loop``."""
    integer = loop.kind in "iub"
    if name == "floor_divide":
        return _idiv if integer else _fdiv
    if name == "remainder":
        return _imod if integer else _fmod
    if name == "power":
        return _ipow if integer else _fpow
    if name == "invert":
        return _not if loop.kind == "b" else _inv
    if name in ("floor", "ceil", "round", "rint"):
        if integer:
            return _pos
        return {"floor": _floor, "ceil": _ceil}.get(name, _round)
    if name in _FLOAT_FUNCS:
        return _FLOAT_FUNCS[name]
    return _SIMPLE[name]


# -- compiling a tree ---------------------------------------------------------


def _compile_node(node: tuple, dtype: np.dtype) -> tuple[Callable, np.dtype]:
    """The one-pixel function of ``node`` and its dtype."""
    kind = node[0]
    if kind == "band":
        return _leaf_band(node[1]), dtype
    sample = _sample(node, dtype)
    if kind == "const" or not isinstance(sample, np.ndarray):
        # No band below: numpy's own value, folded.
        value = sample
        vdtype = np.asarray(value).dtype
        store = np.float32(value) if vdtype == np.float16 else vdtype.type(value)
        return _leaf_const(store), vdtype
    out = sample.dtype
    children = [_compile_node(c, dtype) for c in node[2:]]
    samples = [_sample(c, dtype) for c in node[2:]]
    name = node[1]
    if name == "where":
        loops = (np.dtype(bool), out, out)
    elif name in _COMPARISONS:
        common = np.result_type(*samples)
        loops = (common, common)
    else:
        loops = (out,) * len(children)
    if name in ("floor", "ceil", "round", "rint", "sqrt", "log", "log10", "log2", "exp",
                "abs") or name in _FLOAT_FUNCS:
        loops = (out,) * len(children)
    casters = [_caster(loop) for loop in loops]
    op = _operation(name, loops[-1] if name != "where" else out)
    fns = [f for f, _ in children]
    cast = _caster(out)
    if len(fns) == 1:
        return _unary(op, fns[0], casters[0], cast), out
    if len(fns) == 2:
        if casters[0] is not casters[1]:
            raise AssertionError("binary operands share one loop dtype")
        return _binary(op, fns[0], fns[1], casters[0], cast), out
    return _ternary(op, *fns, tuple(casters), cast), out


def _gdal_converter(src: np.dtype, dst: np.dtype) -> Callable:
    """GDAL's ``GDALCopyWord`` from ``src`` to ``dst`` as a numba function."""
    to = dst.type
    if dst.kind == "f":
        if dst == np.float32 and src == np.float64:
            big = np.float64(np.finfo(np.float32).max)

            @njit(nogil=True, inline="always")
            def conv(v):
                if v > big:
                    return np.float32(np.inf)
                if v < -big:
                    return np.float32(-np.inf)
                return np.float32(v)

            return conv
        return njit(nogil=True, inline="always")(lambda v: to(v))
    info = np.iinfo(dst)
    lo, hi = info.min, info.max
    if src.kind == "b":
        return njit(nogil=True, inline="always")(lambda v: to(1 if v else 0))
    if src.kind in "iu":
        # Integers: clamped to the range (compared as floats when the two
        # dtypes share no integer type).
        flo, fhi = float(lo), float(hi)

        @njit(nogil=True, inline="always")
        def conv_int(v):
            if v < flo:
                return to(lo)
            if v > fhi:
                return to(hi)
            return to(v)

        return conv_int
    half = np.float32(0.5) if src.itemsize <= 4 else np.float64(0.5)
    flo, fhi = float(lo), float(hi)
    signed = dst.kind == "i"

    @njit(nogil=True, inline="always")
    def conv_float(v):
        if v != v:
            return to(0)
        r = v - half if signed and v < 0 else v + half
        if r >= fhi:
            return to(hi)
        if r <= flo:
            return to(lo)
        return to(r)

    return conv_float


@functools.lru_cache(maxsize=256)
def compiled(tree: tuple, in_dtype: str, out_dtype: str) -> Callable:
    """The numba driver for ``tree`` on ``in_dtype`` bands giving ``out_dtype``:
    ``run(block, ndv, mask, out_nodata, out)`` (cached per process)."""
    from rdask.kernels.exprparse import bands_read

    dtype, out_dt = np.dtype(in_dtype), np.dtype(out_dtype)
    pixel, res = _compile_node(tree, dtype)
    conv = _gdal_converter(np.dtype(np.float32) if res == np.float16 else res, out_dt)
    used = np.array(sorted(bands_read(tree)), dtype=np.int64)

    @njit(nogil=True, error_model="numpy")
    def run(block, ndv, mask, out_nodata, out):
        ny, nx = block.shape[1], block.shape[2]
        for i in range(ny):
            for j in range(nx):
                bad = False
                if mask:
                    for k in used:
                        v = block[k, i, j]
                        if v != v or v == ndv:
                            bad = True
                if bad:
                    out[0, i, j] = out_nodata
                else:
                    out[0, i, j] = conv(pixel(block, i, j))

    return run


def evaluate(tree: tuple, block: np.ndarray, nodata: float, out_dtype: np.dtype,
             out_nodata: float | None) -> np.ndarray:
    """Run ``tree`` over ``block`` into a new ``(1, y, x)`` array of ``out_dtype``."""
    run = compiled(tree, block.dtype.str, np.dtype(out_dtype).str)
    out = np.empty((1, *block.shape[1:]), dtype=out_dtype)
    mask = out_nodata is not None
    fill = out_dtype.type(out_nodata) if mask else out_dtype.type(0)
    run(block, nodata_like(block, float(nodata)), mask, fill, out)
    return out
