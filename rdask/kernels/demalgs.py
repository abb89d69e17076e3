"""gdaldem's per-window formulas (GDAL 3.6's ``apps/gdaldem_lib.cpp``).

:func:`value` computes one output pixel from a valid 3x3 window ``w0..w8``
(GDAL's order, row by row) as ``gdaldem`` does, operation for operation:
the window sums in float32 (GDAL's ``T`` arithmetic), the rest in float64,
GDAL's own rounding to float32 at the end, and for the hillshades its SSE
approximation of ``a / sqrt(b)`` (:mod:`rdask.kernels.approx`).  ``c`` holds
the constants of each mode, built by :mod:`rdask.kernels.terrain` the way
GDAL's ``GDALCreate*Data`` functions build them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from rdask.kernels.approx import a_div_sqrt_b

RAD_TO_DEG = 180.0 / math.pi
DEG_TO_RAD = math.pi / 180.0
_INV_SQUARE_OF_HALF_PI = 1.0 / ((math.pi * math.pi) / 4)

# Modes (the formula), each with its constants in ``c``.
SLOPE_HORN = 0  # c = ewres, nsres, scale, percent
SLOPE_ZT = 1
ASPECT_HORN = 2  # c = azimuth (1.0: compass angles, 0.0: trigonometric)
ASPECT_ZT = 3
SHADE_HORN = 4  # c = see terrain.shade_constants
SHADE_ZT = 5
SHADE_SAME_RES = 6
COMBINED_HORN = 7
COMBINED_ZT = 8
MULTI_HORN = 9
MULTI_ZT = 10
IGOR_HORN = 11
IGOR_ZT = 12
TRI_WILSON = 13
TRI_RILEY = 14
TPI = 15
ROUGHNESS = 16


@njit(nogil=True, cache=True, inline="always")
def _horn_x(w0, w2, w3, w5, w6, w8):
    return (w0 + w3 + w3 + w6) - (w2 + w5 + w5 + w8)


@njit(nogil=True, cache=True, inline="always")
def _horn_y(w0, w1, w2, w6, w7, w8):
    return (w6 + w7 + w7 + w8) - (w0 + w1 + w1 + w2)


@njit(nogil=True, cache=True, inline="always")
def _gradient(zt, w0, w1, w2, w3, w5, w6, w7, w8, inv_ewres, inv_nsres):
    """GDAL's ``Gradient<T, alg>::calc``."""
    if zt:
        return np.float64(w3 - w5) * inv_ewres, np.float64(w7 - w1) * inv_nsres
    x = np.float64(_horn_x(w0, w2, w3, w5, w6, w8)) * inv_ewres
    y = np.float64(_horn_y(w0, w1, w2, w6, w7, w8)) * inv_nsres
    return x, y


@njit(nogil=True, cache=True, inline="always")
def _slope(zt, w0, w1, w2, w3, w5, w6, w7, w8, c):
    if zt:
        dx = np.float64(w3 - w5) / c[0]
        dy = np.float64(w7 - w1) / c[1]
        div = 2.0 * c[2]
    else:
        dx = np.float64(_horn_x(w0, w2, w3, w5, w6, w8)) / c[0]
        dy = np.float64(_horn_y(w0, w1, w2, w6, w7, w8)) / c[1]
        div = 8.0 * c[2]
    key = dx * dx + dy * dy
    if c[3] != 0.0:
        return np.float32(100.0 * (math.sqrt(key) / div))
    return np.float32(math.atan(math.sqrt(key) / div) * RAD_TO_DEG)


@njit(nogil=True, cache=True, inline="always")
def _aspect(zt, w0, w1, w2, w3, w5, w6, w7, w8, c, flat):
    if zt:
        dx = np.float64(w5 - w3)
        dy = np.float64(w7 - w1)
    else:
        dx = -np.float64(_horn_x(w0, w2, w3, w5, w6, w8))
        dy = np.float64(_horn_y(w0, w1, w2, w6, w7, w8))
    aspect = np.float32(math.atan2(dy, -dx) / DEG_TO_RAD)
    if dx == 0 and dy == 0:
        aspect = flat
    elif c[0] != 0.0:
        if aspect > np.float32(90.0):
            aspect = np.float32(450.0) - aspect
        else:
            aspect = np.float32(90.0) - aspect
    elif aspect < 0:
        aspect += np.float32(360.0)
    if aspect == np.float32(360.0):
        aspect = np.float32(0.0)
    return aspect


