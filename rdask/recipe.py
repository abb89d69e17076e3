"""The core model: a recipe, how one of its chunks is computed, and the
chunk tasks a scheduler runs.

A :class:`Recipe` is what a file-backed raster is made of: its
:class:`~rdask.io.files.Source`, the chunk plan, the kernel steps
applied so far and the :class:`~rdask.meta.RasterMeta` its output carries.
:func:`open_recipe` reads metadata only; :func:`extend` adds a kernel step.
A :class:`ChunkReader` computes one chunk: it reads the chunk's window grown
by the chain's halo (clipped at the raster edge) once, runs the steps and
trims. A :class:`ChunkJob` is the list of chunk tasks a scheduler runs,
produced lazily so memory does not grow with the number of chunks.

Nothing here imports xarray, ``dask.array`` or an output format: the xarray
face (:mod:`rdask.xr`) wraps recipes in DataArrays, and the outputs
(:mod:`rdask.outputs`) consume chunk results.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from dask.base import tokenize

from rdask.config import WARP_RESAMPLINGS
from rdask.errors import KernelError, RasterMismatchError, RasterOpenError
from rdask.io.base import Source, open_source
from rdask.io.blocks import Chunking
from rdask.io.files import stack_meta
from rdask.io.inspect import FileInfo
from rdask.io.paths import redact
from rdask.io.stack import StackSource
from rdask.io.steps import StepsSource
from rdask.io.warped import DEFAULT_ERROR_THRESHOLD, Grid, target_grid, warped
from rdask.kernels import Kernel, as_kernel
from rdask.meta import RasterMeta, nodata_fits
from rdask.pauses import pause
from rdask.plan import DEFAULT_CHUNK_MB, ChunkPlan, plan_chunks

#: A chunk's place: ``(bands, rows, cols)`` slices.
Region = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Step:
    """One kernel applied with resolved arguments and its raster context
    (input nodata, pixel size), which differs along a chain."""

    kernel: Kernel
    args: tuple[tuple[str, Any], ...]
    ctx: tuple[tuple[str, Any], ...] = ()

    def __call__(self, block: np.ndarray, where: str = "") -> np.ndarray:
        return self.kernel(block, where=where, **dict(self.ctx), **dict(self.args))


@dataclass(frozen=True)
class Recipe:
    """How a file-backed raster is made: source, plan, steps, metadata.

    ``meta`` and ``dtype`` describe the output of the steps; ``block`` is
    the input's block shape (the plan's unit); ``name`` identifies the
    result, as the dask name of the array that :mod:`rdask.xr` wraps it in.
    """

    source: Source
    plan: ChunkPlan
    block: tuple[int, int]
    meta: RasterMeta
    dtype: np.dtype
    steps: tuple[Step, ...] = ()
    name: str = ""

    @property
    def halo(self) -> int:
        return sum(s.kernel.halo_for(dict(s.args)) for s in self.steps)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(bands, height, width)`` after the steps."""
        return (self.meta.count, self.source.height, self.source.width)

    @property
    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Chunks in dask's notation; every chunk holds all bands."""
        return ((self.shape[0],),) + self.plan.chunks[1:]

    @property
    def nbytes(self) -> int:
        bands, height, width = self.shape
        return bands * height * width * self.dtype.itemsize

    @property
    def mask_source(self) -> Source | None:
        """Where the output's per-dataset mask comes from: the single input
        file's own, while the band count is kept; else None."""
        src = self.source
        return src if src.per_dataset_mask and src.count == self.shape[0] else None

    def job(self) -> ChunkJob:
        """The chunk tasks that compute this recipe, for one run."""
        reader = ChunkReader.of(self)
        return ChunkJob(
            shape=self.shape, dtype=self.dtype, chunks=self.chunks,
            # Unique per run: two runs of one recipe on one cluster are two jobs.
            name=f"{self.name}-{uuid.uuid4().hex[:8]}",
            make=lambda region, key: ComputeTask(region, key, reader),
        )


# -- opening ----------------------------------------------------------------


