"""Reading a Zarr raster: a picklable source over one ``(band, y, x)`` (or
``(y, x)``) array of a Zarr store, and the :class:`~rdask.meta.RasterMeta`
its attributes describe.

Pixels are read through the zarr package (not GDAL), one open array per
thread. Georeferencing is read as rdask's Zarr output writes it and as
rioxarray / odc-geo do: the CF grid mapping named by ``grid_mapping``
(``crs_wkt`` or ``spatial_ref``, and ``GeoTransform`` for the exact
transform), else GeoZarr's ``proj:`` / ``spatial:`` attributes, else GDAL's
``_CRS`` and the pixel-centre ``x`` / ``y`` coordinates.

A store at ``s3://bucket/prefix/x.zarr`` is read through zarr's
``ObjectStore`` (:mod:`rdask.cloud.objectstore`): the source carries the URL and
the S3 endpoint, each process connects with its own credentials.
"""

from __future__ import annotations

import base64
import functools
import math
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rdask.cloud.s3 import S3Endpoint, reason
from rdask.errors import RasterOpenError, first_line
from rdask.io.base import Opened, SourceArray
from rdask.io.remote import check_options, is_s3
from rdask.io.zarrmeta import meta_from_attrs
from rdask.meta import RasterMeta

#: The data variable rdask's Zarr output writes (rioxarray's name for it).
DATA = "band_data"

def is_zarr_path(path: str) -> bool:
    """Whether ``path`` names a Zarr store: a ``.zarr`` suffix, or a local
    directory holding Zarr metadata."""
    p = os.fspath(path).rstrip("/")
    if p.lower().endswith(".zarr"):
        return True
    if "://" in p or not os.path.isdir(p):
        return False
    return any(os.path.exists(os.path.join(p, m)) for m in ("zarr.json", ".zgroup", ".zarray"))


@dataclass(frozen=True)
class ZarrSource(SourceArray):
    """One array of a Zarr store (a local path, or an ``s3://`` URL with its
    ``endpoint``), read as ``(band, y, x)``. With ``metadata`` (the array's
    ``zarr.json`` text) the array is not looked up in the store: an
    unpublished S3 store's overview levels are read that way."""

    root: str
    array: str
    count: int
    height: int
    width: int
    dtype: str
    stamp: tuple[float, int] = (0.0, 0)
    squeeze: bool = False  # a (y, x) array: one band
    files: tuple = ()
    gdal_options: tuple = ()
    per_dataset_mask: bool = False
    endpoint: S3Endpoint | None = None
    metadata: str = ""

    @classmethod
    def of_array(cls, root: str, array: str, *, endpoint: S3Endpoint | None = None,
                 metadata: str = "") -> ZarrSource:
        """The source of ``root``/``array`` as it is now (on disk, or on S3)."""
        arr = _open(root, array, endpoint, metadata)
        shape = tuple(arr.shape)
        squeeze = len(shape) == 2
        count, h, w = (1, *shape) if squeeze else shape
        stamp = _metadata_stamp(arr) if is_s3(root) else _stamp(root, array)
        return cls(root, array, int(count), int(h), int(w), str(_dtype(arr)), stamp, squeeze,
                   endpoint=endpoint, metadata=metadata)

    def __dask_tokenize__(self) -> tuple:
        return ("rdask.ZarrSource", self.root, self.array, self.stamp, self.dtype, self.metadata)

    def env(self) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def read(self, y0: int, y1: int, x0: int, x1: int, *, bands: tuple[int, int] | None = None) -> np.ndarray:
        """Rows ``y0:y1``, columns ``x0:x1`` of bands ``bands`` (0-based range)."""
        b0, b1 = bands or (0, self.count)
        arr = self._handle()
        try:
            if self.squeeze:
                out = np.asarray(arr[y0:y1, x0:x1])[None][b0:b1]
            else:
                out = np.asarray(arr[b0:b1, y0:y1, x0:x1])
        except Exception as exc:  # noqa: BLE001 - name store and window
            raise RasterOpenError(f"cannot read {self.root} at rows {y0}:{y1}, cols {x0}:{x1}: "
                                  f"{first_line(exc)}") from None
        return out.astype(self.dtype, copy=False)

    def _handle(self) -> Any:
        return open_arrays().get(self)


