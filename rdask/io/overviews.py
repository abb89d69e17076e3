"""Nearest-neighbour overview levels, computed by rdask itself.

GDAL's overview builder decodes the full-resolution image band by band
through its block cache and, for pixel-interleaved files, ends up decoding
tiles several times; on a 2-core machine it costs about as much CPU as the
kernel pass. For ``nearest`` rdask builds each level with its own pipeline
instead: chunks of the level are read (each source tile decoded once, in
parallel), picked, and written through the same sink (GDAL compression
threads), one single-image GeoTIFF per level, which ``cog.assemble_cog``
then copies into place.

The pick is GDAL's, so the pixels are identical: level ``k`` is made from
level ``k - 1`` (size ``n_prev``) at size ``n = ceil(n_prev / 2)`` and its
pixel ``i`` is source pixel ``int(0.5 + i * n_prev / n)`` (GDAL's
``GDALResampleChunk_Near``), computed in double precision like GDAL. For odd
sizes that is not a plain stride, so a chunk reads the source window its
picks span, wherever the seams fall.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rdask.io.meta import RasterMeta
from rdask.io.source import RasterSource


def picks(n_prev: int, n: int, start: int, stop: int) -> np.ndarray:
    """Source indices GDAL's nearest resampler picks for ``start:stop``."""
    ratio = n_prev / n
    idx = (0.5 + np.arange(start, stop, dtype=np.float64) * ratio).astype(np.int64)
    return np.minimum(idx, n_prev - 1)


def nearest_levels(
    partial: str,
    factors: list[int],
    *,
    blocksize: int,
    compress: str | None,
    creation_options: dict[str, Any] | None,
    runner: Any,
    chunk_mb: float = 4.0,
) -> list[str]:
    """Write one GeoTIFF per overview level beside ``partial``; return their paths."""
    import rasterio

    from rdask.io.sink import RasterSink

    paths: list[str] = []
    prev = partial
    for level, _ in enumerate(factors, start=1):
        with rasterio.open(prev) as ds:
            h_prev, w_prev, count, dtype = ds.height, ds.width, ds.count, ds.dtypes[0]
            meta = RasterMeta(crs=ds.crs, transform=ds.transform, nodata=ds.nodata)
        h, w = math.ceil(h_prev / 2), math.ceil(w_prev / 2)
        source = RasterSource(
            files=(_file(prev, count),), height=h_prev, width=w_prev, dtype=dtype
        )
        arr = _level_array(source, (h, w), count, dtype, blocksize, chunk_mb)
        out = f"{partial}.ovr{level}.tif"
        sink = RasterSink(
            out, (count, h, w), dtype, meta, blocksize=blocksize, compress=compress,
            creation_options=creation_options, threads=runner.threads, overwrite=True,
        )
        try:
            runner.store(arr, sink)
            sink.commit()
        except BaseException:
            sink.abort()
            for p in paths:
                _unlink(p)
            raise
        paths.append(out)
        prev = out
    return paths


def _file(path: str, count: int):
    from rdask.io.source import FileBands, file_stamp

    return FileBands(path, tuple(range(1, count + 1)), file_stamp(path))


def _level_array(source: RasterSource, shape: tuple[int, int], count: int, dtype: str,
                 blocksize: int, chunk_mb: float):
    import dask.array as da
    from dask.base import tokenize

    from rdask.plan import plan_chunks

    plan = plan_chunks(shape, count, dtype, (blocksize, blocksize), chunk_mb=chunk_mb, tile=blocksize)
    return da.map_blocks(
        _pick_block,
        source=source,
        shape=shape,
        chunks=plan.chunks,
        dtype=np.dtype(dtype),
        meta=np.empty((0, 0, 0), dtype=dtype),
        name="rdask-nearest-" + tokenize(source, shape, plan.chunks),
    )


def _pick_block(source: RasterSource, shape: tuple[int, int], block_info: Any = None) -> np.ndarray:
    (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    rows = picks(source.height, shape[0], y0, y1)
    cols = picks(source.width, shape[1], x0, x1)
    window = source.read(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    return np.ascontiguousarray(window[:, rows - rows[0]][:, :, cols - cols[0]])


def _unlink(path: str) -> None:
    import os

    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
