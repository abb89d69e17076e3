"""Nearest-neighbour overview levels, computed by rdask itself.

GDAL's overview builder decodes the full-resolution image band by band
through its block cache and, for pixel-interleaved files, ends up decoding
tiles several times; on a 2-core machine it costs about as much CPU as the
kernel pass. For ``nearest`` rdask builds each level with its own pipeline
instead: chunks of the level are read (each source tile decoded once, in
parallel), picked, encoded in the same tasks and written through the same
sink as the main pass, one single-image GeoTIFF per level, which
``cog.assemble_cog`` then copies into place.

When the main pass can write beside the output (threads, or workers on this
machine) and is not a resumed job, level 1 does not even need the
full-resolution file read back: each chunk's compute task drops its level-1
picks into an uncompressed scratch file (:class:`LevelTap`), and level 1 is
encoded from there. A nearest pick needs no neighbours, so every level-1
pixel comes from exactly one chunk, wherever the seams fall.

The pick is GDAL's, so the pixels are identical: level ``k`` is made from
level ``k - 1`` (size ``n_prev``) at size ``n = ceil(n_prev / 2)`` and its
pixel ``i`` is source pixel ``int(0.5 + i * n_prev / n)`` (GDAL's
``GDALResampleChunk_Near``), computed in double precision like GDAL. For odd
sizes that is not a plain stride, so a chunk reads the source window its
picks span, wherever the seams fall.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from rdask.io.meta import RasterMeta
from rdask.io.source import RasterSource


def picks(n_prev: int, n: int, start: int, stop: int) -> np.ndarray:
    """Source indices GDAL's nearest resampler picks for ``start:stop``."""
    ratio = n_prev / n
    idx = (0.5 + np.arange(start, stop, dtype=np.float64) * ratio).astype(np.int64)
    return np.minimum(idx, n_prev - 1)


@dataclass(frozen=True)
class LevelPieces:
    """Where each main-pass chunk's level-1 picks go in the scratch file.

    Chunk ``(a, b)`` of the main pass holds the level-1 rows ``rows[a]:rows[a+1]``
    and columns ``cols[b]:cols[b+1]`` (a nearest pick needs no neighbours);
    its piece is stored contiguously, band-sequential, at ``offset(a, b)``,
    so a chunk writes it with one ``pwrite`` and level 1 reads it with one
    ``pread``.
    """

    path: str
    y_edges: tuple[int, ...]  # main-pass chunk row edges, full resolution
    x_edges: tuple[int, ...]
    rows: tuple[int, ...]  # the same edges in level-1 rows
    cols: tuple[int, ...]
    bands: int
    dtype: str

    @classmethod
    def create(cls, partial: str, shape: tuple[int, int, int], chunks: tuple, dtype: Any) -> LevelPieces:
        """Plan the pieces for a main pass of ``shape`` and ``chunks``; create the file."""
        bands, h, w = shape
        y_edges = tuple(int(v) for v in np.cumsum((0, *chunks[1])))
        x_edges = tuple(int(v) for v in np.cumsum((0, *chunks[2])))
        rows = np.searchsorted(picks(h, math.ceil(h / 2), 0, math.ceil(h / 2)), y_edges)
        cols = np.searchsorted(picks(w, math.ceil(w / 2), 0, math.ceil(w / 2)), x_edges)
        pieces = cls(cls.path_for(partial), y_edges, x_edges, tuple(int(v) for v in rows),
                     tuple(int(v) for v in cols), bands, str(np.dtype(dtype)))
        with open(pieces.path, "wb") as fh:
            fh.truncate(pieces.offset(len(y_edges) - 1, 0))
        return pieces

    @staticmethod
    def path_for(partial: str) -> str:
        return f"{partial}.ovr1.raw"

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows[-1], self.cols[-1]

    def offset(self, a: int, b: int) -> int:
        """Byte offset of piece ``(a, b)`` (``a`` may be one past the last row: the file size)."""
        width, item = self.cols[-1], np.dtype(self.dtype).itemsize
        above = self.rows[a] * width * self.bands * item
        return above + (self.rows[a + 1] - self.rows[a]) * self.cols[b] * self.bands * item if b else above

    def piece_shape(self, a: int, b: int) -> tuple[int, int, int]:
        return self.bands, self.rows[a + 1] - self.rows[a], self.cols[b + 1] - self.cols[b]

    def write(self, a: int, b: int, block: np.ndarray) -> None:
        """Pick piece ``(a, b)`` from main-pass chunk ``(a, b)`` and store it."""
        _, nr, nc = self.piece_shape(a, b)
        if not (nr and nc):
            return
        rows = picks(self.y_edges[-1], self.shape[0], self.rows[a], self.rows[a + 1]) - self.y_edges[a]
        cols = picks(self.x_edges[-1], self.shape[1], self.cols[b], self.cols[b + 1]) - self.x_edges[b]
        piece = np.ascontiguousarray(_take(block, rows, cols), dtype=self.dtype)
        from rdask.io.tilesink import pwrite_all

        fd = os.open(self.path, os.O_WRONLY)
        try:
            pwrite_all(fd, memoryview(piece).cast("B"), self.offset(a, b))
        finally:
            os.close(fd)

    def read(self, a: int, b: int) -> np.ndarray:
        """Piece ``(a, b)`` as stored by :meth:`write`."""
        shape = self.piece_shape(a, b)
        size = int(np.prod(shape)) * np.dtype(self.dtype).itemsize
        with open(self.path, "rb") as fh:
            data = os.pread(fh.fileno(), size, self.offset(a, b))
        if len(data) != size:
            raise OSError(0, f"{self.path}: level-1 scratch file is short")
        return np.frombuffer(data, dtype=self.dtype).reshape(shape)


