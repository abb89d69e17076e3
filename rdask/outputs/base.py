"""The write contract: what the scheduler knows of an output, and nothing more.

An output kind is a module with ``accepts(target, options)`` and
``open(spec) -> Output``. An :class:`Output` has two halves:

* ``writer``: a small picklable callable ``writer(block, region) -> result``
  that runs where the chunk was computed (a thread, or a cluster worker):
  it encodes the chunk and, when it can, appends or uploads it itself, and
  returns what the client needs to know (tile offsets, ETags, or the
  encoded bytes when it could not write them);
* the client half, in the process that runs the job: ``is_done(region)``
  (chunks an interrupted job already wrote), ``record(region, result)``
  (write what the worker could not, journal), ``commit(run)`` (finish and
  publish, returning a :class:`Committed`; ``run`` lets an output run
  further chunk jobs, e.g. overview levels) and ``abort(keep_partial)``
  (returns whether the partial output is there for a resume); ``partial``
  names that partial output.

The partial file, its journal, the lock and the final rename are one piece,
:class:`~rdask.outputs.staging.Staging`, that every file output reuses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rdask.meta import RasterMeta
from rdask.outputs.journal import JobId
from rdask.outputs.options import WriteOptions
from rdask.recipe import ChunkJob, Region

#: ``run(job, output)``: how an output runs a chunk job of its own.
RunChunks = Callable[[ChunkJob, "Output"], int]


@dataclass(frozen=True)
class Committed:
    """What a commit published: where, and how many bytes."""

    path: str
    bytes: int

    @classmethod
    def of(cls, path: str) -> Committed:
        """A published local file."""
        return cls(path, os.path.getsize(path))


@dataclass(frozen=True)
class OutputSpec:
    """Everything an output kind needs to open an output.

    ``mask`` is a source whose per-dataset mask the output carries (or
    None); ``threads`` is how many tasks compute chunks at once;
    ``shares_files(path)`` says whether every task sees ``path`` as the
    client does (so workers may append to it themselves).
    """

    target: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: tuple[tuple[int, ...], ...]
    meta: RasterMeta
    options: WriteOptions
    job: JobId
    threads: int = 1
    shares_files: Callable[[str], bool] = lambda path: True
    mask: Any = None
    gdal_options: tuple[tuple[str, Any], ...] = ()


class Output(Protocol):
    """The client half of an output (see the module docstring)."""

    writer: Callable[[np.ndarray, Region], Any]
    partial: str

    def is_done(self, region: Region) -> bool: ...

    def record(self, region: Region, result: Any) -> None: ...

    def commit(self, run: RunChunks) -> Committed: ...

    def abort(self, *, keep_partial: bool = False) -> bool: ...


class ChunkGrid:
    """Which chunks of a plan are written: one byte per chunk, so the
    bookkeeping of a job has a fixed size whatever the number of chunks."""

    def __init__(self, chunks: tuple[tuple[int, ...], ...]) -> None:
        self._rows = np.concatenate([[0], np.cumsum(chunks[1])]).astype(np.int64)
        self._cols = np.concatenate([[0], np.cumsum(chunks[2])]).astype(np.int64)
        self._done = np.zeros((len(chunks[1]), len(chunks[2])), dtype=bool)

    def index(self, y0: int, x0: int) -> tuple[int, int]:
        """The grid cell of the chunk starting at row ``y0``, column ``x0``."""
        i, j = int(np.searchsorted(self._rows, y0)), int(np.searchsorted(self._cols, x0))
        if i >= self._done.shape[0] or j >= self._done.shape[1] or self._rows[i] != y0 or self._cols[j] != x0:
            raise RuntimeError(f"rdask bug: no chunk starts at row {y0}, col {x0}")
        return i, j

    def claim(self, y0: int, x0: int) -> None:
        """Mark a chunk written; a chunk written twice is a bug."""
        i, j = self.index(y0, x0)
        if self._done[i, j]:
            raise RuntimeError(f"rdask bug: window at row {y0} col {x0} written twice")
        self._done[i, j] = True

    def __contains__(self, region: Region) -> bool:
        return bool(self._done[self.index(region[1].start, region[2].start)])
