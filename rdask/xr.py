"""The xarray face: recipes as lazy DataArrays, kernels on DataArrays, the
``.rdask`` accessor, and writing any ``(band, y, x)`` DataArray.

:func:`open_raster` wraps a :class:`~rdask.recipe.Recipe` in a DataArray
whose array is a ``dask.array.from_array`` over the source with the array
inlined in each task, so dask's slice fusion turns ``da[:, y0:y1, x0:x1]``
into a read of just that window. The recipe rides in ``DataArray.encoding``
so later calls know an array is still exactly what rdask built.

:func:`apply` has three paths, chosen from what the input is:

* an array straight from a file (it still carries its recipe) whose chain
  needs a halo: the recipe gains the step, and each task reads its chunk's
  window grown by the halo straight from the file, runs the chain and
  trims: no neighbour strips are cut, shipped or held;
* halo 0: ``map_blocks``, fused by dask with the read;
* halo > 0 on any other dask array: ``map_overlap`` with ``boundary="none"``.

Kernels treat their block edges as raster edges, so all three give the
same pixels as running the kernel on the whole raster at once.
:func:`to_raster` writes an array still exactly as rdask built it through
its recipe, anything else through its own dask graph; both end in
:func:`rdask.pipeline.write`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from dask.base import tokenize

from rdask.io.base import SourceArray
from rdask.io.warped import DEFAULT_ERROR_THRESHOLD, Grid
from rdask.kernels import Kernel
from rdask.meta import BandMeta, RasterMeta, as_tags
from rdask.outputs.options import WriteOptions
from rdask.pipeline import JobInputs, Progress, Result, write
from rdask.plan import DEFAULT_CHUNK_MB, ChunkPlan, plan_chunks
from rdask.recipe import (
    ChunkJob,
    ChunkReader,
    Recipe,
    Region,
    Step,
    make_step,
    open_recipe,
    step_output,
    with_step,
)
from rdask.recipe import warp as warp_recipe

log = logging.getLogger("rdask")

#: Key in ``DataArray.encoding`` under which rdask keeps how an array was made.
RECIPE_KEY = "rdask_recipe"

#: DataArray attrs that rdask (or rioxarray) owns; the rest are tags.
RESERVED_ATTRS = frozenset(
    {"_FillValue", "scale_factor", "add_offset", "long_name", "units", "grid_mapping", "spatial_ref"}
)


# -- opening ------------------------------------------------------------------


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
        Lazy; CRS, exact transform and nodata are available through ``.rio``,
        the chunk plan through ``.rdask.plan``.

    Raises
    ------
    RasterOpenError
        Missing, empty, non-raster or unreachable input.
    RasterMismatchError
        Stack members that differ in CRS, transform or size.
    """
    return from_recipe(open_recipe(path, chunks=chunks, chunk_mb=chunk_mb, tile=tile,
                                   gdal_options=gdal_options))


def from_recipe(recipe: Recipe) -> xr.DataArray:
    """A lazy DataArray computing ``recipe``."""
    if recipe.steps:
        arr = da.map_blocks(_read_chunk, reader=ChunkReader.of(recipe), chunks=recipe.chunks,
                            dtype=recipe.dtype, meta=np.empty((0, 0, 0), dtype=recipe.dtype),
                            name=recipe.name)
    else:
        arr = da.from_array(
            _Indexable(recipe.source), chunks=recipe.plan.chunks, name=recipe.name, lock=False,
            asarray=False,
            # fancy=True: dask fuses a slice into the chunk's read only for a
            # fancy-capable getter; _Indexable takes any numpy index.
            fancy=True, inline_array=True, meta=np.empty((0, 0, 0), dtype=recipe.dtype),
        )
    out = wrap(arr, recipe.meta)
    out.encoding[RECIPE_KEY] = recipe
    files = recipe.source.files
    if files:
        out.encoding["source"] = files[0].path
    return out


def recipe_of(data: xr.DataArray) -> Recipe | None:
    """The recipe of ``data`` if it is still exactly what rdask built."""
    recipe = data.encoding.get(RECIPE_KEY)
    if isinstance(recipe, Recipe) and getattr(data.data, "name", None) == recipe.name:
        return recipe
    return None