@dataclass(frozen=True)
class LevelTap:
    """A tile encoder that also stores each chunk's level-1 nearest picks."""

    encoder: Any
    pieces: LevelPieces

    def __call__(self, block: np.ndarray, region: tuple[slice, slice, slice]) -> list:
        _, ysl, xsl = region
        self.pieces.write(self.pieces.y_edges.index(ysl.start), self.pieces.x_edges.index(xsl.start), block)
        return self.encoder(block, region)


def nearest_levels(
    partial: str,
    factors: list[int],
    *,
    blocksize: int,
    compress: str | None,
    creation_options: dict[str, Any] | None,
    runner: Any,
    chunk_mb: float = 4.0,
    level1: LevelPieces | None = None,
) -> list[str]:
    """Write one GeoTIFF per overview level beside ``partial``; return their paths.

    ``level1`` describes the scratch file a :class:`LevelTap` filled during
    the main pass; without it level 1 is picked from ``partial``.
    """
    from functools import partial as partial_fn

    import rasterio

    from rdask.io.sink import RasterSink
    from rdask.io.sink import creation_options as build
    from rdask.io.tiles import encoder_for
    from rdask.io.tilesink import TileSink

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
        if level == 1 and level1 is not None:
            arr = _scratch_array(level1, blocksize, chunk_mb)
        else:
            arr = _level_array(source, (h, w), count, dtype, blocksize, chunk_mb)
        out = f"{partial}.ovr{level}.tif"
        # Encoded in the picking tasks, like the main pass, when rdask can.
        encoder = encoder_for(build(dtype, blocksize, compress, creation_options), dtype, count, w, blocksize)
        sink = (RasterSink if encoder is None else partial_fn(TileSink, encoder=encoder))(
            out, (count, h, w), dtype, meta, blocksize=blocksize, compress=compress,
            creation_options=creation_options, threads=runner.threads, overwrite=True,
            durable=False,  # copied into the COG, which is synced
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
    from dask.base import tokenize

    from rdask.plan import plan_chunks
    from rdask.schedule import ChunkTasks

    plan = plan_chunks(shape, count, dtype, (blocksize, blocksize), chunk_mb=chunk_mb, tile=blocksize)
    # uuid: a level of this job, not of an earlier one on a shared client.
    return ChunkTasks(_Picks(source, shape), plan.chunks,
                      f"rdask-nearest-{tokenize(source, shape, plan.chunks)}-{uuid.uuid4().hex[:8]}")


def _scratch_array(pieces: LevelPieces, blocksize: int, chunk_mb: float):
    """Level 1 from the scratch file, in chunks of whole output tiles."""
    from dask.base import tokenize

    from rdask.plan import plan_chunks
    from rdask.schedule import ChunkTasks

    p = pieces
    plan = plan_chunks(p.shape, p.bands, p.dtype, (blocksize, blocksize), chunk_mb=chunk_mb, tile=blocksize)
    return ChunkTasks(_FromPieces(p), plan.chunks,
                      f"rdask-level1-{tokenize(p, os.stat(p.path).st_mtime_ns, plan.chunks)}-{uuid.uuid4().hex[:8]}")


@dataclass(frozen=True)
class _Picks:
    """A level's chunk: GDAL's nearest picks from the level above (``source``)."""

    source: RasterSource
    shape: tuple[int, int]

    def __call__(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        _, ys, xs = region
        rows = picks(self.source.height, self.shape[0], ys.start, ys.stop)
        cols = picks(self.source.width, self.shape[1], xs.start, xs.stop)
        window = self.source.read(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
        return np.ascontiguousarray(_take(window, rows - rows[0], cols - cols[0]))


@dataclass(frozen=True)
class _FromPieces:
    """A level-1 chunk assembled from the scratch file's pieces under it."""

    pieces: LevelPieces

    def __call__(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        _, ys, xs = region
        p = self.pieces
        out = np.empty((p.bands, ys.stop - ys.start, xs.stop - xs.start), dtype=p.dtype)
        for a in range(len(p.rows) - 1):
            r0, r1 = max(ys.start, p.rows[a]), min(ys.stop, p.rows[a + 1])
            for b in range(len(p.cols) - 1):
                c0, c1 = max(xs.start, p.cols[b]), min(xs.stop, p.cols[b + 1])
                if r0 < r1 and c0 < c1:
                    piece = p.read(a, b)
                    out[:, r0 - ys.start : r1 - ys.start, c0 - xs.start : c1 - xs.start] = piece[
                        :, r0 - p.rows[a] : r1 - p.rows[a], c0 - p.cols[b] : c1 - p.cols[b]
                    ]
        return out


def _take(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``block[:, rows][:, :, cols]``, as strided views where the picks allow."""
    return block[:, _index(rows)][:, :, _index(cols)]


def _index(idx: np.ndarray) -> slice | np.ndarray:
    """``idx`` as a slice when it is a plain stride (every even-sized level):
    a strided view costs nothing, a fancy-index gather about 25x more."""
    step = int(idx[1] - idx[0]) if len(idx) > 1 else 1
    if step > 0 and np.array_equal(idx, idx[0] + step * np.arange(len(idx))):
        return slice(int(idx[0]), int(idx[-1]) + 1, step)
    return idx


def _unlink(path: str) -> None:
    import os

    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
