"""``s3://bucket/key`` COGs whose tiles, overviews included, the tasks upload
as multipart parts: the S3 GeoTIFF output (:mod:`.gtiff`) plus
``nearest`` overview levels built where the tasks run (:mod:`.levels`).

* Chunk numbers (the GeoTIFF output's part numbers) name each chunk's
  piece: the levels' are reserved when the output opens, since each
  level's chunk plan is known then. The parts themselves are made at
  commit, in COG order.
* The main pass is the GeoTIFF output's, its writer wrapped in a
  :class:`~.levels.PieceTap` that stores each chunk's level-1 picks. On
  commit each large level is a chunk job run through ``run``: its chunks
  are read from the pieces, their tiles stored as chunk pieces, the next
  level's pieces written.
* The smallest levels (as many as fit in 5 MiB, at their worst encoded
  size) have no part numbers: one task builds them in memory from their
  pieces and stores their tiles as one chunk piece (:class:`~.levels.
  TailLevels`), which part 1 takes right after the IFDs, where a COG keeps
  its smallest overviews.
* Every chunk's tiles, the main pass's and the levels', are stored as a
  piece (``PartWriter(cog=True)``), each tile already wrapped in GDAL's
  size leader and repeated trailer; the commit lays them out in GDAL's COG
  order (each level's tiles row by row, smallest level first) and makes
  the parts from them where the tasks run (:mod:`.order`): S3 copies a
  part that is one piece's range itself (``UploadPartCopy``; a level's
  chunks span its width, so each is one range), the others are fetched
  range by range and uploaded. The ghost header is GDAL's, so GDAL reports
  ``LAYOUT=COG``.
* The IFDs are GDAL's: the main image's and one GeoTIFF per level are
  created sparse on the client, as the local COG's are, and
  :mod:`~rdask.outputs.tiff.coglayout` lays them out with the tile offsets
  from the ranges' places.
* A resume redoes the levels (only the main pass is journaled); the pieces
  of the interrupted upload are kept for it, any other job's are deleted.

Other resamplings than ``nearest`` need GDAL's overview builder, on the
whole file: :mod:`.staged` writes them.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from typing import Any

import numpy as np
import tifffile

from rdask.errors import OutputError
from rdask.meta import RasterMeta
from rdask.outputs.base import Committed, OutputSpec, Publish, RunChunks
from rdask.outputs.options import WriteOptions
from rdask.outputs.s3.gtiff import (
    Collect,
    PartsOutput,
    parts_encoder,
    run_parts,
)
from rdask.outputs.s3.levels import (
    PieceTap,
    S3Pieces,
    Tail,
    TailLevels,
    tail_bound,
)
from rdask.outputs.s3.order import (
    OrderedParts,
    Segment,
    grid_of,
    places,
    plan_order,
    segments,
    tile_offsets,
)
from rdask.outputs.s3.parts import (
    MIN_PART,
    Part,
    PartNumbers,
    PartWriter,
    Piece,
    complete,
)
from rdask.outputs.staging import unlink_quietly
from rdask.outputs.tiff.coglayout import header_and_ifds, layout_ifds, overview_factors, read_ifds
from rdask.outputs.tiff.gdal import create_dataset, gdal_env
from rdask.outputs.tiff.overviews import FromPieces
from rdask.outputs.tiff.tiles import TileEncoder
from rdask.plan import plan_chunks
from rdask.recipe import ChunkJob, ComputeTask, Region


def accepts(target: str, options: WriteOptions) -> bool:
    """An S3 COG (what :func:`takes` refuses, :mod:`.staged` writes)."""
    return target.startswith("s3://") and options.driver == "COG"


def takes(spec: OutputSpec) -> bool:
    """Whether the tasks can upload this job's tiles and nearest levels as parts."""
    return parts_encoder(spec) is not None and spec.options.overview_resampling == "nearest"


def open(spec: OutputSpec) -> CogParts:  # noqa: A001
    encoder = parts_encoder(spec)
    assert encoder is not None
    return CogParts(spec, encoder)


def level_chunks(spec: OutputSpec) -> list[tuple[tuple[int, ...], ...]]:
    """The chunk plan of every overview level, largest first: chunks of
    whole tiles, about as big as the main pass's."""
    bands, height, width = spec.shape
    opts = spec.options
    factors = overview_factors(height, width, opts.blocksize, opts.overview_levels)
    _, ys, xs = spec.chunks
    chunk_mb = max(bands * spec.dtype.itemsize * height * width / (len(ys) * len(xs)), 1.0) / 1e6
    out = []
    for _ in factors:
        height, width = math.ceil(height / 2), math.ceil(width / 2)
        # Chunks spanning the level's width when a row of tiles is not too
        # big: each is then one range of the COG's row-major order, which S3
        # copies into a part by itself.
        row = opts.blocksize * width * bands * spec.dtype.itemsize / 1e6
        block = (opts.blocksize, width if row <= 4 * chunk_mb else opts.blocksize)
        plan = plan_chunks((height, width), bands, spec.dtype, block, chunk_mb=chunk_mb, tile=opts.blocksize)
        out.append(((bands,), *plan.chunks[1:]))
    return out


