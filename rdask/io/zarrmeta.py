"""A raster's band metadata and tags as attributes of a Zarr data array,
both ways: what rdask's Zarr output writes and what reading it back gives.

The attributes are what ``rioxarray.open_rasterio`` shows for the GeoTIFF
of the same data, so that ``xarray.open_zarr(store, decode_coords="all")``
shows the same:

* ``scale_factor`` / ``add_offset`` when every band has the same (CF, so
  xarray applies them when it decodes), else ``scales`` / ``offsets``, one
  per band, which xarray leaves alone, as rioxarray does;
* ``long_name``: the band descriptions; ``units``: the band units (one per
  band, as rioxarray lists them);
* the dataset tags, and band 1's tags, as plain attributes (rioxarray shows
  both so), numbers where rioxarray shows numbers (``"490"`` as ``490``,
  when that is the text's own spelling);

and, for what rioxarray does not show but a GeoTIFF holds, ``band_tags``
(every band's tags) and ``colorinterp`` (GDAL's colour interpretation
names). Reading them back (:func:`meta_from_attrs`) gives the
:class:`~rdask.meta.RasterMeta` band items and tags, so Zarr -> GeoTIFF
keeps them too. A tag of band 1 and a dataset tag of the same name and
value cannot be told apart: it is read back as band 1's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rdask.meta import BandMeta

#: Attributes that are not tags (the array's own, CF's, GeoZarr's, GDAL's).
RESERVED = {"grid_mapping", "_FillValue", "scale_factor", "add_offset", "scales", "offsets", "units",
            "long_name", "band_tags", "colorinterp", "_CRS", "zarr_conventions", "multiscales",
            "coordinates", "_ARRAY_DIMENSIONS", "missing_value", "valid_range", "dtype"}


def _reserved(key: str) -> bool:
    return key in RESERVED or key.startswith(("spatial:", "proj:", "_"))


def band_attrs(bands: tuple[BandMeta, ...], tags: Mapping[str, str]) -> dict[str, Any]:
    """The data array's attributes for ``bands`` and dataset ``tags``."""
    attrs: dict[str, Any] = {}
    if not bands:
        return attrs
    scales = [float(b.scale) for b in bands]
    offsets = [float(b.offset) for b in bands]
    if len(set(scales)) == 1 and len(set(offsets)) == 1:
        if scales[0] != 1.0 or offsets[0] != 0.0:
            attrs["scale_factor"], attrs["add_offset"] = scales[0], offsets[0]
    else:
        attrs["scales"], attrs["offsets"] = scales, offsets
    if any(b.description for b in bands):
        attrs["long_name"] = [b.description or None for b in bands]
    if any(b.unit for b in bands):
        attrs["units"] = [b.unit for b in bands]
    if any(b.colorinterp for b in bands):
        attrs["colorinterp"] = [b.colorinterp or "undefined" for b in bands]
    if any(b.tags for b in bands):
        attrs["band_tags"] = [dict(b.tags) for b in bands]
    for key, value in (*dict(bands[0].tags).items(), *dict(tags).items()):
        if not _reserved(key):
            attrs[key] = _as_shown(str(value))
    return attrs


def _as_shown(text: str) -> Any:
    """A tag's value as rioxarray shows it (a number when it reads as one),
    only where the text is that number's own spelling, so it reads back
    exactly."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return value if str(value) == text else text
    return text


def meta_from_attrs(attrs: Mapping[str, Any], count: int) -> tuple[tuple[BandMeta, ...], tuple[tuple[str, str], ...]]:
    """The band items and dataset tags :func:`band_attrs` wrote (or any
    CF-style attributes: a single ``long_name`` or ``units`` for every band)."""
    scales = _per_band(attrs.get("scales", attrs.get("scale_factor", 1.0)), count, float, 1.0)
    offsets = _per_band(attrs.get("offsets", attrs.get("add_offset", 0.0)), count, float, 0.0)
    names = _per_band(attrs.get("long_name", ""), count, str, "")
    units = _per_band(attrs.get("units", ""), count, str, "")
    colours = _per_band(attrs.get("colorinterp", ""), count, str, "")
    band_tags = attrs.get("band_tags")
    per_band = [dict(t) for t in band_tags] if isinstance(band_tags, list) and len(band_tags) == count else [
        {} for _ in range(count)]
    bands = tuple(
        BandMeta(description=names[i], scale=scales[i], offset=offsets[i], unit=units[i],
                 colorinterp="" if colours[i] == "undefined" else colours[i],
                 tags=tuple(sorted((str(k), str(v)) for k, v in per_band[i].items())))
        for i in range(count))
    first = per_band[0] if per_band else {}
    tags = tuple(sorted((k, str(v)) for k, v in attrs.items()
                        if not _reserved(k) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
                        and first.get(k) != str(v)))
    return bands, tags


def _per_band(value: Any, count: int, kind: type, default: Any) -> list[Any]:
    """One value per band from a list (one per band) or a single value."""
    if isinstance(value, (list, tuple)):
        values = [default if v is None else kind(v) for v in value]
        return values if len(values) == count else [default] * count
    try:
        one = kind(value) if value is not None else default
    except (TypeError, ValueError):
        one = default
    if isinstance(one, float) and math.isnan(one):
        one = default
    return [one] * count
