"""Reprojection read chunk by chunk, with the same pixels at any chunking.

A :class:`WarpedSource` quacks like :class:`~rdask.io.files.FileSource`
over a target :class:`Grid`: ``read(y0, y1, x0, x1)`` of any window returns
what the warp of the whole raster in one piece writes there. Each window
reads from its source only the pixels it needs (``FileSource.read`` of the
destination window's footprint, grown by the resampling kernel) and warps
them, in one of two modes:

* **exact** (``error_threshold=0``): every pixel centre transformed by
  GDAL's exact transformer; the pixels are ``gdalwarp -et 0``'s, bit for
  bit;
* **fast** (``error_threshold > 0``, the warp step's default): coordinates
  from exact points on cells fixed to the output grid, with an error bound
  (:mod:`rdask.io.warp_lattice`); the pixels do not depend on the chunking
  either, and differ from ``-et 0``'s by the coordinates' error only.

Three things would otherwise make pixels depend on the chunking, and each is
pinned to what the whole-raster warp does:

* **The transformer.** GDAL's approximate transformer (``-et 0.125``)
  interpolates coordinates along each chunk's rows; neither mode uses it.
* **The kernel's scale.** ``GDALWarpKernel`` scales bilinear, cubic, lanczos
  (and the averaging footprints' margins) by ``XSCALE/YSCALE``, which it
  derives from each chunk's source window
  (``GDALWarpOperation::ComputeSourceWindow``). :func:`warp_scales`
  computes it once, as GDAL does for the whole output, and every window is
  warped with ``XSCALE``/``YSCALE`` set to it.
* **The pixel coordinates.** The warper maps destination pixel
  ``(i + 0.5 + xoff)`` through the full raster's geotransform; a window
  given its own shifted geotransform would round differently. The
  transformer here sees the full grid's pixel coordinates (it adds the
  window's offset, an integer, itself), and the source is a *full-size*
  VRT placing the pixels read at their offset (zero-copy through GDAL's
  MEM driver).

GDAL's warper does the pixel work, through its C API
(:mod:`rdask.io.warp_capi`) with a numba transformer
(:mod:`rdask.io.warp_lattice`) that calls GDAL's exact transformer for
every point in the exact mode; ``nearest`` and 4-sample ``bilinear`` run
as numba kernels that compute what GDAL's compute
(:mod:`rdask.io.warp_direct`), in both modes.
As gdalwarp does, a geographic source gets ``CENTER_LONG`` (the middle of
its longitudes) and a last band marked alpha is ``-srcalpha``/``-dstalpha``.

Known gaps: ``sum`` (GDAL 3.10's ``GWKSumPreserving`` spreads source pixels
over target pixels and is not chunk-exact, even in GDAL's own blocked
warps); the ``AREA_OF_INTEREST`` gdalwarp gives PROJ (it only picks among
datum transformations) is not set.

A window whose source footprint would exceed ``max_source_bytes`` (near a
pole, or when downsampling 100x) is split in halves until each part's
footprint fits; the fixed scale makes the parts agree with the whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import numpy as np
from affine import Affine

from rdask.config import WARP_ERROR_THRESHOLD
from rdask.errors import RasterOpenError
from rdask.io.base import SourceArray
from rdask.io.files import FileSource, check_not_forked
from rdask.io.gdalenv import gdal_env

if TYPE_CHECKING:
    from rdask.io.warp_lattice import WindowLattice

# warp_capi, warp_lattice and warp_direct compile numba functions when
# imported (a few tenths of a second): imported where a warp runs, so that
# a job without one does not pay for them.

#: GDAL's name (``ResampleAlg`` in a warped VRT) and its filter radius
#: (``anGWKFilterRadius`` in alg/gdalwarpkernel.cpp) per resampling.
RESAMPLINGS: dict[str, tuple[str, int]] = {
    "nearest": ("NearestNeighbour", 0),
    "bilinear": ("Bilinear", 1),
    "cubic": ("Cubic", 2),
    "cubic_spline": ("CubicSpline", 2),
    "lanczos": ("Lanczos", 3),
    "average": ("Average", 0),
    "mode": ("Mode", 0),
    "min": ("Minimum", 0),
    "max": ("Maximum", 0),
    "med": ("Median", 0),
    "q1": ("Quartile1", 0),
    "q3": ("Quartile3", 0),
    "sum": ("Sum", 0),
    "rms": ("RootMeanSquare", 0),
}

#: The warp step's default error threshold, in source pixels (gdalwarp's):
#: the fast mode (see :mod:`rdask.io.warp_lattice`); 0 is the exact mode.
DEFAULT_ERROR_THRESHOLD = WARP_ERROR_THRESHOLD

#: Default cap on the source pixels one warp holds (all bands and mask).
DEFAULT_MAX_SOURCE_BYTES = 256 * 2**20

#: GDAL's default number of sample points per edge (``SAMPLE_STEPS``).
_STEPS = 21

_GDAL_TYPES = {
    "uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
    "uint32": "UInt32", "int32": "Int32", "uint64": "UInt64", "int64": "Int64",
    "float32": "Float32", "float64": "Float64",
}


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS (a rasterio ``CRS``), transform, size."""

    crs: Any
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @classmethod
    def of(cls, dataset_or_path: Any) -> Grid:
        """The grid of a raster: an open dataset or a path to one."""
        import rasterio

        if isinstance(dataset_or_path, (str, bytes)) or hasattr(dataset_or_path, "__fspath__"):
            with rasterio.open(dataset_or_path) as ds:
                return cls.of(ds)
        ds = dataset_or_path
        return cls(ds.crs, ds.transform, int(ds.width), int(ds.height))


