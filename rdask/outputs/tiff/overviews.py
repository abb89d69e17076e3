"""Nearest-neighbour overview levels, computed by rdask itself.

GDAL's overview builder decodes the full-resolution image band by band
through its block cache and, for pixel-interleaved files, ends up decoding
tiles several times; on a 2-core machine it costs about as much CPU as the
kernel pass. For ``nearest`` rdask builds each level with its own pipeline
instead: chunks of the level are read (each source tile decoded once, in
parallel), picked, encoded in the same tasks and written through the same
GTiff output as the main pass, one single-image GeoTIFF per level, which
:func:`~rdask.outputs.tiff.coglayout.assemble_cog` then copies into place.

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

import glob
import math
import os
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from dask.base import tokenize

from rdask.io.files import FileBands, FileSource
from rdask.io.paths import file_stamp
from rdask.meta import RasterMeta
from rdask.outputs.base import OutputSpec, RunChunks
from rdask.outputs.journal import JobId
from rdask.outputs.nearest import pick_piece, picks, piece_edges, take
from rdask.outputs.staging import unlink_quietly
from rdask.outputs.tiff import gtiff
from rdask.outputs.tiff.gtiff import pwrite_all
from rdask.plan import plan_chunks
from rdask.recipe import ChunkJob, ComputeTask, Region


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
        pieces = cls(cls.path_for(partial), *piece_edges(chunks), shape[0], str(np.dtype(dtype)))
        with open(pieces.path, "wb") as fh:
            fh.truncate(pieces.offset(len(pieces.y_edges) - 1, 0))
        return pieces

    @staticmethod
    def path_for(partial: str) -> str:
        # One name per job attempt: a chunk thread abandoned by Ctrl-C can
        # then never write into the scratch of a rerun in the same process.
        return f"{partial}.ovr1.{uuid.uuid4().hex[:12]}.raw"

    @staticmethod
    def remove_stale(partial: str) -> None:
        """Remove the scratch files earlier (killed) attempts left beside ``partial``."""
        for path in glob.glob(f"{glob.escape(partial)}.ovr1.*.raw"):
            unlink_quietly(path)

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
        piece = pick_piece(self, a, b, block)
        if piece is None:
            return
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
    """An output's writer that also stores each chunk's level-1 nearest picks."""

    writer: Any
    pieces: LevelPieces

    def __call__(self, block: np.ndarray, region: Region) -> Any:
        _, ysl, xsl = region
        self.pieces.write(self.pieces.y_edges.index(ysl.start), self.pieces.x_edges.index(xsl.start), block)
        return self.writer(block, region)


def nearest_levels(partial: str, factors: list[int], spec: OutputSpec, run: RunChunks, *,
                   chunk_mb: float = 4.0, level1: LevelPieces | None = None) -> list[str]:
    """Write one GeoTIFF per overview level beside ``partial``; return their paths.

    ``spec`` is the main output's; each level is a GTiff output of its own,
    run as a chunk job through ``run``. ``level1`` describes the scratch
    file a :class:`LevelTap` filled during the main pass; without it level 1
    is picked from ``partial``.
    """
    import rasterio

    paths: list[str] = []
    prev = partial
    try:
        for level, _ in enumerate(factors, start=1):
            with rasterio.open(prev) as ds:
                h_prev, w_prev, count, dtype = ds.height, ds.width, ds.count, ds.dtypes[0]
                meta = RasterMeta(crs=ds.crs, transform=ds.transform, nodata=ds.nodata)
            shape = (math.ceil(h_prev / 2), math.ceil(w_prev / 2))
            if level == 1 and level1 is not None:
                job = _scratch_job(level1, spec.options.blocksize, chunk_mb)
            else:
                source = FileSource(files=(_file(prev, count),), height=h_prev, width=w_prev, dtype=dtype)
                job = _level_job(source, shape, count, dtype, spec.options.blocksize, chunk_mb)
            out = f"{partial}.ovr{level}.tif"
            paths.append(out)
            _write_level(out, job, meta, spec, run)
            prev = out
    except BaseException:
        for p in paths:
            unlink_quietly(p)
        raise
    return paths


def _write_level(path: str, job: ChunkJob, meta: RasterMeta, spec: OutputSpec, run: RunChunks) -> None:
    """One level through a GTiff output of its own (not durable: it is
    copied into the COG, which is synced)."""
    options = replace(spec.options, overwrite=True, resume=False, driver="GTiff")
    level_spec = replace(spec, target=path, shape=job.shape, chunks=job.chunks, meta=meta,
                         options=options, job=JobId("", "", ""), mask=None)
    output = gtiff.open(level_spec, durable=False)
    try:
        run(job, output)
        output.close()
    except BaseException:
        output.abort()
        raise
    output.staging.publish()


def _file(path: str, count: int) -> FileBands:
    return FileBands(path, tuple(range(1, count + 1)), file_stamp(path))


def _level_job(source: FileSource, shape: tuple[int, int], count: int, dtype: str,
               blocksize: int, chunk_mb: float) -> ChunkJob:
    plan = plan_chunks(shape, count, dtype, (blocksize, blocksize), chunk_mb=chunk_mb, tile=blocksize)
    # uuid: a level of this job, not of an earlier one on a shared client.
    name = f"rdask-nearest-{tokenize(source, shape, plan.chunks)}-{uuid.uuid4().hex[:8]}"
    return _job((count, *shape), dtype, plan.chunks, name, _Picks(source, shape))


def _scratch_job(pieces: LevelPieces, blocksize: int, chunk_mb: float) -> ChunkJob:
    """Level 1 from the scratch file, in chunks of whole output tiles."""
    p = pieces
    plan = plan_chunks(p.shape, p.bands, p.dtype, (blocksize, blocksize), chunk_mb=chunk_mb, tile=blocksize)
    token = tokenize(p, os.stat(p.path).st_mtime_ns, plan.chunks)
    name = f"rdask-level1-{token}-{uuid.uuid4().hex[:8]}"
    return _job((p.bands, *p.shape), p.dtype, plan.chunks, name, FromPieces(p))


def _job(shape: tuple[int, int, int], dtype: str, chunks: tuple, name: str, compute: Any) -> ChunkJob:
    return ChunkJob(shape=shape, dtype=np.dtype(dtype), chunks=((shape[0],),) + chunks[1:], name=name,
                    make=lambda region, key: ComputeTask(region, key, compute))


@dataclass(frozen=True)
class _Picks:
    """A level's chunk: GDAL's nearest picks from the level above (``source``)."""

    source: FileSource
    shape: tuple[int, int]

    def __call__(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        _, ys, xs = region
        rows = picks(self.source.height, self.shape[0], ys.start, ys.stop)
        cols = picks(self.source.width, self.shape[1], xs.start, xs.stop)
        window = self.source.read(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
        return np.ascontiguousarray(take(window, rows - rows[0], cols - cols[0]))


@dataclass(frozen=True)
class FromPieces:
    """A level chunk assembled from the pieces under it: ``pieces`` is a
    :class:`LevelPieces` (the scratch file) or any store of pieces with the
    same ``rows``, ``cols``, ``bands``, ``dtype`` and ``read(a, b)``
    (the S3 COG's :class:`~rdask.outputs.s3.levels.S3Pieces`)."""

    pieces: Any

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
