"""Terrain kernels: ``slope`` and ``hillshade`` as computed by ``gdaldem``.

Both follow GDAL's ``apps/gdaldem_lib.cpp`` (Horn's 3x3 gradient), rewritten
here, including its precision: like ``gdaldem`` the elevations are read as
float32 and the two weighted 3x3 sums are formed in float32; everything after
(the division by the pixel size, trigonometry) is float64, and the result is
rounded to float32 (slope) or to the nearest byte (hillshade).

Without ``compute_edges`` (plain ``gdaldem``) the first and last rows and
columns, and every pixel whose 3x3 window holds nodata or NaN, are nodata.
With ``compute_edges`` (``gdaldem -compute_edges``) GDAL's rules apply:

* only a nodata (or NaN) centre gives nodata;
* off the first or last row, the missing row is extrapolated linearly from
  the two nearest rows (``2 * edge - next``) and the missing column of the
  corner windows is the centre column repeated;
* off the first or last column of the other rows, the missing column is
  extrapolated the same way;
* an extrapolation from a nodata value, and any nodata neighbour, are
  replaced by the centre value;
* a raster less than 2 pixels wide or high is all nodata.

A block edge is treated as the raster edge, so each output pixel depends on
inputs within one pixel only and the results do not depend on the chunking.
Unlike ``gdaldem``, which only skips NaN when the nodata value is NaN, NaN is
always treated as nodata.  Input nodata is compared exactly (after rounding
to float32, as ``gdaldem`` does), not within GDAL's tiny relative tolerance.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from rdask.kernels.spec import kernel

_DEG_TO_RAD = math.pi / 180.0
_RAD_TO_DEG = 180.0 / math.pi
_F32_EPS = np.float32(np.finfo(np.float32).eps)


@njit(nogil=True, cache=True, inline="always")
def _nd(v, ndv):
    return (v != v) | (v == ndv)


@njit(nogil=True, cache=True, inline="always")
def _interp(a, b, ndv):
    """GDAL's ``INTERPOL``: ``2a - b`` in float32, or nodata if a or b is."""
    if _nd(a, ndv) or _nd(b, ndv):
        return ndv
    val = np.float32(2.0) * a - b
    if val == ndv:
        # Never let an extrapolated value pass for nodata.
        return ndv * (np.float32(1.0) + np.float32(3.0) * _F32_EPS)
    return val


@njit(nogil=True, cache=True)
def _window(plane, i, j, ndv, edges, win):
    """Fill ``win`` with the 3x3 window at ``(i, j)`` by gdaldem's rules.

    Window order is GDAL's::

        0 1 2
        3 4 5
        6 7 8

    Returns False when the output pixel is nodata.
    """
    ny, nx = plane.shape
    centre = plane[i, j]
    if _nd(centre, ndv):
        return False
    if not edges:
        if i == 0 or j == 0 or i == ny - 1 or j == nx - 1:
            return False
        for di in range(3):
            for dj in range(3):
                v = plane[i - 1 + di, j - 1 + dj]
                if _nd(v, ndv):
                    return False
                win[3 * di + dj] = v
        return True
    # compute_edges; the caller guarantees ny >= 2 and nx >= 2.
    if i == 0 or i == ny - 1:
        jmin = j if j == 0 else j - 1
        jmax = j if j == nx - 1 else j + 1
        if i == 0:
            win[0] = _interp(plane[0, jmin], plane[1, jmin], ndv)
            win[1] = _interp(plane[0, j], plane[1, j], ndv)
            win[2] = _interp(plane[0, jmax], plane[1, jmax], ndv)
            win[3] = plane[0, jmin]
            win[4] = plane[0, j]
            win[5] = plane[0, jmax]
            win[6] = plane[1, jmin]
            win[7] = plane[1, j]
            win[8] = plane[1, jmax]
        else:
            win[0] = plane[i - 1, jmin]
            win[1] = plane[i - 1, j]
            win[2] = plane[i - 1, jmax]
            win[3] = plane[i, jmin]
            win[4] = plane[i, j]
            win[5] = plane[i, jmax]
            win[6] = _interp(plane[i, jmin], plane[i - 1, jmin], ndv)
            win[7] = _interp(plane[i, j], plane[i - 1, j], ndv)
            win[8] = _interp(plane[i, jmax], plane[i - 1, jmax], ndv)
    elif j == 0:
        for di in range(3):
            r = i - 1 + di
            win[3 * di] = _interp(plane[r, 0], plane[r, 1], ndv)
            win[3 * di + 1] = plane[r, 0]
            win[3 * di + 2] = plane[r, 1]
    elif j == nx - 1:
        for di in range(3):
            r = i - 1 + di
            win[3 * di] = plane[r, j - 1]
            win[3 * di + 1] = plane[r, j]
            win[3 * di + 2] = _interp(plane[r, j], plane[r, j - 1], ndv)
    else:
        for di in range(3):
            for dj in range(3):
                win[3 * di + dj] = plane[i - 1 + di, j - 1 + dj]
    for k in range(9):
        if _nd(win[k], ndv):
            win[k] = centre
    return True