def open_recipe(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    chunks: str | tuple[int, int] = "auto",
    chunk_mb: float = DEFAULT_CHUNK_MB,
    tile: int | None = 512,
    gdal_options: Mapping[str, Any] | None = None,
    grid: str | os.PathLike | None = None,
    resampling: str = "nearest",
    grid_et: float = DEFAULT_ERROR_THRESHOLD,
) -> Recipe:
    """Open a raster (or a stack of files, as bands) as a :class:`Recipe`.

    Reads metadata only. Parameters and errors are those of
    :func:`rdask.open_raster`; with ``grid`` (``"first"``, or the path of
    a raster whose grid to use) the files of a stack may be on different
    grids: each is warped onto that one, with ``resampling`` and error
    threshold ``grid_et`` (0: exact), on the fly.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise RasterOpenError("no input raster given")
    paths = [os.fspath(p) for p in paths]
    if grid is not None:
        return _open_on_grid(paths, grid, resampling, chunk_mb=chunk_mb, tile=tile,
                             gdal_options=gdal_options, error_threshold=grid_et)
    opened = open_source(paths, gdal_options)
    source = opened.source
    explicit = None if chunks == "auto" else tuple(chunks)  # type: ignore[arg-type]
    plan = plan_chunks((source.height, source.width), source.count, source.dtype, opened.block,
                       chunk_mb=chunk_mb, tile=tile, chunks=explicit)
    return _named(Recipe(source, plan, opened.block, opened.meta, np.dtype(source.dtype)))


def _open_on_grid(paths: list[str], grid: str | os.PathLike, resampling: str, *, chunk_mb: float,
                  tile: int | None, gdal_options: Mapping[str, Any] | None,
                  error_threshold: float) -> Recipe:
    """A stack of files on different grids, each warped onto ``grid``."""
    recipes = [open_recipe(p, chunk_mb=chunk_mb, tile=tile, gdal_options=gdal_options) for p in paths]
    first = recipes[0]
    if os.fspath(grid) == "first":
        target = Grid(first.meta.crs, first.meta.transform, first.source.width, first.source.height)
    else:
        target = Grid.of(os.fspath(grid))
    parts = []
    for r in recipes:
        on_grid = (r.meta.crs == target.crs and r.meta.transform == target.transform
                   and (r.source.height, r.source.width) == (target.height, target.width))
        parts.append(r if on_grid else warp(r, like=target, resampling=resampling, chunk_mb=chunk_mb,
                                            tile=tile, error_threshold=error_threshold))
    if len({np.dtype(r.dtype) for r in parts}) > 1:
        raise RasterMismatchError(f"cannot stack {', '.join(map(redact, paths))}: their dtypes differ; "
                                  "rdask needs one dtype per raster")
    infos = [FileInfo(p, (0.0, 0), (target.height, target.width), (), (), (1, 1), r.meta, False)
             for p, r in zip(paths, parts, strict=True)]
    meta = replace(stack_meta(infos), crs=target.crs, transform=target.transform)
    block = (tile or 256, tile or 256)
    plan = plan_chunks((target.height, target.width), meta.count, parts[0].dtype, block,
                       chunk_mb=chunk_mb, tile=tile)
    source = StackSource(tuple(r.source for r in parts))
    return _named(Recipe(source, plan, block, meta, np.dtype(parts[0].dtype)))


def replan(recipe: Recipe, *, chunk_mb: float, tile: int | None = 512) -> Recipe:
    """``recipe`` (before any kernel) with another chunk size, planned from
    the metadata it already holds: no file is opened again."""
    if recipe.steps:
        raise ValueError("replan needs a recipe straight from open_recipe, before any kernel")
    src = recipe.source
    plan = plan_chunks((src.height, src.width), src.count, src.dtype, recipe.block,
                       chunk_mb=chunk_mb, tile=tile)
    return _named(replace(recipe, plan=plan))


def _named(recipe: Recipe) -> Recipe:
    """``recipe`` with its deterministic name: equal recipes, equal names."""
    steps = recipe.steps
    if not steps:
        return replace(recipe, name="open-" + tokenize(recipe.source, recipe.plan.chunks))
    prefix = "-".join(s.kernel.name for s in steps)
    return replace(recipe, name=f"{prefix}-{tokenize(recipe.source, steps, recipe.plan.chunks)}")


# -- kernel steps -------------------------------------------------------------


def extend(recipe: Recipe, kernel: Kernel | str | Callable, **kernel_args: Any) -> Recipe:
    """``recipe`` with ``kernel`` applied.

    Chained kernels add their halos; every chunk is still one read of the
    source (its window grown by the total halo) followed by the steps.
    """
    k, step = make_step(kernel, kernel_args, recipe.meta, recipe.dtype)
    return with_step(recipe, k, step)


def with_step(recipe: Recipe, k: Kernel, step: Step) -> Recipe:
    """``recipe`` with the resolved ``step`` of kernel ``k`` added."""
    meta, dtype = step_output(k, step, recipe.meta, recipe.dtype)
    return _named(replace(recipe, steps=recipe.steps + (step,), meta=meta, dtype=dtype))


def make_step(kernel: Kernel | str | Callable, kernel_args: Mapping[str, Any], meta: RasterMeta,
              dtype: Any) -> tuple[Kernel, Step]:
    """The kernel and its :class:`Step`: resolved arguments and the raster
    context (nodata, signed pixel size) of its input. Refuses, before any
    work, a kernel that cannot take ``dtype`` or needs a north-up raster."""
    k = as_kernel(kernel)
    args = k.resolve_args(kernel_args)
    k.check_input(np.dtype(dtype), meta.count)
    t = meta.transform
    if ("xres" in k.context or "yres" in k.context) and (t.b or t.d):
        raise KernelError(
            f"kernel {k.name!r} needs a north-up raster; this one has a rotated geotransform "
            "(warp it first, e.g. with gdalwarp)"
        )
    # Signed like GDAL's gt[1] and -gt[5]: positive for north-up rasters, so
    # that hillshade's light direction matches gdaldem on south-up ones too.
    context = {"nodata": meta.nodata, "xres": t.a, "yres": -t.e}
    return k, Step(k, tuple(sorted(args.items())), tuple(sorted(context.items())))


def step_output(k: Kernel, step: Step, meta: RasterMeta, in_dtype: Any) -> tuple[RasterMeta, np.dtype]:
    """The metadata and dtype of ``step``'s output: the kernel's nodata, each
    band's items following the input band it comes from, none for new bands."""
    args = dict(step.args)
    in_bands = meta.count
    out_bands = k.out_bands(in_bands, args, np.dtype(in_dtype))
    out_dtype = np.dtype(k.out_dtype(np.dtype(in_dtype), in_bands, args))
    nodata = k.out_nodata(meta.nodata, args, in_dtype)
    if nodata is not None and not nodata_fits(nodata, out_dtype):
        raise KernelError(
            f"kernel {k.name!r}: its {out_dtype} output cannot hold the nodata value "
            f"{nodata!r} (give the kernel a nodata of its own or another dtype)"
        )
    out = meta.for_bands(k.band_sources(in_bands, args), out_bands).without_statistics()
    return out.with_nodata(nodata).for_dtype(out_dtype), out_dtype


