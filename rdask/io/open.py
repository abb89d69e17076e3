"""Open a raster (a file, a URL, or a stack of files) as a lazy DataArray.

Opening reads metadata only and yields a :class:`Recipe`: the source, the
chunk plan and (after :func:`rdask.apply`) the kernel steps. The pipeline
runs a recipe's chunks directly; :func:`open_raster` wraps it in a DataArray
whose array is a ``dask.array.from_array`` over the
:class:`~rdask.io.source.RasterSource` with the array inlined in each task,
so dask's slice fusion turns ``da[:, y0:y1, x0:x1].values`` into a read of
just that window (the tiles under it), not of the chunks around it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rdask.errors import RasterMismatchError, RasterOpenError, first_line
from rdask.io.meta import attrs_of
from rdask.io.source import (
    DEFAULT_GDAL_OPTIONS,
    FileBands,
    RasterSource,
    file_stamp,
    merge_options,
    redact,
)
from rdask.plan import DEFAULT_CHUNK_MB, ChunkPlan, plan_chunks

if TYPE_CHECKING:
    import xarray as xr

#: Key in ``DataArray.encoding`` under which rdask keeps how an array was made.
RECIPE_KEY = "rdask_recipe"


@dataclass(frozen=True)
class Step:
    """One kernel applied with resolved arguments and its raster context
    (input nodata, pixel size), which differs along a chain."""

    kernel: Any  # rdask.kernels.Kernel; typed loosely to keep imports one-way
    args: tuple[tuple[str, Any], ...]
    ctx: tuple[tuple[str, Any], ...] = ()

    def __call__(self, block: np.ndarray, where: str = "") -> np.ndarray:
        return self.kernel(block, where=where, **dict(self.ctx), **dict(self.args))


@dataclass(frozen=True)
class Recipe:
    """How a file-backed array was made: its source, plan and kernel steps.

    ``name`` is the dask name of the array the recipe describes; an array
    whose name differs was changed outside rdask and is treated as opaque.
    """

    source: RasterSource
    plan: ChunkPlan
    steps: tuple[Step, ...]
    name: str
    meta: Mapping[str, Any]  # crs, transform, nodata, descriptions, tags, ...

    @property
    def halo(self) -> int:
        return sum(s.kernel.halo_for(dict(s.args)) for s in self.steps)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(bands, height, width)`` after the steps."""
        bands = self.source.count
        for s in self.steps:
            bands = s.kernel.out_bands(bands, dict(s.args))
        return (bands, self.source.height, self.source.width)

    @property
    def dtype(self) -> np.dtype:
        """Pixel type after the steps."""
        dtype = np.dtype(self.source.dtype)
        for s in self.steps:
            dtype = np.dtype(s.kernel.out_dtype(dtype))
        return dtype

    @property
    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Chunks in dask's notation; every chunk holds all bands."""
        return ((self.shape[0],),) + self.plan.chunks[1:]

    @property
    def npartitions(self) -> int:
        return len(self.plan.chunks[1]) * len(self.plan.chunks[2])

    @property
    def nbytes(self) -> int:
        bands, height, width = self.shape
        return bands * height * width * self.dtype.itemsize


def recipe_of(data: xr.DataArray) -> Recipe | None:
    """The recipe of ``data`` if it is still exactly what rdask built."""
    recipe = data.encoding.get(RECIPE_KEY)
    if isinstance(recipe, Recipe) and getattr(data.data, "name", None) == recipe.name:
        return recipe
    return None