class OpenArrays(threading.local):
    """This thread's open Zarr arrays (at most 16, then they are all
    dropped); one per process (:func:`open_arrays`), each thread seeing its own."""

    def __init__(self) -> None:
        self.arrays: dict[tuple, Any] = {}

    def get(self, source: ZarrSource) -> Any:
        key = (source.root, source.array, source.stamp)
        arr = self.arrays.get(key)
        if arr is None:
            if len(self.arrays) >= 16:
                self.arrays.clear()
            arr = self.arrays[key] = _open(source.root, source.array, source.endpoint, source.metadata)
        return arr


def open_arrays() -> OpenArrays:
    """This process's :class:`OpenArrays`."""
    return _open_arrays_of(os.getpid())


@functools.cache
def _open_arrays_of(pid: int) -> OpenArrays:
    return OpenArrays()


def _open(root: str, array: str, endpoint: S3Endpoint | None = None, metadata: str = "") -> Any:
    import zarr

    try:
        if is_s3(root):
            from rdask.cloud.objectstore import zarr_array, zarr_store

            endpoint = endpoint or S3Endpoint.from_options(None)
            if metadata:
                return zarr_array(root, endpoint, array, metadata, read_only=True)
            return _open_any(zarr.open_array, zarr_store(root, endpoint), array)
        path = os.path.join(root, array)
        return zarr.open_array(path, mode="r", zarr_format=_format(path))
    except RasterOpenError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line naming the store
        raise RasterOpenError(f"cannot open {root}: {first_line(exc)}") from None


def _open_any(opener: Any, store: Any, path: str) -> Any:
    """A node of a remote store: v3 metadata first (rdask's stores carry v2
    beside it, and zarr-python warns on finding both), else whatever is there."""
    try:
        return opener(store=store, path=path, mode="r", zarr_format=3)
    except FileNotFoundError:
        return opener(store=store, path=path, mode="r")


def _format(path: str) -> int | None:
    """3 where a node has v3 metadata: rdask's stores carry v2 metadata for
    GDAL beside it, and zarr-python would warn about finding both."""
    return 3 if os.path.exists(os.path.join(path, "zarr.json")) else None


def _dtype(arr: Any) -> np.dtype:
    dt = arr.dtype
    if hasattr(dt, "to_native_dtype"):
        dt = dt.to_native_dtype()
    return np.dtype(dt)


def _stamp(root: str, array: str) -> tuple[float, int]:
    for name in ("zarr.json", ".zarray"):
        try:
            st = os.stat(os.path.join(root, array, name))
        except OSError:
            continue
        return (st.st_mtime, st.st_size)
    return (0.0, 0)


def _metadata_stamp(arr: Any) -> tuple[float, int]:
    """A remote array's stamp: a digest of its metadata, so that an array
    replaced by one of another layout (shape, chunks, shards, codecs) is
    opened afresh rather than read through a handle of the old one."""
    import hashlib
    import json

    text = json.dumps(arr.metadata.to_dict(), sort_keys=True, default=str)
    return (0.0, int(hashlib.sha256(text.encode()).hexdigest()[:15], 16))


def accepts(paths: Sequence[str]) -> bool:
    """One Zarr store (see :func:`is_zarr_path`)."""
    return len(paths) == 1 and is_zarr_path(paths[0])


def open(paths: Sequence[str], gdal_options: Mapping[str, Any] | None = None) -> Opened:  # noqa: A001
    """The Zarr store at ``paths[0]`` (see :func:`open_zarr`)."""
    return Opened(*open_zarr(paths[0], gdal_options))


