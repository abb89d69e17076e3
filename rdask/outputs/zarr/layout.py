"""The layout of rdask's Zarr stores, wherever they are written: the arrays
and attributes of each resolution level (created through the zarr package,
with the Zarr v2 metadata GDAL <= 3.10 reads beside the v3 metadata), the
Zarr chunk shape under rdask's chunk plan, and the chunk jobs that compute
overview levels from the level above.

The local output (:mod:`rdask.outputs.zarr.local`) and the S3 one
(:mod:`rdask.outputs.zarr.s3`) both build this layout in a local directory;
they differ in where the chunks go and how the store is published.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import functools
import json
import math
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rdask.errors import ResumeError
from rdask.io.zarr import DATA, ZarrSource, is_zarr_path
from rdask.io.zarrmeta import band_attrs
from rdask.meta import RasterMeta
from rdask.outputs.base import OutputSpec
from rdask.outputs.nearest import picks
from rdask.outputs.options import WriteOptions
from rdask.plan import plan_chunks
from rdask.recipe import ChunkJob, ComputeTask, Region

#: The conventions the attributes follow (GeoZarr's building blocks).
PROJ_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-experimental/geo-proj/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-experimental/geo-proj/blob/v1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj:",
    "description": "Coordinate reference system information for geospatial data",
}
SPATIAL_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial:",
    "description": "Spatial coordinate information",
}
MULTISCALES_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/multiscales/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/multiscales/blob/v1/README.md",
    "uuid": "d35379db-88df-4056-af3a-620245f8e347",
    "name": "multiscales",
    "description": "Multiscale layout of zarr datasets",
}

#: Overview resamplings the Zarr output computes itself.
ZARR_RESAMPLINGS = ("nearest", "average")

# -- the layout ----------------------------------------------------------------


def zarr_asked(target: str, options: WriteOptions) -> bool:
    """Whether ``target`` with ``options`` asks for a Zarr store: ``driver="Zarr"``,
    or a ``.zarr`` target with the default driver.

    Raises
    ------
    ValueError
        A Zarr store at a URL other than ``s3://``, rather than upload a
        GeoTIFF under that name.
    """
    asked = options.driver == "Zarr" or (options.driver == "GTiff" and is_zarr_path(target))
    if asked and "://" in target and not target.startswith("s3://"):
        raise ValueError(f"rdask writes Zarr stores to local paths and s3:// URLs only, not {target!r}")
    return asked


@dataclass(frozen=True)
class Level:
    """One resolution level: where its arrays are, its size, transform and chunks."""

    group: str  # "" for the root (full resolution), "1", "2"... for overviews
    shape: tuple[int, int, int]
    transform: Any
    chunks: tuple[int, int, int]  # the Zarr chunks readers read
    shards: tuple[int, int, int] | None = None  # one object each, holding whole chunks (sharding)

    @property
    def data(self) -> str:
        return f"{self.group}/{DATA}" if self.group else DATA

    @property
    def objects(self) -> tuple[int, int, int]:
        """The shape of what one key holds: a shard, or a chunk."""
        return self.shards or self.chunks


def check_resumable(root: str, main: Level, dtype: np.dtype, shown: str, what: str) -> None:
    """Refuse to resume into the store at ``root`` (``what``: "partial" or
    "staged", named with the target ``shown``) unless its data array is the
    one this job would create: same shape, chunking and dtype."""
    with builtins.open(os.path.join(root, DATA, "zarr.json")) as fh:
        meta = json.load(fh)
    want = (list(main.shape), list(main.objects), str(np.dtype(dtype)))
    got = (meta.get("shape"), meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape"),
           str(meta.get("data_type")))
    if want != got:
        raise ResumeError(f"cannot resume {shown}: its {what} store {root} has another shape, "
                          "chunking or dtype (rerun without --resume to start over)")


def zarr_chunks(shape: tuple[int, int, int], chunks: tuple[tuple[int, ...], ...], blocksize: int,
                ) -> tuple[int, int, int]:
    """The Zarr chunk shape under rdask's ``chunks``: every rdask chunk covers
    whole Zarr chunks. Along y and x the ``blocksize`` when it divides every
    rdask chunk but the last, else the largest size that does."""
    out = []
    for axis, (n, sizes) in enumerate(zip(shape, chunks, strict=True)):
        inner = sizes[:-1]
        g = functools.reduce(math.gcd, inner, 0)
        if axis == 0:
            out.append(g or n)
        elif g == 0:
            out.append(min(blocksize, n))
        else:
            out.append(blocksize if g % blocksize == 0 else g)
    return tuple(out)  # type: ignore[return-value]


def sharded(options: WriteOptions) -> bool:
    """Whether ``--co SHARD=YES`` asks for Zarr v3 sharding."""
    return dict(options.creation_options).get("SHARD", "NO").upper() in ("YES", "TRUE", "ON", "1")


def main_level(spec: OutputSpec) -> Level:
    """The full-resolution level of ``spec``'s store: Zarr chunks of the
    ``blocksize`` under rdask's chunks; with sharding, one shard per rdask
    chunk (the chunk plan's regular size; edge shards are clipped by the
    array), so each task writes one object holding its inner chunks."""
    opts = spec.options
    chunks = zarr_chunks(spec.shape, spec.chunks, opts.blocksize)
    shards = None
    if sharded(opts):
        shards = zarr_chunks(spec.shape, spec.chunks, max(spec.shape[1:]))
        chunks = tuple(c if s % c == 0 else s for c, s in zip(chunks, shards, strict=True))  # type: ignore[assignment]
    return Level("", spec.shape, spec.meta.transform, chunks, shards)  # type: ignore[arg-type]


def _codec(options: WriteOptions) -> tuple[Any, dict[str, Any] | None]:
    """The v3 compressor and the same one as v2 metadata."""
    from zarr.codecs import GzipCodec, ZstdCodec

    if options.compress is None:
        return None, None
    level = options.codec_level
    if options.compress == "deflate":
        return GzipCodec(level=level), {"id": "gzip", "level": level}
    return ZstdCodec(level=level, checksum=False), {"id": "zstd", "level": level, "checksum": False}


def v2_metadata(options: WriteOptions) -> bool:
    """Whether to write the v2 metadata GDAL <= 3.10 reads (``--co V2_METADATA=NO``: not;
    never for a sharded store, which Zarr v2 cannot describe)."""
    if sharded(options):
        return False
    value = dict(options.creation_options).get("V2_METADATA", "YES").upper()
    return value not in ("NO", "FALSE", "OFF", "0")


def _fill_v3(nodata: float | None, dtype: np.dtype) -> Any:
    if nodata is None:
        return 0
    return float(nodata) if dtype.kind == "f" else int(nodata)


def _fill_v2(nodata: float | None, dtype: np.dtype) -> Any:
    if nodata is None:
        return None
    if dtype.kind == "f":
        v = float(nodata)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    return int(nodata)


def _fill_attr(nodata: float, dtype: np.dtype) -> Any:
    """``_FillValue`` as xarray writes it in Zarr v3 attributes."""
    if dtype.kind == "f":
        return base64.standard_b64encode(struct.pack("<d", float(nodata))).decode()
    return int(nodata)


def crs_attrs(crs: Any) -> dict[str, Any]:
    """The CF grid-mapping attributes rioxarray writes for ``crs``."""
    import pyproj

    wkt = crs.to_wkt()
    attrs: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        attrs.update(pyproj.CRS.from_user_input(wkt).to_cf())
    attrs["spatial_ref"] = wkt
    attrs["crs_wkt"] = wkt
    return attrs


def geo_attrs(meta: RasterMeta, transform: Any, shape: tuple[int, int]) -> dict[str, Any]:
    """GeoZarr's ``proj:`` and ``spatial:`` attributes."""
    h, w = shape
    t = transform
    xs = [t.c, t.c + t.a * w + t.b * h, t.c + t.a * w, t.c + t.b * h]
    ys = [t.f, t.f + t.d * w + t.e * h, t.f + t.d * w, t.f + t.e * h]
    attrs: dict[str, Any] = {
        "zarr_conventions": [SPATIAL_CONVENTION],
        "spatial:dimensions": ["y", "x"],
        "spatial:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "spatial:shape": [h, w],
        "spatial:bbox": [min(xs), min(ys), max(xs), max(ys)],
        "spatial:registration": "pixel",
    }
    crs = meta.crs
    if crs is not None:
        attrs["zarr_conventions"] = [PROJ_CONVENTION, SPATIAL_CONVENTION]
        auth = crs.to_authority()
        if auth:
            attrs["proj:code"] = f"{auth[0]}:{auth[1]}"
        attrs["proj:wkt2"] = crs.to_wkt(version="WKT2_2019")
    return attrs