def wrap(arr: Any, meta: RasterMeta) -> xr.DataArray:
    """A DataArray over ``arr`` with coordinates and ``.rio`` metadata."""
    transform = meta.transform
    nb, h, w = arr.shape
    coords: dict[str, Any] = {"band": np.arange(1, nb + 1)}
    if transform.b == 0 and transform.d == 0:
        # Pixel centres, as rioxarray computes them; the exact transform is
        # kept separately in spatial_ref so nothing is re-derived from these.
        coords["x"] = transform.c + (np.arange(w) + 0.5) * transform.a
        coords["y"] = transform.f + (np.arange(h) + 0.5) * transform.e
    out = xr.DataArray(arr, dims=("band", "y", "x"), coords=coords, attrs=attrs_of(meta), name=None)
    out = out.rio.write_crs(meta.crs) if meta.crs is not None else out.rio.write_coordinate_system()
    out = out.rio.write_transform(transform)
    return out.rio.write_nodata(meta.nodata, encoded=False)


# -- metadata -------------------------------------------------------------------


def attrs_of(meta: RasterMeta) -> dict[str, Any]:
    """DataArray attrs for ``meta``: tags, and per-band names, scales,
    offsets and units (one value when all bands agree)."""
    attrs: dict[str, Any] = dict(meta.tags)
    bands = meta.bands
    if any(b.description for b in bands):
        attrs["long_name"] = tuple(b.description for b in bands)
    for key, values, neutral in (("scale_factor", [b.scale for b in bands], 1.0),
                                 ("add_offset", [b.offset for b in bands], 0.0),
                                 ("units", [b.unit for b in bands], "")):
        if any(v != neutral for v in values):
            attrs[key] = values[0] if len(set(values)) == 1 else tuple(values)
    return attrs


def meta_of(data: xr.DataArray, recipe: Recipe | None = None) -> RasterMeta:
    """The metadata an output of ``data`` carries.

    For an array rdask built, its recipe's typed metadata, with what the
    user may have changed on the DataArray since (CRS, transform, nodata
    through ``.rio``; tags, names, scales, offsets, units through attrs);
    for any other array, what the DataArray says.
    """
    count = data.sizes.get("band", 1)
    if recipe is None or recipe.meta.count != count:
        base = RasterMeta(crs=None, transform=Affine.identity(), bands=(BandMeta(),) * count)
        meta = _with_attrs(base, data.attrs)
    else:
        meta = recipe.meta
        if _attr_items(data.attrs, count) != _attr_items(attrs_of(meta), count):
            meta = _with_attrs(meta, data.attrs)
    return replace(meta, crs=data.rio.crs, transform=exact_transform(data)).with_nodata(data.rio.nodata)


def _with_attrs(meta: RasterMeta, attrs: Mapping[str, Any]) -> RasterMeta:
    """``meta`` with tags and band items as ``attrs`` state them."""
    items = _attr_items(attrs, meta.count)
    bands = tuple(
        replace(b, description=d, scale=s, offset=o, unit=u)
        for b, d, s, o, u in zip(meta.bands, *items[1:], strict=True)
    )
    return replace(meta, tags=items[0], bands=bands)


def _attr_items(attrs: Mapping[str, Any], nb: int) -> tuple:
    """Tags and per-band descriptions, scales, offsets, units from attrs."""

    def per_band(value: Any, kind: type, neutral: Any) -> tuple:
        if value is None:
            return (neutral,) * nb
        if isinstance(value, (list, tuple, np.ndarray)):
            values = tuple(kind(v) for v in value)
            return values if len(values) == nb else (neutral,) * nb
        return (kind(value),) * nb

    names = attrs.get("long_name")
    if isinstance(names, str) and nb == 1:
        names = (names,)
    tags = as_tags({k: v for k, v in attrs.items() if k not in RESERVED_ATTRS and not k.startswith("_")})
    return (
        tags,
        per_band(names if isinstance(names, (list, tuple)) else None, str, ""),
        per_band(attrs.get("scale_factor"), float, 1.0),
        per_band(attrs.get("add_offset"), float, 0.0),
        per_band(attrs.get("units"), str, ""),
    )