@njit(nogil=True, cache=True, inline="always")
def _horn(w0, w1, w2, w3, w5, w6, w7, w8):
    """Horn's weighted differences, in float32 as gdaldem forms them."""
    sx = (w0 + w3 + w3 + w6) - (w2 + w5 + w5 + w8)
    sy = (w6 + w7 + w7 + w8) - (w0 + w1 + w1 + w2)
    return sx, sy


_SLOPE = 0
_HILLSHADE = 1


@njit(nogil=True, cache=True, inline="always")
def _value(mode, sx, sy, c):
    """Output value from the Horn sums; ``c`` holds the mode's constants."""
    if mode == _SLOPE:
        # GDALSlopeHornAlg; c = (ewres * scale, nsres * scale).
        dx = sx / c[0]
        dy = sy / c[1]
        return math.atan(math.sqrt(dx * dx + dy * dy) / 8) * _RAD_TO_DEG
    # GDALHillshadeAlg; c = (1 / (ewres * scale), 1 / (nsres * scale),
    # 254 sin(alt), 254 cos(az) cos(alt) z/8, 254 sin(az) cos(alt) z/8, (z/8)^2).
    x = sx * c[0]
    y = sy * c[1]
    cang_254 = (c[2] - (y * c[3] - x * c[4])) / math.sqrt(1.0 + c[5] * (x * x + y * y))
    cang = 1.0 if cang_254 <= 0.0 else 1.0 + cang_254
    # gdaldem writes a float32 that GDAL rounds to the nearest byte.
    shade = math.floor(np.float32(cang) + np.float32(0.5))
    return min(max(shade, 1.0), 255.0)


@njit(nogil=True, cache=True)
def _terrain(block, nodata, compute_edges, mode, c, out):
    """Fill ``out`` (pre-set to the output nodata) band by band."""
    nb, ny, nx = block.shape
    if ny < 2 or nx < 2:
        return
    ndv = np.float32(nodata)
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
                    # Fast path: a full window of valid values (the centre is
                    # not used by Horn's formula but must be valid).
                    w0, w1, w2 = plane[i - 1, j - 1], plane[i - 1, j], plane[i - 1, j + 1]
                    w3, w4, w5 = plane[i, j - 1], plane[i, j], plane[i, j + 1]
                    w6, w7, w8 = plane[i + 1, j - 1], plane[i + 1, j], plane[i + 1, j + 1]
                    bad = (
                        _nd(w0, ndv) | _nd(w1, ndv) | _nd(w2, ndv)
                        | _nd(w3, ndv) | _nd(w4, ndv) | _nd(w5, ndv)
                        | _nd(w6, ndv) | _nd(w7, ndv) | _nd(w8, ndv)
                    )  # fmt: skip
                    if not bad:
                        sx, sy = _horn(w0, w1, w2, w3, w5, w6, w7, w8)
                        out[b, i, j] = _value(mode, sx, sy, c)
                        continue
                    if not compute_edges:
                        continue
                if _window(plane, i, j, ndv, compute_edges, win):
                    sx, sy = _horn(win[0], win[1], win[2], win[3], win[5], win[6], win[7], win[8])
                    out[b, i, j] = _value(mode, sx, sy, c)


@njit(nogil=True, cache=True)
def _check(xres, yres, scale):
    if xres == 0.0 or yres == 0.0:
        raise ValueError("pixel size must be non-zero")
    if scale == 0.0:
        raise ValueError("scale must be non-zero")


