"""Raster metadata carried from input to output, read off a DataArray.

The geotransform is never re-derived from coordinates (that is where plain
rioxarray drifts by ~1e-13): it comes from ``spatial_ref``'s exact
``GeoTransform``, shifted by a whole number of pixels when the array was
sliced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr
    from affine import Affine

    from rdask.io.source import RasterSource

#: DataArray attrs that rdask (or rioxarray) owns; the rest are tags.
RESERVED_ATTRS = frozenset(
    {"_FillValue", "scale_factor", "add_offset", "long_name", "units", "grid_mapping", "spatial_ref"}
)


@dataclass(frozen=True)
class RasterMeta:
    """Everything the sink writes besides pixels."""

    crs: Any
    transform: Affine
    nodata: float | None
    descriptions: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    units: tuple[str, ...] = ()
    colorinterp: tuple[Any, ...] = ()
    mask: RasterSource | None = None  # where to read a per-dataset mask from


def exact_transform(data: xr.DataArray) -> Affine:
    """The geotransform of ``data``, bit for bit as in its source file."""
    from affine import Affine

    cached = data.rio._cached_transform() if hasattr(data.rio, "_cached_transform") else None
    if cached is None:
        gt = data.coords["spatial_ref"].attrs.get("GeoTransform") if "spatial_ref" in data.coords else None
        cached = Affine.from_gdal(*(float(v) for v in gt.split())) if gt else None
    if cached is None:
        return data.rio.transform(recalc=True)
    if "x" not in data.coords or "y" not in data.coords or cached.b or cached.d:
        return cached
    # Coordinates are pixel centres; find which pixel of the cached grid the
    # first one is, and shift by whole pixels (exact, like rasterio's
    # windows.transform) instead of rebuilding the origin from floats.
    x0, y0 = float(data.x.values[0]), float(data.y.values[0])
    col = round((x0 - cached.c) / cached.a - 0.5)
    row = round((y0 - cached.f) / cached.e - 0.5)
    if col == 0 and row == 0:
        return cached
    return cached @ Affine.translation(col, row)


def raster_meta(data: xr.DataArray, mask: RasterSource | None = None) -> RasterMeta:
    """Collect the output metadata of ``data`` (rioxarray conventions)."""
    return RasterMeta(
        crs=data.rio.crs,
        transform=exact_transform(data),
        nodata=data.rio.nodata,
        mask=mask,
        **_from_attrs(data.attrs, data.sizes.get("band", 1)),
    )


def recipe_meta(meta: Mapping[str, Any], bands: int, mask: RasterSource | None = None) -> RasterMeta:
    """The :class:`RasterMeta` of a recipe's metadata: what :func:`raster_meta`
    finds on the DataArray :func:`rdask.open_raster` would wrap it in."""
    return RasterMeta(
        crs=meta.get("crs"),
        transform=meta["transform"],
        nodata=meta.get("nodata"),
        mask=mask,
        **_from_attrs(attrs_of(meta), bands),
    )


def attrs_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    """DataArray attrs for a recipe's metadata: tags, and per-band names,
    scales, offsets and units (one value when all bands agree)."""
    attrs: dict[str, Any] = dict(meta.get("tags") or {})
    descriptions = meta.get("descriptions") or ()
    if any(descriptions):
        attrs["long_name"] = tuple(d or "" for d in descriptions)
    scales, offsets = meta.get("scales") or (), meta.get("offsets") or ()
    if scales and any(s != 1.0 for s in scales):
        attrs["scale_factor"] = scales[0] if len(set(scales)) == 1 else tuple(scales)
    if offsets and any(o != 0.0 for o in offsets):
        attrs["add_offset"] = offsets[0] if len(set(offsets)) == 1 else tuple(offsets)
    units = meta.get("units") or ()
    if any(units):
        attrs["units"] = units[0] if len(set(units)) == 1 else tuple(units)
    return attrs


def _from_attrs(attrs: Mapping[str, Any], nb: int) -> dict[str, Any]:
    """Descriptions, tags, scales, offsets and units from DataArray attrs."""

    def per_band(value: Any, kind: type) -> tuple:
        if value is None:
            return ()
        if isinstance(value, (list, tuple)):
            return tuple(kind(v) for v in value)
        return (kind(value),) * nb

    names = attrs.get("long_name")
    descriptions = per_band(names, str) if isinstance(names, (list, tuple)) else ()
    return {
        "descriptions": descriptions if len(descriptions) == nb else (),
        "tags": {k: str(v) for k, v in attrs.items() if k not in RESERVED_ATTRS and not k.startswith("_")},
        "scales": per_band(attrs.get("scale_factor"), float),
        "offsets": per_band(attrs.get("add_offset"), float),
        "units": per_band(attrs.get("units"), str),
    }


def nodata_fits(value: float, dtype: Any) -> bool:
    """Whether pixels of ``dtype`` can hold the nodata ``value`` exactly."""
    dtype = np.dtype(dtype)
    if np.isnan(value):
        return dtype.kind == "f"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    return True
