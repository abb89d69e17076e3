"""``s3://bucket/key`` COGs whose tiles, overviews included, the tasks upload
as multipart parts: the S3 GeoTIFF output (:mod:`.s3parts`) plus
``nearest`` overview levels built where the tasks run (:mod:`.s3levels`).

* Part numbers: 1 is the header (every IFD, as a COG wants them first),
  then the levels from the smallest to the largest, then the full
  resolution, so the tile data is in COG order. Each level's chunk plan is
  known when the output opens, so its range of part numbers is reserved
  then (and the 10,000-part limit checked before any work).
* The main pass is the GeoTIFF output's, its writer wrapped in a
  :class:`~.s3levels.PieceTap` that stores each chunk's level-1 picks. On
  commit each large level is a chunk job run through ``run``: its chunks
  are read from the pieces, their tiles uploaded as parts, the next
  level's pieces written.
* The smallest levels (as many as fit in part 1's 5 MiB, at their worst
  encoded size) have no parts: the header task builds them in memory from
  their pieces and puts their tiles after the IFDs, where a COG keeps its
  smallest overviews, instead of padding a 5 MiB part for each.
* The IFDs are GDAL's: the main image's and one GeoTIFF per level are
  created sparse on the client, as the local COG's are, and
  :mod:`.coglayout` lays them out with the tile offsets from the parts. A
  level's tiles are in chunk order, so the ghost header claims
  ``BLOCK_ORDER=ROW_MAJOR`` only when every grid has a single chunk column.
* A resume redoes the levels (only the main pass is journaled); the pieces
  of the interrupted upload are kept for it, any other job's are deleted.

Other resamplings than ``nearest`` need GDAL's overview builder, on the
whole file: :mod:`.s3staged` writes them.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from typing import Any

from rdask.meta import RasterMeta
from rdask.outputs import s3staged
from rdask.outputs.base import Committed, OutputSpec, RunChunks
from rdask.outputs.coglayout import header_and_ifds, layout_ifds, overview_factors, read_ifds
from rdask.outputs.gdalsink import create_dataset, gdal_env
from rdask.outputs.options import WriteOptions
from rdask.outputs.parts import MIN_PART, Part, PartNumbers, PartWriter
from rdask.outputs.s3levels import (
    FromPieces,
    HeaderWithLevels,
    PieceTap,
    S3Pieces,
    delete_pieces,
    tail_bound,
    token,
)
from rdask.outputs.s3parts import (
    Collect,
    PartsOutput,
    part_starts,
    parts_encoder,
    run_header,
    summary,
)
from rdask.outputs.staging import unlink_quietly
from rdask.outputs.tiles import TileEncoder
from rdask.plan import plan_chunks
from rdask.recipe import ChunkJob, ComputeTask, Region


def accepts(target: str, options: WriteOptions) -> bool:
    """An S3 COG (:func:`open` hands what it cannot write to :mod:`.s3staged`)."""
    return target.startswith("s3://") and options.driver == "COG"


def open(spec: OutputSpec) -> Any:  # noqa: A001
    encoder = parts_encoder(spec)
    if encoder is None or spec.options.overview_resampling != "nearest":
        return s3staged.open(spec)
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
        plan = plan_chunks((height, width), bands, spec.dtype, (opts.blocksize, opts.blocksize),
                           chunk_mb=chunk_mb, tile=opts.blocksize)
        out.append(((bands,), *plan.chunks[1:]))
    return out


def _count(chunks: tuple[tuple[int, ...], ...]) -> int:
    return len(chunks[1]) * len(chunks[2])


def tail_count(spec: OutputSpec, encoder: TileEncoder, levels: list) -> int:
    """How many of the smallest levels fit in part 1 after the IFDs (an
    estimate of them: GDAL's tags, and 16 bytes per tile for the index)."""
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
            delete_pieces(upload, keep=token(upload.upload_id))  # left by killed jobs
            self._make_level_headers()
        except BaseException:
            self.abort(keep_partial=spec.options.resume)
            raise
        # Smallest level first: level k's range ends where level k-1's starts.
        self.numbers, first = [], 2 + level_parts
        for chunks in self.levels[: len(self.levels) - self.tail]:
            first -= _count(chunks)
            self.numbers.append(PartNumbers.of(chunks, first=first, last=self.main.numbers.last))
        self.writer: Any = self.main.writer
        if self.levels:
            self.writer = PieceTap(self.main.writer, S3Pieces.plan(upload, 1, spec.chunks, spec.dtype))

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

    def record(self, region: Region, result: Part) -> None:
        self.main.record(region, result)

    def commit(self, run: RunChunks) -> Committed:
        """Build the levels, then the header; complete the upload."""
        self.main.close()
        levels = [self._run_level(run, k) for k in range(1, len(self.levels) - self.tail + 1)]
        parts = [*self.main.parts.values(), *(p for level in levels for p in level.values())]
        writer = self._header([self.main.parts, *levels])
        part1 = run_header(run, writer)
        self.upload.complete([part1, *parts])
        delete_pieces(self.upload)
        self.main.finish()
        self._drop_level_headers()
        return Committed(self.main.url, summary(self.main.url, part1, parts))

    def _run_level(self, run: RunChunks, k: int) -> dict[int, Part]:
        """Level ``k`` from the level-``k`` pieces; its tasks write level ``k+1``'s."""
        chunks, spec = self.levels[k - 1], self.spec
        pieces = self._pieces(k)
        shape = (spec.shape[0], sum(chunks[1]), sum(chunks[2]))
        writer: Any = PartWriter(replace(self.encoder, width=shape[2]), self.upload, self.numbers[k - 1])
        if k < len(self.levels):
            writer = PieceTap(writer, S3Pieces.plan(self.upload, k + 1, chunks, spec.dtype))
        job = ChunkJob(shape=shape, dtype=spec.dtype, chunks=chunks, name=f"rdask-s3-level{k}-{uuid.uuid4().hex}",
                       make=lambda region, key: ComputeTask(region, key, FromPieces(pieces)))
        output = Collect(writer)
        run(job, output)
        return output.parts

    def _header(self, levels: list[dict[int, Part]]) -> HeaderWithLevels:
        """Part 1's writer: the COG's IFDs, pointing into the parts, and the
        tail levels, which its task builds (the part's size allows for them)."""
        ifds = read_ifds([self.main.header_path, *self.level_paths])
        for ifd, parts in zip(ifds, levels, strict=False):
            ifd_tiles(ifd, parts)
        tail = self._tail_encoders()
        bound = sum(tail_bound(s, e) for s, e in tail)
        total = MIN_PART + bound + sum(p.size for parts in levels for p in parts.values())
        bigtiff = total + sum(len(ifd.tiles) * 16 for ifd in ifds) + 65536 >= 2**32
        row_major = all(len(c[2]) == 1 for c in (self.spec.chunks, *self.levels))
        layout_ifds(ifds, bigtiff, row_major=row_major)
        size = max(MIN_PART, len(header_and_ifds(ifds, bigtiff, row_major=row_major)) + bound)
        starts = part_starts([p for parts in levels for p in parts.values()], size)
        for ifd, parts in zip(ifds, levels, strict=False):
            offsets = [0] * len(ifd.tiles)
            for part in parts.values():
                for i, off, _ in part.tiles:
                    offsets[i] = starts[part.number] + off
            ifd.tile_offsets = offsets
        first_tail = len(self.levels) - self.tail + 1
        pieces = self._pieces(first_tail) if self.tail else None
        return HeaderWithLevels(self.upload, tuple(ifds), bigtiff, row_major, size, pieces,
                                tuple(e for _, e in tail))

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
        self._drop_level_headers()
        if not keep_partial and self.main.upload is not None:
            delete_pieces(self.main.upload)
        return self.main.abort(keep_partial=keep_partial)

    def _drop_level_headers(self) -> None:
        for path in self.level_paths:
            unlink_quietly(path)


def ifd_tiles(ifd: Any, parts: dict[int, Part]) -> list[tuple[int, int]]:
    """Give ``ifd`` the byte counts of its tiles from ``parts``; return them."""
    tiles = [(0, 0)] * len(ifd.tiles)
    for part in parts.values():
        for i, _, n in part.tiles:
            tiles[i] = (0, n)
    if any(n == 0 for _, n in tiles):
        raise AssertionError("rdask bug: a COG level is missing tiles")
    ifd.tiles = tiles
    return tiles

