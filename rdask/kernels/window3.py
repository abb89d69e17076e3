"""gdaldem's 3x3 window: which pixels get a value, and what the window holds.

Every ``gdaldem`` mode but ``color-relief`` computes each pixel from the 3x3
window around it (GDAL's ``apps/gdaldem_lib.cpp``, ``GDALGeneric3x3Processing``),
rewritten here with its precision: the window is float32 (GDAL reads every
dtype as float32, or as int32 for Byte, Int16 and UInt16, whose values and
sums float32 holds exactly), and :func:`run3x3` hands it to the mode's
formula in :mod:`rdask.kernels.demalgs`.

Without ``compute_edges`` (plain ``gdaldem``) the first and last rows and
columns, and every pixel whose window holds nodata, are nodata.  With it
(``-compute_edges``):

* only a nodata centre gives nodata;
* off the first or last row, the missing row is extrapolated linearly from
  the two nearest rows (``2 * edge - next``) and the missing column of the
  corner windows is the centre column repeated;
* off the first or last column of the other rows, the missing column is
  extrapolated the same way;
* an extrapolation from a nodata value, and any nodata neighbour, are
  replaced by the centre value (for 8- and 16-bit integers, an extrapolation
  that lands on the nodata value is moved one up, as GDAL 3.6 does);
* a raster less than 2 pixels wide or high is all nodata.

Nodata as GDAL 3.6 reads it: for 8- and 16-bit integers, a nodata within
0.01 of an integer in the dtype's range is that integer, any other is none;
for the rest, the nodata rounded to float32.  Unlike ``gdaldem``, which
skips NaN only when the nodata value is NaN, NaN is always nodata (and
GDAL's tiny relative tolerance on a float nodata is not applied).

A block edge is treated as the raster edge, so each output pixel depends on
inputs within one pixel only and the results do not depend on the chunking.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from rdask.kernels.demalgs import value

#: Input dtypes that GDAL 3.6 reads through its int32 path (Byte, Int16,
#: UInt16; bool and int8 are bytes to it).
INT_PATH = ("b", "u1", "i1", "i2", "u2")


def int_path(dtype: np.dtype) -> bool:
    """Whether gdaldem reads ``dtype`` as integers (see :data:`INT_PATH`)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "b" or dtype.str[1:] in INT_PATH


@njit(nogil=True, cache=True)
def window_nodata(nodata: float, is_int: bool, lo: float, hi: float) -> np.float32:
    """The nodata value the window compares with (NaN: none but NaN itself)."""
    if nodata != nodata:
        return np.float32(np.nan)
    if not is_int:
        return np.float32(nodata)
    rounded = math.floor(nodata + 0.5)
    if abs(nodata - rounded) < 1e-2 and lo <= nodata <= hi:
        return np.float32(rounded)
    return np.float32(np.nan)


@njit(nogil=True, cache=True, inline="always")
def _nd(v, ndv):
    return (v != v) | (v == ndv)


@njit(nogil=True, cache=True, inline="always")
def _interp(a, b, ndv, is_int):
    """GDAL 3.6's ``INTERPOL``: ``2a - b``, or nodata if a or b is."""
    if _nd(a, ndv) or _nd(b, ndv):
        return ndv
    val = np.float32(2.0) * a - b
    if is_int and val == ndv:
        return val + np.float32(1.0)
    return val