def exact_transform(data: xr.DataArray) -> Affine:
    """The geotransform of ``data``, bit for bit as in its source file.

    Never re-derived from coordinates (that is where plain rioxarray drifts
    by ~1e-13): it comes from ``spatial_ref``'s exact ``GeoTransform``,
    shifted by a whole number of pixels when the array was sliced.
    """
    gt = data.coords["spatial_ref"].attrs.get("GeoTransform") if "spatial_ref" in data.coords else None
    cached = Affine.from_gdal(*(float(v) for v in gt.split())) if gt else None
    if cached is None:
        return data.rio.transform(recalc=True)
    if "x" not in data.coords or "y" not in data.coords or cached.b or cached.d:
        return cached
    if not _same_steps(data, cached):
        # Strided or flipped: the pixel size itself changed.
        return data.rio.transform(recalc=True)
    # Coordinates are pixel centres; find which pixel of the cached grid the
    # first one is, and shift by whole pixels (exact, like rasterio's
    # windows.transform) instead of rebuilding the origin from floats.
    x0, y0 = float(data.x.values[0]), float(data.y.values[0])
    col = round((x0 - cached.c) / cached.a - 0.5)
    row = round((y0 - cached.f) / cached.e - 0.5)
    if col == 0 and row == 0:
        return cached
    return cached @ Affine.translation(col, row)


def _same_steps(data: xr.DataArray, transform: Affine) -> bool:
    """Whether ``data``'s coordinate steps are ``transform``'s pixel size."""
    for axis, size in (("x", transform.a), ("y", transform.e)):
        values = data.coords[axis].values
        if len(values) > 1 and not np.isclose(values[1] - values[0], size, rtol=1e-9, atol=0):
            return False
    return True


# -- kernels --------------------------------------------------------------------


def apply(data: xr.DataArray, kernel: Kernel | str | Callable, **kernel_args: Any) -> xr.DataArray:
    """Lazily apply ``kernel`` to every chunk of ``data``.

    Parameters
    ----------
    data
        A ``(band, y, x)`` DataArray, usually from :func:`rdask.open_raster`.
    kernel
        A :class:`rdask.Kernel`, a built-in name such as ``"slope"``, a
        ``module:function`` / ``file.py:function`` reference, or a plain
        ``@numba.njit(nogil=True)`` function (output dtype and bands found
        by a call on a tiny block, halo 0).
    **kernel_args
        Kernel arguments; strings are converted to the declared types.

    Returns
    -------
    xarray.DataArray
        Lazy result with the output dtype, band count and nodata of the
        kernel, the same CRS and exact transform.
    """
    recipe = recipe_of(data)
    meta = meta_of(data, recipe)
    k, step = make_step(kernel, kernel_args, meta, data.dtype)
    halo = k.halo_for(dict(step.args))
    if recipe is not None:
        grown = with_step(replace(recipe, meta=meta), k, step)
        if grown.halo > 0:
            log.info("%s: halo path: direct reads from the file, halo %d (chain of %d)",
                     k.name, grown.halo, len(grown.steps))
            return from_recipe(grown)
    out_meta, out_dtype = step_output(k, step, meta, data.dtype)
    if halo == 0:
        arr = data.data.map_blocks(
            _run, step, dtype=out_dtype, chunks=((out_meta.count,),) + data.data.chunks[1:],
            meta=np.empty((0, 0, 0), dtype=out_dtype), name=f"{k.name}-{tokenize(data.data.name, step)}",
        )
    else:
        log.info("%s: halo path: map_overlap (the array is not straight from a file)", k.name)
        src = data.data.rechunk({0: -1})
        arr = src.map_overlap(
            functools.partial(_run, step=step), depth={0: 0, 1: halo, 2: halo}, boundary="none",
            trim=True, dtype=out_dtype,
            # map_overlap wants the shapes of the grown blocks it passes in.
            chunks=((out_meta.count,), _grown(src.chunks[1], halo), _grown(src.chunks[2], halo)),
            meta=np.empty((0, 0, 0), dtype=out_dtype),
        )
    out = wrap(arr, out_meta)
    if recipe is not None:
        # Still file-backed and halo-free: the recipe (named as this array) lets
        # to_raster run its chunks directly.
        out.encoding[RECIPE_KEY] = replace(grown, name=arr.name)
        out.encoding["source"] = data.encoding.get("source")
    return out


def _run(block: np.ndarray, step: Step, block_info: Any = None) -> np.ndarray:
    return step(block, where=_where(block_info))


def _read_chunk(reader: ChunkReader, block_info: Any = None) -> np.ndarray:
    return reader(tuple(slice(a, b) for a, b in block_info[None]["array-location"]))