def open_raster(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    chunks: str | tuple[int, int] = "auto",
    chunk_mb: float = DEFAULT_CHUNK_MB,
    tile: int | None = 512,
    gdal_options: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Open a raster as a dask-backed ``(band, y, x)`` DataArray.

    Parameters
    ----------
    path
        A local path, a URL (``https://``, ``s3://``), a GDAL ``/vsi...`` path,
        or a sequence of them to stack as bands in order.
    chunks
        ``"auto"`` to size chunks near ``chunk_mb``, or an explicit
        ``(y, x)`` shape (rounded up to whole blocks).
    chunk_mb
        Target chunk size in MB.
    tile
        Output tile size chunks also align to, so a later
        :func:`rdask.to_raster` writes each tile once; ``None`` to ignore.
    gdal_options
        Extra GDAL configuration entered around every read.

    Returns
    -------
    xarray.DataArray
        Lazy; CRS, exact transform and nodata are available through ``.rio``.

    Raises
    ------
    RasterOpenError
        Missing, empty, non-raster or unreachable input.
    RasterMismatchError
        Stack members that differ in CRS, transform or size.
    """
    return build_dataarray(
        open_recipe(path, chunks=chunks, chunk_mb=chunk_mb, tile=tile, gdal_options=gdal_options)
    )


def open_recipe(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    chunks: str | tuple[int, int] = "auto",
    chunk_mb: float = DEFAULT_CHUNK_MB,
    tile: int | None = 512,
    gdal_options: Mapping[str, Any] | None = None,
) -> Recipe:
    """What :func:`open_raster` opens, as a bare :class:`Recipe`.

    Reads metadata only and imports neither xarray nor ``dask.array``: the
    CLI and :func:`rdask.process` run recipes directly. Parameters and
    errors are those of :func:`open_raster`.
    """
    from rdask.io.remote import S3Endpoint, check_options, is_remote, is_s3, network_defaults

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise RasterOpenError("no input raster given")
    paths = [os.fspath(p) for p in paths]
    check_options(gdal_options)
    layers: list[Mapping[str, Any] | None] = [dict(DEFAULT_GDAL_OPTIONS)]
    if any(is_remote(p) for p in paths):
        layers.append(network_defaults())
    if any(is_s3(p) or p.startswith("/vsis3/") for p in paths):
        layers.append(S3Endpoint.from_options(gdal_options).gdal_options())
    options = merge_options(*layers, gdal_options)
    infos = [_inspect(p, options) for p in paths]
    _check_stack(infos)
    first = infos[0]
    dtypes = {d for info in infos for d in info["dtypes"]}
    if len(dtypes) > 1:
        raise RasterOpenError(
            f"{redact(first['path'])}: bands have different dtypes ({', '.join(sorted(dtypes))}); "
            "rdask needs one dtype per raster"
        )
    dtype = dtypes.pop()
    height, width = first["shape"]
    by = math.lcm(*(i["block"][0] for i in infos))
    bx = math.lcm(*(i["block"][1] for i in infos))
    source = RasterSource(
        files=tuple(FileBands(i["path"], i["bands"], i["stamp"]) for i in infos),
        height=height,
        width=width,
        dtype=dtype,
        gdal_options=options,
        per_dataset_mask=len(infos) == 1 and first["per_dataset_mask"],
    )
    explicit = None if chunks == "auto" else tuple(chunks)  # type: ignore[arg-type]
    plan = plan_chunks(
        (height, width), source.count, dtype, (by, bx), chunk_mb=chunk_mb, tile=tile, chunks=explicit
    )
    descriptions = [d for i in infos for d in i["descriptions"]]
    if len(infos) > 1:
        # A stack's bands are best named after their files when unnamed.
        names = [os.path.basename(i["path"].rstrip("/")) for i in infos for _ in i["bands"]]
        descriptions = [d or n for d, n in zip(descriptions, names, strict=True)]
    meta = {
        "crs": first["crs"],
        "transform": first["transform"],
        "nodata": first["nodata"],
        "descriptions": tuple(descriptions),
        "tags": first["tags"],
        "band_tags": tuple(t for i in infos for t in i["band_tags"]),
        "scales": tuple(s for i in infos for s in i["scales"]),
        "offsets": tuple(o for i in infos for o in i["offsets"]),
        "units": tuple(u for i in infos for u in i["units"]),
        "colorinterp": tuple(c for i in infos for c in i["colorinterp"]) if len(infos) == 1 else (),
        "block": (by, bx),
    }
    return Recipe(source, plan, (), _open_name(source, plan), meta)


def replan_recipe(recipe: Recipe, *, chunk_mb: float, tile: int | None = 512) -> Recipe:
    """``recipe`` (straight from :func:`open_recipe`) with another chunk size,
    planned from the metadata it already holds: no file is opened again."""
    if recipe.steps:
        raise ValueError("replan_recipe needs a recipe straight from open_recipe, before any kernel")
    source = recipe.source
    plan = plan_chunks(
        (source.height, source.width), source.count, source.dtype, recipe.meta["block"],
        chunk_mb=chunk_mb, tile=tile,
    )
    return Recipe(source, plan, (), _open_name(source, plan), recipe.meta)


def build_dataarray(recipe: Recipe) -> xr.DataArray:
    """Wrap an opened (step-less) recipe in a lazy DataArray with rioxarray's conventions."""
    import dask.array as da

    source = recipe.source
    arr = da.from_array(
        _Indexable(source),
        chunks=recipe.plan.chunks,
        name=recipe.name,
        lock=False,
        asarray=False,
        # fancy=True: dask (>= 2024.12) fuses a slice into the chunk's read only
        # for a fancy-capable getter; with fancy=False, ``da[:, y0:y1, x0:x1]``
        # read whole chunks. _Indexable takes any numpy index.
        fancy=True,
        inline_array=True,
        meta=np.empty((0, 0, 0), dtype=source.dtype),
    )
    out = wrap(arr, recipe.meta)
    out.encoding[RECIPE_KEY] = recipe
    out.encoding["source"] = source.files[0].path
    return out


def _open_name(source: RasterSource, plan: ChunkPlan) -> str:
    from dask.base import tokenize

    return "open-" + tokenize(source, plan.chunks)


@dataclass(frozen=True)
class _Indexable:
    """``source`` with numpy indexing: slices (step 1) and integers become a
    window read of just those rows, columns and bands; anything else (lists,
    arrays, other steps) is applied to the whole axis after reading."""

    source: RasterSource

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.source.shape

    @property
    def ndim(self) -> int:
        return 3

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    def __dask_tokenize__(self) -> tuple:
        return ("rdask.open._Indexable", self.source.__dask_tokenize__())

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (3 - len(key))
        if len(key) != 3 or any(k is None for k in key):
            return self.source.read(0, self.source.height, 0, self.source.width)[key]
        bounds, rel = [], []
        for k, n in zip(key, self.source.shape, strict=True):
            if isinstance(k, slice) and k.step in (None, 1):
                lo, hi, _ = k.indices(n)
                bounds.append((lo, max(lo, hi)))
                rel.append(slice(0, max(0, hi - lo)))
            elif isinstance(k, (int, np.integer)) and -n <= k < n:
                i = int(k) % n
                bounds.append((i, i + 1))
                rel.append(0)
            else:
                bounds.append((0, n))
                rel.append(k)
        (b0, b1), (y0, y1), (x0, x1) = bounds
        return self.source.read(y0, y1, x0, x1, bands=(b0, b1))[tuple(rel)]


def wrap(arr: Any, meta: Mapping[str, Any]) -> xr.DataArray:
    """A DataArray over ``arr`` with coordinates and ``.rio`` metadata."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    import rdask.accessor  # noqa: F401  (registers the .rdask accessor)

    transform = meta["transform"]
    nb, h, w = arr.shape
    coords: dict[str, Any] = {"band": np.arange(1, nb + 1)}
    if transform.b == 0 and transform.d == 0:
        # Pixel centres, as rioxarray computes them; the exact transform is
        # kept separately in spatial_ref so nothing is re-derived from these.
        coords["x"] = transform.c + (np.arange(w) + 0.5) * transform.a
        coords["y"] = transform.f + (np.arange(h) + 0.5) * transform.e
    attrs = attrs_of(meta)
    out = xr.DataArray(arr, dims=("band", "y", "x"), coords=coords, attrs=attrs, name=None)
    out.name = None
    if meta.get("crs") is not None:
        out = out.rio.write_crs(meta["crs"])
    else:
        out = out.rio.write_coordinate_system()
    out = out.rio.write_transform(transform)
    out = out.rio.write_nodata(meta.get("nodata"), encoded=False)
    return out


def _inspect(path: str, options: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Metadata of one input, with one-line errors for the usual mistakes."""
    import rasterio
    from rasterio.enums import MaskFlags

    shown = redact(path)
    if "://" not in path and not path.startswith("/vsi"):
        if not os.path.exists(path):
            raise RasterOpenError(f"no such file: {shown}")
        if os.path.isdir(path) and not path.lower().endswith((".zarr", ".gdb")):
            raise RasterOpenError(f"is a directory, not a raster: {shown}")
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise RasterOpenError(f"empty file (0 bytes), not a raster: {shown}")
    try:
        with rasterio.Env(**dict(options)), rasterio.open(path) as ds:
            if ds.count == 0:
                raise RasterOpenError(f"no raster bands in {shown}")
            flags = ds.mask_flag_enums
            per_dataset = all(
                MaskFlags.per_dataset in f and MaskFlags.alpha not in f for f in flags
            )
            return {
                "path": path,
                "stamp": file_stamp(path),
                "shape": (ds.height, ds.width),
                "bands": tuple(ds.indexes),
                "dtypes": tuple(ds.dtypes),
                "block": ds.block_shapes[0],
                "crs": ds.crs,
                "transform": ds.transform,
                "nodata": ds.nodata,
                "descriptions": tuple(ds.descriptions),
                "tags": ds.tags(),
                "band_tags": tuple(ds.tags(i) for i in ds.indexes),
                "scales": tuple(ds.scales),
                "offsets": tuple(ds.offsets),
                "units": tuple(ds.units),
                "colorinterp": tuple(ds.colorinterp),
                "per_dataset_mask": per_dataset,
            }
    except RasterOpenError:
        raise
    except Exception as exc:  # noqa: BLE001 - any GDAL failure becomes one line
        from rdask.io.remote import diagnose, is_remote

        if is_remote(path):
            reason = diagnose(path, dict(options))
            if reason:
                raise RasterOpenError(f"cannot open {shown}: {reason}") from None
        text = first_line(exc)
        if "not recognized as" in text or "not a supported file format" in text:
            raise RasterOpenError(f"not a raster GDAL can read: {shown}") from None
        raise RasterOpenError(f"cannot open {shown}: {redact(text.replace(path, shown))}") from None


def _check_stack(infos: list[dict[str, Any]]) -> None:
    first = infos[0]
    for other in infos[1:]:
        for key, label in (("shape", "size"), ("crs", "CRS"), ("transform", "transform")):
            a, b = first[key], other[key]
            if a != b:
                raise RasterMismatchError(
                    f"cannot stack {redact(first['path'])} and {redact(other['path'])}: "
                    f"{label} differs ({_fmt(a)} vs {_fmt(b)})"
                )
        a, b = sorted(set(first["dtypes"])), sorted(set(other["dtypes"]))
        if a != b:
            raise RasterMismatchError(
                f"cannot stack {redact(first['path'])} and {redact(other['path'])}: "
                f"dtype differs ({', '.join(a)} vs {', '.join(b)}); rdask needs one dtype per raster"
            )


def _fmt(v: Any) -> str:
    if hasattr(v, "to_gdal"):
        return "(" + ", ".join(repr(x) for x in v.to_gdal()) + ")"
    if hasattr(v, "to_string"):
        return v.to_string()
    return str(v)
