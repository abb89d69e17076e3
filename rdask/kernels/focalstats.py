"""``focal``: statistics of the valid pixels in a moving window.

``focal stat=median radius=2 shape=circle`` computes, per band and pixel, a
statistic of the valid (not nodata, not NaN) pixels of the window around it,
clipped at the raster edge, with the values numpy's nan-aware functions
give (``nanmin``, ``nanmax``, ``nanmean``, ``nanmedian``, ``nanstd`` with
ddof 0, ``nansum``; ``range`` is max - min, ``count`` the number of valid
pixels, ``majority`` the most frequent value, ties to the smallest).  A
``square`` window is ``(2r+1)²`` pixels; a ``circle`` holds the pixels whose
centre is within ``r`` pixels of the centre (``dy² + dx² <= r²``).

Each pixel gathers its window's valid values into a buffer allocated once
per block; the statistics are computed from it in float64 (two passes for
``std``).  The square median of radius 1 to 3 runs a selection network on
whole rows of valid windows at once (:mod:`rdask.kernels.mediannet`, about
150 branch-free min/max steps per 5x5 window, vectorised); larger square
medians keep the window sorted as it slides along a row: each step removes
the column leaving it and merges in the column entering it.

Output dtypes: ``min``, ``max`` and ``majority`` keep the input's;
``range`` too for unsigned and float inputs, the next wider integer for
signed ones (so max - min cannot wrap); ``sum`` int64 for integers, float64
for floats; ``count`` uint16 (uint32 past radius 127); ``mean``, ``median``
and ``std`` float32, or float64 for inputs float32 cannot hold exactly
(32- and 64-bit integers, float64).  Where a window has no valid pixel the
output is the input's nodata (NaN for a float input without one; ``count``
is 0 there and has no nodata).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from rdask.kernels.bands import nodata_like
from rdask.kernels.mediannet import SEGMENT, median_network, row_medians
from rdask.kernels.spec import kernel

STATS = ("mean", "min", "max", "median", "std", "sum", "range", "count", "majority")
SHAPES = ("square", "circle")
_CODES = {name: i for i, name in enumerate(STATS)}
_MEAN, _MIN, _MAX, _MEDIAN, _STD, _SUM, _RANGE, _COUNT, _MAJORITY = range(len(STATS))


# -- dtypes and nodata ---------------------------------------------------------


def _wide(dtype: np.dtype) -> bool:
    """Whether float32 cannot hold every value of ``dtype`` exactly."""
    return dtype == np.float64 or (dtype.kind in "iu" and dtype.itemsize >= 4)


def out_dtype(in_dtype: np.dtype, stat: str = "mean", radius: int = 1, **_: Any) -> np.dtype:
    """The output dtype of ``stat`` on ``in_dtype`` (see the module docstring)."""
    dt = np.dtype(in_dtype)
    if dt.kind == "b":
        dt = np.dtype(np.uint8)
    if stat in ("min", "max", "majority"):
        return dt
    if stat == "range":
        if dt.kind == "i":
            return np.dtype(f"int{min(dt.itemsize * 16, 64)}")
        return dt
    if stat == "sum":
        return np.dtype(np.float64 if dt.kind == "f" else np.int64)
    if stat == "count":
        return np.dtype(np.uint16 if radius <= 127 else np.uint32)
    return np.dtype(np.float64 if _wide(dt) else np.float32)


def out_nodata(in_nodata: float | None, in_dtype: Any, stat: str = "mean", radius: int = 1,
               **_: Any) -> float | None:
    """The input's nodata where it fits the output, NaN for float outputs without one."""
    if stat == "count":
        return None
    out = out_dtype(np.dtype(in_dtype or np.float32), stat, radius)
    if in_nodata is not None and not np.isnan(in_nodata):
        if out.kind == "f":
            return float(in_nodata)
        info = np.iinfo(out)
        if float(in_nodata).is_integer() and info.min <= in_nodata <= info.max:
            return float(in_nodata)
    return float("nan") if out.kind == "f" else (None if in_nodata is None else float(in_nodata))


def _check(args: dict[str, Any]) -> dict[str, Any]:
    if args["radius"] < 0:
        raise ValueError(f"radius must be >= 0, got {args['radius']}")
    return args


# -- the window --------------------------------------------------------------


