"""GDAL's nearest overview pick, once for every output that builds
overview levels itself (COGs local and on S3, Zarr multiscales).

Level ``k`` is made from level ``k - 1`` (size ``n_prev``) at size
``n = ceil(n_prev / 2)``, and its pixel ``i`` is source pixel
``int(0.5 + i * n_prev / n)`` (GDAL's ``GDALResampleChunk_Near``), computed
in double precision like GDAL, so the pixels are GDAL's. A pick needs no
neighbours: each next-level pixel belongs to the one chunk holding the
pixel it picks, wherever the seams fall (:func:`piece_edges`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def picks(n_prev: int, n: int, start: int, stop: int) -> np.ndarray:
    """Source indices GDAL's nearest resampler picks for ``start:stop``."""
    ratio = n_prev / n
    idx = (0.5 + np.arange(start, stop, dtype=np.float64) * ratio).astype(np.int64)
    return np.minimum(idx, n_prev - 1)


def piece_edges(chunks: tuple) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(y_edges, x_edges, rows, cols)``: the chunk edges of a main pass
    planned as ``chunks``, and the same edges in the next level's rows and
    columns (a nearest pick needs no neighbours, so each next-level pixel
    belongs to the one chunk holding the pixel it picks)."""
    y_edges = tuple(int(v) for v in np.cumsum((0, *chunks[1])))
    x_edges = tuple(int(v) for v in np.cumsum((0, *chunks[2])))
    h, w = y_edges[-1], x_edges[-1]
    rows = np.searchsorted(picks(h, math.ceil(h / 2), 0, math.ceil(h / 2)), y_edges)
    cols = np.searchsorted(picks(w, math.ceil(w / 2), 0, math.ceil(w / 2)), x_edges)
    return y_edges, x_edges, tuple(int(v) for v in rows), tuple(int(v) for v in cols)


def pick_piece(pieces: Any, a: int, b: int, block: np.ndarray) -> np.ndarray | None:
    """The next level's piece ``(a, b)`` picked from chunk ``(a, b)``'s
    ``block`` (contiguous, in ``pieces.dtype``), or None when it is empty;
    ``pieces`` has :func:`piece_edges`'s four edge tuples and ``dtype``."""
    rows = picks(pieces.y_edges[-1], pieces.rows[-1], pieces.rows[a], pieces.rows[a + 1]) - pieces.y_edges[a]
    cols = picks(pieces.x_edges[-1], pieces.cols[-1], pieces.cols[b], pieces.cols[b + 1]) - pieces.x_edges[b]
    if not (len(rows) and len(cols)):
        return None
    return np.ascontiguousarray(take(block, rows, cols), dtype=pieces.dtype)


def take(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``block[:, rows][:, :, cols]``, as strided views where the picks allow."""
    return block[:, _index(rows)][:, :, _index(cols)]


def _index(idx: np.ndarray) -> slice | np.ndarray:
    """``idx`` as a slice when it is a plain stride (every even-sized level):
    a strided view costs nothing, a fancy-index gather about 25x more."""
    step = int(idx[1] - idx[0]) if len(idx) > 1 else 1
    if step > 0 and np.array_equal(idx, idx[0] + step * np.arange(len(idx))):
        return slice(int(idx[0]), int(idx[-1]) + 1, step)
    return idx



