"""Correctness checks of a contender's output against its input.

A check is any callable ``(input, output) -> list[str]`` returning the
problems found (empty when the output is right).  The factories here build
the checks the workloads use; they compare the rasters strip by strip (one
row of blocks at a time), so memory stays bounded whatever the raster size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.io import DatasetReader
from rasterio.windows import Window

#: ``(input, output) -> problems``; an empty list means correct.
Check = Callable[[Path, Path], list[str]]

#: Pass as ``compress`` to accept any compression.
ANY = "any"

#: Rows read per strip are rounded to the input block height, capped here.
_STRIP_BYTES = 64 * 2**20


def band_order(order: str, *, block: int | None = 512, compress: str | None = ANY) -> Check:
    """Check that the output holds the input's bands in a given order.

    Parameters
    ----------
    order
        ``"reversed"`` (output band ``i`` is input band ``n-1-i``) or
        ``"same"`` (a copy).
    block
        Required tile size of the output (square, tiled), or ``None`` for
        any layout.
    compress
        Required compression (case-insensitive), ``None`` for uncompressed
        or :data:`ANY`.

    Returns
    -------
    Check
    """
    if order not in ("reversed", "same"):
        raise ValueError(f"unknown band order {order!r}")

    def check(inp: Path, out: Path) -> list[str]:
        if not out.exists():
            return [f"no output at {out}"]
        with rasterio.open(inp) as src, rasterio.open(out) as dst:
            problems = layout_problems(dst, block, compress) + grid_problems(src, dst)
            if problems:
                return problems
            bands = list(range(src.count))
            return pixel_problems(src, dst, bands[::-1] if order == "reversed" else bands)

    check.__doc__ = f"bands {order}, tiled {block}, compress {compress}"
    return check


def layout_problems(dst: DatasetReader, block: int | None, compress: str | None) -> list[str]:
    """Differences between ``dst``'s tiling and compression and the required ones."""
    problems = []
    if block is not None:
        shapes = set(dst.block_shapes)
        if not dst.profile.get("tiled") or shapes != {(block, block)}:
            problems.append(f"output not tiled {block}x{block} (blocks {sorted(shapes)})")
    if compress != ANY:
        got = dst.profile.get("compress")
        got = got.lower() if isinstance(got, str) else got
        want = compress.lower() if isinstance(compress, str) else None
        if got != want:
            problems.append(f"output compression {got!r}, expected {want!r}")
    return problems


def grid_problems(src: DatasetReader, dst: DatasetReader) -> list[str]:
    """Differences in size, band count, dtype, CRS and transform."""
    problems = []
    for what in ("width", "height", "count"):
        if getattr(src, what) != getattr(dst, what):
            problems.append(f"{what} {getattr(dst, what)}, expected {getattr(src, what)}")
    if set(dst.dtypes) != set(src.dtypes):
        problems.append(f"dtypes {dst.dtypes}, expected {src.dtypes}")
    if dst.crs != src.crs:
        problems.append(f"CRS {dst.crs}, expected {src.crs}")
    if not dst.transform.almost_equals(src.transform):
        problems.append(f"transform {tuple(dst.transform)}, expected {tuple(src.transform)}")
    return problems


def pixel_problems(src: DatasetReader, dst: DatasetReader, order: Sequence[int]) -> list[str]:
    """First pixel where output band ``i`` differs from input band ``order[i]``.

    Reads both rasters in strips of whole input blocks rows, never whole.
    """
    for window in strips(src):
        got = dst.read(window=window)
        want = src.read(window=window)[list(order)]
        if not np.array_equal(got, want):
            b, y, x = (int(v) for v in np.argwhere(got != want)[0])
            return [
                f"band {b + 1} pixel (row {window.row_off + y}, col {x}): "
                f"got {got[b, y, x]}, expected {want[b, y, x]} "
                f"(input band {order[b] + 1})"
            ]
    return []


def strips(src: DatasetReader) -> list[Window]:
    """Full-width windows of whole block rows, each under ``_STRIP_BYTES`` if possible."""
    block_rows = src.block_shapes[0][0]
    row_bytes = src.width * src.count * np.dtype(src.dtypes[0]).itemsize
    rows = max(block_rows, _STRIP_BYTES // row_bytes // block_rows * block_rows)
    return [
        Window(0, row, src.width, min(rows, src.height - row)) for row in range(0, src.height, rows)
    ]