def _count(chunks: tuple[tuple[int, ...], ...]) -> int:
    return len(chunks[1]) * len(chunks[2])


def tail_count(spec: OutputSpec, encoder: TileEncoder, levels: list) -> int:
    """How many of the smallest levels one task builds in memory (the tail):
    as many as fit, at their worst encoded size, in 5 MiB less the IFDs (an
    estimate of them: GDAL's tags, and 16 bytes per tile for the index), so
    that they and the header stay about one part's worth."""
    tiles = sum(math.ceil(sum(c[1]) / encoder.tile) * math.ceil(sum(c[2]) / encoder.tile)
                for c in (spec.chunks, *levels))
    room = MIN_PART - 65536 * (len(levels) + 1) - 16 * tiles
    n = 0
    for chunks in reversed(levels):
        room -= tail_bound((spec.shape[0], sum(chunks[1]), sum(chunks[2])), encoder)
        if room < 0:
            break
        n += 1
    return n


class CogParts:
    """A COG whose tiles the tasks upload (see the module docstring)."""

    def __init__(self, spec: OutputSpec, encoder: TileEncoder) -> None:
        self.spec, self.encoder = spec, encoder
        self.levels = level_chunks(spec)
        self.tail = tail_count(spec, encoder, self.levels)
        level_parts = sum(_count(c) for c in self.levels[: len(self.levels) - self.tail])
        self.main = PartsOutput(spec, encoder, first=2 + level_parts)
        self.upload = upload = self.main.upload
        self.partial = self.main.partial
        self.level_paths: list[str] = []
        try:
            self._make_level_headers()
        except BaseException:
            self.abort(keep_partial=spec.options.resume)
            raise
        # Smallest level first: level k's range ends where level k-1's starts.
        self.numbers, first = [], 2 + level_parts
        for chunks in self.levels[: len(self.levels) - self.tail]:
            first -= _count(chunks)
            self.numbers.append(PartNumbers.of(chunks, first=first, last=self.main.numbers.last))
        self.writer: Any = replace(self.main.writer, cog=True)
        if self.levels:
            self.writer = PieceTap(self.writer, S3Pieces.plan(upload, 1, spec.chunks, spec.dtype))

    def _make_level_headers(self) -> None:
        """One sparse GeoTIFF per level, created by GDAL as the local COG's
        levels are: their IFDs become the overview IFDs."""
        spec, meta = self.spec, self.spec.meta
        options = {**spec.options.gtiff_creation_options(spec.dtype, spec.threads), "SPARSE_OK": "TRUE"}
        for k, chunks in enumerate(self.levels, start=1):
            shape = (spec.shape[0], sum(chunks[1]), sum(chunks[2]))
            transform = meta.transform @ meta.transform.scale(spec.shape[2] / shape[2], spec.shape[1] / shape[1])
            path = f"{self.main.header_path}.ovr{k}.tif"
            self.level_paths.append(path)
            ds = create_dataset(path, shape, spec.dtype, RasterMeta(meta.crs, transform, meta.nodata), options,
                                self.main.url)
            with gdal_env():
                ds.close()

    def is_done(self, region: Region) -> bool:
        return self.main.is_done(region)

    def record(self, region: Region, result: Part | Piece) -> None:
        self.main.record(region, result)

    def commit(self, run: RunChunks) -> Publish:
        """Build the levels, then the tail; lay the tiles out in COG order,
        write the header; make the parts; publishing completes the upload."""
        self.main.close()
        levels = [self._run_level(run, k) for k in range(1, len(self.levels) - self.tail + 1)]
        tail = self._run_tail(run) if self.tail else None
        tasks, size = self._header([self.main.parts, *levels], tail)
        made = run_parts(run, tasks)
        self._drop_level_headers()
        upload, main = self.upload, self.main

        def publish() -> Committed:
            complete(upload, made)
            main.finish()  # the pieces (chunks' and levels'), the journal, the local header
            return Committed(main.url, size)

        return publish

    def _run_tail(self, run: RunChunks) -> Tail:
        """The smallest levels, from the first of them's pieces, in one task."""
        writer = TailLevels(self.upload, self._pieces(len(self.levels) - self.tail + 1),
                            tuple(e for _, e in self._tail_encoders()))
        job = ChunkJob(shape=(1, 1, 1), dtype=np.dtype("u1"), chunks=((1,), (1,), (1,)),
                       name=f"rdask-s3-tail-{uuid.uuid4().hex}",
                       make=lambda region, key: ComputeTask(region, key, _no_pixels))
        output = Collect(writer)
        run(job, output)
        if not output.parts:
            raise OutputError(f"cannot finish {self.main.url}: the smallest levels were not stored")
        return output.parts[0]

    def _run_level(self, run: RunChunks, k: int) -> dict[int, Part | Piece]:
        """Level ``k`` from the level-``k`` pieces; its tasks write level ``k+1``'s."""
        chunks, spec = self.levels[k - 1], self.spec
        pieces = self._pieces(k)
        shape = (spec.shape[0], sum(chunks[1]), sum(chunks[2]))
        writer: Any = PartWriter(replace(self.encoder, width=shape[2]), self.upload, self.numbers[k - 1], cog=True)
        if k < len(self.levels):
            writer = PieceTap(writer, S3Pieces.plan(self.upload, k + 1, chunks, spec.dtype))
        job = ChunkJob(shape=shape, dtype=spec.dtype, chunks=chunks, name=f"rdask-s3-level{k}-{uuid.uuid4().hex}",
                       make=lambda region, key: ComputeTask(region, key, FromPieces(pieces)))
        output = Collect(writer)
        run(job, output)
        return output.parts

    def _header(self, levels: list[dict[int, Part | Piece]], tail: Tail | None) -> tuple[OrderedParts, int]:
        """The parts in COG order, part 1 with the header: the COG's IFDs,
        pointing into the parts (the tail's tiles first in part 1); and the
        object's size."""
        ifds = self._ifds(levels, tail)
        pieces = [c for parts in levels for c in parts.values()]
        tiles = sum(len(ifd.tiles) for ifd in ifds)
        total = MIN_PART + (tail.piece.size if tail else 0) + sum(c.size for c in pieces)
        with tifffile.TiffFile(self.main.header_path) as tif:
            asked = tif.is_bigtiff  # BIGTIFF=YES stays, as in the local COG
        bigtiff = asked or total + tiles * 24 + 65536 * len(levels) >= 2**32
        start = layout_ifds(ifds, bigtiff)
        chunks = [self.spec.chunks, *self.levels]
        grids = [grid_of(parts, len(c[2]), -(-sum(c[2]) // self.encoder.tile))
                 for parts, c in zip(levels, chunks, strict=False)]
        lead = [Segment(tail.piece.key, 0, tail.piece.size)] if tail else []
        parts = plan_order(start, lead, segments(grids[::-1]))
        where = places(start, parts)
        spans: dict[str, list[tuple[str, int, int]]] = {}
        for part in parts:
            for seg in part.segments:
                spans.setdefault(seg.key, []).append((seg.key, seg.start, seg.stop))
        for ifd, level in zip(ifds, levels, strict=False):
            ifd.tile_offsets = [0] * len(ifd.tiles)
            for piece in level.values():
                for i, off in tile_offsets(piece, where, sorted(spans[piece.key])):  # type: ignore[arg-type]
                    ifd.tile_offsets[i] = off
        for ifd, layout in zip(ifds[len(levels):], tail.levels if tail else (), strict=True):
            ifd.tile_offsets = [where[(tail.piece.key, 0)] + off for _, off, _ in layout]  # type: ignore[union-attr]
        header = header_and_ifds(ifds, bigtiff)
        if len(header) != start:
            raise AssertionError("rdask bug: the header changed size after the layout")
        size = start + sum(seg.size for part in parts for seg in part.segments)
        return OrderedParts(self.upload, tuple(parts)).with_header(header), size

    def _ifds(self, levels: list[dict[int, Part | Piece]], tail: Tail | None) -> list[Any]:
        """Fresh IFDs (GDAL's) with their tiles' byte counts."""
        ifds = read_ifds([self.main.header_path, *self.level_paths])
        for ifd, parts in zip(ifds, levels, strict=False):
            ifd_tiles(ifd, parts)
        for ifd, layout in zip(ifds[len(levels):], tail.levels if tail else (), strict=True):
            ifd.tiles = [(0, n) for _, _, n in layout]
        return ifds

    def _pieces(self, k: int) -> S3Pieces:
        """The level-``k`` pieces (made by the main pass or level ``k-1``'s tasks)."""
        above = self.spec.chunks if k == 1 else self.levels[k - 2]
        return S3Pieces.plan(self.upload, k, above, self.spec.dtype)

    def _tail_encoders(self) -> list[tuple[tuple[int, int, int], TileEncoder]]:
        """``(shape, encoder)`` of each tail level, largest first."""
        out = []
        for chunks in self.levels[len(self.levels) - self.tail:]:
            shape = (self.spec.shape[0], sum(chunks[1]), sum(chunks[2]))
            out.append((shape, replace(self.encoder, width=shape[2])))
        return out

    def abort(self, *, keep_partial: bool = False) -> bool:
        """The main output's abort deletes every piece (unless kept for a resume)."""
        self._drop_level_headers()
        return self.main.abort(keep_partial=keep_partial)

    def _drop_level_headers(self) -> None:
        for path in self.level_paths:
            unlink_quietly(path)


def _no_pixels(region: Region) -> np.ndarray:
    """The tail job's chunk has no pixels, only the writer's bytes."""
    return np.zeros((1, 1, 1), dtype=np.uint8)


def ifd_tiles(ifd: Any, parts: dict[int, Part | Piece]) -> list[tuple[int, int]]:
    """Give ``ifd`` the byte counts of its tiles from ``parts``; return them."""
    tiles = [(0, 0)] * len(ifd.tiles)
    for part in parts.values():
        for i, _, n in part.tiles:
            tiles[i] = (0, n)
    if any(n == 0 for _, n in tiles):
        raise AssertionError("rdask bug: a COG level is missing tiles")
    ifd.tiles = tiles
    return tiles

