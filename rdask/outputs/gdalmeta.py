"""Write a :class:`~rdask.meta.RasterMeta` into a GDAL dataset being created.

Every output kind that has GDAL create its file (the tile sink, the GDAL
sink, COG levels) calls :func:`creation_kwargs` for what ``rasterio.open``
takes at creation and :func:`write_meta` for the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rdask.meta import RasterMeta, nodata_fits


def creation_kwargs(meta: RasterMeta, dtype: Any) -> dict[str, Any]:
    """``rasterio.open(..., "w", **kwargs)`` georeferencing and nodata."""
    nodata = meta.nodata
    if nodata is not None and not nodata_fits(nodata, np.dtype(dtype)):
        nodata = None
    return {"crs": meta.crs, "transform": meta.transform, "nodata": nodata}


def write_meta(ds: Any, meta: RasterMeta) -> None:
    """Tags, band descriptions, scales/offsets/units and colour
    interpretation of ``meta`` into the open, writable ``ds``."""
    bands = meta.bands[: ds.count]
    if meta.tags:
        ds.update_tags(**dict(meta.tags))
    for i, b in enumerate(bands, start=1):
        if b.description:
            ds.set_band_description(i, b.description)
        if b.tags:
            ds.update_tags(i, **dict(b.tags))
    if len(bands) == ds.count:
        ds.scales = tuple(b.scale for b in bands)
        ds.offsets = tuple(b.offset for b in bands)
        if any(b.unit for b in bands):
            ds.units = tuple(b.unit for b in bands)