# -- computing chunks -------------------------------------------------------


@dataclass(frozen=True)
class ChunkReader:
    """Computes one chunk of a recipe: read its window grown by the halo
    (clipped at the raster edge) from the source, run the steps, trim.

    Small and picklable: this is what a task carries to a worker.
    """

    source: Source
    steps: tuple[Step, ...]
    halo: int
    #: The job's chunks, with a halo: the source can then decode each of
    #: its blocks about once (see :mod:`rdask.io.blocks`).
    chunking: Chunking | None = None

    @classmethod
    def of(cls, recipe: Recipe) -> ChunkReader:
        halo = recipe.halo
        _, ys, xs = recipe.chunks
        return cls(recipe.source, recipe.steps, halo, Chunking.of(ys, xs, halo) if halo else None)

    def __call__(self, region: Region) -> np.ndarray:
        _, ys, xs = region
        y0, y1, x0, x1 = ys.start, ys.stop, xs.start, xs.stop
        block, (dy, dx) = self.source.read_grown(y0, y1, x0, x1, self.halo, self.chunking)
        where = f"window rows {y0}:{y1}, cols {x0}:{x1}"
        for step in self.steps:
            block = step(block, where=where)
        if self.halo == 0:
            return block
        return block[:, dy : dy + (y1 - y0), dx : dx + (x1 - x0)]