def _grown(chunks: tuple[int, ...], halo: int) -> tuple[int, ...]:
    """Chunk sizes after ``boundary="none"`` overlap: inner sides grow by ``halo``."""
    n = len(chunks)
    return tuple(c + halo * ((i > 0) + (i < n - 1)) for i, c in enumerate(chunks))


def _where(block_info: Any) -> str:
    if not block_info or 0 not in block_info:
        return ""
    (_, _), (y0, y1), (x0, x1) = block_info[0]["array-location"]
    return f"window rows {y0}:{y1}, cols {x0}:{x1}"


# -- reprojection ---------------------------------------------------------------


def warp(data: xr.DataArray, *, crs: Any = None, resolution: Any = None, bounds: Any = None,
         like: xr.DataArray | str | os.PathLike | None = None, resampling: str = "nearest",
         nodata: float | None = None, error_threshold: float = DEFAULT_ERROR_THRESHOLD,
         tap: bool = False) -> xr.DataArray:
    """Lazily reproject ``data`` onto another grid, as ``gdalwarp`` would.

    Parameters
    ----------
    data
        A ``(band, y, x)`` DataArray with a CRS.
    crs, resolution, bounds
        The target grid as gdalwarp's ``-t_srs``, ``-tr`` (one number or
        ``(x, y)``) and ``-te`` (``left, bottom, right, top``) make it.
    like
        Instead: another DataArray or a raster path whose grid (CRS,
        transform, size) to use.
    resampling
        ``nearest``, ``bilinear``, ``cubic``, ``cubic_spline``,
        ``lanczos``, ``average``, ``mode``, ``min``, ``max``, ``med``,
        ``q1``, ``q3``, ``sum`` or ``rms``.
    nodata
        Output nodata (default: the input's).
    error_threshold
        In source pixels: 0 is exact (every pixel equal to
        ``gdalwarp -et 0``); above 0 (default 0.125, gdalwarp's) the fast
        mode, whose coordinates err by less than the threshold (far less
        in practice). Both give the same pixels at any chunking.
    tap
        ``-tap``: align the extent on ``resolution`` (which it needs).

    Returns
    -------
    xarray.DataArray
        Lazy; each chunk reads only the source window it needs.
    """
    recipe = recipe_of(data)
    if recipe is None:
        recipe = _array_recipe(data)
    else:
        recipe = replace(recipe, meta=meta_of(data, recipe))
    if isinstance(like, xr.DataArray):
        like = Grid(like.rio.crs, exact_transform(like), like.sizes["x"], like.sizes["y"])
    chunks = data.data.chunks if isinstance(data.data, da.Array) else None
    chunk_mb = DEFAULT_CHUNK_MB if chunks is None else max(
        data.dtype.itemsize * data.sizes["band"] * chunks[1][0] * chunks[2][0] / 1e6, 0.05)
    return from_recipe(warp_recipe(recipe, crs=crs, resolution=resolution, bounds=bounds, like=like,
                                   resampling=resampling, nodata=nodata,
                                   error_threshold=error_threshold, tap=tap, chunk_mb=chunk_mb))


def _array_recipe(data: xr.DataArray) -> Recipe:
    """Any DataArray as a recipe whose source computes windows of its array."""
    arr = _as_dask(data)
    meta = meta_of(data, None)
    nb, h, w = arr.shape
    source = ArraySource(arr, str(arr.dtype))
    plan = plan_chunks((h, w), nb, arr.dtype, (arr.chunks[1][0], arr.chunks[2][0]), tile=None,
                       chunks=(arr.chunks[1][0], arr.chunks[2][0]))
    return Recipe(source, plan, (plan.block.y, plan.block.x), meta, np.dtype(arr.dtype),
                  name=f"array-{arr.name}")


