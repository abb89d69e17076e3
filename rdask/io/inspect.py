"""What a file is, from its metadata alone: size, bands, dtype, blocks and
the :class:`~rdask.meta.RasterMeta` an output of it carries.

Every failure to open becomes one line naming the problem and the path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rdask.errors import RasterOpenError, first_line
from rdask.io import guard
from rdask.io.gdalenv import gdal_env
from rdask.io.paths import file_stamp, redact
from rdask.io.remote import diagnose, is_remote
from rdask.meta import GCP, BandMeta, RasterMeta, as_tags


@dataclass(frozen=True)
class FileInfo:
    """One input as GDAL describes it."""

    path: str
    stamp: tuple[float, int]
    shape: tuple[int, int]
    bands: tuple[int, ...]
    dtypes: tuple[str, ...]
    block: tuple[int, int]
    meta: RasterMeta
    per_dataset_mask: bool


def inspect(path: str, options: tuple[tuple[str, Any], ...]) -> FileInfo:
    """Metadata of one input, with one-line errors for the usual mistakes."""
    import rasterio

    shown = redact(path)
    _check_local(path, shown)
    guard.check_file(path)
    try:
        with gdal_env(**dict(options)), rasterio.open(path) as ds:
            guard.check_declared(ds, shown)
            if ds.count == 0:
                raise RasterOpenError(f"no raster bands in {shown}")
            return FileInfo(
                path=path,
                stamp=file_stamp(path),
                shape=(ds.height, ds.width),
                bands=tuple(ds.indexes),
                dtypes=tuple(guard.read_dtype(d) for d in ds.dtypes),
                block=tuple(ds.block_shapes[0]),
                meta=read_meta(ds),
                per_dataset_mask=_per_dataset_mask(ds),
            )
    except RasterOpenError:
        raise
    except Exception as exc:  # noqa: BLE001 - any GDAL failure becomes one line
        raise _open_error(path, shown, options, exc) from None


def read_meta(ds: Any) -> RasterMeta:
    """The :class:`RasterMeta` of an open rasterio dataset.

    Reads what GDAL shows, sidecars included when the dataset was opened
    without ``GDAL_DISABLE_READDIR_ON_OPEN`` (``.aux.xml``, ``.tfw``,
    ``.msk``). A dataset georeferenced by GCPs keeps them with their CRS
    and no CRS of its own.

    Parameters
    ----------
    ds : rasterio.io.DatasetReader
        The open dataset.

    Returns
    -------
    RasterMeta
        Everything an output of ``ds`` carries besides pixels.
    """
    tags = ds.tags()
    components = _nodata_components(tags.pop("NODATA_VALUES", None), ds.count)
    gcps, gcp_crs = ds.gcps
    return RasterMeta(
        crs=ds.crs,
        transform=ds.transform,
        nodata=None if ds.nodata is None else float(ds.nodata),
        bands=tuple(_band_meta(ds, i, components[i - 1]) for i in ds.indexes),
        tags=as_tags(tags),
        gcps=tuple(GCP.of(g) for g in gcps),
        gcp_crs=gcp_crs if gcps else None,
        rpcs=as_tags(ds.tags(ns="RPC")),
    )


def _band_meta(ds: Any, i: int, component: float | None) -> BandMeta:
    """What band ``i`` (1-based) of ``ds`` carries besides pixels."""
    interp = ds.colorinterp[i - 1].name.lower()
    return BandMeta(
        description=ds.descriptions[i - 1] or "",
        scale=float(ds.scales[i - 1]),
        offset=float(ds.offsets[i - 1]),
        unit=ds.units[i - 1] or "",
        colorinterp=interp,
        colormap=_colormap(ds, i) if interp == "palette" else (),
        tags=as_tags(ds.tags(i)),
        nodata_component=component,
    )


def _colormap(ds: Any, i: int) -> tuple[tuple[int, tuple[int, int, int, int]], ...]:
    """Band ``i``'s colour table as sorted ``(index, rgba)`` pairs."""
    try:
        table = ds.colormap(i)
    except ValueError:  # "NULL color table": palette interp without a table
        return ()
    return tuple(sorted((int(k), tuple(int(c) for c in v)) for k, v in table.items()))


def _nodata_components(text: str | None, count: int) -> tuple[float | None, ...]:
    """GDAL's ``NODATA_VALUES`` item split per band (Nones unless it has
    one number per band, as GDAL requires)."""
    values = (text or "").replace(",", " ").split()
    if len(values) != count:
        return (None,) * count
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        return (None,) * count


def _per_dataset_mask(ds: Any) -> bool:
    """A real mask band (internal or ``.msk``): not alpha, and not the mask
    GDAL derives from per-band ``NODATA_VALUES`` (flags per_dataset + nodata),
    which the output carries as ``NODATA_VALUES`` instead."""
    from rasterio.enums import MaskFlags

    return all(
        MaskFlags.per_dataset in f and MaskFlags.alpha not in f and MaskFlags.nodata not in f
        for f in ds.mask_flag_enums
    )


def _check_local(path: str, shown: str) -> None:
    if "://" in path or path.startswith("/vsi"):
        return
    if not os.path.exists(path):
        raise RasterOpenError(f"no such file: {shown}")
    if os.path.isdir(path) and not path.lower().endswith((".zarr", ".gdb")):
        raise RasterOpenError(f"is a directory, not a raster: {shown}")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise RasterOpenError(f"empty file (0 bytes), not a raster: {shown}")


def _open_error(path: str, shown: str, options: tuple[tuple[str, Any], ...], exc: Exception) -> RasterOpenError:
    if is_remote(path):
        reason = diagnose(path, dict(options))
        if reason:
            return RasterOpenError(f"cannot open {shown}: {reason}")
    text = first_line(exc)
    if "not recognized as" in text or "not a supported file format" in text:
        return RasterOpenError(f"not a raster GDAL can read: {shown}")
    return RasterOpenError(f"cannot open {shown}: {redact(text.replace(path, shown))}")