def open_zarr(path: str, gdal_options: Any = None) -> tuple[ZarrSource, RasterMeta, tuple[int, int]]:
    """The source, metadata and chunk shape ``(y, x)`` of the raster in the
    Zarr store at ``path`` (an ``s3://`` URL too: its endpoint from
    ``gdal_options`` or the environment, as for GDAL).

    Raises
    ------
    RasterOpenError
        No store there, or no single raster array in it.
    """
    import zarr

    endpoint = None
    if is_s3(os.fspath(path)):
        check_options(gdal_options)  # secrets come from each process's environment
        root = os.fspath(path).rstrip("/")
        endpoint = S3Endpoint.from_options(gdal_options)
        try:
            from rdask.cloud.objectstore import zarr_store

            group = _open_any(zarr.open_group, zarr_store(root, endpoint), "")
        except FileNotFoundError:
            raise RasterOpenError(f"no Zarr store at {path}") from None
        except Exception as exc:  # noqa: BLE001 - one line naming the store
            raise RasterOpenError(f"cannot open {path} as a Zarr store: {reason(exc)}") from None
    else:
        root = os.path.abspath(os.fspath(path)).rstrip("/")
        if not os.path.exists(root):
            raise RasterOpenError(f"no such file: {path}")
        try:
            group = zarr.open_group(root, mode="r", zarr_format=_format(root))
        except Exception as exc:  # noqa: BLE001 - one line naming the store
            raise RasterOpenError(f"cannot open {path} as a Zarr store: {first_line(exc)}") from None
    name = _data_array(group, path)
    arr = group[name]
    source = ZarrSource.of_array(root, name, endpoint=endpoint)
    attrs = dict(arr.attrs)
    gm_name = attrs.get("grid_mapping")
    gm = dict(group[gm_name].attrs) if gm_name and gm_name in group else {}
    bands, tags = meta_from_attrs(attrs, source.count)
    meta = RasterMeta(
        crs=_crs(gm, attrs, dict(group.attrs)),
        transform=_transform(gm, attrs, group, source),
        nodata=_nodata(arr, attrs),
        bands=bands,
        tags=tags,
    )
    chunks = getattr(arr, "shards", None) or arr.chunks
    return source, meta, (int(chunks[-2]), int(chunks[-1]))


def _dims(arr: Any) -> tuple[str, ...]:
    names = getattr(arr.metadata, "dimension_names", None)
    if names:
        return tuple(str(n) for n in names)
    return tuple(arr.attrs.get("_ARRAY_DIMENSIONS", ()))


def _data_array(group: Any, path: str) -> str:
    """The raster array of ``group``: ``band_data``, else its only 2-D or 3-D array."""
    names = [n for n, a in group.arrays() if a.ndim in (2, 3)]
    if DATA in names:
        return DATA
    if len(names) == 1:
        return names[0]
    if not names:
        raise RasterOpenError(f"no raster array in {path}")
    raise RasterOpenError(f"{path} holds several arrays ({', '.join(sorted(names))}); rdask reads "
                          f"one named {DATA!r}")


def _crs(gm: dict, attrs: dict, group_attrs: dict) -> Any:
    from rasterio.crs import CRS

    candidates = [gm.get("crs_wkt"), gm.get("spatial_ref")]
    for a in (attrs, group_attrs):
        candidates += [a.get("proj:wkt2"), a.get("proj:code")]
        gdal = a.get("_CRS")
        if isinstance(gdal, dict):
            candidates += [gdal.get("wkt"), gdal.get("url")]
    for c in candidates:
        if c:
            try:
                return CRS.from_user_input(c)
            except Exception:  # noqa: BLE001, S112 - try the next spelling
                continue
    return None


def _transform(gm: dict, attrs: dict, group: Any, source: ZarrSource) -> Any:
    from affine import Affine

    if gm.get("GeoTransform"):
        return Affine.from_gdal(*(float(v) for v in str(gm["GeoTransform"]).split()))
    st = attrs.get("spatial:transform") or dict(group.attrs).get("spatial:transform")
    if st and len(st) >= 6:
        return Affine(*(float(v) for v in st[:6]))
    if "x" in group and "y" in group and source.width > 1 and source.height > 1:
        x, y = np.asarray(group["x"][:2], dtype=np.float64), np.asarray(group["y"][:2], dtype=np.float64)
        a, e = x[1] - x[0], y[1] - y[0]
        return Affine(a, 0.0, x[0] - a / 2, 0.0, e, y[0] - e / 2)
    return Affine.identity()


def _nodata(arr: Any, attrs: dict) -> float | None:
    value = attrs.get("_FillValue")
    if isinstance(value, str):
        try:
            return struct.unpack("<d", base64.standard_b64decode(value))[0]
        except (ValueError, struct.error):
            value = float(value) if value in ("NaN", "Infinity", "-Infinity") else None
    if value is not None:
        return float(value)
    if getattr(arr.metadata, "zarr_format", 3) == 2:
        fill = arr.metadata.fill_value
        if fill is not None and not (isinstance(fill, float) and math.isnan(fill) and _dtype(arr).kind != "f"):
            return float(fill)
    return None
