"""Write a :class:`~rdask.meta.RasterMeta` into a GDAL dataset being created.

Every output that has GDAL create its file (the GTiff output and its GDAL
fallback, COG levels: :func:`rdask.outputs.tiff.gdal.create_dataset`) adds :func:`creation_options_for` to its creation
options, passes :func:`creation_kwargs` to ``rasterio.open(..., "w")`` and
calls :func:`write_meta` on the new dataset before writing pixels. What the
GeoTIFF cannot hold GDAL writes beside it in ``<file>.aux.xml`` when the
dataset is closed; :mod:`rdask.outputs.sidecar` publishes that file with
the output.

GeoTIFF keeps (in GeoKeys, tiepoints, the RPC tag, the colour map and the
``GDAL_METADATA`` tag): CRS (geographic 3D and compound ones with
GeoTIFF 1.1 keys), transform or GCPs with their CRS, RPCs, nodata,
``AREA_OR_POINT``, dataset and band tags, descriptions, scales, offsets,
units, colour interpretation and band 1's colour table. It cannot keep a
projected 3D CRS (e.g. ``EPSG:32631`` promoted to 3D with ellipsoidal
height, as GDAL reads ``ProjectedCSTypeGeoKey=32631`` +
``VerticalGeoKey=4979``) nor CRSs without a GeoKey encoding (derived
geographic, some ``ob_tran``): those go to the ``.aux.xml`` sidecar.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from rdask.meta import BandMeta, RasterMeta, nodata_fits


def creation_kwargs(meta: RasterMeta, dtype: Any) -> dict[str, Any]:
    """``rasterio.open(..., "w", **kwargs)`` georeferencing and nodata.

    A dataset georeferenced by GCPs gets neither CRS nor transform here
    (GeoTIFF holds tiepoints *or* a transform, and GDAL reads a lone
    ``AREA_OR_POINT`` as an invented ``LOCAL_CS``): :func:`write_meta`
    writes the GCPs with their CRS, as ``gdal_translate`` does.

    Parameters
    ----------
    meta : RasterMeta
        What the output carries.
    dtype : numpy dtype-like
        The output's pixel type; a nodata it cannot hold is dropped.

    Returns
    -------
    dict
        ``crs``, ``transform`` and ``nodata`` keyword arguments.
    """
    nodata = meta.nodata
    if nodata is not None and not nodata_fits(nodata, np.dtype(dtype)):
        nodata = None
    if meta.gcps:
        return {"crs": None, "transform": None, "nodata": nodata}
    return {"crs": meta.crs, "transform": _real_transform(meta.transform), "nodata": nodata}


def _real_transform(transform: Any) -> Any:
    """``transform``, or None for GDAL's default (the identity: no
    transform, which rasterio would warn about and GDAL not write)."""
    from affine import Affine

    if transform is None or tuple(transform) == tuple(Affine.identity()):
        return None
    return transform


def creation_options_for(meta: RasterMeta) -> dict[str, str]:
    """GTiff creation options without which ``meta`` would not be kept.

    ``GEOTIFF_VERSION=1.1`` for a 3D CRS (geographic 3D or compound; 1.0
    keys would drop the vertical part), ``PHOTOMETRIC=RGB`` when bands 1-3
    are red, green, blue (needed at creation for JPEG/YCbCr and for tiles
    encoded outside GDAL) and ``ALPHA=YES`` when the first extra band is
    alpha. Add them to the output's creation options.

    Parameters
    ----------
    meta : RasterMeta
        What the output carries.

    Returns
    -------
    dict
        Creation option names and values (upper case, as GDAL spells them).
    """
    options: dict[str, str] = {}
    if any(is_3d(crs) for crs in (meta.crs, meta.gcp_crs)):
        options["GEOTIFF_VERSION"] = "1.1"
    interps = tuple(b.colorinterp for b in meta.bands)
    samples = 1
    if interps[:3] == ("red", "green", "blue"):
        options["PHOTOMETRIC"] = "RGB"
        samples = 3
    if len(interps) > samples and interps[samples] == "alpha":
        options["ALPHA"] = "YES"
    return options


def is_3d(crs: Any) -> bool:
    """Whether ``crs`` has a vertical axis (3D geographic or projected, or
    compound)."""
    if not crs:
        return False
    from rasterio.enums import WktVersion

    wkt = crs.to_wkt(version=WktVersion.WKT2_2019)
    return wkt.startswith("COMPOUNDCRS") or re.search(r"\bCS\[\w+,\s*3\]", wkt) is not None


def write_meta(ds: Any, meta: RasterMeta) -> None:
    """Write everything of ``meta`` but pixels into the new, writable ``ds``.

    Call it right after ``rasterio.open(..., "w", **creation_kwargs(...))``
    and before any pixels are written (a colour table or photometric change
    after the first block is lost in a GeoTIFF).

    Parameters
    ----------
    ds : rasterio.io.DatasetWriter
        The dataset being created.
    meta : RasterMeta
        What it carries; bands beyond ``ds.count`` are ignored.
    """
    _write_georef(ds, meta)
    _write_dataset_tags(ds, meta)
    bands = meta.bands[: ds.count]
    for i, b in enumerate(bands, start=1):
        _write_band(ds, i, b)
    if len(bands) == ds.count:
        ds.scales = tuple(b.scale for b in bands)
        ds.offsets = tuple(b.offset for b in bands)
        if any(b.unit for b in bands):
            ds.units = tuple(b.unit for b in bands)
    _write_colorinterp(ds, bands)


def _write_georef(ds: Any, meta: RasterMeta) -> None:
    """GCPs with their CRS and RPCs (CRS and transform are set at creation)."""
    if meta.gcps and meta.gcp_crs:
        shift = point_gcp_shift() if meta.tag_dict().get("AREA_OR_POINT") == "Point" else 0.0
        gcps = [g._replace(row=g.row - shift, col=g.col - shift).to_rasterio() for g in meta.gcps]
        ds.gcps = (gcps, meta.gcp_crs)
    if meta.rpcs:
        ds.update_tags(ns="RPC", **dict(meta.rpcs))


@functools.cache
def point_gcp_shift() -> float:
    """How far (pixels) GCPs set on a GTiff being created with
    ``AREA_OR_POINT=Point`` read back from where they were set.

    GDAL (3.10 at least) shifts them by +1: its Create path applies the
    PixelIsPoint half-pixel shift in the wrong direction when writing
    (``gdal_translate``'s CreateCopy path does not). Measured once on a
    1x1 file in ``/vsimem`` so a GDAL that fixes it needs no change here.
    """
    import warnings

    import rasterio
    import rasterio.shutil
    from rasterio.control import GroundControlPoint
    from rasterio.errors import NotGeoreferencedWarning

    path = "/vsimem/rdask-point-gcp-probe.tif"
    gcps = [GroundControlPoint(row=0.0, col=0.0, x=0.0, y=0.0)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path, "w", driver="GTiff", width=1, height=1, count=1, dtype="uint8") as ds:
                ds.update_tags(AREA_OR_POINT="Point")
                ds.gcps = (gcps, "EPSG:4326")
            with rasterio.open(path) as ds:
                return float(ds.gcps[0][0].row)
    finally:
        if rasterio.shutil.exists(path):
            rasterio.shutil.delete(path)


def _write_dataset_tags(ds: Any, meta: RasterMeta) -> None:
    """Dataset tags and ``NODATA_VALUES``. ``AREA_OR_POINT`` only with
    georeferencing: alone, GDAL writes GeoKeys for it that read back as an
    invented ``LOCAL_CS["unnamed"]``."""
    tags = dict(meta.tags)
    if not meta.georeferenced:
        tags.pop("AREA_OR_POINT", None)
    values = meta.nodata_values
    if len(values) == ds.count:
        tags["NODATA_VALUES"] = " ".join(f"{v:.17g}" for v in values)
    if tags:
        ds.update_tags(**tags)


def _write_band(ds: Any, i: int, band: BandMeta) -> None:
    """Description, tags and colour table of band ``i`` (1-based)."""
    if band.description:
        ds.set_band_description(i, band.description)
    if band.tags:
        ds.update_tags(i, **dict(band.tags))
    if band.colormap and i == 1:
        # A GeoTIFF holds one colour table, band 1's (GDAL refuses others,
        # and gdal_translate drops them)
        ds.write_colormap(i, dict(band.colormap))


def _write_colorinterp(ds: Any, bands: tuple[BandMeta, ...]) -> None:
    """Colour interpretation of every band that has one (others keep
    GDAL's default)."""
    from rasterio.enums import ColorInterp

    if len(bands) != ds.count or not any(b.colorinterp for b in bands):
        return
    current = ds.colorinterp
    ds.colorinterp = tuple(
        ColorInterp[b.colorinterp] if b.colorinterp else current[i] for i, b in enumerate(bands)
    )
