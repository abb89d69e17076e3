"""``color-relief``: gdaldem's colour relief, RGB or RGBA bytes.

The colour file (:mod:`rdask.kernels.colorfile`) is read once, before any
work, and travels with the job as a table; each pixel of band ``band`` is
read as float32 (as gdaldem reads it) and coloured by GDAL 3.6's
``GDALColorReliefGetRGBA``: binary search for the first entry not below the
value, then the entry's colour (``match=exact``: black and transparent
unless the value is an entry; ``match=nearest``: the nearer entry) or a
linear interpolation between the two around it, ``int(0.45 + ...)`` per
component.  Values outside the table take the colour of its first or last
entry.  The output has no nodata, as gdaldem's.

Percentages in the colour file refer to the band's minimum and maximum,
which gdaldem reads from the band's statistics or computes in a pass of its
own; a streaming job has neither, so they are given as ``min=`` and
``max=`` (``gdalinfo -stats`` shows them); a file with percentages and
without them is refused before any work.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numba import njit

from rdask.kernels import colorfile
from rdask.kernels.spec import kernel

MATCHES = ("interpolate", "exact", "nearest")


@njit(nogil=True, cache=True, inline="always")
def _clamp(v):
    return 0 if v < 0 else 255 if v > 255 else v


@njit(nogil=True, cache=True)
def _rgba(vals, rgba, v, mode, px):
    """GDAL's ``GDALColorReliefGetRGBA`` for value ``v`` into ``px``."""
    n = vals.shape[0]
    lower = 0
    if vals[0] != vals[0]:
        if v != v:
            px[:] = rgba[0]
            return
        lower = 1
    upper = n - 1
    while True:
        mid = (lower + upper) // 2
        if upper - lower <= 1:
            if v <= vals[lower]:
                i = lower
            elif v <= vals[upper]:
                i = upper
            else:
                i = upper + 1
            break
        if vals[mid] >= v:
            upper = mid
        else:
            lower = mid
    if i == 0 or i == n:
        k = 0 if i == 0 else n - 1
        if mode == 1 and vals[k] != v:
            px[:] = 0
        else:
            px[:] = rgba[k]
        return
    if mode == 1 and vals[i - 1] != v:
        px[:] = 0
        return
    if mode == 2 and vals[i - 1] != v:
        k = i - 1 if v - vals[i - 1] < vals[i] - v else i
        px[:] = rgba[k]
        return
    if vals[i - 1] == v:
        px[:] = rgba[i - 1]
        return
    if vals[i - 1] != vals[i - 1]:
        px[:] = rgba[i]
        return
    ratio = (v - vals[i - 1]) / (vals[i] - vals[i - 1])
    for c in range(4):
        px[c] = _clamp(int(0.45 + rgba[i - 1, c] + ratio * (rgba[i, c] - rgba[i - 1, c])))


@njit(nogil=True, cache=True)
def _relief(plane, vals, rgba, mode, out):
    px = np.empty(4, dtype=np.int64)
    nb = out.shape[0]
    for i in range(plane.shape[0]):
        for j in range(plane.shape[1]):
            v = np.float64(np.float32(plane[i, j]))
            _rgba(vals, rgba, v, mode, px)
            for c in range(nb):
                out[c, i, j] = px[c]


def _prepare(args: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(args["colors"], colorfile.ColorFile):
        if not args["colors"]:
            raise ValueError("colors= is required: the path of a gdaldem colour file")
        args["colors"] = colorfile.read(args["colors"])
    if args["colors"].has_percent and (math.isnan(args["min"]) or math.isnan(args["max"])):
        raise ValueError(
            f"colour file {args['colors'].path} has percentages: give the band's min= and max= "
            "(gdalinfo -stats shows them)"
        )
    if args["band"] < 1:
        raise ValueError(f"band must be >= 1, got {args['band']}")
    return args


@functools.lru_cache(maxsize=64)
def _table(colors: colorfile.ColorFile, nodata: float | None, vmin: float, vmax: float):
    return colorfile.resolve(colors, nodata, vmin, vmax)


@kernel(name="color-relief", dtype="uint8", bands=lambda n, alpha=False, **_: 4 if alpha else 3,
        nodata=None, keeps_bands=False, accepts="real", choices={"match": MATCHES},
        prepare=_prepare, dispatches=True)
def color_relief(block: np.ndarray, nodata: float, colors: Any = "", alpha: bool = False,
                 match: str = "interpolate", band: int = 1, min: float = math.nan,
                 max: float = math.nan) -> np.ndarray:
    """Colour relief as RGB(A) bytes from a gdaldem colour file, as gdaldem color-relief.

    Parameters
    ----------
    block
        ``(bands, y, x)`` array of any real dtype; band ``band`` is coloured.
    nodata
        Input nodata (NaN when none); the colour file's ``nv`` entry.
    colors
        Path of the colour file (gdaldem's format, see
        :mod:`rdask.kernels.colorfile`).
    alpha
        Add an alpha band (``-alpha``).
    match
        ``interpolate`` (default), ``exact`` (``-exact_color_entry``) or
        ``nearest`` (``-nearest_color_entry``).
    band
        The band to colour (``-b``).
    min, max
        The band's minimum and maximum, for percentages in the colour file.

    Returns
    -------
    numpy.ndarray
        ``(3 or 4, y, x)`` uint8, no nodata.
    """
    if band > block.shape[0]:
        raise ValueError(f"band {band} is out of range 1..{block.shape[0]}")
    nd = None if nodata != nodata else float(nodata)
    table = colors if isinstance(colors, colorfile.ColorFile) else colorfile.read(colors)
    vals, rgba = _table(table, nd if nd is not None else (math.nan if _has_nv(table) else None),
                        float(min), float(max))
    out = np.empty((4 if alpha else 3, *block.shape[1:]), dtype=np.uint8)
    _relief(block[band - 1], vals, rgba, MATCHES.index(match), out)
    return out


def _has_nv(table: colorfile.ColorFile) -> bool:
    return any(e[0] == "nv" for e in table.entries)
