"""Terrain kernels: every ``gdaldem`` mode but ``color-relief``.

``slope``, ``aspect``, ``hillshade``, ``tri``, ``tpi`` and ``roughness`` give
the values of Debian's GDAL 3.6 ``gdaldem`` (the window rules are in
:mod:`rdask.kernels.window3`, the formulas in :mod:`rdask.kernels.demalgs`).
Each kernel here only checks its arguments, builds the constants GDAL's
``GDALCreate*Data`` functions build, and runs the window over each band.
Where GDAL 3.10 differs from 3.6 (it reads 8/16-bit integers' extrapolated
edges and the hillshades the same way, but moves a float extrapolation that
lands on the nodata value off it), rdask follows 3.6, the ``gdaldem`` on the
systems it is tested with.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rdask.kernels import demalgs as dem
from rdask.kernels.spec import kernel
from rdask.kernels.window3 import int_path, run3x3, window_nodata

_GRADIENTS = ("horn", "zevenbergen-thorne")
_SLOPE_NODATA = -9999.0


def _run(block: np.ndarray, nodata: float, compute_edges: bool, mode: int, c: np.ndarray,
         dtype: Any, fill: float) -> np.ndarray:
    """Run ``mode`` over each band into a new array pre-set to ``fill``."""
    is_int = int_path(block.dtype)
    lo, hi = (np.iinfo(block.dtype).min, np.iinfo(block.dtype).max) if is_int and (
        block.dtype.kind != "b") else (0, 1)
    ndv = window_nodata(float(nodata), is_int, float(lo), float(hi))
    out = np.full(block.shape, fill, dtype=dtype)
    run3x3(block, ndv, is_int, bool(compute_edges), mode, np.asarray(c, dtype=np.float64),
           np.float32(fill), out, out.dtype == np.uint8)
    return out


def _check(xres: float, yres: float, scale: float) -> None:
    if xres == 0.0 or yres == 0.0:
        raise ValueError("pixel size must be non-zero")
    if scale == 0.0:
        raise ValueError("scale must be non-zero")


def _one_shading(args: dict[str, Any]) -> dict[str, Any]:
    if args["multidirectional"] + args["combined"] + args["igor"] > 1:
        raise ValueError("only one of multidirectional, combined or igor can be used")
    return args


@kernel(name="slope", dtype="float32", halo=1, nodata=_SLOPE_NODATA, keeps_bands=False,
        accepts="real", choices={"alg": _GRADIENTS}, dispatches=True)
def slope(block: np.ndarray, nodata: float, xres: float, yres: float, scale: float = 1.0,
          compute_edges: bool = False, percent: bool = False, alg: str = "horn") -> np.ndarray:
    """Slope in degrees or percent, the same values as gdaldem slope.

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
        ``gdaldem -compute_edges`` (see :mod:`rdask.kernels.window3`).
    percent
        Percent slope (``-p``) instead of degrees.
    alg
        ``horn`` (the default) or ``zevenbergen-thorne`` (``-alg``).

    Returns
    -------
    numpy.ndarray
        ``(bands, y, x)`` float32; -9999 (gdaldem's nodata) on the raster's
        outer rows and columns and next to nodata or NaN, unless
        ``compute_edges``.
    """
    _check(xres, yres, scale)
    mode = dem.SLOPE_ZT if alg_name(alg) else dem.SLOPE_HORN
    c = (xres, -yres, scale, 1.0 if percent else 0.0)
    return _run(block, nodata, compute_edges, mode, c, np.float32, _SLOPE_NODATA)


def alg_name(name: str) -> bool:
    """Whether a gradient ``alg`` is Zevenbergen & Thorne's."""
    return name == "zevenbergen-thorne"


def _aspect_nodata(in_nodata: float | None, in_dtype: Any, **args: Any) -> float | None:
    return None if args["zero_for_flat"] else _SLOPE_NODATA


@kernel(name="aspect", dtype="float32", halo=1, nodata=_aspect_nodata, keeps_bands=False,
        accepts="real", choices={"alg": _GRADIENTS}, dispatches=True)
def aspect(block: np.ndarray, nodata: float, trigonometric: bool = False,
           zero_for_flat: bool = False, compute_edges: bool = False,
           alg: str = "horn") -> np.ndarray:
    """Aspect in degrees, the same values as gdaldem aspect.

    Parameters
    ----------
    block
        ``(bands, y, x)`` elevations of any real dtype, read as float32.
    nodata
        Input nodata (NaN when none); filled in by rdask.
    trigonometric
        Trigonometric angles (0 east, counter-clockwise; ``-trigonometric``)
        instead of azimuths (0 north, clockwise).
    zero_for_flat
        0 for flat windows (``-zero_for_flat``); the output then has no
        nodata value, and its nodata pixels are 0 too, as gdaldem writes.
    compute_edges
        ``-compute_edges`` (see :mod:`rdask.kernels.window3`).
    alg
        ``horn`` or ``zevenbergen-thorne``.

    Returns
    -------
    numpy.ndarray
        ``(bands, y, x)`` float32 in [0, 360); -9999 for flat windows and
        where a slope would be nodata (unless ``zero_for_flat``).
    """
    mode = dem.ASPECT_ZT if alg_name(alg) else dem.ASPECT_HORN
    fill = 0.0 if zero_for_flat else _SLOPE_NODATA
    return _run(block, nodata, compute_edges, mode, (0.0 if trigonometric else 1.0,),
                np.float32, fill)


def shade_constants(mode: int, xres: float, yres: float, azimuth: float, altitude: float,
                    z: float, scale: float, zt: bool) -> tuple[float, ...]:
    """The constants of GDAL's ``GDALCreateHillshade*Data`` for ``mode``, in
    the same order of operations (``gt[1] = xres``, ``gt[5] = -yres``)."""
    inv_nsres, inv_ewres = 1.0 / -yres, 1.0 / xres
    z_scaled = z / ((2 if zt else 8) * scale)
    sin_alt = math.sin(altitude * dem.DEG_TO_RAD)
    cos_alt_z = math.cos(altitude * dem.DEG_TO_RAD) * z_scaled
    if mode in (dem.MULTI_HORN, dem.MULTI_ZT):
        cos225 = 127.0 * math.cos(225 * dem.DEG_TO_RAD) * cos_alt_z
        return (inv_ewres, inv_nsres, 127.0 * sin_alt, 254.0 * sin_alt, 127.0 * cos_alt_z,
                cos225, z_scaled * z_scaled)
    az = azimuth * dem.DEG_TO_RAD
    if mode in (dem.IGOR_HORN, dem.IGOR_ZT):
        return inv_ewres, inv_nsres, z_scaled, az
    cos_az_z, sin_az_z = math.cos(az) * cos_alt_z, math.sin(az) * cos_alt_z
    square_z = z_scaled * z_scaled
    if mode in (dem.COMBINED_HORN, dem.COMBINED_ZT):
        return inv_ewres, inv_nsres, sin_alt, cos_az_z, sin_az_z, square_z
    if mode == dem.SHADE_SAME_RES:
        return (254.0 * sin_alt, 254.0 * sin_az_z * inv_ewres, 254.0 * cos_az_z * -inv_ewres,
                square_z * inv_ewres * inv_ewres)
    return inv_ewres, inv_nsres, 254.0 * sin_alt, 254.0 * cos_az_z, 254.0 * sin_az_z, square_z


def shade_mode(xres: float, yres: float, zt: bool, multidirectional: bool, combined: bool,
               igor: bool) -> int:
    """gdaldem's choice of hillshade formula."""
    if multidirectional:
        return dem.MULTI_ZT if zt else dem.MULTI_HORN
    if combined:
        return dem.COMBINED_ZT if zt else dem.COMBINED_HORN
    if igor:
        return dem.IGOR_ZT if zt else dem.IGOR_HORN
    if zt:
        return dem.SHADE_ZT
    # Square pixels take GDAL's faster formula, whose sums round differently.
    return dem.SHADE_SAME_RES if xres == yres else dem.SHADE_HORN


@kernel(name="hillshade", dtype="uint8", halo=1, nodata=0.0, keeps_bands=False,
        accepts="real", choices={"alg": _GRADIENTS}, prepare=_one_shading, dispatches=True)
def hillshade(block: np.ndarray, nodata: float, xres: float, yres: float,
              azimuth: float = 315.0, altitude: float = 45.0, z: float = 1.0,
              scale: float = 1.0, compute_edges: bool = False, alg: str = "horn",
              multidirectional: bool = False, combined: bool = False,
              igor: bool = False) -> np.ndarray:
    """Shaded relief as bytes (0 = nodata), the same as gdaldem hillshade.

    Parameters
    ----------
    block
        ``(bands, y, x)`` elevations of any real dtype (complex is refused);
        each band is done separately, read as float32 like gdaldem does.
    nodata, xres, yres
        Input nodata (NaN when none) and pixel size; filled in by rdask.
    azimuth
        Direction of the light in degrees clockwise from north (``-az``;
        unused by ``multidirectional``).
    altitude
        Height of the light above the horizon in degrees (``-alt``; unused
        by ``igor``).
    z
        Vertical exaggeration (``-z``).
    scale
        Ratio of vertical to horizontal units (``-s``).
    compute_edges
        ``-compute_edges`` (see :mod:`rdask.kernels.window3`).
    alg
        ``horn`` or ``zevenbergen-thorne`` (``-alg``).
    multidirectional, combined, igor
        gdaldem's other shadings (``-multidirectional``, ``-combined``,
        ``-igor``); at most one.

    Returns
    -------
    numpy.ndarray
        ``(bands, y, x)`` uint8 shade (1..255; ``igor`` can give 0 on its
        darkest slopes, as gdaldem does); 0 (gdaldem's nodata) on the
        raster's outer rows and columns and next to nodata or NaN, unless
        ``compute_edges``.
    """
    _check(xres, yres, scale)
    zt = alg_name(alg)
    mode = shade_mode(xres, yres, zt, multidirectional, combined, igor)
    c = shade_constants(mode, xres, yres, azimuth, altitude, z, scale, zt)
    return _run(block, nodata, compute_edges, mode, c, np.uint8, 0.0)


@kernel(name="tri", dtype="float32", halo=1, nodata=_SLOPE_NODATA, keeps_bands=False,
        accepts="real", choices={"alg": ("riley", "wilson")}, dispatches=True)
def tri(block: np.ndarray, nodata: float, alg: str = "riley",
        compute_edges: bool = False) -> np.ndarray:
    """Terrain Ruggedness Index, the same values as gdaldem TRI.

    Parameters
    ----------
    block
        ``(bands, y, x)`` elevations of any real dtype, read as float32.
    nodata
        Input nodata (NaN when none); filled in by rdask.
    alg
        ``riley`` (root of the summed squared differences to the centre,
        for terrain; gdaldem's default) or ``wilson`` (mean absolute
        difference, for bathymetry).
    compute_edges
        ``-compute_edges`` (see :mod:`rdask.kernels.window3`).

    Returns
    -------
    numpy.ndarray
        ``(bands, y, x)`` float32; -9999 where gdaldem writes nodata.
    """
    mode = dem.TRI_RILEY if alg == "riley" else dem.TRI_WILSON
    return _run(block, nodata, compute_edges, mode, (0.0,), np.float32, _SLOPE_NODATA)


@kernel(name="tpi", dtype="float32", halo=1, nodata=_SLOPE_NODATA, keeps_bands=False,
        accepts="real", dispatches=True)
def tpi(block: np.ndarray, nodata: float, compute_edges: bool = False) -> np.ndarray:
    """Topographic Position Index, the same values as gdaldem TPI.

    Parameters
    ----------
    block
        ``(bands, y, x)`` elevations of any real dtype, read as float32.
    nodata
        Input nodata (NaN when none); filled in by rdask.
    compute_edges
        ``-compute_edges`` (see :mod:`rdask.kernels.window3`).

    Returns
    -------
    numpy.ndarray
        ``(bands, y, x)`` float32: the centre minus the mean of its eight
        neighbours; -9999 where gdaldem writes nodata.
    """
    return _run(block, nodata, compute_edges, dem.TPI, (0.0,), np.float32, _SLOPE_NODATA)


@kernel(name="roughness", dtype="float32", halo=1, nodata=_SLOPE_NODATA, keeps_bands=False,
        accepts="real", dispatches=True)
def roughness(block: np.ndarray, nodata: float, compute_edges: bool = False) -> np.ndarray:
    """Roughness (largest minus smallest of the 3x3 window), as gdaldem roughness.

    Parameters
    ----------
    block
        ``(bands, y, x)`` elevations of any real dtype, read as float32.
    nodata
        Input nodata (NaN when none); filled in by rdask.
    compute_edges
        ``-compute_edges`` (see :mod:`rdask.kernels.window3`).

    Returns
    -------
    numpy.ndarray
        ``(bands, y, x)`` float32; -9999 where gdaldem writes nodata.
    """
    return _run(block, nodata, compute_edges, dem.ROUGHNESS, (0.0,), np.float32, _SLOPE_NODATA)