@dataclass(frozen=True)
class ComputeTask:
    """A chunk made by one picklable function of its region."""

    region: Region
    key: str
    compute: Callable[[Region], np.ndarray]

    def run(self, write: Callable[[np.ndarray, Region], Any]) -> Any:
        """Compute the chunk here and hand it to the output's ``write`` step."""
        return run_compute(self.compute, self.region, write)

    def graph(self, write: Callable[[np.ndarray, Region], Any]) -> tuple[dict, str]:
        """The same as a one-task dask graph, for a cluster."""
        return {self.key: (run_compute, self.compute, self.region, write)}, self.key


def run_compute(compute: Callable, region: Region, write: Callable) -> Any:
    """:meth:`ComputeTask.run` as a plain function (what a worker executes)."""
    pause(f"chunk:{region[1].start}:{region[2].start}")
    return write(compute(region), region)


@dataclass(frozen=True)
class ChunkJob:
    """The chunks of a ``(bands, y, x)`` array and how to make their tasks.

    ``make(region, key)`` returns a task with ``run(write)`` (in this
    process) and ``graph(write)`` (a dask graph for a cluster). Tasks are
    made one at a time as the scheduler asks for them.
    """

    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: tuple[tuple[int, ...], ...]
    name: str
    make: Callable[[Region, str], Any]

    @property
    def grid(self) -> tuple[int, int]:
        """Chunks along y and x."""
        return (len(self.chunks[1]), len(self.chunks[2]))

    def tasks(self, skip: Callable[[Region], bool] = lambda region: False) -> Iterator[Any]:
        """Tasks for every chunk not in ``skip``, row-major, made lazily."""
        for region in chunk_regions(self.chunks):
            if not skip(region):
                yield self.make(region, f"rdask-chunk-{self.name}-{region[1].start}-{region[2].start}")


def region_pixels(region: Region) -> int:
    """Pixels (per band) of a chunk's region."""
    _, ys, xs = region
    return (ys.stop - ys.start) * (xs.stop - xs.start)


def chunk_regions(chunks: tuple[tuple[int, ...], ...]) -> Iterator[Region]:
    """The slices of every chunk of a dask ``chunks`` spec, row-major."""
    edges = []
    for c in chunks:
        offsets = np.concatenate([[0], np.cumsum(c)]).tolist()
        edges.append([slice(a, b) for a, b in itertools.pairwise(offsets)])
    yield from itertools.product(*edges)


# -- reprojection -------------------------------------------------------------


