"""W8's target pixel grids: where every reprojection contender must write.

Each contender gets the same grid explicitly (``gdalwarp -te ... -ts ...``,
rdask's ``bounds=`` and ``res=``, odc-geo's ``GeoBox``, rioxarray's
``shape`` and ``transform``), so their outputs can be compared pixel for
pixel.  The grid is GDAL's own suggestion for the target CRS
(``rasterio.warp.calculate_default_transform``, what ``gdalwarp -t_srs``
alone would pick), with the pixel size replaced by a chosen one and the
bounds snapped outwards to whole multiples of it.  Pixel sizes are
multiples of a power of two (e.g. ``272 * 2**-20`` degrees), so bounds,
sizes and transforms are exact in binary floating point and
``(right - left) / res`` is a whole number for every program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.warp import calculate_default_transform


@dataclass(frozen=True)
class Grid:
    """A north-up grid of square pixels: CRS, pixel size and bounds (CRS units)."""

    crs: str
    res: float
    left: float
    bottom: float
    right: float
    top: float

    @property
    def width(self) -> int:
        """Columns."""
        return round((self.right - self.left) / self.res)

    @property
    def height(self) -> int:
        """Rows."""
        return round((self.top - self.bottom) / self.res)

    @property
    def transform(self) -> Affine:
        """The affine transform of the grid."""
        return Affine(self.res, 0.0, self.left, 0.0, -self.res, self.top)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)``."""
        return (self.left, self.bottom, self.right, self.top)

    def bounds_arg(self) -> str:
        """``left,bottom,right,top`` with every digit (``repr`` round-trips exactly)."""
        return ",".join(repr(v) for v in self.bounds)

    def describe(self) -> str:
        """E.g. ``EPSG:4326, 24089 x 17206 px of 0.000259399 (...)``."""
        return (
            f"{self.crs}, {self.width} x {self.height} px of {self.res:.9g}, bounds "
            f"{', '.join(f'{v:.9g}' for v in self.bounds)}"
        )


def warp_grid(inp: Path, crs: str, res: float) -> Grid:
    """GDAL's suggested output extent of ``inp`` in ``crs``, on pixels of ``res``, snapped outwards."""
    with rasterio.open(inp) as src:
        transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds
        )
    left, top = transform.c, transform.f
    right, bottom = left + width * transform.a, top + height * transform.e
    return Grid(
        crs,
        res,
        math.floor(left / res) * res,
        math.floor(bottom / res) * res,
        math.ceil(right / res) * res,
        math.ceil(top / res) * res,
    )
