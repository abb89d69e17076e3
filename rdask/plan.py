"""Chunk plans, from metadata only.

A plan picks chunk shapes that are whole multiples of the file's GDAL block
shape (so no chunk decodes a block that another chunk also decodes) and of
the output tile size (so every output tile is written exactly once, by one
chunk). It reads no pixels and imports no I/O library.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: Default target size of one chunk. Small enough that an input and an
#: output chunk per thread add little to peak memory, large enough that
#: per-task overhead is negligible next to decoding the blocks in it.
DEFAULT_CHUNK_MB = 4.0

#: Default target on a dask.distributed cluster, where every task also costs
#: scheduler and client work (~ms) in the process that drives the job: fewer,
#: larger tasks (W4 of the benchmark: 16 MB chunks ran ~3% faster than 4 MB).
CLUSTER_CHUNK_MB = 16.0

#: When the common multiple of input block and output tile is this many
#: times the target, give up input alignment (reads then decode a few blocks
#: twice) rather than the output's write-once guarantee.
LCM_SLACK = 4.0


@dataclass(frozen=True)
class YX:
    """A ``(y, x)`` pair: rows first, like numpy, never ``(x, y)``."""

    y: int
    x: int


@dataclass(frozen=True)
class ChunkPlan:
    """How a ``(bands, height, width)`` raster is cut into chunks.

    Attributes
    ----------
    shape
        Raster size in pixels, ``(height, width)``.
    bands
        Number of bands (all in every chunk).
    block
        The input's GDAL block shape.
    chunk
        Nominal chunk shape; only the last row and column of chunks may be
        smaller.
    """

    shape: YX
    bands: int
    block: YX
    chunk: YX

    @property
    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Chunks in dask's notation, ``((bands,), ys, xs)``."""
        return ((self.bands,), _split(self.shape.y, self.chunk.y), _split(self.shape.x, self.chunk.x))

    @property
    def grid(self) -> YX:
        """Number of chunks along y and x."""
        return YX(math.ceil(self.shape.y / self.chunk.y), math.ceil(self.shape.x / self.chunk.x))

    def windows(self) -> Iterator[tuple[int, int, int, int]]:
        """Yield ``(row_off, col_off, height, width)`` of every chunk, row-major."""
        for r in range(0, self.shape.y, self.chunk.y):
            for c in range(0, self.shape.x, self.chunk.x):
                yield r, c, min(self.chunk.y, self.shape.y - r), min(self.chunk.x, self.shape.x - c)

    def describe(self) -> str:
        """One line for ``rdask info``."""
        g = self.grid
        return (
            f"{g.y} x {g.x} chunks of {self.chunk.y} x {self.chunk.x} px "
            f"({self.chunk.y // self.block.y} x {self.chunk.x // self.block.x} blocks of "
            f"{self.block.y} x {self.block.x})"
            if self.chunk.y % self.block.y == 0 and self.chunk.x % self.block.x == 0
            else f"{g.y} x {g.x} chunks of {self.chunk.y} x {self.chunk.x} px "
            f"(input blocks {self.block.y} x {self.block.x}, aligned to output tiles)"
        )


def plan_chunks(
    shape: tuple[int, int],
    bands: int,
    dtype: np.dtype | str,
    block: tuple[int, int],
    *,
    chunk_mb: float = DEFAULT_CHUNK_MB,
    tile: int | None = 512,
    chunks: tuple[int, int] | None = None,
) -> ChunkPlan:
    """Plan chunks for a raster.

    Parameters
    ----------
    shape
        ``(height, width)`` in pixels.
    bands
        Band count; every chunk holds all bands.
    dtype
        Pixel dtype, for the size target.
    block
        The input's block shape ``(block_y, block_x)``. A striped file has
        ``block_x == width``: it gets full-width row bands.
    chunk_mb
        Target chunk size in MB (all bands).
    tile
        Output tile size the chunks must also align to, or ``None``.
    chunks
        Explicit ``(y, x)`` chunk shape; it is rounded up to whole blocks.

    Returns
    -------
    ChunkPlan
    """
    height, width = (int(v) for v in shape)
    by, bx = (max(1, min(int(b), n)) for b, n in zip(block, (height, width), strict=True))
    if height < 1 or width < 1 or bands < 1:
        raise ValueError(f"cannot plan chunks for an empty raster {bands}x{height}x{width}")
    if chunk_mb <= 0:
        raise ValueError(f"chunk_mb must be positive, got {chunk_mb}")
    # Units each chunk side must be a multiple of.
    uy, ux = _unit(by, tile, height, chunk_mb), _unit(bx, tile, width, chunk_mb)
    if chunks is not None:
        cy, cx = (max(1, int(c)) for c in chunks)
        cy, cx = _round_up(cy, uy), _round_up(cx, ux)
    else:
        target_px = chunk_mb * 1e6 / (np.dtype(dtype).itemsize * bands)
        if bx >= width:
            # Striped: whole rows, as many as fit the target.
            cx = width
            cy = _round_up(max(1, int(target_px // width)), uy)
        else:
            side = math.sqrt(target_px)
            cx = _round_up(max(1, int(side)), ux)
            cy = _round_up(max(1, int(target_px // cx)), uy)
    cy, cx = min(cy, _round_up(height, uy)), min(cx, _round_up(width, ux))
    # A chunk larger than the raster is just the raster.
    cy, cx = min(cy, height) if cy >= height else cy, min(cx, width) if cx >= width else cx
    return ChunkPlan(YX(height, width), int(bands), YX(by, bx), YX(cy, cx))


def _unit(block: int, tile: int | None, extent: int, chunk_mb: float) -> int:
    """Smallest chunk side that is a multiple of the block and the tile."""
    if not tile or block >= extent:
        return block
    lcm = math.lcm(block, tile)
    # Keep input alignment unless it forces chunks far past the target.
    if lcm <= extent and lcm * lcm > LCM_SLACK * chunk_mb * 1e6:
        return tile
    return lcm


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def _split(n: int, c: int) -> tuple[int, ...]:
    full, rem = divmod(n, c)
    return (c,) * full + ((rem,) if rem else ())
