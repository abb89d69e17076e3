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
    if src_nodata is not None and not _fits(src_nodata, dtype):
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
    header. Source pixels equal to ``nodata`` (compared in the source's
    dtype, as GDAL does; NaN when it is NaN) are not used.
    """
    (sy0, sx0), (y0, x0) = src_off, dst_off
    if resampling == "nearest":
        value = src.dtype.type(0 if nodata is None else nodata)
        _warp_nearest(header, src, sy0, sx0, nodata is not None, value, out, y0, x0)
    elif nodata is None:
        _warp_bilinear(header, src, sy0, sx0, out, y0, x0)
    else:
        _warp_bilinear_masked(header, src, sy0, sx0, src.dtype.type(nodata), out, y0, x0)


def _fits(value: float, dtype: str) -> bool:
    """Whether ``value`` is exactly a value of ``dtype`` (or NaN, for floats)."""
    kind = np.dtype(dtype).kind
    if np.isnan(value):
        return kind == "f"
    if kind in "ui":
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    return float(np.dtype(dtype).type(value)) == value


@njit(nogil=True, cache=True, error_model="numpy")
def _row(hdr, r, x0, y0, xs, ys, ok):
    """Row ``r``'s pixel centres, as source coordinates."""
    for c in range(xs.size):
        xs[c] = c + 0.5 + x0
        ys[c] = r + 0.5 + y0
        ok[c] = 0
    transform_row(hdr, xs, ys, ok)


@njit(nogil=True, cache=True, error_model="numpy")
def _warp_nearest(hdr, src, sy0, sx0, has_nodata, nodata, out, y0, x0):
    # GWK's common checks: skip points that failed, lie left of or above
    # the source window, or past it (truncated after a 1e-10 nudge); then
    # each band's pixel unless it is nodata.
    nb, h, w = out.shape
    sh, sw = src.shape[1], src.shape[2]
    nan_nodata = has_nodata and np.isnan(nodata)
    xs, ys, ok = np.empty(w), np.empty(w), np.empty(w, np.intc)
    for r in range(h):
        _row(hdr, r, x0, y0, xs, ys, ok)
        for c in range(w):
            x, y = xs[c], ys[c]
            if ok[c] == 0 or x < sx0 or y < sy0:
                continue
            ix, iy = int(x + 1e-10) - sx0, int(y + 1e-10) - sy0
            if ix >= sw or iy >= sh:
                continue
            for b in range(nb):
                v = src[b, iy, ix]
                if has_nodata and (np.isnan(v) if nan_nodata else v == nodata):
                    continue
                out[b, r, c] = v


@njit(nogil=True, cache=True, error_model="numpy")
def _warp_bilinear(hdr, src, sy0, sx0, out, y0, x0):
    # GWKBilinearResampleNoMasks4SampleT: the 2 x 2 formula inside, the
    # taps that exist (renormalised) at the edges.
    nb, h, w = out.shape
    sh, sw = src.shape[1], src.shape[2]
    xs, ys, ok = np.empty(w), np.empty(w), np.empty(w, np.intc)
    for r in range(h):
        _row(hdr, r, x0, y0, xs, ys, ok)
        for c in range(w):
            x, y = xs[c], ys[c]
            if ok[c] == 0 or x < sx0 or y < sy0:
                continue
            if int(x + 1e-10) - sx0 >= sw or int(y + 1e-10) - sy0 >= sh:
                continue
            x -= sx0
            y -= sy0
            ix = int(np.floor(x - 0.5))
            iy = int(np.floor(y - 0.5))
            rx = 1.5 - (x - ix)
            ry = 1.5 - (y - iy)
            if ix >= 0 and ix + 1 < sw and iy >= 0 and iy + 1 < sh:
                for b in range(nb):
                    out[b, r, c] = ((src[b, iy, ix] * rx + src[b, iy, ix + 1] * (1.0 - rx)) * ry
                                    + (src[b, iy + 1, ix] * rx + src[b, iy + 1, ix + 1] * (1.0 - rx))
                                    * (1.0 - ry))
                continue
            in0, in1 = 0 <= ix < sw, 0 <= ix + 1 < sw
            up, down = 0 <= iy < sh, 0 <= iy + 1 < sh
            for b in range(nb):
                div = 0.0
                acc = 0.0
                if in0 and up:
                    m = rx * ry
                    div += m
                    acc += src[b, iy, ix] * m
                if in1 and up:
                    m = (1.0 - rx) * ry
                    div += m
                    acc += src[b, iy, ix + 1] * m
                if in1 and down:
                    m = (1.0 - rx) * (1.0 - ry)
                    div += m
                    acc += src[b, iy + 1, ix + 1] * m
                if in0 and down:
                    m = rx * (1.0 - ry)
                    div += m
                    acc += src[b, iy + 1, ix] * m
                if div < 0.00001:
                    continue
                out[b, r, c] = acc if div == 1.0 else acc / div


@njit(nogil=True, cache=True, error_model="numpy")
def _warp_bilinear_masked(hdr, src, sy0, sx0, nodata, out, y0, x0):
    # GWKBilinearResample4Sample with per-band validity (density 0 or 1,
    # so the density it also accumulates is 1 wherever a value is written).
    # A point whose source pixel is nodata in every band is skipped
    # whatever its neighbours (GDAL's unified mask).
    nb, h, w = out.shape
    sh, sw = src.shape[1], src.shape[2]
    nan_nodata = np.isnan(nodata)
    xs, ys, ok = np.empty(w), np.empty(w), np.empty(w, np.intc)
    for r in range(h):
        _row(hdr, r, x0, y0, xs, ys, ok)
        for c in range(w):
            x, y = xs[c], ys[c]
            if ok[c] == 0 or x < sx0 or y < sy0:
                continue
            cx, cy = int(x + 1e-10) - sx0, int(y + 1e-10) - sy0
            if cx >= sw or cy >= sh:
                continue
            valid = False
            for b in range(nb):
                v = src[b, cy, cx]
                if not (np.isnan(v) if nan_nodata else v == nodata):
                    valid = True
                    break
            if not valid:
                continue
            x -= sx0
            y -= sy0
            ix = int(np.floor(x - 0.5))
            iy = int(np.floor(y - 0.5))
            rx = 1.5 - (x - ix)
            ry = 1.5 - (y - iy)
            if ix == -1:
                ix, rx = 0, 1.0
            if iy == -1:
                iy, ry = 0, 1.0
            in0, in1 = 0 <= ix < sw, 0 <= ix + 1 < sw
            up, down = 0 <= iy < sh, 0 <= iy + 1 < sh
            m00, m01 = rx * ry, (1.0 - rx) * ry
            m10, m11 = rx * (1.0 - ry), (1.0 - rx) * (1.0 - ry)
            for b in range(nb):
                div = 0.0
                acc = 0.0
                if in0 and up:
                    v = src[b, iy, ix]
                    if not (np.isnan(v) if nan_nodata else v == nodata):
                        div += m00
                        acc += v * m00
                if in1 and up:
                    v = src[b, iy, ix + 1]
                    if not (np.isnan(v) if nan_nodata else v == nodata):
                        div += m01
                        acc += v * m01
                if in0 and down:
                    v = src[b, iy + 1, ix]
                    if not (np.isnan(v) if nan_nodata else v == nodata):
                        div += m10
                        acc += v * m10
                if in1 and down:
                    v = src[b, iy + 1, ix + 1]
                    if not (np.isnan(v) if nan_nodata else v == nodata):
                        div += m11
                        acc += v * m11
                if div < 0.00001:
                    continue
                out[b, r, c] = acc if div == 1.0 else acc / div