@njit(nogil=True, cache=True, inline="always")
def _shade(zt, w0, w1, w2, w3, w5, w6, w7, w8, c):
    # c = inv_ewres, inv_nsres, 254 sin(alt), 254 cos(az) cos(alt) z', 254 sin(az) cos(alt) z', z'^2
    x, y = _gradient(zt, w0, w1, w2, w3, w5, w6, w7, w8, c[0], c[1])
    cang = a_div_sqrt_b(c[2] - (y * c[3] - x * c[4]), 1.0 + c[5] * (x * x + y * y))
    return np.float32(1.0 if cang <= 0.0 else 1.0 + cang)


@njit(nogil=True, cache=True, inline="always")
def _shade_same_res(w0, w1, w2, w3, w5, w6, w7, w8, c):
    # GDALHillshadeAlg_same_res: square pixels, Horn; its own order of sums.
    # c = 254 sin(alt), 254 sin(az) cos(alt) z' / res, -254 cos(az) cos(alt) z' / res, (z'/res)^2
    acc_x = w0 - w8
    six_minus_two = w6 - w2
    acc_y = acc_x
    three_minus_five = w3 - w5
    one_minus_seven = w1 - w7
    acc_x += three_minus_five
    acc_y += one_minus_seven
    acc_x += three_minus_five
    acc_y += one_minus_seven
    acc_x += six_minus_two
    acc_y -= six_minus_two
    x = np.float64(acc_x)
    y = np.float64(acc_y)
    cang = a_div_sqrt_b(c[0] + (x * c[1] + y * c[2]), 1.0 + c[3] * (x * x + y * y))
    return np.float32(1.0 if cang <= 0.0 else 1.0 + cang)


@njit(nogil=True, cache=True, inline="always")
def _combined(zt, w0, w1, w2, w3, w5, w6, w7, w8, c):
    # c = inv_ewres, inv_nsres, sin(alt), cos(az) cos(alt) z', sin(az) cos(alt) z', z'^2
    x, y = _gradient(zt, w0, w1, w2, w3, w5, w6, w7, w8, c[0], c[1])
    slope = (x * x + y * y) * c[5]
    cang = math.acos(a_div_sqrt_b(c[2] - (y * c[3] - x * c[4]), 1.0 + slope))
    cang = 1.0 - cang * math.atan(math.sqrt(slope)) * _INV_SQUARE_OF_HALF_PI
    if cang <= 0.0:
        return np.float32(1.0)
    return np.float32(1.0 + 254.0 * cang)


@njit(nogil=True, cache=True, inline="always")
def _multi(zt, w0, w1, w2, w3, w5, w6, w7, w8, c):
    # c = inv_ewres, inv_nsres, 127 sin(alt), 254 sin(alt), 127 cos(alt) z',
    #     127 cos(225) cos(alt) z', z'^2
    x, y = _gradient(zt, w0, w1, w2, w3, w5, w6, w7, w8, c[0], c[1])
    xx = x * x
    yy = y * y
    xx_plus_yy = xx + yy
    if xx_plus_yy == 0.0:
        return np.float32(1.0 + c[3])
    v225 = max(c[2] + (x - y) * c[5], 0.0)
    v270 = max(c[2] - x * c[4], 0.0)
    v315 = max(c[2] + (x + y) * c[5], 0.0)
    v360 = max(c[2] - y * c[4], 0.0)
    w225 = 0.5 * xx_plus_yy - x * y
    w315 = xx_plus_yy - w225
    cang = a_div_sqrt_b(
        (w225 * v225 + xx * v270 + w315 * v315 + yy * v360) / xx_plus_yy,
        1.0 + c[6] * xx_plus_yy,
    )
    return np.float32(1.0 + cang)


@njit(nogil=True, cache=True, inline="always")
def _angle(angle, normalizer):
    angle = np.fmod(angle, normalizer)
    if angle < 0:
        angle = normalizer + angle
    return angle