def _gdal_crs(crs: Any) -> dict[str, Any]:
    """GDAL's own ``_CRS`` attribute (what its Zarr driver reads)."""
    out: dict[str, Any] = {"wkt": crs.to_wkt(version="WKT2_2019")}
    auth = crs.to_authority()
    if auth and auth[0] == "EPSG":
        out["url"] = f"http://www.opengis.net/def/crs/EPSG/0/{auth[1]}"
    return out


class Layout:
    """Creates a level's arrays (v3 through zarr, plus the v2 mirror)."""

    def __init__(self, root: str, spec: OutputSpec) -> None:
        self.root, self.spec = root, spec
        self.dtype = np.dtype(spec.dtype)
        self.meta = spec.meta
        self.compressor, self.v2_compressor = _codec(spec.options)
        self.v2 = v2_metadata(spec.options)

    def create_root(self, attrs: dict[str, Any]) -> None:
        import zarr

        zarr.open_group(self.root, mode="w", zarr_format=3, attributes=attrs)
        self._v2(self.root, {"zarr_format": 2}, attrs, group=True)

    def create_level(self, level: Level) -> None:
        import zarr

        meta, dtype = self.meta, self.dtype
        bands, h, w = level.shape
        t = level.transform
        base = os.path.join(self.root, level.group) if level.group else self.root
        if level.group:
            attrs = geo_attrs(meta, t, (h, w))
            zarr.open_group(base, mode="w", zarr_format=3, attributes=attrs)
            self._v2(base, {"zarr_format": 2}, attrs, group=True)
        geo = geo_attrs(meta, t, (h, w))
        data_attrs: dict[str, Any] = {**band_attrs(meta.bands, meta.tag_dict()), "grid_mapping": "spatial_ref",
                                      **geo}
        if meta.nodata is not None:
            data_attrs["_FillValue"] = _fill_attr(meta.nodata, dtype)
        if meta.crs is not None:
            data_attrs["_CRS"] = _gdal_crs(meta.crs)
        self._array(base, DATA, level.shape, dtype, level.chunks, ("band", "y", "x"), data_attrs,
                    _fill_v3(meta.nodata, dtype), _fill_v2(meta.nodata, dtype), self.compressor,
                    shards=level.shards)
        self._array(base, "band", (bands,), np.dtype("int64"), (bands,), ("band",), {}, 0, None, None,
                    values=np.arange(1, bands + 1, dtype=np.int64))
        if t.b == 0 and t.d == 0:
            # Pixel centres, as rioxarray.open_rasterio has them; the exact
            # transform is in spatial_ref's GeoTransform.
            x = t.c + (np.arange(w) + 0.5) * t.a
            y = t.f + (np.arange(h) + 0.5) * t.e
            for name, values, axis in (("x", x, "X"), ("y", y, "Y")):
                attrs = {"axis": axis, "standard_name": f"projection_{axis.lower()}_coordinate"}
                if meta.crs is not None and meta.crs.is_geographic:
                    attrs["standard_name"] = "longitude" if axis == "X" else "latitude"
                self._array(base, name, values.shape, np.dtype("float64"), values.shape, (name,), attrs,
                            "NaN", "NaN", None, values=values)
        ref: dict[str, Any] = crs_attrs(meta.crs) if meta.crs is not None else {}
        ref["GeoTransform"] = " ".join(str(float(v)) for v in t.to_gdal())
        self._array(base, "spatial_ref", (), np.dtype("int64"), (), (), ref, 0, 0, None,
                    values=np.array(0, dtype=np.int64))

    def _array(self, base: str, name: str, shape: tuple, dtype: np.dtype, chunks: tuple, dims: tuple,
               attrs: dict[str, Any], fill3: Any, fill2: Any, compressor: Any, values: Any = None,
               shards: tuple | None = None) -> None:
        import zarr

        arr = zarr.create_array(
            os.path.join(base, name), shape=shape, dtype=dtype, chunks=chunks, shards=shards, zarr_format=3,
            dimension_names=dims or None, attributes=attrs, fill_value=fill3,
            compressors=compressor, chunk_key_encoding={"name": "v2", "separator": "/"},
            overwrite=True, config={"write_empty_chunks": True},
        )
        if values is not None:
            arr[...] = values
        v2 = {
            "zarr_format": 2, "shape": list(shape), "chunks": list(chunks), "dtype": dtype.str,
            "compressor": self.v2_compressor if compressor is not None else None,
            "fill_value": fill2, "order": "C", "filters": None, "dimension_separator": "/",
        }
        v2_attrs = {k: v for k, v in attrs.items() if k != "_FillValue"}
        v2_attrs["_ARRAY_DIMENSIONS"] = list(dims)
        self._v2(os.path.join(base, name), v2, v2_attrs, group=False)

    def _v2(self, path: str, meta: dict[str, Any], attrs: dict[str, Any], *, group: bool) -> None:
        if not self.v2:
            return
        with builtins.open(os.path.join(path, ".zgroup" if group else ".zarray"), "w") as fh:
            json.dump(meta, fh, indent=2)
        with builtins.open(os.path.join(path, ".zattrs"), "w") as fh:
            json.dump(attrs, fh, indent=2)