@dataclass(frozen=True, eq=False)
class ArraySource(SourceArray):
    """A dask array read like a file: each window computed on its own."""

    array: da.Array
    dtype: str

    @property
    def count(self) -> int:
        return int(self.array.shape[0])

    @property
    def height(self) -> int:
        return int(self.array.shape[1])

    @property
    def width(self) -> int:
        return int(self.array.shape[2])

    files: tuple = ()
    gdal_options: tuple = ()
    per_dataset_mask: bool = False

    def __dask_tokenize__(self) -> tuple:
        return ("rdask.ArraySource", self.array.name)

    def env(self) -> Any:
        """No GDAL settings: the pixels come from dask."""
        return contextlib.nullcontext()

    def read(self, y0: int, y1: int, x0: int, x1: int, *, bands: tuple[int, int] | None = None) -> np.ndarray:
        b0, b1 = bands or (0, self.count)
        return np.asarray(self.array[b0:b1, y0:y1, x0:x1].compute(scheduler="sync"), dtype=self.dtype)


# -- writing ------------------------------------------------------------------


def to_raster(
    data: xr.DataArray,
    path: str | os.PathLike,
    *,
    scheduler: Any = "threads",
    workers: int | None = None,
    progress: Progress = False,
    gdal_options: Mapping[str, Any] | None = None,
    options: WriteOptions | None = None,
    **write_options: Any,
) -> Result:
    """Write a lazy ``(band, y, x)`` DataArray to a tiled GeoTIFF or COG, streaming.

    Parameters
    ----------
    data
        The array; its chunks are aligned to output tiles if they are not.
    path
        Target path. Written to a temporary file beside it and renamed when
        complete: a failed job leaves nothing at ``path``. An
        ``s3://bucket/key`` target is staged on local disk and uploaded with
        one multipart upload, so the object appears only when complete.
    scheduler
        ``"threads"`` (default), ``"sync"``, ``"local[:N]"``, a
        ``tcp://host:port`` address, or a ``distributed.Client``.
    workers
        Threads (or ``local`` worker processes); defaults to the CPU count.
    progress
        ``True`` for a progress bar on stderr; a callable
        ``(pixels_done, pixels_total)`` is called after every chunk.
    gdal_options
        GDAL/S3 settings for the output (e.g. ``AWS_S3_ENDPOINT``), no secrets.
    options, **write_options
        How to write: a :class:`~rdask.outputs.WriteOptions` and/or its
        fields by name: ``driver``, ``compress``, ``blocksize``,
        ``creation_options``, ``overview_levels``, ``overview_resampling``,
        ``overwrite``, ``resume``, ``checkpoint_seconds``.

    Returns
    -------
    Result
    """
    opts = WriteOptions.of(options, **write_options)
    if data.ndim == 2:
        data = data.expand_dims("band")
    if data.dims != ("band", "y", "x"):
        raise ValueError(f"expected dims ('band', 'y', 'x'), got {data.dims}")
    recipe = recipe_of(data)
    meta = meta_of(data, recipe)
    mask = recipe.mask_source if recipe is not None else None
    # Chunks end on output tile edges (mosaic tile edges for a mosaic).
    unit = opts.tile_size or opts.blocksize
    if recipe is not None and _aligned_chunks(recipe.chunks, unit):
        # Still exactly what rdask built: run its chunks directly.
        job, source = recipe.job(), replace(JobInputs.of(recipe), mask=mask)
    else:
        arr = _aligned(_as_dask(data), unit)
        job, source = dask_job(arr), JobInputs(arr.name, "", mask)
    return write(job, meta, path, opts, source, scheduler=scheduler, workers=workers,
                 progress=progress, gdal_options=gdal_options)


def dask_job(arr: da.Array) -> ChunkJob:
    """The chunks of a dask array as a :class:`ChunkJob`: each task is its
    block's own (culled, optimised) graph, made when the scheduler asks for
    it. Blocks that share work (as with ``map_overlap``) recompute it per
    block; rdask's own halo path never shares any."""
    edges = [np.cumsum((0,) + c) for c in arr.chunks]

    def make(region: Region, key: str) -> BlockTask:
        index = tuple(int(np.searchsorted(e, s.start)) for e, s in zip(edges, region, strict=True))
        return BlockTask(region, key, arr.blocks[index])

    # Unique per run: two writes of one array on one client are two jobs.
    name = f"{arr.name}-{uuid.uuid4().hex[:8]}"
    return ChunkJob(shape=arr.shape, dtype=arr.dtype, chunks=arr.chunks, name=name, make=make)