def offsets(radius: int, shape: str) -> np.ndarray:
    """``(n, 2)`` ``(dy, dx)`` offsets of the window, row by row."""
    r = int(radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = np.ones(dy.shape, bool) if shape == "square" else dy * dy + dx * dx <= r * r
    return np.stack([dy[keep], dx[keep]], axis=1).astype(np.int64)


@njit(nogil=True, cache=True, inline="always")
def _valid(v, ndv):
    return not (v != v or v == ndv)


@njit(nogil=True, cache=True)
def _insertion_sort(buf, n):
    for a in range(1, n):
        v = buf[a]
        b = a - 1
        while b >= 0 and buf[b] > v:
            buf[b + 1] = buf[b]
            b -= 1
        buf[b + 1] = v


@njit(nogil=True, cache=True)
def _from_sorted(stat, buf, n):
    """Median or majority of the ``n`` sorted values in ``buf``."""
    if stat == _MEDIAN:
        h = n // 2
        if n % 2:
            return buf[h]
        return (buf[h - 1] + buf[h]) / 2.0
    best, best_run, run = buf[0], 1, 1
    for k in range(1, n):
        run = run + 1 if buf[k] == buf[k - 1] else 1
        if run > best_run:  # strictly more: a tie keeps the smaller value
            best, best_run = buf[k], run
    return best


@njit(nogil=True, cache=True)
def _statistic(stat, buf, n):
    """``stat`` of the ``n`` valid float64 values in ``buf`` (n >= 1)."""
    if stat == _MEDIAN or stat == _MAJORITY:
        _insertion_sort(buf, n)
        return _from_sorted(stat, buf, n)
    if stat == _MIN or stat == _MAX or stat == _RANGE:
        lo = hi = buf[0]
        for k in range(1, n):
            lo = min(lo, buf[k])
            hi = max(hi, buf[k])
        return lo if stat == _MIN else hi if stat == _MAX else hi - lo
    total = 0.0
    for k in range(n):
        total += buf[k]
    if stat == _SUM:
        return total
    mean = total / n
    if stat == _MEAN:
        return mean
    dev = 0.0
    for k in range(n):
        d = buf[k] - mean
        dev += d * d
    return np.sqrt(dev / n)


@njit(nogil=True, cache=True)
def _gather(block, b, i, j, offs, ndv, buf):
    ny, nx = block.shape[1], block.shape[2]
    n = 0
    for k in range(offs.shape[0]):
        y = i + offs[k, 0]
        x = j + offs[k, 1]
        if 0 <= y < ny and 0 <= x < nx:
            v = block[b, y, x]
            if _valid(v, ndv):
                buf[n] = v
                n += 1
    return n


@njit(nogil=True, cache=True)
def _focal_generic(block, ndv, stat, offs, fill, out):
    nb, ny, nx = block.shape
    buf = np.empty(offs.shape[0], dtype=np.float64)
    for b in range(nb):
        for i in range(ny):
            for j in range(nx):
                n = _gather(block, b, i, j, offs, ndv, buf)
                if stat == _COUNT:
                    out[b, i, j] = n
                elif n == 0:
                    out[b, i, j] = fill
                else:
                    out[b, i, j] = _statistic(stat, buf, n)


@njit(nogil=True, cache=True)
def _sorted_column(block, b, i, x, r, ndv, col):
    """Sorted valid values of column ``x``, rows ``i - r .. i + r`` (clipped)."""
    n = 0
    for y in range(max(i - r, 0), min(i + r + 1, block.shape[1])):
        v = block[b, y, x]
        if _valid(v, ndv):
            fv = np.float64(v)
            m = n
            while m > 0 and col[m - 1] > fv:
                col[m] = col[m - 1]
                m -= 1
            col[m] = fv
            n += 1
    return n


@njit(nogil=True, cache=True)
def _slide(win, n, leave, nl, enter, ne, tmp):
    """``win`` (sorted, ``n`` values) minus ``leave`` plus ``enter`` (both sorted)."""
    p = q = e = m = 0
    while p < n or e < ne:
        if p < n and q < nl and win[p] == leave[q]:
            p += 1
            q += 1
            continue
        if e >= ne or (p < n and win[p] <= enter[e]):
            tmp[m] = win[p]
            p += 1
        else:
            tmp[m] = enter[e]
            e += 1
        m += 1
    for k in range(m):
        win[k] = tmp[k]
    return m


@njit(nogil=True, cache=True)
def _focal_median_square(block, ndv, r, fill, out):
    """Square-window median (and majority) by sliding a sorted window."""
    nb, ny, nx = block.shape
    w = 2 * r + 1
    cols = np.empty((nx, w), dtype=np.float64)
    counts = np.empty(nx, dtype=np.int64)
    win = np.empty(w * w, dtype=np.float64)
    tmp = np.empty(w * w, dtype=np.float64)
    empty = np.empty(0, dtype=np.float64)
    for b in range(nb):
        for i in range(ny):
            for x in range(nx):
                counts[x] = _sorted_column(block, b, i, x, r, ndv, cols[x])
            n = 0
            for x in range(0, min(r, nx)):  # the window of pixel (i, -1), clipped
                n = _slide(win, n, empty, 0, cols[x], counts[x], tmp)
            for j in range(nx):
                if j + r < nx:
                    enter, ne = cols[j + r], counts[j + r]
                else:
                    enter, ne = empty, 0
                if j - r - 1 >= 0:
                    leave, nl = cols[j - r - 1], counts[j - r - 1]
                else:
                    leave, nl = empty, 0
                n = _slide(win, n, leave, nl, enter, ne, tmp)
                out[b, i, j] = fill if n == 0 else _from_sorted(_MEDIAN, win, n)


@njit(nogil=True, cache=True)
def _focal_median_net(block, ndv, r, fill, out, lo, hi, target, slots, offs):
    """Square median of radius 1..3: the selection network on rows of whole
    valid windows, the gathered sort elsewhere (edges, nodata)."""
    nb, ny, nx = block.shape
    buf = np.empty(offs.shape[0], dtype=np.float64)
    ok = np.empty(SEGMENT, dtype=np.bool_)
    done = np.empty(nx, dtype=np.bool_)
    orow = np.empty(nx, dtype=slots.dtype)
    for b in range(nb):
        plane = block[b]
        for i in range(ny):
            done[:] = False
            if r <= i < ny - r:
                j0 = r
                while j0 < nx - r:
                    count = min(SEGMENT, nx - r - j0)
                    row_medians(plane, i, j0, count, r, ndv, lo, hi, target, slots, ok, orow)
                    for t in range(count):
                        if ok[t]:
                            out[b, i, j0 + t] = orow[j0 + t]
                            done[j0 + t] = True
                    j0 += count
            for j in range(nx):
                if not done[j]:
                    n = _gather(block, b, i, j, offs, ndv, buf)
                    if n == 0:
                        out[b, i, j] = fill
                    else:
                        _insertion_sort(buf, n)
                        out[b, i, j] = _from_sorted(_MEDIAN, buf, n)


@kernel(name="focal", dtype=out_dtype, halo="radius", nodata=out_nodata, keeps_bands=True,
        accepts="real", choices={"stat": STATS, "shape": SHAPES}, prepare=_check,
        dispatches=True)
def focal(block: np.ndarray, nodata: float, stat: str = "mean", radius: int = 1,
          shape: str = "square") -> np.ndarray:
    """Focal statistic of the valid pixels in a window, per band, as numpy's nan-functions.

    Parameters
    ----------
    block
        ``(bands, y, x)`` array of any real dtype (complex is refused).
    nodata
        Input nodata (NaN when none); filled in by rdask.
    stat
        ``mean``, ``min``, ``max``, ``median``, ``std`` (ddof 0), ``sum``,
        ``range``, ``count`` or ``majority`` (ties to the smallest value).
    radius
        Window half-size ``r`` in pixels; also the halo rdask reads.
    shape
        ``square`` (``(2r+1)²`` pixels) or ``circle`` (``dy² + dx² <= r²``).

    Returns
    -------
    numpy.ndarray
        ``(bands, y, x)``; the dtype and the nodata where a window has no
        valid pixel are in :mod:`rdask.kernels.focalstats`.
    """
    code = _CODES[stat]
    dt = out_dtype(block.dtype, stat, radius)
    nd = out_nodata(None if nodata != nodata else nodata, block.dtype, stat, radius)
    fill = 0 if nd is None or (dt.kind != "f" and np.isnan(nd)) else nd
    out = np.empty(block.shape, dtype=dt)
    ndv = nodata_like(block, float(nodata))
    if code == _MEDIAN and shape == "square" and 1 <= radius <= 3:
        lo, hi, target = median_network((2 * radius + 1) ** 2)
        slots = np.empty(((2 * radius + 1) ** 2, SEGMENT), dtype=dt)
        _focal_median_net(block, ndv, int(radius), dt.type(fill), out, lo, hi, target, slots,
                          offsets(radius, shape))
    elif code == _MEDIAN and shape == "square":
        _focal_median_square(block, ndv, int(radius), dt.type(fill), out)
    else:
        _focal_generic(block, ndv, code, offsets(radius, shape), dt.type(fill), out)
    return out