def _crs(value: Any) -> Any:
    from rasterio.crs import CRS

    return value if isinstance(value, CRS) else CRS.from_user_input(value)


# --------------------------------------------------------------------------
# target grid (gdalwarp's output grid)
# --------------------------------------------------------------------------


def target_grid(
    src: Grid,
    *,
    crs: Any = None,
    resolution: float | tuple[float, float] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    like: Grid | None = None,
    tap: bool = False,
) -> Grid:
    """The grid ``gdalwarp -t_srs crs [-tr res res] [-te l b r t] [-tap]`` makes.

    Parameters
    ----------
    src : Grid
        The source grid.
    crs : optional
        Target CRS (anything ``CRS.from_user_input`` takes); default the
        source's.
    resolution : float or (float, float), optional
        Target pixel size (``-tr``).
    bounds : (left, bottom, right, top), optional
        Target extent (``-te``).
    like : Grid, optional
        Return exactly this grid (the other arguments must be None).
    tap : bool
        ``-tap``: align the extent on multiples of ``resolution`` (which it
        needs), outwards.

    Returns
    -------
    Grid
        The output grid. The suggested extent and resolution
        are GDAL's ``GDALSuggestedWarpOutput2``, then ``-tr``/``-te`` are
        applied with gdalwarp's rounding. ``bounds`` without ``resolution``
        takes the finest source resolution sampled inside the target
        extent, as gdalwarp does (not the whole source's suggested one).
    """
    if like is not None:
        if crs is not None or resolution is not None or bounds is not None or tap:
            raise ValueError("target_grid: give either like= or crs/resolution/bounds/tap, not both")
        return like
    if tap and resolution is None:
        raise ValueError("target_grid: tap needs a resolution (gdalwarp's -tap needs -tr)")
    dst_crs = _crs(crs) if crs is not None else src.crs
    gt, width, height = _suggested(src, dst_crs)
    if resolution is not None:
        xres, yres = (resolution, resolution) if np.isscalar(resolution) else resolution
        gt, width, height = _apply_resolution(gt, width, height, float(xres), float(yres), bounds, tap)
    elif bounds is not None:
        res = _resolution_in(src, dst_crs, bounds)
        gt, width, height = _apply_bounds(gt if res is None else Affine(res, 0, gt.c, 0, -res, gt.f), bounds)
    return Grid(dst_crs, gt, int(width), int(height))


def _suggested(src: Grid, dst_crs: Any) -> tuple[Affine, int, int]:
    """GDALSuggestedWarpOutput2 of the source grid (through rasterio)."""
    from rasterio.control import GroundControlPoint
    from rasterio.warp import calculate_default_transform

    t = src.transform
    if t.b == 0 and t.d == 0:
        left, top = t.c, t.f
        right, bottom = t @ (src.width, src.height)
        return calculate_default_transform(
            src.crs, dst_crs, src.width, src.height,
            left=left, bottom=min(bottom, top), right=right, top=max(bottom, top))
    # rasterio takes a north-up extent only; a rotated grid goes in as the
    # four corner GCPs, which GDAL's first-order GCP transformer fits exactly.
    corners = [(0, 0), (src.width, 0), (0, src.height), (src.width, src.height)]
    gcps = [GroundControlPoint(row=r, col=c, x=(t @ (c, r))[0], y=(t @ (c, r))[1], z=0.0,
                               id=str(i), info="corner")
            for i, (c, r) in enumerate(corners)]
    return calculate_default_transform(src.crs, dst_crs, src.width, src.height, gcps=gcps)


def _apply_resolution(gt: Affine, width: int, height: int, xres: float, yres: float,
                      bounds: tuple[float, float, float, float] | None,
                      tap: bool = False) -> tuple[Affine, int, int]:
    # gdalwarp_lib.cpp: the extent is -te, or the suggested one, aligned
    # outwards on the resolution with -tap; the size is rounded to the
    # nearest pixel and the origin kept.
    if bounds is None:
        minx, maxy = gt.c, gt.f
        maxx, miny = gt.c + gt.a * width, gt.f + gt.e * height
    else:
        minx, miny, maxx, maxy = bounds
    if tap:
        minx, maxx = math.floor(minx / xres) * xres, math.ceil(maxx / xres) * xres
        miny, maxy = math.floor(miny / yres) * yres, math.ceil(maxy / yres) * yres
    nx = int((maxx - minx + xres / 2.0) / xres)
    ny = int((abs(maxy - miny) + yres / 2.0) / yres)
    return Affine(xres, 0.0, minx, 0.0, -yres if maxy > miny else yres, maxy), nx, ny