@njit(nogil=True, cache=True)
def _slope(block, nodata, xres, yres, scale, compute_edges):
    _check(xres, yres, scale)
    out = np.full(block.shape, np.float32(-9999.0), dtype=np.float32)
    # GDAL: ewres_xscale = gt[1] * scale, nsres_yscale = gt[5] * scale.
    c = np.array([xres * scale, -yres * scale])
    _terrain(block, nodata, compute_edges, _SLOPE, c, out)
    return out


@njit(nogil=True, cache=True)
def _hillshade(block, nodata, xres, yres, azimuth, altitude, z, scale, compute_edges):
    _check(xres, yres, scale)
    out = np.zeros(block.shape, dtype=np.uint8)
    # The constants of GDAL's GDALCreateHillshadeData, in the same order of
    # operations.
    az = azimuth * _DEG_TO_RAD
    z_factor = z / 8.0
    cos_alt_z = math.cos(altitude * _DEG_TO_RAD) * z_factor
    c = np.array(
        [
            1.0 / (xres * scale),
            1.0 / (-yres * scale),
            254.0 * math.sin(altitude * _DEG_TO_RAD),
            254.0 * (math.cos(az) * cos_alt_z),
            254.0 * (math.sin(az) * cos_alt_z),
            z_factor * z_factor,
        ]
    )
    _terrain(block, nodata, compute_edges, _HILLSHADE, c, out)
    return out


@kernel(
    name="slope", dtype="float32", halo=1, nodata=-9999.0, keeps_bands=False, accepts="real"
)
@njit(nogil=True, cache=True)
def slope(
    block: np.ndarray,
    nodata: float,
    xres: float,
    yres: float,
    scale: float = 1.0,
    compute_edges: bool = False,
) -> np.ndarray:
    """Slope in degrees (Horn's method), the same values as gdaldem slope.

    Parameters
    ----------
    block
        ``(bands, y, x)`` elevations of any real dtype (complex is refused);
        each band is done separately, read as float32 like gdaldem does
        (so 64-bit integers above 2**24 are rounded).
    nodata, xres, yres
        Input nodata (NaN when none) and pixel size (``transform.a`` and
        ``-transform.e``); filled in by rdask.
    scale
        Ratio of vertical to horizontal units (``gdaldem -s``), e.g. 111120
        for metres over degrees.
    compute_edges
        Compute edge pixels and pixels next to nodata like
        ``gdaldem -compute_edges`` (see the module docstring).

    Returns
    -------
    numpy.ndarray
        ``(bands, y, x)`` float32 slope in degrees; -9999 (gdaldem's nodata)
        on the raster's outer rows and columns and next to nodata or NaN,
        unless ``compute_edges``.
    """
    return _slope(block, nodata, xres, yres, scale, compute_edges)


@kernel(
    name="hillshade", dtype="uint8", halo=1, nodata=0.0, keeps_bands=False, accepts="real"
)
@njit(nogil=True, cache=True)
def hillshade(
    block: np.ndarray,
    nodata: float,
    xres: float,
    yres: float,
    azimuth: float = 315.0,
    altitude: float = 45.0,
    z: float = 1.0,
    scale: float = 1.0,
    compute_edges: bool = False,
) -> np.ndarray:
    """Shaded relief as bytes 1..255 (0 = nodata), the same as gdaldem hillshade.

    Parameters
    ----------
    block
        ``(bands, y, x)`` elevations of any real dtype (complex is refused);
        each band is done separately, read as float32 like gdaldem does
        (so 64-bit integers above 2**24 are rounded).
    nodata, xres, yres
        Input nodata (NaN when none) and pixel size (``transform.a`` and
        ``-transform.e``); filled in by rdask.
    azimuth
        Direction of the light in degrees clockwise from north (``-az``).
    altitude
        Height of the light above the horizon in degrees (``-alt``).
    z
        Vertical exaggeration (``-z``).
    scale
        Ratio of vertical to horizontal units (``-s``).
    compute_edges
        Compute edge pixels and pixels next to nodata like
        ``gdaldem -compute_edges`` (see the module docstring).

    Returns
    -------
    numpy.ndarray
        ``(bands, y, x)`` uint8 shade 1..255; 0 (gdaldem's nodata) on the
        raster's outer rows and columns and next to nodata or NaN, unless
        ``compute_edges``.
    """
    return _hillshade(block, nodata, xres, yres, azimuth, altitude, z, scale, compute_edges)
