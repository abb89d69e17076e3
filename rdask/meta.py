"""Raster metadata: one typed, frozen object from open to write.

:class:`RasterMeta` holds everything an output carries besides pixels, as
GDAL would keep it with ``gdal_translate``: georeferencing (CRS and exact
transform, or GCPs with their CRS, or RPCs), nodata, dataset tags, and per
band a :class:`BandMeta` (description, scale, offset, unit, colour
interpretation, colour table, tags, its value in ``NODATA_VALUES``). It is read once when a file is opened
(:mod:`rdask.io.inspect`), follows the bands through every kernel
(:meth:`RasterMeta.for_bands`) and is written by the output
(:mod:`rdask.outputs.tiff.gdalmeta`). Values are tuples so the object is
hashable and gives a stable dask token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

#: A ``((key, value), ...)`` tuple: tags kept hashable and in a stable order.
Tags = tuple[tuple[str, str], ...]


def as_tags(tags: Mapping[str, Any] | Tags | None) -> Tags:
    """``tags`` as a sorted tuple of string pairs."""
    items = tags.items() if isinstance(tags, Mapping) else (tags or ())
    return tuple(sorted((str(k), str(v)) for k, v in items))


class GCP(NamedTuple):
    """One ground control point, hashable and comparable (rasterio's
    ``GroundControlPoint`` is neither): pixel ``row``/``col`` and the
    ``x``/``y``/``z`` it maps to in ``gcp_crs``."""

    row: float
    col: float
    x: float
    y: float
    z: float = 0.0
    id: str = ""
    info: str = ""

    @classmethod
    def of(cls, gcp: Any) -> GCP:
        """From a rasterio ``GroundControlPoint``."""
        return cls(float(gcp.row), float(gcp.col), float(gcp.x), float(gcp.y),
                   float(gcp.z or 0.0), str(gcp.id or ""), str(gcp.info or ""))

    def to_rasterio(self) -> Any:
        """As a rasterio ``GroundControlPoint``."""
        from rasterio.control import GroundControlPoint

        return GroundControlPoint(row=self.row, col=self.col, x=self.x, y=self.y, z=self.z,
                                  id=self.id or None, info=self.info or None)


@dataclass(frozen=True)
class BandMeta:
    """What one band carries besides its pixels.

    ``colorinterp`` is GDAL's name in lower case (``"red"``, ``"gray"``,
    ``"palette"``...), ``""`` where unknown. ``colormap`` is the band's
    colour table as ``((index, (r, g, b, a)), ...)``, empty without one.
    ``nodata_component`` is the band's value in the dataset's
    ``NODATA_VALUES`` (GDAL: a pixel is nodata where *every* band equals
    its component; a per-dataset mask), None without one.
    """

    description: str = ""
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    colorinterp: str = ""
    colormap: tuple[tuple[int, tuple[int, int, int, int]], ...] = ()
    tags: Tags = ()
    nodata_component: float | None = None


@dataclass(frozen=True)
class RasterMeta:
    """Everything an output carries besides pixels (see the module docstring).

    ``crs`` and ``gcp_crs`` are rasterio ``CRS`` objects (or None);
    ``transform`` is an ``affine.Affine``, exactly as in the source file
    (the identity when the file has none, e.g. when it has only GCPs);
    ``gcps`` holds :class:`GCP` tuples; ``rpcs`` is GDAL's RPC metadata
    domain as tags (empty without RPCs). ``tags`` is the default dataset
    domain without ``NODATA_VALUES`` (kept per band, see
    :class:`BandMeta`). ``domains`` holds other metadata domains worth
    carrying (``IMAGE_STRUCTURE`` is not one of them: the output's
    structure is its own); :func:`rdask.io.inspect.read_meta` fills none,
    as ``gdal_translate`` copies none but RPC.
    """

    crs: Any
    transform: Any
    nodata: float | None = None
    bands: tuple[BandMeta, ...] = ()
    tags: Tags = ()
    gcps: tuple[GCP, ...] = ()
    gcp_crs: Any = None
    rpcs: Tags = ()
    domains: tuple[tuple[str, Tags], ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.bands)

    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)

    @property
    def georeferenced(self) -> bool:
        """Whether anything places the pixels: a CRS, a non-identity
        transform, GCPs or RPCs."""
        from affine import Affine

        has_transform = self.transform is not None and tuple(self.transform) != tuple(Affine.identity())
        return bool(self.crs or has_transform or self.gcps or self.rpcs)

    @property
    def nodata_values(self) -> tuple[float, ...]:
        """GDAL's ``NODATA_VALUES`` (one value per band), or ``()`` unless
        every band has its component."""
        values = tuple(b.nodata_component for b in self.bands)
        return () if not values or None in values else values

    def for_bands(self, sources: Sequence[int] | None, count: int) -> RasterMeta:
        """The metadata of a kernel's output of ``count`` bands.

        ``sources`` gives, for each output band, the 0-based input band it
        comes from (its metadata follows it); ``None`` when the bands are
        new: they carry nothing, and what still applies (CRS, transform,
        GCPs, RPCs, dataset tags, nodata) is kept. A band's colour table,
        tags and ``NODATA_VALUES`` component move with it.
        """
        if sources is None:
            bands = (BandMeta(),) * count
        else:
            bands = tuple(self.bands[i] if i < len(self.bands) else BandMeta() for i in sources)
        return replace(self, bands=bands)

    def for_dtype(self, dtype: Any) -> RasterMeta:
        """Drop what pixels of ``dtype`` cannot carry: GDAL writes colour
        tables only for Byte and UInt16 bands."""
        if np.dtype(dtype) in (np.dtype("uint8"), np.dtype("uint16")):
            return self
        if not any(b.colormap for b in self.bands):
            return self
        bands = tuple(
            replace(b, colormap=(), colorinterp="" if b.colorinterp == "palette" else b.colorinterp)
            for b in self.bands
        )
        return replace(self, bands=bands)

    def without_statistics(self) -> RasterMeta:
        """Drop GDAL's per-band ``STATISTICS_*`` tags: a kernel's pixels are
        not its input's (GDAL computes them again when asked)."""
        bands = tuple(
            replace(b, tags=tuple((k, v) for k, v in b.tags if not k.startswith("STATISTICS_")))
            for b in self.bands
        )
        return replace(self, bands=bands)

    def with_nodata(self, nodata: float | None) -> RasterMeta:
        return replace(self, nodata=None if nodata is None else float(nodata))


def nodata_fits(value: float, dtype: Any) -> bool:
    """Whether pixels of ``dtype`` can hold the nodata ``value`` exactly."""
    dtype = np.dtype(dtype)
    if np.isnan(value):
        return dtype.kind in "fc"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    return True