def _resolution_in(src: Grid, dst_crs: Any, bounds: tuple[float, float, float, float]) -> float | None:
    """gdalwarp's resolution for ``-te`` without ``-tr``: the source's local
    pixel size at 10 x 10 points of the target extent (each with a neighbour
    a thousandth of the extent away in x and in y), the finest that is not
    an outlier (< median / 10); None when no point lands in the source."""
    minx, miny, maxx, maxy = bounds
    eps = min(maxx - minx, abs(maxy - miny)) / 1000
    n = 10
    xs = minx + np.arange(n) * (maxx - minx) / (n - 1)
    ys = miny + np.arange(n) * (maxy - miny) / (n - 1)
    gx, gy = np.meshgrid(xs, ys)
    # Neighbours step inwards at the last row/column, as gdalwarp's do.
    nx = np.where(np.arange(n)[None, :] == n - 1, gx - eps, gx + eps)
    ny = np.where(np.arange(n)[:, None] == n - 1, gy - eps, gy + eps)
    georef = Grid(dst_crs, Affine.identity(), 1, 1)
    px = np.stack([gx, nx, gx]).ravel()
    py = np.stack([gy, gy, ny]).ravel()
    sx, sy = _dst_to_src(src, georef, px, py)
    sx, sy = sx.reshape(3, -1), sy.reshape(3, -1)
    inside = (sx[0] >= 0) & (sy[0] >= 0) & (sx[0] <= src.width) & (sy[0] <= src.height)
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = abs(eps) / np.hypot(sx[1] - sx[0], sy[1] - sy[0])
        r2 = abs(eps) / np.hypot(sx[2] - sx[0], sy[2] - sy[0])
    ok = inside & np.isfinite(r1) & np.isfinite(r2)
    return _finest(list(zip(r1[ok], r2[ok], strict=True)))


