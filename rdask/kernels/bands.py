"""Band-wise kernels: band reordering and normalized differences.

Also home of the nodata test the other built-in kernels share, so that every
kernel decides "is this pixel nodata?" the same way: a value is nodata when it
is NaN or equals the input nodata rounded to the block's dtype (a float32
raster stores its nodata as a float32, so ``0.1`` must be compared as
``float32(0.1)``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from rdask.kernels.spec import kernel


@njit(nogil=True, cache=True)
def nodata_like(block: np.ndarray, nodata: float) -> float:
    """Return ``nodata`` as it compares with values of ``block``.

    For float blocks the nodata is rounded to the block's dtype; for integer
    blocks it is returned unchanged, so a fractional or out-of-range nodata
    matches no value.  NaN (no nodata) stays NaN.
    """
    probe = np.empty(1, dtype=block.dtype)
    probe[0] = 0.5
    if probe[0] != 0.5:  # integer dtype: compare exactly in float64
        return nodata
    probe[0] = nodata
    return np.float64(probe[0])


@njit(nogil=True, cache=True, inline="always")
def is_nodata(value: float, nodata: float) -> bool:
    """True when ``value`` is NaN or equals ``nodata`` (from :func:`nodata_like`)."""
    return value != value or value == nodata


# -- reverse-bands ----------------------------------------------------------

# Pixels processed together by the synthetic-work loop.  Each value still gets
# its own sequence of ``iterations`` additions (so the result is exactly the
# one-value-at-a-time result), but interleaving independent values keeps the
# FPU pipeline full instead of waiting on one long dependency chain.
_LANES = 8


@njit(nogil=True, cache=True)
def _busy_lanes(src: np.ndarray, dst: np.ndarray, start: int, iterations: int) -> None:
    v0 = np.float64(src[start])
    v1 = np.float64(src[start + 1])
    v2 = np.float64(src[start + 2])
    v3 = np.float64(src[start + 3])
    v4 = np.float64(src[start + 4])
    v5 = np.float64(src[start + 5])
    v6 = np.float64(src[start + 6])
    v7 = np.float64(src[start + 7])
    for _ in range(iterations):
        v0 += 1.0
        v1 += 1.0
        v2 += 1.0
        v3 += 1.0
        v4 += 1.0
        v5 += 1.0
        v6 += 1.0
        v7 += 1.0
    n = np.float64(iterations)
    dst[start] = v0 - n
    dst[start + 1] = v1 - n
    dst[start + 2] = v2 - n
    dst[start + 3] = v3 - n
    dst[start + 4] = v4 - n
    dst[start + 5] = v5 - n
    dst[start + 6] = v6 - n
    dst[start + 7] = v7 - n


@njit(nogil=True, cache=True)
def _busy_copy(src: np.ndarray, dst: np.ndarray, iterations: int) -> None:
    size = src.size
    body = size - size % _LANES
    for start in range(0, body, _LANES):
        _busy_lanes(src, dst, start, iterations)
    for k in range(body, size):
        val = np.float64(src[k])
        for _ in range(iterations):
            val += 1.0
        dst[k] = val - np.float64(iterations)


def _work_view(values: np.ndarray) -> np.ndarray:
    """The 1-D contiguous ``values`` as numbers that float64 holds exactly.

    The synthetic work goes through float64, which cannot hold a complex
    value, nor every 64-bit integer (above 2**53 it would round them), so
    those run it on their parts: a complex array as its real and imaginary
    floats, a 64-bit integer array as its 32-bit halves.  Any other dtype is
    returned as it is.  Compiled per dtype by :func:`_work_view_for`.
    """
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_work_view)
def _work_view_for(values):
    # Runs at compile time on numba types: picks the view for this dtype.
    kind = values.dtype
    if isinstance(kind, types.Complex):
        part = as_dtype(kind.underlying_float)
    elif isinstance(kind, types.Integer) and kind.bitwidth == 64:
        part = np.dtype(np.uint32)
    else:
        return lambda values: values
    return lambda values: values.view(part)


@kernel(name="reverse-bands", bands_from="reversed", accepts="any")
@njit(nogil=True, cache=True)
def reverse_bands(block: np.ndarray, iterations: int = 0) -> np.ndarray:
    """Reverse the band order, with optional synthetic CPU work per value.

    The GIL-releasing example kernel of rasterio's "Concurrent processing"
    page: output band ``i`` is input band ``bands - 1 - i``, same dtype.

    Parameters
    ----------
    block
        ``(bands, y, x)`` array of any numeric dtype, complex included.
    iterations
        Synthetic work: each value is converted to float64, ``1.0`` is added
        ``iterations`` times, ``iterations`` is subtracted and the result is
        cast back (rasterio's example uses 2000).  Complex values get it on
        their real and imaginary parts, 64-bit integers on each 32-bit half
        (float64 would round them above 2**53).  Integer values, NaN and
        infinities come back unchanged; a float (or complex part) whose low
        bits are finer than the spacing of floats near ``iterations`` is
        rounded, exactly as in the example.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``block``.  Nodata is kept (pixels are moved,
        not changed).

    Raises
    ------
    ValueError
        If ``iterations`` is negative.
    """
    if iterations < 0:
        raise ValueError("iterations must be >= 0, got " + str(iterations))
    nb = block.shape[0]
    out = np.empty_like(block)
    for b in range(nb):
        if iterations == 0:
            out[nb - 1 - b] = block[b]
        else:
            src = np.ascontiguousarray(block[b]).ravel()
            dst = np.empty_like(src)
            _busy_copy(_work_view(src), _work_view(dst), iterations)
            out[nb - 1 - b] = dst.reshape(block.shape[1:])
    return out


# -- normalized differences --------------------------------------------------


@njit(nogil=True, cache=True)
def _normalized_difference(block: np.ndarray, nodata: float, a: int, b: int) -> np.ndarray:
    nb = block.shape[0]
    if a < 1 or a > nb:
        raise ValueError("band " + str(a) + " is out of range 1.." + str(nb))
    if b < 1 or b > nb:
        raise ValueError("band " + str(b) + " is out of range 1.." + str(nb))
    ndv = nodata_like(block, nodata)
    ny, nx = block.shape[1], block.shape[2]
    out = np.empty((1, ny, nx), dtype=np.float32)
    for i in range(ny):
        for j in range(nx):
            va = np.float64(block[a - 1, i, j])
            vb = np.float64(block[b - 1, i, j])
            total = va + vb
            if is_nodata(va, ndv) or is_nodata(vb, ndv) or total == 0.0:
                out[0, i, j] = np.nan
            else:
                out[0, i, j] = (va - vb) / total
    return out


@kernel(
    name="normalized-difference", dtype="float32", bands=1, nodata=float("nan"), accepts="real"
)
@njit(nogil=True, cache=True)
def normalized_difference(block: np.ndarray, nodata: float, a: int = 1, b: int = 2) -> np.ndarray:
    """Normalized difference (A - B) / (A + B) of two bands, as float32.

    Parameters
    ----------
    block
        ``(bands, y, x)`` array of any real dtype (bool, integer, float;
        complex is refused).
    nodata
        Input nodata (NaN when none); filled in by rdask.
    a, b
        1-based band numbers of A and B.

    Returns
    -------
    numpy.ndarray
        ``(1, y, x)`` float32, computed in float64.  NaN (the output nodata)
        where A or B is nodata or NaN, or where A + B == 0.

    Raises
    ------
    ValueError
        If ``a`` or ``b`` is not a band of ``block``.
    """
    return _normalized_difference(block, nodata, a, b)


@kernel(name="ndvi", dtype="float32", bands=1, nodata=float("nan"), accepts="real")
@njit(nogil=True, cache=True)
def ndvi(block: np.ndarray, nodata: float, red: int = 1, nir: int = 2) -> np.ndarray:
    """NDVI (NIR - red) / (NIR + red) as float32, NaN where undefined.

    Parameters
    ----------
    block
        ``(bands, y, x)`` array of any real dtype (bool, integer, float;
        complex is refused).
    nodata
        Input nodata (NaN when none); filled in by rdask.
    red, nir
        1-based band numbers of the red and near-infrared bands.

    Returns
    -------
    numpy.ndarray
        ``(1, y, x)`` float32, computed in float64.  NaN (the output nodata)
        where either band is nodata or NaN, or where NIR + red == 0.

    Raises
    ------
    ValueError
        If ``red`` or ``nir`` is not a band of ``block``.
    """
    return _normalized_difference(block, nodata, nir, red)
