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
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rdask.errors import KernelError
from rdask.io.meta import exact_transform
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
    if isinstance(kernel, str):
        from rdask.kernels import get_kernel

        kernel = get_kernel(kernel)
    k = kernel
    args = k.resolve_args(kernel_args)
    halo = k.halo_for(args)
    recipe = recipe_of(data)
    meta = _meta_of(data, recipe)
    step = Step(k, tuple(sorted(args.items())), tuple(sorted(_context(k, meta, data).items())))
    in_bands = data.sizes["band"]
    out_bands = k.out_bands(in_bands, args)
    out_dtype = k.out_dtype(data.dtype)

    if recipe is not None and recipe.halo + halo > 0:
        # File-backed: read grown windows straight from the source.
        steps = recipe.steps + (step,)
        log.info(
            "%s: halo path: direct reads from the file, halo %d (chain of %d)",
            k.name, recipe.halo + halo, len(steps),
        )
        arr = _from_source(recipe.source, recipe.plan.chunks, steps, out_bands, out_dtype)
    elif halo == 0:
        arr = data.data.map_blocks(
            _run,
            step,
            dtype=out_dtype,
            chunks=((out_bands,),) + data.data.chunks[1:],
            meta=np.empty((0, 0, 0), dtype=out_dtype),
            name=f"{k.name}-{_token(data.data.name, step)}",
        )
        steps = recipe.steps + (step,) if recipe is not None else ()
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
        steps = ()

    out_meta = dict(meta)
    out_meta["nodata"] = k.out_nodata(meta.get("nodata"))
    if not k.keeps_bands or out_bands != in_bands:
        out_meta["descriptions"] = ()
        out_meta["band_tags"] = ()
        out_meta["scales"] = out_meta["offsets"] = out_meta["units"] = ()
        out_meta["colorinterp"] = ()
    if out_dtype != data.dtype:
        out_meta["scales"] = out_meta["offsets"] = ()
    out = wrap(arr, out_meta)
    if recipe is not None and steps:
        out.encoding[RECIPE_KEY] = replace(recipe, steps=steps, name=arr.name, meta=out_meta)
        out.encoding["source"] = data.encoding.get("source")
    return out


# -- task functions (run on workers; keep them small and picklable) ----------


def _run(block: np.ndarray, step: Step, block_info: Any = None) -> np.ndarray:
    return step(block, where=_where(block_info))


def _read_and_run(
    source: RasterSource,
    steps: tuple[Step, ...],
    halo: int,
    block_info: Any = None,
) -> np.ndarray:
    (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    gy0, gy1 = max(0, y0 - halo), min(source.height, y1 + halo)
    gx0, gx1 = max(0, x0 - halo), min(source.width, x1 + halo)
    block = source.read(gy0, gy1, gx0, gx1)
    where = f"window rows {y0}:{y1}, cols {x0}:{x1}"
    for step in steps:
        block = step(block, where=where)
    return block[:, y0 - gy0 : y0 - gy0 + (y1 - y0), x0 - gx0 : x0 - gx0 + (x1 - x0)]


def _from_source(
    source: RasterSource,
    chunks: tuple,
    steps: tuple[Step, ...],
    out_bands: int,
    out_dtype: np.dtype,
):
    import dask.array as da

    halo = sum(s.kernel.halo_for(dict(s.args)) for s in steps)
    name = "-".join(s.kernel.name for s in steps) + "-" + _token(source, steps, chunks)
    return da.map_blocks(
        _read_and_run,
        source=source,
        steps=steps,
        halo=halo,
        chunks=((out_bands,),) + tuple(chunks[1:]),
        dtype=out_dtype,
        meta=np.empty((0, 0, 0), dtype=out_dtype),
        name=name,
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


def _context(k: Kernel, meta: dict[str, Any], data: xr.DataArray) -> dict[str, Any]:
    transform = meta.get("transform") or exact_transform(data)
    if ("xres" in k.context or "yres" in k.context) and (transform.b or transform.d):
        raise KernelError(
            f"kernel {k.name!r} needs a north-up raster; this one has a rotated geotransform "
            "(warp it first, e.g. with gdalwarp)"
        )
    # Signed like GDAL's gt[1] and -gt[5]: positive for north-up rasters, so
    # that hillshade's light direction matches gdaldem on south-up ones too.
    return {"nodata": meta.get("nodata"), "xres": transform.a, "yres": -transform.e}


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