def _chunk_pixels(spec: OutputSpec) -> float:
    _, ys, xs = spec.chunks
    return spec.shape[1] * spec.shape[2] / max(1, len(ys) * len(xs))


def overview_levels(main: Level, count: int | None) -> list[Level]:
    """``count`` levels, each half the size of the one above (rounded up),
    with the transform GDAL gives an overview of that size."""
    from affine import Affine

    levels: list[Level] = []
    bands, h, w = main.shape
    for k in range(1, (count or 0) + 1):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        t = main.transform @ Affine.scale(main.shape[2] / w, main.shape[1] / h)
        block = (bands, min(main.chunks[1], h), min(main.chunks[2], w))
        shards = None
        if main.shards:
            # As big as the main level's, in whole chunks, within the level.
            shards = (bands, *(min(s, -(-n // c) * c) for s, n, c in zip(main.shards[1:], (h, w), block[1:],
                                                                      strict=True)))
        levels.append(Level(str(k), (bands, h, w), t, block, shards))  # type: ignore[arg-type]
        if h == 1 and w == 1:
            break
    return levels


def level_job(source: ZarrSource, level: Level, method: str, nodata: float | None, blocksize: int,
              chunk_mb: float) -> ChunkJob:
    """The chunk job computing ``level`` from the level above (``source``)."""
    bands, h, w = level.shape
    if level.shards:
        # One task per shard: each writes one object.
        chunks = tuple(tuple(min(s, n - i) for i in range(0, n, s)) for n, s in zip((h, w), level.shards[1:],
                                                                                 strict=True))
    else:
        tile = max(level.chunks[1], level.chunks[2])
        chunks = plan_chunks((h, w), bands, source.dtype, (level.chunks[1], level.chunks[2]),
                             chunk_mb=chunk_mb, tile=tile if tile % 16 == 0 else None).chunks[1:]
    compute = _Downsample(source, (h, w), method, nodata)
    name = f"rdask-zarr-level{level.group}-{uuid.uuid4().hex[:8]}"
    return ChunkJob(shape=level.shape, dtype=np.dtype(source.dtype), chunks=((bands,), *chunks),
                    name=name, make=lambda region, key: ComputeTask(region, key, compute))


@dataclass(frozen=True)
class _Downsample:
    """A level's chunk from the level above: GDAL's nearest picks, or the
    mean of the (up to) 2x2 source pixels, nodata excluded."""

    source: ZarrSource
    shape: tuple[int, int]
    method: str
    nodata: float | None

    def __call__(self, region: Region) -> np.ndarray:
        _, ys, xs = region
        src = self.source
        if self.method == "nearest":
            rows = picks(src.height, self.shape[0], ys.start, ys.stop)
            cols = picks(src.width, self.shape[1], xs.start, xs.stop)
            window = src.read(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
            return np.ascontiguousarray(window[:, rows - rows[0]][:, :, cols - cols[0]])
        y0, y1 = 2 * ys.start, min(src.height, 2 * ys.stop)
        x0, x1 = 2 * xs.start, min(src.width, 2 * xs.stop)
        window = src.read(y0, y1, x0, x1).astype(np.float64)
        valid = np.ones(window.shape, dtype=bool)
        if self.nodata is not None:
            valid = ~np.isnan(window) if math.isnan(self.nodata) else window != self.nodata
        valid &= ~np.isnan(window)
        ny, nx = ys.stop - ys.start, xs.stop - xs.start
        pad = ((0, 0), (0, 2 * ny - window.shape[1]), (0, 2 * nx - window.shape[2]))
        vals = np.pad(np.where(valid, window, 0.0), pad)
        cnt = np.pad(valid, pad).astype(np.float64)
        bands = window.shape[0]
        total = vals.reshape(bands, ny, 2, nx, 2).sum(axis=(2, 4))
        count = cnt.reshape(bands, ny, 2, nx, 2).sum(axis=(2, 4))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
        dtype = np.dtype(src.dtype)
        fill = self.nodata if self.nodata is not None else 0
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            mean = np.clip(np.round(mean), info.min, info.max)
        return np.where(count > 0, mean, fill).astype(dtype)


def consolidate(root: str) -> None:
    """Consolidated (v3) metadata in the root, so readers list the store in one read."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(root, zarr_format=3)



def layout_entry(level: Level, prev: Level | None, method: str) -> dict[str, Any]:
    """``level``'s entry in the root's ``multiscales`` layout."""
    t = level.transform
    entry: dict[str, Any] = {"asset": level.data}
    if prev is None:
        entry["transform"] = {"scale": [1.0, 1.0], "translation": [0.0, 0.0]}
    else:
        entry["derived_from"] = prev.data
        entry["transform"] = {"scale": [prev.shape[1] / level.shape[1], prev.shape[2] / level.shape[2]],
                              "translation": [0.0, 0.0]}
        entry["resampling_method"] = method
    entry["spatial:shape"] = list(level.shape[1:])
    entry["spatial:transform"] = [t.a, t.b, t.c, t.d, t.e, t.f]
    return entry


def make_overviews(root: str, spec: OutputSpec, main: Level, levels: list[Level],
                   run_level: Callable[[Level, Level, float], None]) -> None:
    """Create each of ``levels`` in the store at ``root``, have
    ``run_level(level, above, chunk_mb)`` fill it from the level above, and
    describe them all in the root's ``multiscales`` attribute."""
    import zarr

    layout = Layout(root, spec)
    method = spec.options.overview_resampling
    chunk_mb = max(spec.shape[0] * np.dtype(spec.dtype).itemsize * _chunk_pixels(spec), 1.0) / 1e6
    entries = [layout_entry(main, None, method)]
    prev = main
    for level in levels:
        layout.create_level(level)
        run_level(level, prev, chunk_mb)
        entries.append(layout_entry(level, prev, method))
        prev = level
    group = zarr.open_group(root, mode="r+", zarr_format=3)
    attrs = dict(group.attrs)
    attrs["zarr_conventions"] = [*attrs.get("zarr_conventions", []), MULTISCALES_CONVENTION]
    attrs["multiscales"] = {"layout": entries, "resampling_method": method}
    group.attrs.put(attrs)
    if layout.v2:
        with builtins.open(os.path.join(root, ".zattrs"), "w") as fh:
            json.dump(attrs, fh, indent=2)