@njit(nogil=True, cache=True)
def _edge_window(plane, i, j, ndv, is_int, win):
    """Fill ``win`` with the ``-compute_edges`` window at ``(i, j)``.

    Window order is GDAL's::

        0 1 2
        3 4 5
        6 7 8

    Returns False when the output pixel is nodata (its centre is).
    """
    ny, nx = plane.shape
    centre = plane[i, j]
    if _nd(centre, ndv):
        return False
    if i == 0 or i == ny - 1:
        jmin = j if j == 0 else j - 1
        jmax = j if j == nx - 1 else j + 1
        near = 0 if i == 0 else i
        far = 1 if i == 0 else i - 1
        top = 0 if i == 0 else 6
        mid = 3 if i == 0 else 0
        low = 6 if i == 0 else 3
        win[top] = _interp(plane[near, jmin], plane[far, jmin], ndv, is_int)
        win[top + 1] = _interp(plane[near, j], plane[far, j], ndv, is_int)
        win[top + 2] = _interp(plane[near, jmax], plane[far, jmax], ndv, is_int)
        win[mid] = plane[near if i == 0 else far, jmin]
        win[mid + 1] = plane[near if i == 0 else far, j]
        win[mid + 2] = plane[near if i == 0 else far, jmax]
        win[low] = plane[far if i == 0 else near, jmin]
        win[low + 1] = plane[far if i == 0 else near, j]
        win[low + 2] = plane[far if i == 0 else near, jmax]
    elif j == 0:
        for di in range(3):
            r = i - 1 + di
            win[3 * di] = _interp(plane[r, 0], plane[r, 1], ndv, is_int)
            win[3 * di + 1] = plane[r, 0]
            win[3 * di + 2] = plane[r, 1]
    elif j == nx - 1:
        for di in range(3):
            r = i - 1 + di
            win[3 * di] = plane[r, j - 1]
            win[3 * di + 1] = plane[r, j]
            win[3 * di + 2] = _interp(plane[r, j], plane[r, j - 1], ndv, is_int)
    else:
        for di in range(3):
            for dj in range(3):
                win[3 * di + dj] = plane[i - 1 + di, j - 1 + dj]
    for k in range(9):
        if _nd(win[k], ndv):
            win[k] = centre
    return True


@njit(nogil=True, cache=True, inline="always")
def _store(out, b, i, j, v, byte_out):
    """Write a float32 result as GDAL does: as is, or for a byte output
    rounded (``v + 0.5`` in float32, truncated) and clamped, NaN as 0."""
    if byte_out:
        r = v + np.float32(0.5)
        if r != r or r <= 0:
            out[b, i, j] = 0
        elif r >= 255:
            out[b, i, j] = 255
        else:
            out[b, i, j] = np.uint8(r)
    else:
        out[b, i, j] = v


@njit(nogil=True, cache=True)
def run3x3(block, ndv, is_int, compute_edges, mode, c, out_nodata, out, byte_out):
    """Fill ``out`` (pre-set to the output nodata) band by band.

    Parameters
    ----------
    block
        ``(bands, y, x)`` elevations of any real dtype.
    ndv
        The window's nodata, from :func:`window_nodata`.
    is_int
        Whether the input is read through gdaldem's integer path.
    compute_edges
        ``-compute_edges``.
    mode, c, out_nodata
        The formula of :func:`rdask.kernels.demalgs.value`, its constants, and
        the value a formula gives for "no value" (aspect of a flat window).
    out, byte_out
        ``(bands, y, x)`` float32 output, or uint8 when ``byte_out``.
    """
    nb, ny, nx = block.shape
    if ny < 2 or nx < 2:
        return
    win = np.empty(9, dtype=np.float32)
    plane = np.empty((ny, nx), dtype=np.float32)
    for b in range(nb):
        for i in range(ny):
            for j in range(nx):
                plane[i, j] = block[b, i, j]
        for i in range(ny):
            inner_row = 0 < i < ny - 1
            for j in range(nx):
                if inner_row and 0 < j < nx - 1:
                    # Fast path: a full window of valid values.
                    w0, w1, w2 = plane[i - 1, j - 1], plane[i - 1, j], plane[i - 1, j + 1]
                    w3, w4, w5 = plane[i, j - 1], plane[i, j], plane[i, j + 1]
                    w6, w7, w8 = plane[i + 1, j - 1], plane[i + 1, j], plane[i + 1, j + 1]
                    bad = (
                        _nd(w0, ndv) | _nd(w1, ndv) | _nd(w2, ndv)
                        | _nd(w3, ndv) | _nd(w4, ndv) | _nd(w5, ndv)
                        | _nd(w6, ndv) | _nd(w7, ndv) | _nd(w8, ndv)
                    )  # fmt: skip
                    if not bad:
                        v = value(mode, w0, w1, w2, w3, w4, w5, w6, w7, w8, c, out_nodata)
                        _store(out, b, i, j, v, byte_out)
                        continue
                    if not compute_edges:
                        continue
                elif not compute_edges:
                    continue
                if _edge_window(plane, i, j, ndv, is_int, win):
                    v = value(
                        mode, win[0], win[1], win[2], win[3], win[4], win[5], win[6], win[7],
                        win[8], c, out_nodata,
                    )
                    _store(out, b, i, j, v, byte_out)