@dataclass(frozen=True, eq=False)
class BlockTask:
    """One block of a dask array, as a one-block dask array."""

    region: Region
    key: str
    block: da.Array

    def run(self, write_: Callable[[np.ndarray, Region], Any]) -> Any:
        return write_(np.asarray(self.block.compute(scheduler="sync")), self.region)

    def graph(self, write_: Callable[[np.ndarray, Region], Any]) -> tuple[dict, str]:
        (block,) = dask.optimize(self.block)
        (key,) = block.__dask_keys__()[0][0]
        return {**dict(block.__dask_graph__()), self.key: (write_, key, self.region)}, self.key


def _as_dask(data: xr.DataArray) -> da.Array:
    arr = data.data
    if not isinstance(arr, da.Array):
        # An in-memory array is already materialised; chunking it is free.
        arr = da.from_array(np.asarray(arr), chunks=(-1, 2048, 2048))
    return arr


def _aligned(arr: da.Array, blocksize: int) -> da.Array:
    """Rechunk so every chunk edge (but the last) falls on an output tile edge."""
    if _aligned_chunks(arr.chunks, blocksize):
        return arr
    side = max(blocksize, (2048 // blocksize) * blocksize)
    log.debug("rechunking to %d px to align chunks with %d px output tiles", side, blocksize)
    return arr.rechunk({0: -1, 1: side, 2: side})


def _aligned_chunks(chunks: tuple[tuple[int, ...], ...], blocksize: int) -> bool:
    """One band chunk, and every y/x chunk edge but the last on a tile edge."""
    return len(chunks[0]) == 1 and all(c % blocksize == 0 for axis in chunks[1:] for c in axis[:-1])


# -- reading through dask ---------------------------------------------------------


@dataclass(frozen=True)
class _Indexable:
    """``source`` with numpy indexing: slices (step 1) and integers become a
    window read of just those rows, columns and bands; anything else (lists,
    arrays, other steps) is applied to the whole axis after reading."""

    source: Any

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
        return ("rdask.xr._Indexable", self.source.__dask_tokenize__())

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _full_key(key)
        if key is None:
            return self.source.read(0, self.source.height, 0, self.source.width)[key]
        bounds, rel = [], []
        for k, n in zip(key, self.source.shape, strict=True):
            b, r = _axis(k, n)
            bounds.append(b)
            rel.append(r)
        (b0, b1), (y0, y1), (x0, x1) = bounds
        return self.source.read(y0, y1, x0, x1, bands=(b0, b1))[tuple(rel)]


def _full_key(key: Any) -> tuple | None:
    """``key`` as three per-axis items, or None when it is not that simple."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (3 - len(key))
    return None if len(key) != 3 or any(k is None for k in key) else key


def _axis(k: Any, n: int) -> tuple[tuple[int, int], Any]:
    """The ``(start, stop)`` to read along an axis of length ``n``, and the
    index to apply to what was read."""
    if isinstance(k, slice) and k.step in (None, 1):
        lo, hi, _ = k.indices(n)
        return (lo, max(lo, hi)), slice(0, max(0, hi - lo))
    if isinstance(k, (int, np.integer)) and -n <= k < n:
        i = int(k) % n
        return (i, i + 1), 0
    return (0, n), k


# -- the accessor -------------------------------------------------------------------


@xr.register_dataarray_accessor("rdask")
class RdaskAccessor:
    """``da.rdask.apply(kernel, **args)``, ``da.rdask.warp(**grid)``,
    ``da.rdask.to_raster(path, **options)``, ``da.rdask.plan`` and
    ``da.rdask.meta``: one-line wrappers."""

    def __init__(self, data: xr.DataArray) -> None:
        self._data = data

    def apply(self, kernel: Any, **kernel_args: Any) -> xr.DataArray:
        """See :func:`rdask.apply`."""
        return apply(self._data, kernel, **kernel_args)

    def warp(self, **grid: Any) -> xr.DataArray:
        """See :func:`rdask.warp`."""
        return warp(self._data, **grid)

    def to_raster(self, path: Any, **options: Any) -> Result:
        """See :func:`rdask.to_raster`."""
        return to_raster(self._data, path, **options)

    @property
    def plan(self) -> ChunkPlan | None:
        """The chunk plan rdask made from the file's blocks (None for an
        array rdask did not open, or changed since)."""
        recipe = recipe_of(self._data)
        return None if recipe is None else recipe.plan

    @property
    def meta(self) -> RasterMeta:
        """The metadata an output of this array carries."""
        return meta_of(self._data, recipe_of(self._data))