def _finest(pairs: list[tuple[float, float]]) -> float | None:
    """gdalwarp's outlier filter: drop pairs under a tenth of the median of
    the x, then of the y resolutions; the finest mean above a tenth of theirs."""
    for k in (0, 1):
        if not pairs:
            return None
        pairs.sort(key=lambda p: p[k])
        median = pairs[len(pairs) // 2][k]
        pairs = [p for p in pairs if p[k] > median / 10]
    means = sorted((a + b) / 2 for a, b in pairs)
    if not means:
        return None
    median = means[len(means) // 2]
    return next((m for m in means if m > median / 10), None)


def _apply_bounds(gt: Affine, bounds: tuple[float, float, float, float]) -> tuple[Affine, int, int]:
    # -te alone: keep the suggested resolution for the size, then stretch the
    # pixels to fit the extent exactly (gdalwarp_lib.cpp).
    minx, miny, maxx, maxy = bounds
    xres, yres = gt.a, abs(gt.e)
    nx = int((maxx - minx + xres / 2.0) / xres)
    ny = int((maxy - miny + yres / 2.0) / yres)
    return Affine((maxx - minx) / nx, 0.0, minx, 0.0, -(maxy - miny) / ny, maxy), nx, ny


# --------------------------------------------------------------------------
# destination pixel -> source pixel, as GDALGenImgProjTransform computes it
# --------------------------------------------------------------------------


def _inv_geotransform(t: Affine) -> tuple[float, ...]:
    """GDALInvGeoTransform, operation for operation."""
    g0, g1, g2, g3, g4, g5 = t.to_gdal()
    if g2 == 0.0 and g4 == 0.0 and g1 != 0.0 and g5 != 0.0:
        return (-g0 / g1, 1.0 / g1, 0.0, -g3 / g5, 0.0, 1.0 / g5)
    det = g1 * g5 - g2 * g4
    inv = 1.0 / det
    return ((g2 * g3 - g0 * g5) * inv, g5 * inv, -g2 * inv,
            (-g1 * g3 + g0 * g4) * inv, -g4 * inv, g1 * inv)


def transformer_xml(src: Grid, dst: Grid) -> str:
    """The ``<GenImgProjTransformer>`` gdalwarp builds from ``dst`` pixels to
    ``src`` pixels (exact), as a warped VRT serialises it.

    A geographic source gets gdalwarp's ``CENTER_LONG``: the middle of its
    longitudes (corners), printed as ``%g``, so that a source crossing
    180 degrees (170 to 190, say) keeps its longitudes past 180.
    """
    reproject = ""
    if src.crs != dst.crs:
        centre = _center_long(src)
        options = ("" if centre is None else
                   f'<Options><Option key="CENTER_LONG">{centre:g}</Option></Options>')
        reproject = (f"<ReprojectTransformer><ReprojectionTransformer>"
                     f"<SourceSRS>{escape(src.crs.to_wkt())}</SourceSRS>"
                     f"<TargetSRS>{escape(dst.crs.to_wkt())}</TargetSRS>{options}"
                     f"</ReprojectionTransformer></ReprojectTransformer>")
    return (f"<GenImgProjTransformer><SrcGeoTransform>{_gt(src.transform)}</SrcGeoTransform>"
            f"<DstGeoTransform>{_gt(dst.transform)}</DstGeoTransform>{reproject}</GenImgProjTransformer>")


def _center_long(src: Grid) -> float | None:
    if src.crs is None or not src.crs.is_geographic:
        return None
    t = src.transform
    xs = [(t * corner)[0] for corner in ((0, 0), (src.width, 0), (0, src.height), (src.width, src.height))]
    return (min(xs) + max(xs)) / 2


def _dst_to_src(src: Grid, dst: Grid, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel coordinates of destination pixel coordinates, by GDAL's
    own exact transformer (NaN where the reprojection fails)."""
    from rdask.io.warp_capi import exact_transformer

    return exact_transformer(transformer_xml(src, dst)).transform(px, py)


def _src_to_dst(src: Grid, dst: Grid, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Destination pixel coordinates of source pixel coordinates."""
    from rdask.io.warp_capi import exact_transformer

    return exact_transformer(transformer_xml(src, dst)).transform(px, py, dst_to_src=False)


def _reproject_xy(fn: Any, from_crs: Any, to_crs: Any, x: np.ndarray,
                  y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    shape = np.shape(x)
    xs, ys = np.ravel(x).astype(float), np.ravel(y).astype(float)
    try:
        ox, oy = fn(from_crs, to_crs, xs, ys)
    except Exception:  # noqa: BLE001 - PROJ refuses a whole batch; go point by point
        ox, oy = _reproject_each(fn, from_crs, to_crs, xs, ys)
    ox, oy = np.asarray(ox, float), np.asarray(oy, float)
    bad = ~(np.isfinite(ox) & np.isfinite(oy)) | (np.abs(ox) > 1e300)
    ox[bad] = np.nan
    oy[bad] = np.nan
    return ox.reshape(shape), oy.reshape(shape)


def _reproject_each(fn: Any, from_crs: Any, to_crs: Any, xs: np.ndarray,
                    ys: np.ndarray) -> tuple[list[float], list[float]]:
    ox, oy = [], []
    for x, y in zip(xs, ys, strict=True):
        try:
            (a,), (b,) = fn(from_crs, to_crs, [x], [y])
        except Exception:  # noqa: BLE001 - a point PROJ cannot transform
            a = b = math.nan
        ox.append(a)
        oy.append(b)
    return ox, oy


# --------------------------------------------------------------------------
# GDAL's whole-raster source window and scale
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _SourceWindow:
    """``ComputeSourceWindow``'s outputs: the window and the extra margin."""

    xoff: int
    yoff: int
    xsize: int
    ysize: int
    xextra: float
    yextra: float


def _edge_points(x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    # The loop of ComputeSourceWindow, including its accumulated ratio.
    step = 1.0 / (_STEPS - 1)
    xs: list[float] = []
    ys: list[float] = []
    ratio = 0.0
    while ratio <= 1.0 + step * 0.5:
        xs += [ratio * w + x0, ratio * w + x0, float(x0), float(w + x0)]
        ys += [float(y0), float(y0 + h), ratio * h + y0, ratio * h + y0]
        ratio += step
    return np.array(xs), np.array(ys)


def _grid_ratios(n: int) -> list[float]:
    step = 1.0 / (_STEPS - 1)
    return [0.5 / n] + [i * step for i in range(_STEPS)] + [1 - 0.5 / n]


def _grid_points(x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    # GDAL uses the destination width for both ratios' half-pixel inset.
    rx = np.array(_grid_ratios(w))
    ry = np.array(_grid_ratios(w))
    gx, gy = np.meshgrid(rx * w + x0, ry * h + y0)
    return gx.ravel(), gy.ravel()


def _from_source_points(src: Grid, dst: Grid, x0: int, y0: int, w: int,
                        h: int) -> tuple[np.ndarray, np.ndarray]:
    """ComputeSourceWindowStartingFromSource: source grid points whose image
    falls inside the destination window."""
    sx = np.array(_grid_ratios(src.width)) * src.width
    sy = np.array([0.5 / src.height] + [i / (_STEPS - 1) for i in range(_STEPS)]
                  + [1 - 0.5 / src.height]) * src.height
    px, py = np.meshgrid(sx, sy)
    dx, dy = _src_to_dst(src, dst, px.ravel(), py.ravel())
    inside = (dx >= x0) & (dx <= x0 + w) & (dy >= y0) & (dy <= y0 + h)
    return px.ravel()[inside], py.ravel()[inside]


def _special_points_inside(src: Grid, dst: Grid) -> bool:
    # GDAL samples a grid when a pole of a geographic source falls in the
    # target raster.
    if not src.crs.is_geographic or src.crs == dst.crs:
        return False
    from rasterio.warp import transform as reproject_points

    lon, lat = np.array([0.0, 0.0]), np.array([-90.0, 90.0])
    gx, gy = _reproject_xy(reproject_points, src.crs, dst.crs, lon, lat)
    i = _inv_geotransform(dst.transform)
    px, py = i[0] + gx * i[1] + gy * i[2], i[3] + gx * i[4] + gy * i[5]
    return bool(np.any((px >= 0) & (px <= dst.width) & (py >= 0) & (py <= dst.height)))


def _sampled_extent(src: Grid, dst: Grid, x0: int, y0: int, w: int,
                    h: int) -> tuple[float, float, float, float, int] | None:
    """The source-pixel extent ComputeSourceWindow samples, and its failures."""
    use_grid = _special_points_inside(src, dst)
    for attempt in ("edge", "grid"):
        if attempt == "edge" and use_grid:
            continue
        px, py = (_edge_points if attempt == "edge" else _grid_points)(x0, y0, w, h)
        sx, sy = _dst_to_src(src, dst, px, py)
        ok = np.isfinite(sx) & np.isfinite(sy)
        failed = int((~ok).sum())
        if attempt == "edge" and failed:
            continue
        if failed > len(px) - 5:
            return None
        xs, ys = sx[ok], sy[ok]
        if attempt == "grid":
            fx, fy = _from_source_points(src, dst, x0, y0, w, h)
            xs, ys = np.concatenate([xs, fx]), np.concatenate([ys, fy])
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()), failed
    return None


def _round_if_close(v: float) -> float:
    r = float(np.round(v))
    return r if abs(r - v) < 1e-6 else v


def _axis_window(lo: float, hi: float, n_dst: int, n_src: int, radius: int,
                 extra_radius: int) -> tuple[int, int, float]:
    """One axis of ComputeSourceWindow: offset, size and extra size."""
    scale = max(1e-3, n_dst / (hi - lo)) if hi > lo else 1e-3 if hi == lo else 1.0
    rad = math.ceil(radius / scale) if scale < 0.95 else radius
    rad += extra_radius
    lo_c = int(max(0.0, lo))
    hi_c = int(min(math.ceil(hi), float(n_src)))
    raw = max(0.0, min(float(n_src - lo_c), hi - lo))
    if hi_c - lo_c > 0.9 * n_src:
        off, size = 0, n_src
    else:
        off = max(0, min(lo_c - rad, n_src))
        size = max(0, min(n_src - off, hi_c - off + rad))
    return off, size, size - raw


def _source_window(src: Grid, dst: Grid, resampling: str, x0: int = 0, y0: int = 0,
                   w: int | None = None, h: int | None = None) -> _SourceWindow | None:
    """GDALWarpOperation::ComputeSourceWindow for a destination window."""
    w = dst.width if w is None else w
    h = dst.height if h is None else h
    ext = _sampled_extent(src, dst, x0, y0, w, h)
    if ext is None:
        return None
    minx, miny, maxx, maxy, failed = ext
    if minx > src.width or maxx < 0 or miny > src.height or maxy < 0:
        return _SourceWindow(0, 0, 0, 0, 0.0, 0.0)
    minx, miny, maxx, maxy = (_round_if_close(v) for v in (minx, miny, maxx, maxy))
    radius = RESAMPLINGS[resampling][1]
    extra = 10 if failed else 0
    xoff, xsize, xextra = _axis_window(minx, maxx, w, src.width, radius, extra)
    yoff, ysize, yextra = _axis_window(miny, maxy, h, src.height, radius, extra)
    return _SourceWindow(xoff, yoff, xsize, ysize, xextra, yextra)


def _kernel_scale(n_dst: int, n_src: int, extra: float) -> float:
    """GDALWarpKernel::PerformWarp's scale from a window (before XSCALE)."""
    scale = n_dst / (n_src - extra)
    if n_dst <= n_src <= n_dst + extra:
        scale = 1.0
    if scale < 1.0:
        recip = 1.0 / scale
        n = int(recip + 0.5)
        if abs(recip - n) < 0.05:
            scale = 1.0 / n
    return scale


def warp_scales(src: Grid, dst: Grid, resampling: str) -> tuple[float, float]:
    """The kernel scale (``XSCALE``, ``YSCALE``) GDAL uses for the whole output.

    Parameters
    ----------
    src, dst : Grid
        Source and target grids.
    resampling : str
        One of :data:`RESAMPLINGS`.

    Returns
    -------
    (float, float)
        What ``GDALWarpKernel::PerformWarp`` computes when the whole target
        raster is one chunk: destination size over the sampled source extent
        (``ComputeSourceWindow`` in alg/gdalwarpoperation.cpp: edge samples,
        or a grid when points fail, clamped to the raster), snapped to 1 or
        to an integer reciprocal as the kernel does. ``(1.0, 1.0)`` when no
        source pixel is reached.
    """
    _check_resampling(resampling)
    win = _source_window(src, dst, resampling)
    if win is None or win.xsize <= 0 or win.ysize <= 0:
        return (1.0, 1.0)
    return (_kernel_scale(dst.width, win.xsize, win.xextra),
            _kernel_scale(dst.height, win.ysize, win.yextra))


def _check_resampling(resampling: str) -> None:
    if resampling not in RESAMPLINGS:
        raise ValueError(f"unknown resampling {resampling!r}; one of {', '.join(RESAMPLINGS)}")


# --------------------------------------------------------------------------
# the warped source
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class WarpedSource(SourceArray):
    """A :class:`FileSource` seen through a reprojection onto ``grid``.

    ``read`` of any window returns what the warp of the whole raster writes
    there (``gdalwarp -et 0``'s pixels when ``error_threshold`` is 0; see
    the module docstring). Build it with :func:`warped`, which computes
    ``scales``. ``src_nodata`` is the source's nodata value (pixels equal
    to it are not used), ``nodata`` the output's (written where no source
    pixel contributes; 0 when None), ``src_alpha`` the source's alpha band
    (1-based, 0 for none).
    """

    source: FileSource
    grid: Grid
    src_grid: Grid
    resampling: str
    nodata: float | None
    error_threshold: float = 0.0
    scales: tuple[float, float] = (1.0, 1.0)
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES
    src_nodata: float | None = None
    src_window: tuple[int, int, int, int] | None = field(default=None, repr=False)
    src_alpha: int = 0

    @property
    def per_dataset_mask(self) -> bool:
        # The source's mask is applied by the warp; the output marks pixels
        # without source with ``nodata``.
        return False

    @property
    def count(self) -> int:
        return self.source.count

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def dtype(self) -> str:
        return self.source.dtype

    @property
    def files(self) -> tuple:
        return self.source.files

    @property
    def gdal_options(self) -> tuple[tuple[str, Any], ...]:
        return self.source.gdal_options

    def __dask_tokenize__(self) -> tuple:
        return ("rdask.WarpedSource", self.source.__dask_tokenize__(), _grid_token(self.grid),
                _grid_token(self.src_grid), self.resampling, self.nodata, self.error_threshold,
                self.scales, self.max_source_bytes, self.src_nodata, self.src_window, self.src_alpha)

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        bsl, ysl, xsl = key
        b0, b1, _ = bsl.indices(self.count)
        y0, y1, _ = ysl.indices(self.height)
        x0, x1, _ = xsl.indices(self.width)
        return self.read(y0, y1, x0, x1, bands=(b0, b1))

    def read(self, y0: int, y1: int, x0: int, x1: int, *,
             bands: tuple[int, int] | None = None) -> np.ndarray:
        """Warp rows ``y0:y1`` and columns ``x0:x1`` of the target grid.

        Returns a ``(bands, y1 - y0, x1 - x0)`` array; ``bands`` is a
        ``(start, stop)`` range of 0-based positions.
        """
        b0, b1 = bands or (0, self.count)
        if self.src_alpha and (b0, b1) != (0, self.count):
            # The alpha band weighs every band's pixels: warp them all.
            return self.read(y0, y1, x0, x1)[b0:b1]
        out = np.empty((b1 - b0, max(0, y1 - y0), max(0, x1 - x0)), dtype=self.dtype)
        if out.size:
            out[...] = self._fill_value()
            for win in self._split((y0, y1, x0, x1), (b0, b1)):
                self._warp_into(out, (y0, x0), win, (b0, b1))
        return out

    # -- planning ----------------------------------------------------------

    def _fill_value(self) -> float:
        return 0 if self.nodata is None else self.nodata

    def _split(self, win: tuple[int, int, int, int],
               bands: tuple[int, int]) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int] | None]]:
        """Windows small enough that each one's source footprint fits the cap,
        each with that footprint (None where it reaches no source pixel)."""
        todo, done = [win], []
        per_pixel = (bands[1] - bands[0]) * np.dtype(self.dtype).itemsize + self._mask_bytes()
        while todo:
            w = todo.pop()
            need = self._footprint(w)
            y0, y1, x0, x1 = w
            big = need is not None and (need[1] - need[0]) * (need[3] - need[2]) * per_pixel > self.max_source_bytes
            if big and (y1 - y0 > 1 or x1 - x0 > 1):
                todo += _halves(w)
            else:
                done.append((w, need))
        return done

    def _mask_bytes(self) -> int:
        return 1 if self.source.per_dataset_mask else 0

    def _footprint(self, win: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
        """Source rows and columns ``(sy0, sy1, sx0, sx1)`` the window's pixels
        can reach: the sampled image of the window, grown by the kernel."""
        y0, y1, x0, x1 = win
        px, py = _window_samples(x0, y0, x1 - x0, y1 - y0)
        sx, sy = _dst_to_src(self.src_grid, self.grid, px, py)
        ok = np.isfinite(sx) & np.isfinite(sy)
        if not ok.all():
            # Some points fail to reproject (beyond a pole, off the
            # projection's domain): also keep source points landing inside.
            fx, fy = _from_source_points(self.src_grid, self.grid, x0, y0, x1 - x0, y1 - y0)
            sx, sy = np.concatenate([sx[ok], fx]), np.concatenate([sy[ok], fy])
        if sx.size == 0:
            return None
        rx, ry = self._margins()
        sx0 = math.floor(float(sx.min())) - rx
        sx1 = math.ceil(float(sx.max())) + rx
        sy0 = math.floor(float(sy.min())) - ry
        sy1 = math.ceil(float(sy.max())) + ry
        wy0, wy1, wx0, wx1 = self._whole_window()
        sx0, sx1 = max(sx0, wx0), min(sx1, wx1)
        sy0, sy1 = max(sy0, wy0), min(sy1, wy1)
        if sx0 >= sx1 or sy0 >= sy1:
            return None
        return (sy0, sy1, sx0, sx1)

    def _margins(self) -> tuple[int, int]:
        # The kernel reaches ceil(radius / scale) pixels when downsampling;
        # two more cover the pixel a coordinate falls in and rounding.
        # Interpolated coordinates (et > 0) stray up to et from the exact ones.
        radius = RESAMPLINGS[self.resampling][1]
        sx, sy = self.scales
        rx = math.ceil(radius / sx) if sx < 1.0 else radius
        ry = math.ceil(radius / sy) if sy < 1.0 else radius
        from rdask.io.warp_lattice import footprint_margin

        extra = 2 + footprint_margin(self.error_threshold)
        return rx + extra, ry + extra

    def _whole_window(self) -> tuple[int, int, int, int]:
        if self.src_window is not None:
            return self.src_window
        return (0, self.src_grid.height, 0, self.src_grid.width)

    # -- warping -----------------------------------------------------------

    def _warp_into(self, out: np.ndarray, origin: tuple[int, int],
                   job: tuple[tuple[int, int, int, int], tuple[int, int, int, int] | None],
                   bands: tuple[int, int]) -> None:
        (y0, y1, x0, x1), need = job
        if need is None:
            return
        sy0, sy1, sx0, sx1 = need
        check_not_forked()
        pixels = np.ascontiguousarray(self.source.read(sy0, sy1, sx0, sx1, bands=bands))
        mask = None
        if self.source.per_dataset_mask:
            mask = np.ascontiguousarray(self.source.read_mask(sy0, sy1, sx0, sx1), dtype=np.uint8)
        oy, ox = origin
        self._warp_window(out[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox], (y0, y1, x0, x1), need, pixels, mask)

    def _warp_window(self, out: np.ndarray, win: tuple[int, int, int, int], need: tuple[int, int, int, int],
                     pixels: np.ndarray, mask: np.ndarray | None) -> None:
        """Warp one window (``out``, pre-filled): its coordinates from the
        output-fixed lattice (:mod:`rdask.io.warp_lattice`; every one exact
        in the exact mode), nearest and bilinear by
        :mod:`rdask.io.warp_direct`, the others by GDAL's warper through its
        C API."""
        from rdask.io import warp_direct
        from rdask.io.warp_capi import exact_transformer
        from rdask.io.warp_lattice import exact_lattice, window_lattice

        y0, y1, x0, x1 = win
        sy0, sy1, sx0, sx1 = need
        exact = exact_transformer(self._transformer_xml())
        # Without a reprojection the exact transformation is a few
        # multiplications: every point takes it, as in the exact mode.
        if self.error_threshold > 0 and self.src_grid.crs != self.grid.crs:
            lattice = window_lattice(exact, x0, y0, x1, y1, self.error_threshold)
        else:
            lattice = exact_lattice(exact, x0, y0, x1, y1)
        buf = out if out.flags.c_contiguous else np.ascontiguousarray(out)
        if self._direct(pixels, mask):
            warp_direct.warp_window(lattice.header, pixels, (sy0, sx0), self.src_nodata, buf, (y0, x0),
                                    self.resampling)
        else:
            self._warp_gdal(buf, win, need, pixels, mask, lattice)
        if buf is not out:
            out[...] = buf

    def _direct(self, pixels: np.ndarray, mask: np.ndarray | None) -> bool:
        from rdask.io import warp_direct

        if not warp_direct.handles(self.resampling, str(np.dtype(self.dtype)), self.scales,
                                   self.src_nodata, self.nodata, mask is not None or self.src_alpha > 0):
            return False
        # NaN pixels that are not the nodata: GDAL's handling is its own
        # (not reproduced here).
        nan_nodata = self.src_nodata is not None and math.isnan(self.src_nodata)
        return pixels.dtype.kind != "f" or nan_nodata or not np.isnan(pixels).any()

    def _warp_gdal(self, buf: np.ndarray, win: tuple[int, int, int, int], need: tuple[int, int, int, int],
                   pixels: np.ndarray, mask: np.ndarray | None, lattice: WindowLattice) -> None:
        from rasterio.io import MemoryFile

        from rdask.io.warp_capi import warp_region
        from rdask.io.warp_lattice import transformer_function

        y0, y1, x0, x1 = win
        sy0, sy1, sx0, sx1 = need
        with self.source.env(), gdal_env(GDAL_MEM_ENABLE_OPEN="YES"):
            src_xml = self._source_vrt(pixels, mask, sy0, sx0)
            with MemoryFile(src_xml.encode(), ext=".vrt") as mf:
                options = self._warp_options(mf.name, pixels.shape[0], _GDAL_TYPES[str(np.dtype(self.dtype))])
                try:
                    warp_region(options, transformer_function(), lattice.offset(x0, y0),
                                (sx0, sy0, sx1 - sx0, sy1 - sy0), buf)
                except RasterOpenError as exc:
                    raise RasterOpenError(f"cannot warp rows {y0}:{y1}, cols {x0}:{x1}: {exc}") from None

    def _source_vrt(self, pixels: np.ndarray, mask: np.ndarray | None, sy0: int, sx0: int) -> str:
        """A full-size VRT of the source holding ``pixels`` at their place."""
        g = self.src_grid
        nodata = "" if self.src_nodata is None else f"<NoDataValue>{_num(self.src_nodata)}</NoDataValue>"
        dt = _GDAL_TYPES[str(pixels.dtype)]
        bands = "".join(
            f'<VRTRasterBand dataType="{dt}" band="{i + 1}">{nodata}'
            f"{_simple_source(pixels, i, sy0, sx0)}</VRTRasterBand>"
            for i in range(pixels.shape[0]))
        mask_xml = ""
        if mask is not None:
            mask_xml = (f'<MaskBand><VRTRasterBand dataType="Byte">'
                        f"{_simple_source(mask[None], 0, sy0, sx0)}</VRTRasterBand></MaskBand>")
        return (f'<VRTDataset rasterXSize="{g.width}" rasterYSize="{g.height}">'
                f"<SRS>{escape(g.crs.to_wkt())}</SRS><GeoTransform>{_gt(g.transform)}</GeoTransform>"
                f"{bands}{mask_xml}</VRTDataset>")

    def _warp_options(self, src_path: str, count: int, dt: str) -> str:
        """The ``<GDALWarpOptions>`` of a window (no transformer: ours is a
        C function; no destination: :func:`warp_region` adds its own). The
        source window is given to GDAL, so it computes none of its own."""
        opts = {
            "INIT_DEST": "0" if self.nodata is None else "NO_DATA",
            "XSCALE": repr(float(self.scales[0])),
            "YSCALE": repr(float(self.scales[1])),
            "ERROR_OUT_IF_EMPTY_SOURCE_WINDOW": "FALSE",
        }
        options = "".join(f'<Option name="{k}">{v}</Option>' for k, v in opts.items())
        mapping = "".join(f'<BandMapping src="{i + 1}" dst="{i + 1}">{self._nodata_xml()}</BandMapping>'
                          for i in range(count) if i + 1 != self.src_alpha)
        # gdalwarp's -srcalpha, and the output's alpha band as -dstalpha.
        alpha = (f"<SrcAlphaBand>{self.src_alpha}</SrcAlphaBand><DstAlphaBand>{self.src_alpha}</DstAlphaBand>"
                 if self.src_alpha else "")
        return (f"<GDALWarpOptions><WarpMemoryLimit>{max(self.max_source_bytes * 4, 2**26)}</WarpMemoryLimit>"
                f"<ResampleAlg>{RESAMPLINGS[self.resampling][0]}</ResampleAlg>"
                f"<WorkingDataType>{dt}</WorkingDataType>{options}"
                f'<SourceDataset relativeToVRT="0">{escape(src_path)}</SourceDataset>'
                f"<BandList>{mapping}</BandList>{alpha}</GDALWarpOptions>")

    def _nodata_xml(self) -> str:
        xml = ""
        if self.src_nodata is not None:
            xml += f"<SrcNoDataReal>{_num(self.src_nodata)}</SrcNoDataReal><SrcNoDataImag>0</SrcNoDataImag>"
        if self.nodata is not None:
            xml += f"<DstNoDataReal>{_num(self.nodata)}</DstNoDataReal><DstNoDataImag>0</DstNoDataImag>"
        return xml

    def _transformer_xml(self) -> str:
        return transformer_xml(self.src_grid, self.grid)


def _grid_token(g: Grid) -> tuple:
    return (g.crs.to_wkt() if g.crs is not None else None, tuple(g.transform), g.width, g.height)


def _gt(t: Affine) -> str:
    # repr round-trips every double exactly: GDAL sees the very geotransform.
    return ",".join(repr(float(v)) for v in t.to_gdal())


def _num(v: float) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else repr(float(v))


def _simple_source(arr: np.ndarray, band: int, y0: int, x0: int) -> str:
    """A VRT source reading band ``band`` of ``arr`` in place (no copy) and
    putting it at row ``y0``, column ``x0``."""
    b, h, w = arr.shape
    mem = (f"MEM:::DATAPOINTER={arr.ctypes.data},PIXELS={w},LINES={h},BANDS={b},"
           f"DATATYPE={_GDAL_TYPES[str(arr.dtype)]}")
    return (f'<SimpleSource><SourceFilename relativeToVRT="0">{mem}</SourceFilename>'
            f"<SourceBand>{band + 1}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{x0}" yOff="{y0}" xSize="{w}" ySize="{h}"/></SimpleSource>')


def _window_samples(x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Destination pixel corners along the window's edges (every pixel) and
    on an interior grid (every 16th): the extremes of a smooth mapping lie
    on the edges; the grid catches folds near poles and the antimeridian."""
    xs = np.arange(x0, x0 + w + 1, dtype=float)
    ys = np.arange(y0, y0 + h + 1, dtype=float)
    ex = np.concatenate([xs, xs, np.full(ys.size, x0, float), np.full(ys.size, x0 + w, float)])
    ey = np.concatenate([np.full(xs.size, y0, float), np.full(xs.size, y0 + h, float), ys, ys])
    gx, gy = np.meshgrid(xs[::16], ys[::16])
    return np.concatenate([ex, gx.ravel()]), np.concatenate([ey, gy.ravel()])


def _halves(win: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    y0, y1, x0, x1 = win
    if y1 - y0 >= x1 - x0:
        ym = (y0 + y1) // 2
        return [(y0, ym, x0, x1), (ym, y1, x0, x1)]
    xm = (x0 + x1) // 2
    return [(y0, y1, x0, xm), (y0, y1, xm, x1)]


def warped(
    source: FileSource,
    src_grid: Grid,
    dst: Grid,
    resampling: str = "nearest",
    nodata: float | None | Any = ...,
    error_threshold: float = 0.0,
    *,
    src_nodata: float | None | Any = ...,
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
    src_alpha: int = 0,
) -> WarpedSource:
    """``source`` (on ``src_grid``) reprojected onto ``dst``, read lazily.

    Parameters
    ----------
    source : FileSource
        What to warp.
    src_grid : Grid
        Its grid (CRS, transform, size).
    dst : Grid
        The target grid (see :func:`target_grid`).
    resampling : str
        One of :data:`RESAMPLINGS`.
    nodata : float or None, optional
        Output nodata, written where no source pixel contributes. Default:
        the source's nodata (as gdalwarp copies it), else None (0 written).
    error_threshold : float
        0 (default here) transforms every pixel with GDAL's exact
        transformer; a positive value (the warp step's default is
        :data:`DEFAULT_ERROR_THRESHOLD`) interpolates coordinates from the
        output-fixed lattice of :mod:`rdask.io.warp_lattice`, their error
        bounded by it. Either way the pixels do not depend on the chunking.
    src_nodata : float or None, optional
        Source nodata; default read from the source's first file.
    max_source_bytes : int
        Cap on the source pixels one warp holds; larger windows are split.
    src_alpha : int
        The source's alpha band (1-based; 0 for none), which weighs the
        others as ``gdalwarp -srcalpha`` and becomes the output's alpha
        band (``-dstalpha``).

    Returns
    -------
    WarpedSource
    """
    _check_resampling(resampling)
    if (src_grid.height, src_grid.width) != (source.height, source.width):
        raise ValueError(
            f"src_grid is {src_grid.width}x{src_grid.height} but the source is "
            f"{source.width}x{source.height}")
    if src_nodata is ...:
        src_nodata = _source_nodata(source)
    if nodata is ...:
        nodata = src_nodata
    win = _source_window(src_grid, dst, resampling)
    whole = None if win is None else (win.yoff, win.yoff + win.ysize, win.xoff, win.xoff + win.xsize)
    return WarpedSource(
        source=source, grid=dst, src_grid=src_grid, resampling=resampling,
        nodata=None if nodata is None else float(nodata),
        error_threshold=float(error_threshold),
        scales=warp_scales(src_grid, dst, resampling),
        max_source_bytes=int(max_source_bytes),
        src_nodata=None if src_nodata is None else float(src_nodata),
        src_window=whole,
        src_alpha=int(src_alpha),
    )


def _source_nodata(source: FileSource) -> float | None:
    """The first file's nodata, which gdalwarp uses for every band."""
    import rasterio

    first = source.files[0]
    with source.env(), rasterio.open(first.path) as ds:
        return ds.nodatavals[first.bands[0] - 1]
