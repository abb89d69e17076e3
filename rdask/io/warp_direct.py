"""``nearest`` and ``bilinear`` warps computed directly, as GDAL's kernels compute them.

GDAL's warper spends most of a fast warp's time outside the transformation:
per-pixel validity masks, its generic per-band loop, band copies through
a VRT (about 30-40 ns per output pixel for a float32 DEM with nodata, five
times what the arithmetic needs). For the two commonest resamplings these
numba kernels compute each output pixel as ``GDALWarpKernel`` does
(GDAL 3.x, ``GWKRealCase``'s nearest and 4-sample bilinear, and
``GWKBilinearResampleNoMasks4SampleT`` without nodata), from the same source
coordinates (:mod:`rdask.io.warp_lattice`'s transformer, called row by row
as GDAL calls it). tests/test_warp_fast.py holds them to GDAL's own warper
given those coordinates, bit for bit; :func:`handles` says which warps
they take (the others go through GDAL).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rdask.io.warp_lattice import transform_row

NEAREST, BILINEAR = 0, 1

#: Dtypes the direct kernels handle, per resampling.
_DTYPES = {
    "nearest": {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"},
    "bilinear": {"float32", "float64"},
}


def handles(resampling: str, dtype: str, scales: tuple[float, float], src_nodata: float | None,
            nodata: float | None, masked: bool) -> bool:
    """Whether the direct kernels compute this warp (else GDAL's warper does).

    ``nearest`` of any integer or float band; ``bilinear`` of float bands
    at GDAL's 4-sample formula (both scales at least 0.95). Not with a
    mask band, nor when the output's nodata differs from the source's
    (GDAL then nudges values that equal it).
    """
    if masked or dtype not in _DTYPES.get(resampling, ()):
        return False
    if not _same_nodata(src_nodata, nodata):
        return False
    return resampling == "nearest" or min(scales) >= 0.95


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (np.isnan(a) and np.isnan(b))


def warp_window(header: np.ndarray, src: np.ndarray, src_off: tuple[int, int], nodata: float | None,
                out: np.ndarray, dst_off: tuple[int, int], resampling: str) -> None:
    """Warp ``out`` (``(bands, h, w)``, pre-filled) from ``src``
    (``(bands, sh, sw)``, the source window at ``src_off = (sy0, sx0)``),
    the window's origin in the destination grid being ``dst_off = (y0, x0)``.

    ``header`` is the window's :class:`~rdask.io.warp_lattice.WindowLattice`
    header. Source pixels equal to ``nodata`` (or NaN when it is NaN) are
    not used.
    """
    has_nodata = nodata is not None
    value = float(nodata) if has_nodata else 0.0
    method = NEAREST if resampling == "nearest" else BILINEAR
    _warp(header, src, src_off[0], src_off[1], has_nodata, value, out, dst_off[0], dst_off[1], method)


@njit(nogil=True, cache=True)
def _is_nodata(v: float, has_nodata: bool, nodata: float) -> bool:
    if not has_nodata:
        return False
    if np.isnan(nodata):
        return np.isnan(v)
    return v == nodata


@njit(nogil=True, cache=True, error_model="numpy")
def _warp(hdr, src, sy0, sx0, has_nodata, nodata, out, y0, x0, method):
    nb, h, w = out.shape
    sh, sw = src.shape[1], src.shape[2]
    xs = np.empty(w)
    ys = np.empty(w)
    ok = np.empty(w, np.intc)
    for r in range(h):
        for c in range(w):
            xs[c] = c + 0.5 + x0
            ys[c] = r + 0.5 + y0
            ok[c] = 0
        transform_row(hdr, xs, ys, ok)
        for c in range(w):
            x, y = xs[c], ys[c]
            # GWK's common checks: skip points that failed, lie left of or
            # above the source window, or past it (truncated after a 1e-10
            # nudge).
            if ok[c] == 0 or x < sx0 or y < sy0:
                continue
            if int(x + 1e-10) - sx0 >= sw or int(y + 1e-10) - sy0 >= sh:
                continue
            iy, ix = int(y + 1e-10) - sy0, int(x + 1e-10) - sx0
            if method == NEAREST:
                _nearest(src, iy, ix, has_nodata, nodata, out, r, c)
            elif has_nodata:
                _bilinear_masked(src, sh, sw, nodata, x - sx0, y - sy0, iy, ix, out, r, c)
            else:
                _bilinear(src, sh, sw, x - sx0, y - sy0, out, r, c)


@njit(nogil=True, cache=True, error_model="numpy")
def _nearest(src, iy, ix, has_nodata, nodata, out, r, c):
    for b in range(out.shape[0]):
        v = src[b, iy, ix]
        if not _is_nodata(v, has_nodata, nodata):
            out[b, r, c] = v


@njit(nogil=True, cache=True, error_model="numpy")
def _bilinear(src, sh, sw, x, y, out, r, c):
    # GWKBilinearResampleNoMasks4SampleT: the 2 x 2 formula inside, the
    # taps that exist (renormalised) at the edges.
    ix = int(np.floor(x - 0.5))
    iy = int(np.floor(y - 0.5))
    rx = 1.5 - (x - ix)
    ry = 1.5 - (y - iy)
    inside = ix >= 0 and ix + 1 < sw and iy >= 0 and iy + 1 < sh
    for b in range(out.shape[0]):
        if inside:
            acc = ((src[b, iy, ix] * rx + src[b, iy, ix + 1] * (1.0 - rx)) * ry
                   + (src[b, iy + 1, ix] * rx + src[b, iy + 1, ix + 1] * (1.0 - rx)) * (1.0 - ry))
            out[b, r, c] = acc
            continue
        div = 0.0
        acc = 0.0
        if 0 <= ix < sw and 0 <= iy < sh:
            m = rx * ry
            div += m
            acc += src[b, iy, ix] * m
        if 0 <= ix + 1 < sw and 0 <= iy < sh:
            m = (1.0 - rx) * ry
            div += m
            acc += src[b, iy, ix + 1] * m
        if 0 <= ix + 1 < sw and 0 <= iy + 1 < sh:
            m = (1.0 - rx) * (1.0 - ry)
            div += m
            acc += src[b, iy + 1, ix + 1] * m
        if 0 <= ix < sw and 0 <= iy + 1 < sh:
            m = rx * (1.0 - ry)
            div += m
            acc += src[b, iy + 1, ix] * m
        if div < 0.00001:
            continue
        out[b, r, c] = acc if div == 1.0 else acc / div


@njit(nogil=True, cache=True, error_model="numpy")
def _valid(src, b, yy, xx, sh, sw, nodata, nan_nodata):
    """Whether tap (yy, xx) of band b is inside the source and valid."""
    if yy < 0 or yy >= sh or xx < 0 or xx >= sw:
        return False
    v = src[b, yy, xx]
    return not np.isnan(v) if nan_nodata else v != nodata


@njit(nogil=True, cache=True, error_model="numpy")
def _bilinear_masked(src, sh, sw, nodata, x, y, cy, cx, out, r, c):
    # GWKBilinearResample4Sample with per-band validity (density 0 or 1,
    # so the density it also accumulates is 1 wherever a value is written).
    # A point whose source pixel (cy, cx) is nodata in every band is
    # skipped whatever its neighbours (GDAL's unified mask).
    nan_nodata = np.isnan(nodata)
    nb = out.shape[0]
    any_valid = False
    for b in range(nb):
        if _valid(src, b, cy, cx, sh, sw, nodata, nan_nodata):
            any_valid = True
            break
    if not any_valid:
        return
    ix = int(np.floor(x - 0.5))
    iy = int(np.floor(y - 0.5))
    rx = 1.5 - (x - ix)
    ry = 1.5 - (y - iy)
    if ix == -1:
        ix, rx = 0, 1.0
    if iy == -1:
        iy, ry = 0, 1.0
    m00, m01 = rx * ry, (1.0 - rx) * ry
    m10, m11 = rx * (1.0 - ry), (1.0 - rx) * (1.0 - ry)
    for b in range(nb):
        div = 0.0
        acc = 0.0
        if _valid(src, b, iy, ix, sh, sw, nodata, nan_nodata):
            div += m00
            acc += src[b, iy, ix] * m00
        if _valid(src, b, iy, ix + 1, sh, sw, nodata, nan_nodata):
            div += m01
            acc += src[b, iy, ix + 1] * m01
        if _valid(src, b, iy + 1, ix, sh, sw, nodata, nan_nodata):
            div += m10
            acc += src[b, iy + 1, ix] * m10
        if _valid(src, b, iy + 1, ix + 1, sh, sw, nodata, nan_nodata):
            div += m11
            acc += src[b, iy + 1, ix + 1] * m11
        if div < 0.00001:
            continue
        out[b, r, c] = acc if div == 1.0 else acc / div
