"""Source coordinates from a lattice of exact points fixed to the output grid.

The fast warp (``et > 0``) does not transform every output pixel with PROJ.
It cuts the output grid into *cells* of :data:`SPACING` pixels, fixed to the
whole grid (cell ``(i, j)`` starts at output pixel coordinate
``(i * SPACING, j * SPACING)``), transforms exactly (GDAL's own
transformer, :mod:`rdask.io.warp_capi`) the 3 x 3 points of each cell
(corners, edge midpoints, centre), and interpolates each point's source
coordinate with the biquadratic through them. Where that is not accurate
enough, a cell is cut into 4, 16 or 64 sub-cells of the same kind. A
point's coordinate depends only on the point and on its cell, never on the
window or chunk that asks, so every chunk computes the same coordinate for
the same output pixel: the pixels do not depend on the chunking, the
scheduler or the number of workers.

**The error bound.** The biquadratic through a cell's points misses only
the cubic and higher terms of the mapping. Its error is at most
``max |t (t - d) (t - 2d)| / 6 = d^3 / (9 sqrt 3)`` times the third
derivative along each axis, for points ``d`` apart; the third differences
of the exact points, along the rows and columns through the cell and one
sub-cell either side, measure ``d^3`` times that derivative. A cell's
bound is that, times :data:`SAFETY`, plus the arithmetic's own rounding. A
cell is refined until its bound is below :data:`TOLERANCE` (or the
threshold ``et``, if smaller), down to sub-cells of :data:`FINEST` pixels;
one whose bound is still above ``et`` (at a pole, across the antimeridian,
where a point fails to transform) is transformed exactly, point by point.

**Exact where it matters.** The warper's kernels change discontinuously
when a source coordinate crosses a source pixel's edge or centre (which
pixel ``nearest`` takes, which taps bilinear and cubic use, where a
footprint starts, whether a pixel is valid). A point whose interpolated
coordinate lies within its cell's bound of a multiple of 0.5 is transformed
exactly: its exact coordinate is on the same side of every such line as the
interpolated one, or it is the exact one. So ``nearest`` equals
``gdalwarp -et 0`` bit for bit, every kernel leaves nodata at the same
pixels as ``-et 0``, and the others differ only by their coordinates'
error, at most the bound.

The transformer GDAL's warper calls is a numba ``cfunc``
(:func:`transformer_function`): it reads the window's cells from the
argument :func:`window_lattice` builds, and calls GDAL's exact transformer
for the points it must not interpolate.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

from rdask.io.warp_capi import ExactTransformer, exact_function

#: Output pixels per cell side (a power of two: the arithmetic that finds a
#: point's cell and its place in it is then exact).
SPACING = 64

#: The smallest sub-cell, in output pixels.
FINEST = 8

#: A cell is refined until its bound (source pixels) is below this: far
#: below what changes a float32 value in all but a few pixels.
TOLERANCE = 1e-6

#: Safety factor on the estimated interpolation error.
SAFETY = 2.0

#: Added to every cell's bound: the interpolation's own rounding, and the
#: small offsets GDAL's kernels add before rounding a coordinate (1e-10).
FLOOR = 1e-8

# Header of the transformer argument (int64 words).
(_H_SPACING, _H_CI0, _H_CJ0, _H_NCX, _H_NCY, _H_LEVEL, _H_GOFF, _H_BOFF, _H_GX, _H_GY, _H_NG,
 _H_BOUND, _H_NB, _H_EXACT_FN, _H_EXACT, _H_MISSES, _H_DX, _H_DY) = range(18)
_HEADER = 18


@intrinsic
def _voidptr(typingctx, addr):
    """An int64 address as a ``void *``."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))
    return types.voidptr(types.int64), codegen