def warp(recipe: Recipe, *, crs: Any = None, resolution: Any = None, bounds: Any = None,
         like: Any = None, resampling: str = "nearest", nodata: float | None = None,
         error_threshold: float = DEFAULT_ERROR_THRESHOLD, tap: bool = False,
         chunk_mb: float = DEFAULT_CHUNK_MB, tile: int | None = 512) -> Recipe:
    """``recipe`` reprojected onto another grid, chunk by chunk, as ``gdalwarp``.

    The target grid is ``like`` (a :class:`~rdask.io.warped.Grid`, or a
    path: CRS, transform and size of that raster), or the one gdalwarp
    makes for ``crs``, ``resolution`` (one number or ``(x, y)``),
    ``bounds`` (``left, bottom, right, top`` in the target CRS) and ``tap``
    (``-tap``: the extent aligned on the resolution). Each chunk of the
    result reads only the source window it needs (see
    :mod:`rdask.io.warped`); kernel steps after a warp run on the new grid.

    ``error_threshold`` (source pixels): 0 is exact, every pixel equal to
    ``gdalwarp -et 0``; above 0 (default 0.125, gdalwarp's) the fast mode,
    whose coordinates come from exact points every few pixels with an
    error bound below the threshold (:mod:`rdask.io.warp_lattice`). Both
    give the same pixels at any chunking.
    """
    meta = recipe.meta
    if meta.crs is None:
        raise KernelError("warp needs a source with a CRS (this one has none)")
    if resampling not in WARP_RESAMPLINGS:
        hint = ("GDAL's sum is not chunk-independent, not even in gdalwarp; use average, times the "
                "footprint's area" if resampling == "sum" else "use one of " + ", ".join(WARP_RESAMPLINGS))
        raise KernelError(f"warp: resampling {resampling!r} is not available ({hint})")
    if not (math.isfinite(error_threshold) and error_threshold >= 0):
        raise KernelError(f"warp: et must be 0 (exact) or a positive number of source pixels, "
                          f"not {error_threshold!r}")
    if tap and resolution is None:
        raise KernelError("warp: tap=true needs res= (gdalwarp's -tap needs -tr)")
    src_grid = Grid(meta.crs, meta.transform, recipe.source.width, recipe.source.height)
    if isinstance(like, (str, os.PathLike)):
        like = Grid.of(os.fspath(like))
    dst = target_grid(src_grid, crs=crs, resolution=resolution, bounds=bounds, like=like, tap=tap)
    inner = recipe.source if not recipe.steps else _steps_source(recipe)
    out_nodata = meta.nodata if nodata is None else float(nodata)
    # gdalwarp takes a last band marked alpha as -srcalpha (and -dstalpha).
    alpha = len(meta.bands) if len(meta.bands) > 1 and meta.bands[-1].colorinterp == "alpha" else 0
    source = warped(inner, src_grid, dst, resampling=resampling, nodata=out_nodata,
                    src_nodata=meta.nodata, error_threshold=error_threshold, src_alpha=alpha)
    out_meta = replace(meta.without_statistics(), crs=dst.crs, transform=dst.transform, gcps=(),
                       gcp_crs=None, rpcs=()).with_nodata(out_nodata)
    block = (tile or 256, tile or 256)
    plan = plan_chunks((dst.height, dst.width), recipe.shape[0], recipe.dtype, block,
                       chunk_mb=chunk_mb, tile=tile)
    return _named(Recipe(source, plan, block, out_meta, recipe.dtype))


#: ``warp`` arguments as the CLI spells them, and the API's names.
WARP_ARGS = {"crs": "crs", "res": "resolution", "resolution": "resolution", "bounds": "bounds",
             "like": "like", "resampling": "resampling", "nodata": "nodata", "et": "error_threshold",
             "error_threshold": "error_threshold", "tap": "tap"}


def warp_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`warp` from a chain step's
    ``NAME=VALUE`` strings (``res=30`` or ``res=30,20``,
    ``bounds=left,bottom,right,top``, ``et=0.125``...)."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        name = WARP_ARGS.get(key)
        if name is None:
            raise KernelError(f"warp has no argument {key!r}; it takes {', '.join(sorted(set(WARP_ARGS)))}")
        out[name] = _warp_value(name, value)
    return out


def _warp_value(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if name in ("resolution", "bounds"):
            numbers = tuple(float(v) for v in value.split(","))
            return numbers[0] if len(numbers) == 1 else numbers
        if name in ("nodata", "error_threshold"):
            return float(value)
        if name == "tap":
            return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}[value.lower()]
    except (ValueError, KeyError):
        raise KernelError(f"warp: bad {name} {value!r}") from None
    return value


def _steps_source(recipe: Recipe) -> StepsSource:
    src = recipe.source
    return StepsSource(ChunkReader.of(recipe), src, tokenize(src, recipe.steps), recipe.shape[0], src.height,
                       src.width, str(recipe.dtype))
