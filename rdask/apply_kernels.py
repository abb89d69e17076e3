"""Apply kernels to lazy rasters: ``map_blocks``, halo reads, kernel chains.

Three paths, chosen from what the input is:

* halo 0: ``map_blocks``; dask fuses it with the read, one task per chunk.
* halo > 0 on an array that comes straight from a file (it still carries its
  :class:`~rdask.io.open.Recipe`): each task reads its chunk's window grown
  by the halo, clipped at the raster edge, directly from the file, runs the
  kernel chain and trims. No neighbour strips are cut, shipped or held in
  memory, which is where ``map_overlap`` spends its time. Chained kernels
  add their halos and still read once.
* halo > 0 on any other dask array: ``map_overlap`` with ``boundary="none"``.

Kernels treat their block edges as raster edges, so all three give the same
pixels as running the kernel on the whole raster at once.

:func:`extend` is :func:`apply` for a bare :class:`~rdask.io.open.Recipe`
(what :func:`rdask.process` and the CLI use): it only adds a step; the
pipeline then runs each chunk with a :class:`ChunkReader`, the same read,
steps and trim as the halo path, without a dask array.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rdask.errors import KernelError
from rdask.io.meta import exact_transform, nodata_fits
from rdask.io.open import RECIPE_KEY, Recipe, Step, recipe_of, wrap

log = logging.getLogger("rdask")

if TYPE_CHECKING:
    import xarray as xr

    from rdask.io.source import RasterSource
    from rdask.kernels import Kernel


def apply(data: xr.DataArray, kernel: Kernel | str, **kernel_args: Any) -> xr.DataArray:
    """Lazily apply ``kernel`` to every chunk of ``data``.

    Parameters
    ----------
    data
        A ``(band, y, x)`` DataArray, usually from :func:`rdask.open_raster`.
    kernel
        A :class:`rdask.Kernel`, a built-in name such as ``"slope"``, or a
        ``module:function`` / ``file.py:function`` reference.
    **kernel_args
        Kernel arguments; strings are converted to the declared types.

    Returns
    -------
    xarray.DataArray
        Lazy result with the output dtype, band count and nodata of the
        kernel, the same CRS and exact transform.
    """
    recipe = recipe_of(data)
    meta = _meta_of(data, recipe)
    k, step, halo = _step(kernel, kernel_args, meta, lambda: exact_transform(data))
    if recipe is not None and recipe.halo + halo > 0:
        # File-backed: read grown windows straight from the source.
        grown = _extended(recipe, k, step)
        log.info(
            "%s: halo path: direct reads from the file, halo %d (chain of %d)",
            k.name, grown.halo, len(grown.steps),
        )
        out = wrap(_from_source(grown), grown.meta)
        out.encoding[RECIPE_KEY] = grown
        out.encoding["source"] = data.encoding.get("source")
        return out
    out_bands = k.out_bands(data.sizes["band"], dict(step.args))
    out_dtype = k.out_dtype(data.dtype)
    out_meta = _out_meta(k, meta, data.sizes["band"], out_bands, data.dtype, out_dtype)
    if halo == 0:
        arr = data.data.map_blocks(
            _run,
            step,
            dtype=out_dtype,
            chunks=((out_bands,),) + data.data.chunks[1:],
            meta=np.empty((0, 0, 0), dtype=out_dtype),
            name=f"{k.name}-{_token(data.data.name, step)}",
        )
    else:
        log.info("%s: halo path: map_overlap (the array is not straight from a file)", k.name)
        src = data.data.rechunk({0: -1})
        arr = src.map_overlap(
            functools.partial(_run, step=step),
            depth={0: 0, 1: halo, 2: halo},
            boundary="none",
            trim=True,
            dtype=out_dtype,
            # map_overlap wants the shapes of the grown blocks it passes in.
            chunks=((out_bands,), _grown(src.chunks[1], halo), _grown(src.chunks[2], halo)),
            meta=np.empty((0, 0, 0), dtype=out_dtype),
        )
    out = wrap(arr, out_meta)
    if recipe is not None and halo == 0:
        out.encoding[RECIPE_KEY] = replace(recipe, steps=recipe.steps + (step,), name=arr.name, meta=out_meta)
        out.encoding["source"] = data.encoding.get("source")
    return out


def extend(recipe: Recipe, kernel: Kernel | str, **kernel_args: Any) -> Recipe:
    """``recipe`` with ``kernel`` applied: :func:`apply` for a bare recipe.

    Chained kernels add their halos; every chunk is still one read of the
    source (its window grown by the total halo) followed by the steps.
    """
    k, step, _ = _step(kernel, kernel_args, recipe.meta, None)
    return _extended(recipe, k, step)


def _extended(recipe: Recipe, k: Kernel, step: Step) -> Recipe:
    """``recipe`` with the resolved ``step`` of kernel ``k`` added."""
    in_bands, in_dtype = recipe.shape[0], recipe.dtype
    steps = recipe.steps + (step,)
    out_meta = _out_meta(k, recipe.meta, in_bands, k.out_bands(in_bands, dict(step.args)),
                         in_dtype, k.out_dtype(in_dtype))
    name = "-".join(s.kernel.name for s in steps) + "-" + _token(recipe.source, steps, recipe.plan.chunks)
    return replace(recipe, steps=steps, name=name, meta=out_meta)


@dataclass(frozen=True)
class ChunkReader:
    """Computes one chunk of a recipe: read its window grown by the halo
    (clipped at the raster edge) from the source, run the steps, trim.

    Small and picklable: this is what a task carries to a worker.
    """

    source: RasterSource
    steps: tuple[Step, ...]
    halo: int

    @classmethod
    def of(cls, recipe: Recipe) -> ChunkReader:
        return cls(recipe.source, recipe.steps, recipe.halo)

    def __call__(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        _, ys, xs = region
        y0, y1, x0, x1 = ys.start, ys.stop, xs.start, xs.stop
        halo, source = self.halo, self.source
        gy0, gy1 = max(0, y0 - halo), min(source.height, y1 + halo)
        gx0, gx1 = max(0, x0 - halo), min(source.width, x1 + halo)
        block = source.read(gy0, gy1, gx0, gx1)
        where = f"window rows {y0}:{y1}, cols {x0}:{x1}"
        for step in self.steps:
            block = step(block, where=where)
        if halo == 0:
            return block
        return block[:, y0 - gy0 : y0 - gy0 + (y1 - y0), x0 - gx0 : x0 - gx0 + (x1 - x0)]


# -- task functions (run on workers; keep them small and picklable) ----------


def _run(block: np.ndarray, step: Step, block_info: Any = None) -> np.ndarray:
    return step(block, where=_where(block_info))


def _read_chunk(reader: ChunkReader, block_info: Any = None) -> np.ndarray:
    return reader(tuple(slice(a, b) for a, b in block_info[None]["array-location"]))


def _from_source(recipe: Recipe):
    import dask.array as da

    return da.map_blocks(
        _read_chunk,
        reader=ChunkReader.of(recipe),
        chunks=recipe.chunks,
        dtype=recipe.dtype,
        meta=np.empty((0, 0, 0), dtype=recipe.dtype),
        name=recipe.name,
    )


# -- helpers --------------------------------------------------------------


def _meta_of(data: xr.DataArray, recipe: Recipe | None) -> dict[str, Any]:
    if recipe is not None:
        return dict(recipe.meta)
    from rdask.io.meta import raster_meta

    m = raster_meta(data)
    return {
        "crs": m.crs,
        "transform": m.transform,
        "nodata": m.nodata,
        "descriptions": m.descriptions,
        "tags": m.tags,
        "scales": m.scales,
        "offsets": m.offsets,
        "units": m.units,
    }


def _step(kernel: Kernel | str, kernel_args: dict[str, Any], meta: Mapping[str, Any],
          transform_of: Callable[[], Any] | None) -> tuple[Kernel, Step, int]:
    """The kernel, its :class:`Step` (resolved args, raster context) and halo."""
    if isinstance(kernel, str):
        from rdask.kernels import get_kernel

        kernel = get_kernel(kernel)
    args = kernel.resolve_args(kernel_args)
    halo = kernel.halo_for(args)
    transform = meta.get("transform") or (transform_of() if transform_of else None)
    if ("xres" in kernel.context or "yres" in kernel.context) and (transform.b or transform.d):
        raise KernelError(
            f"kernel {kernel.name!r} needs a north-up raster; this one has a rotated geotransform "
            "(warp it first, e.g. with gdalwarp)"
        )
    # Signed like GDAL's gt[1] and -gt[5]: positive for north-up rasters, so
    # that hillshade's light direction matches gdaldem on south-up ones too.
    context = {"nodata": meta.get("nodata"), "xres": transform.a, "yres": -transform.e}
    return kernel, Step(kernel, tuple(sorted(args.items())), tuple(sorted(context.items()))), halo


def _out_meta(k: Kernel, meta: Mapping[str, Any], in_bands: int, out_bands: int,
              in_dtype: Any, out_dtype: Any) -> dict[str, Any]:
    """The metadata a kernel's output keeps: nodata from the kernel, band
    metadata only while bands (and, for scales, the dtype) are unchanged."""
    out = dict(meta)
    out["nodata"] = k.out_nodata(meta.get("nodata"))
    if out["nodata"] is not None and not nodata_fits(out["nodata"], out_dtype):
        raise KernelError(
            f"kernel {k.name!r}: its {np.dtype(out_dtype)} output cannot hold the nodata value "
            f"{out['nodata']!r} (give the kernel a nodata of its own or another dtype)"
        )
    if not k.keeps_bands or out_bands != in_bands:
        out["descriptions"] = ()
        out["band_tags"] = ()
        out["scales"] = out["offsets"] = out["units"] = ()
        out["colorinterp"] = ()
    if np.dtype(out_dtype) != np.dtype(in_dtype):
        out["scales"] = out["offsets"] = ()
    return out


def _grown(chunks: tuple[int, ...], halo: int) -> tuple[int, ...]:
    """Chunk sizes after ``boundary="none"`` overlap: inner sides grow by ``halo``."""
    n = len(chunks)
    return tuple(c + halo * ((i > 0) + (i < n - 1)) for i, c in enumerate(chunks))


def _where(block_info: Any) -> str:
    if not block_info or 0 not in block_info:
        return ""
    (_, _), (y0, y1), (x0, x1) = block_info[0]["array-location"]
    return f"window rows {y0}:{y1}, cols {x0}:{x1}"


def _token(*parts: Any) -> str:
    from dask.base import tokenize

    return tokenize(*parts)