@intrinsic
def _call_transformer(typingctx, fn, arg, dst_to_src, n, x, y, z, ok):
    """Call the ``GDALTransformerFunc`` at address ``fn`` (every argument an
    int64; pointers as addresses). Addresses are read at run time, so the
    compiled code holds none and can be cached."""
    def codegen(context, builder, signature, args):
        i32, i8p, f64p = ir.IntType(32), ir.IntType(8).as_pointer(), ir.DoubleType().as_pointer()
        fnty = ir.FunctionType(i32, [i8p, i32, i32, f64p, f64p, f64p, i32.as_pointer()])
        fnptr = builder.inttoptr(args[0], fnty.as_pointer())
        call_args = [builder.inttoptr(args[1], i8p), builder.trunc(args[2], i32), builder.trunc(args[3], i32),
                     builder.inttoptr(args[4], f64p), builder.inttoptr(args[5], f64p),
                     builder.inttoptr(args[6], f64p), builder.inttoptr(args[7], i32.as_pointer())]
        return builder.call(fnptr, call_args)
    return types.int32(*([types.int64] * 8)), codegen


@njit(nogil=True, cache=True)
def _exact(hdr: np.ndarray, dst_to_src: int, x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> None:
    """GDAL's exact transformer (the header's) on the points, in place."""
    z = np.zeros(x.size)
    _call_transformer(hdr[_H_EXACT_FN], hdr[_H_EXACT], dst_to_src, x.size, x.ctypes.data, y.ctypes.data,
                      z.ctypes.data, ok.ctypes.data)


@njit(nogil=True, cache=True, error_model="numpy")
def _near_line(v: float, margin: float) -> bool:
    """Whether ``v`` lies within ``margin`` of a multiple of 0.5."""
    t = v * 2.0
    return abs(t - np.floor(t + 0.5)) * 0.5 <= margin


@njit(nogil=True, cache=True, error_model="numpy")
def _weights(t: float) -> tuple[float, float, float]:
    """The quadratic Lagrange weights of nodes 0, 1/2 and 1 at ``t``."""
    return 2.0 * (t - 0.5) * (t - 1.0), -4.0 * t * (t - 1.0), 2.0 * t * (t - 0.5)


@njit(nogil=True, cache=True, error_model="numpy")
def _interpolate(hdr, level, goff, boff, gx, gy, bound, x, y, ok, todo):
    """Interpolate the points in place (the biquadratic through their
    sub-cell's 3 x 3 exact points); list in ``todo`` those to transform
    exactly and return how many.

    A point's value depends on the point and its sub-cell only: the
    quadratic along the sub-cell's rows at the point's ``v``, in powers of
    ``u`` (``sx = px + u (qx + u rx)``), then at ``u``. GDAL asks for a row of
    points at a time, so that quadratic is kept while the sub-cell and the
    row stay the same.
    """
    s0 = float(hdr[_H_SPACING])
    inv0 = 1.0 / s0  # powers of two: exact
    ci0, cj0, ncx, ncy = hdr[_H_CI0], hdr[_H_CJ0], hdr[_H_NCX], hdr[_H_NCY]
    k = 0
    # the current sub-cell: its row, x-range [lo, hi), origin, scale, index
    row, lo, hi = np.nan, 0.0, -1.0
    origin = inv = 0.0
    a = 0
    px0 = qx = rx = py0 = qy = ry = b = 0.0
    for p in range(x.size):
        xp, yp = x[p], y[p]
        if not (yp == row and lo <= xp < hi):
            fi, fj = np.floor(xp * inv0), np.floor(yp * inv0)
            if not (np.isfinite(fi) and np.isfinite(fj)):
                hdr[_H_MISSES] += 1
                todo[k] = p
                k += 1
                row = np.nan
                continue
            i, j = int(fi) - ci0, int(fj) - cj0
            if not (0 <= i < ncx and 0 <= j < ncy):
                hdr[_H_MISSES] += 1
                todo[k] = p
                k += 1
                row = np.nan
                continue
            t = j * ncx + i
            lev = level[t]
            if lev < 0:
                todo[k] = p
                k += 1
                row = np.nan
                continue
            m = 1 << lev
            inv = inv0 * m
            origin = fi * s0
            a = int(np.floor((xp - origin) * inv))  # place in the cell, in sub-cells
            fy = (yp - fj * s0) * inv
            c = int(np.floor(fy))
            row, lo, hi = yp, origin + a / inv, origin + (a + 1) / inv
            b = bound[boff[t] + c * m + a]
            w0, w1, w2 = _weights(fy - c)
            width = 2 * m + 1
            r0 = goff[t] + 2 * c * width + 2 * a
            r1, r2 = r0 + width, r0 + 2 * width
            x0 = w0 * gx[r0] + w1 * gx[r1] + w2 * gx[r2]
            x1 = w0 * gx[r0 + 1] + w1 * gx[r1 + 1] + w2 * gx[r2 + 1]
            x2 = w0 * gx[r0 + 2] + w1 * gx[r1 + 2] + w2 * gx[r2 + 2]
            y0 = w0 * gy[r0] + w1 * gy[r1] + w2 * gy[r2]
            y1 = w0 * gy[r0 + 1] + w1 * gy[r1 + 1] + w2 * gy[r2 + 1]
            y2 = w0 * gy[r0 + 2] + w1 * gy[r1 + 2] + w2 * gy[r2 + 2]
            px0, qx, rx = x0, 4.0 * x1 - 3.0 * x0 - x2, 2.0 * (x0 + x2) - 4.0 * x1
            py0, qy, ry = y0, 4.0 * y1 - 3.0 * y0 - y2, 2.0 * (y0 + y2) - 4.0 * y1
            if not b < np.inf:
                row = np.nan
        u = (xp - origin) * inv - a
        sx = px0 + u * (qx + u * rx)
        sy = py0 + u * (qy + u * ry)
        if _near_line(sx, b) or _near_line(sy, b):
            todo[k] = p
            k += 1
            continue
        x[p], y[p] = sx, sy
        ok[p] = 1
    return k


@njit(nogil=True, cache=True, error_model="numpy")
def _transform(hdr: np.ndarray, dst_to_src: int, x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> None:
    n = x.size
    # GDAL's warper may see the window as a dataset of its own: its pixel
    # coordinates are the output grid's less the window's offset (integers,
    # so adding them back is exact).
    dx, dy = float(hdr[_H_DX]), float(hdr[_H_DY])
    if dst_to_src == 0:
        # Source to destination (GDAL asks for a few points): exactly.
        _exact(hdr, 0, x, y, ok)
        for p in range(n):
            x[p] -= dx
            y[p] -= dy
        return
    if dx != 0.0 or dy != 0.0:
        for p in range(n):
            x[p] += dx
            y[p] += dy
    ncells = hdr[_H_NCX] * hdr[_H_NCY]
    level = carray(_voidptr(hdr[_H_LEVEL]), (ncells,), np.int64)
    goff = carray(_voidptr(hdr[_H_GOFF]), (ncells,), np.int64)
    boff = carray(_voidptr(hdr[_H_BOFF]), (ncells,), np.int64)
    gx = carray(_voidptr(hdr[_H_GX]), (hdr[_H_NG],), np.float64)
    gy = carray(_voidptr(hdr[_H_GY]), (hdr[_H_NG],), np.float64)
    bound = carray(_voidptr(hdr[_H_BOUND]), (hdr[_H_NB],), np.float64)
    todo = np.empty(n, np.int64)
    k = _interpolate(hdr, level, goff, boff, gx, gy, bound, x, y, ok, todo)
    if k:
        ex, ey, eok = np.empty(k), np.empty(k), np.zeros(k, np.intc)
        for q in range(k):
            ex[q], ey[q] = x[todo[q]], y[todo[q]]
        _exact(hdr, 1, ex, ey, eok)
        for q in range(k):
            p = todo[q]
            x[p], y[p] = ex[q], ey[q]
            ok[p] = eok[q] if np.isfinite(ex[q]) and np.isfinite(ey[q]) else 0


@njit(nogil=True, cache=True)
def transform_row(hdr: np.ndarray, x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> None:
    """Destination to source coordinates of the points, in place, as the C
    transformer gives them to GDAL's warper (``ok`` set where they are)."""
    _transform(hdr, 1, x, y, ok)


_SIG = types.intc(types.voidptr, types.intc, types.intc, types.CPointer(types.double),
                  types.CPointer(types.double), types.CPointer(types.double), types.CPointer(types.intc))


def _transform_c(arg, dst_to_src, n, x, y, z, ok):
    hdr = carray(arg, (_HEADER,), np.int64)
    _transform(hdr, dst_to_src, carray(x, (n,)), carray(y, (n,)), carray(ok, (n,)))
    return 1


_compiled: list = []
_compiling = threading.Lock()


def transformer_function() -> int:
    """The address of the C transformer (``GDALTransformerFunc``) for
    :func:`rdask.io.warp_capi.warp_region`, whose argument is
    :attr:`WindowLattice.arg`. Compiled (or loaded from numba's cache) on
    first use, not at import."""
    with _compiling:
        if not _compiled:
            _compiled.append(cfunc(_SIG, nopython=True, cache=True)(_transform_c))
    return _compiled[0].address


# --------------------------------------------------------------------------
# a window's lattice
# --------------------------------------------------------------------------


@dataclass
class WindowLattice:
    """The cells a window's points fall in (each cell's level of refinement,
    exact points and bounds) and the transformer argument pointing at them
    (keep this object alive while GDAL warps)."""

    header: np.ndarray
    level: np.ndarray
    arrays: tuple[np.ndarray, ...]

    @property
    def arg(self) -> int:
        return int(self.header.ctypes.data)

    def offset(self, x0: int, y0: int) -> int:
        """The transformer argument for GDAL seeing the window's pixel
        ``(0, 0)`` as the output grid's ``(x0, y0)``."""
        self.header[_H_DX], self.header[_H_DY] = x0, y0
        return self.arg

    @property
    def misses(self) -> int:
        """Points asked for outside the window's cells (transformed exactly)."""
        return int(self.header[_H_MISSES])

    def bounds(self) -> np.ndarray:
        """Each cell's largest sub-cell bound (``inf`` where exact)."""
        _, _, boff, _, _, bound = self.arrays
        out = np.full(self.level.shape, np.inf)
        for t, lev in enumerate(self.level.ravel()):
            if lev >= 0:
                out.flat[t] = bound[boff[t]:boff[t] + 4 ** lev].max()
        return out


def window_lattice(exact: ExactTransformer, x0: int, y0: int, x1: int, y1: int,
                   threshold: float, spacing: int = SPACING, finest: int = FINEST,
                   tolerance: float = TOLERANCE) -> WindowLattice:
    """The cells covering destination pixel coordinates ``[x0, x1] x [y0, y1]``
    (pixel corners included), refined as the module docstring says.

    Parameters
    ----------
    exact : ExactTransformer
        GDAL's exact transformer of the warp.
    x0, y0, x1, y1 : int
        The window, in the full destination grid's pixel coordinates.
    threshold : float
        Largest bound (source pixels) a cell may have to be interpolated.
    spacing, finest : int
        Cell and smallest sub-cell sides, in output pixels (powers of two).
    tolerance : float
        Bound a cell is refined to reach.
    """
    ci0, cj0 = x0 // spacing, y0 // spacing
    ncx, ncy = x1 // spacing - ci0 + 1, y1 // spacing - cj0 + 1
    target = min(tolerance, threshold)
    # Level 0: every cell, from one grid of half-cell points (and a ring).
    gx, gy = _half_grid(exact, ci0, cj0, ncx, ncy, spacing)
    bound0 = np.maximum(cell_bounds(gx), cell_bounds(gy))
    pieces: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    pending: list[int] = []
    for j in range(ncy):
        for i in range(ncx):
            piece = (gx[2 * j + 2:2 * j + 5, 2 * i + 2:2 * i + 5], gy[2 * j + 2:2 * j + 5, 2 * i + 2:2 * i + 5],
                     bound0[j:j + 1, i:i + 1])
            t = j * ncx + i
            if not np.isfinite(bound0[j, i]):
                continue
            pieces[t] = piece
            if bound0[j, i] > target:
                pending.append(t)
    # Finer levels, for the cells not yet accurate enough.
    level = np.zeros(ncy * ncx, np.int64)
    m = 1
    while pending and spacing // (2 * m) >= finest:
        m *= 2
        grids = _sub_grids(exact, [(ci0 + t % ncx, cj0 + t // ncx) for t in pending], spacing, m)
        still = []
        for t, (sx, sy) in zip(pending, grids, strict=True):
            sub = np.maximum(cell_bounds(sx), cell_bounds(sy))
            if not np.isfinite(sub).all():
                continue  # a point failed: keep the coarser piece (or none)
            pieces[t] = (sx[2:-2, 2:-2], sy[2:-2, 2:-2], sub)
            level[t] = m.bit_length() - 1
            if sub.max() > target:
                still.append(t)
        pending = still
    # Exact where even the finest piece errs by more than the threshold.
    for t in range(ncy * ncx):
        if t not in pieces or not pieces[t][2].max() <= threshold:
            level[t] = -1
    return _pack(exact, level.reshape(ncy, ncx), pieces, spacing, ci0, cj0)


def exact_lattice(exact: ExactTransformer, x0: int, y0: int, x1: int, y1: int,
                  spacing: int = SPACING) -> WindowLattice:
    """The cells of :func:`window_lattice`, every one transformed exactly
    (the exact mode through the same transformer)."""
    ci0, cj0 = x0 // spacing, y0 // spacing
    level = np.full((y1 // spacing - cj0 + 1, x1 // spacing - ci0 + 1), -1, np.int64)
    return _pack(exact, level, {}, spacing, ci0, cj0)


def _half_grid(exact: ExactTransformer, ci0: int, cj0: int, ncx: int, ncy: int,
               spacing: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact source coordinates at every half-cell point of the cells and
    of a ring of one cell around them: shape ``(2 ncy + 5, 2 ncx + 5)``."""
    half = spacing / 2.0
    cols = (2 * (ci0 - 1) + np.arange(2 * ncx + 5)) * half
    rows = (2 * (cj0 - 1) + np.arange(2 * ncy + 5)) * half
    px, py = np.meshgrid(cols, rows)
    return exact.transform(px, py)


def _sub_grids(exact: ExactTransformer, cells: list[tuple[int, int]], spacing: int,
               m: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each cell (global indices), the half-grid of its ``m x m``
    sub-cells and a ring of one sub-cell, transformed in one call."""
    step = spacing / (2 * m)
    k = np.arange(2 * m + 5) - 2
    px, py = [], []
    for ci, cj in cells:
        gx, gy = np.meshgrid(ci * 2 * m + k, cj * 2 * m + k)
        px.append(gx.ravel() * step)
        py.append(gy.ravel() * step)
    sx, sy = exact.transform(np.concatenate(px), np.concatenate(py))
    shape = (2 * m + 5, 2 * m + 5)
    size = shape[0] * shape[1]
    return [(sx[n * size:(n + 1) * size].reshape(shape), sy[n * size:(n + 1) * size].reshape(shape))
            for n in range(len(cells))]


def _pack(exact: ExactTransformer, level: np.ndarray, pieces: dict, spacing: int, ci0: int,
          cj0: int) -> WindowLattice:
    ncy, ncx = level.shape
    goff = np.zeros(ncy * ncx, np.int64)
    boff = np.zeros(ncy * ncx, np.int64)
    gxs, gys, bounds = [], [], []
    ng = nb = 0
    for t, lev in enumerate(level.ravel()):
        if lev < 0:
            continue
        sx, sy, sub = pieces[t]
        goff[t], boff[t] = ng, nb
        gxs.append(sx.ravel())
        gys.append(sy.ravel())
        bounds.append(sub.ravel())
        ng += sx.size
        nb += sub.size
    empty = np.zeros(1)
    gx = np.ascontiguousarray(np.concatenate(gxs)) if gxs else empty
    gy = np.ascontiguousarray(np.concatenate(gys)) if gys else empty
    bound = np.ascontiguousarray(np.concatenate(bounds)) if bounds else empty
    flat = np.ascontiguousarray(level.ravel())
    header = np.zeros(_HEADER, np.int64)
    header[[_H_SPACING, _H_CI0, _H_CJ0, _H_NCX, _H_NCY]] = spacing, ci0, cj0, ncx, ncy
    for slot, arr in ((_H_LEVEL, flat), (_H_GOFF, goff), (_H_BOFF, boff), (_H_GX, gx), (_H_GY, gy),
                      (_H_BOUND, bound)):
        header[slot] = arr.ctypes.data
    header[_H_NG], header[_H_NB] = gx.size, bound.size
    header[_H_EXACT_FN], header[_H_EXACT] = exact_function(), exact.arg
    return WindowLattice(header, level, (flat, goff, boff, gx, gy, bound))


#: Largest error of the quadratic through three points ``d`` apart, per unit
#: of the third difference at that spacing: ``max |t (t - d) (t - 2d)| / 6``
#: over ``[0, 2d]``, over ``d^3``.
_QUADRATIC_ERROR = 1.0 / (9.0 * math.sqrt(3.0))


def cell_bounds(g: np.ndarray) -> np.ndarray:
    """One source coordinate's interpolation error bound per cell.

    ``g`` holds the exact coordinate at every half-cell point of the cells
    and of a ring of one cell around them (shape ``(2 n + 5, 2 m + 5)`` for
    ``n x m`` cells). The biquadratic through a cell's 3 x 3 points errs by
    at most :data:`_QUADRATIC_ERROR` times the third differences along x
    and along y (the cubic terms it cannot follow), taken as the largest
    over the rows and columns of the cell and the stencils that overlap it,
    times :data:`SAFETY` (for what varies the third derivative), plus the
    arithmetic's own rounding. NaN where a point failed.
    """
    d3x = np.abs(g[:, 3:] - 3 * g[:, 2:-1] + 3 * g[:, 1:-2] - g[:, :-3])
    d3y = np.abs(g[3:, :] - 3 * g[2:-1, :] + 3 * g[1:-2, :] - g[:-3, :])
    n, m = (g.shape[0] - 5) // 2, (g.shape[1] - 5) // 2
    # A cell's 3 rows of x-stencils start from one half-cell before it to
    # one after (and likewise its columns of y-stencils).
    out_x = _max3x3(d3x)[2:2 + 2 * n:2, 1:1 + 2 * m:2]
    out_y = _max3x3(d3y)[1:1 + 2 * n:2, 2:2 + 2 * m:2]
    scale = np.nanmax(np.abs(g)) if np.isfinite(g).any() else 0.0
    rounding = FLOOR + 64 * np.finfo(np.float64).eps * scale
    return SAFETY * _QUADRATIC_ERROR * (out_x + out_y) + rounding


def _max3x3(a: np.ndarray) -> np.ndarray:
    """``out[r, c] = a[r:r + 3, c:c + 3].max()`` (NaN if any is NaN)."""
    rows = np.maximum(np.maximum(a[:-2], a[1:-1]), a[2:])
    return np.maximum(np.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def footprint_margin(threshold: float) -> int:
    """Extra source pixels a window's footprint needs for interpolated
    coordinates (they stray from the exact ones by at most ``threshold``)."""
    return math.ceil(threshold) if threshold > 0 else 0