@njit(nogil=True, cache=True, inline="always")
def _igor(zt, w0, w1, w2, w3, w5, w6, w7, w8, c):
    # c = inv_ewres, inv_nsres, z', azimuth in radians
    x, y = _gradient(zt, w0, w1, w2, w3, w5, w6, w7, w8, c[0], c[1])
    slope_degrees = math.atan(math.sqrt(x * x + y * y) * c[2]) * RAD_TO_DEG
    if zt:
        aspect = math.atan2(np.float64(w7 - w1), -np.float64(w5 - w3))
    else:
        aspect = math.atan2(
            np.float64(_horn_y(w0, w1, w2, w6, w7, w8)),
            np.float64(_horn_x(w0, w2, w3, w5, w6, w8)),
        )
    two_pi = math.pi * 2
    diff = abs(_angle(aspect, two_pi) - _angle(math.pi * 3 / 2 - c[3], two_pi))
    if diff > two_pi / 2:
        diff = two_pi - diff
    shadowness = 1.0 - (slope_degrees / 90) * (1 - diff / math.pi)
    return np.float32(255.0 * shadowness)


@njit(nogil=True, cache=True, inline="always")
def _tri_wilson(w0, w1, w2, w3, w4, w5, w6, w7, w8):
    total = (
        abs(w0 - w4) + abs(w1 - w4) + abs(w2 - w4) + abs(w3 - w4)
        + abs(w5 - w4) + abs(w6 - w4) + abs(w7 - w4) + abs(w8 - w4)
    )  # fmt: skip
    return total * np.float32(0.125)


@njit(nogil=True, cache=True, inline="always")
def _sq(v):
    d = np.float64(v)
    return d * d


@njit(nogil=True, cache=True, inline="always")
def _tri_riley(w0, w1, w2, w3, w4, w5, w6, w7, w8):
    return np.float32(math.sqrt(
        _sq(w0 - w4) + _sq(w1 - w4) + _sq(w2 - w4) + _sq(w3 - w4)
        + _sq(w5 - w4) + _sq(w6 - w4) + _sq(w7 - w4) + _sq(w8 - w4)
    ))  # fmt: skip


@njit(nogil=True, cache=True, inline="always")
def _roughness(w0, w1, w2, w3, w4, w5, w6, w7, w8):
    lo = min(w0, w1, w2, w3, w4, w5, w6, w7, w8)
    hi = max(w0, w1, w2, w3, w4, w5, w6, w7, w8)
    return np.float32(hi - lo)


@njit(nogil=True, cache=True, inline="always")
def value(mode, w0, w1, w2, w3, w4, w5, w6, w7, w8, c, flat):
    """One output pixel (float32) from a valid window, as gdaldem computes it.

    ``flat`` is the output nodata, which aspect gives a flat window.
    """
    zt = mode in (SLOPE_ZT, ASPECT_ZT, SHADE_ZT, COMBINED_ZT, MULTI_ZT, IGOR_ZT)
    if mode <= SLOPE_ZT:
        return _slope(zt, w0, w1, w2, w3, w5, w6, w7, w8, c)
    if mode <= ASPECT_ZT:
        return _aspect(zt, w0, w1, w2, w3, w5, w6, w7, w8, c, flat)
    if mode == SHADE_SAME_RES:
        return _shade_same_res(w0, w1, w2, w3, w5, w6, w7, w8, c)
    if mode <= SHADE_ZT:
        return _shade(zt, w0, w1, w2, w3, w5, w6, w7, w8, c)
    if mode <= COMBINED_ZT:
        return _combined(zt, w0, w1, w2, w3, w5, w6, w7, w8, c)
    if mode <= MULTI_ZT:
        return _multi(zt, w0, w1, w2, w3, w5, w6, w7, w8, c)
    if mode <= IGOR_ZT:
        return _igor(zt, w0, w1, w2, w3, w5, w6, w7, w8, c)
    if mode == TRI_WILSON:
        return _tri_wilson(w0, w1, w2, w3, w4, w5, w6, w7, w8)
    if mode == TRI_RILEY:
        return _tri_riley(w0, w1, w2, w3, w4, w5, w6, w7, w8)
    if mode == TPI:
        mean = (w0 + w1 + w2 + w3 + w5 + w6 + w7 + w8) * np.float32(0.125)
        return w4 - mean
    return _roughness(w0, w1, w2, w3, w4, w5, w6, w7, w8)
