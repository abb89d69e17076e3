"""The write contract: what the scheduler knows of an output, and nothing more.

An output kind is a module with ``accepts(target, options)`` and
``open(spec) -> Output``. An :class:`Output` has two halves:

* ``writer``: a small picklable callable ``writer(block, region) -> result``
  that runs where the chunk was computed (a thread, or a cluster worker):
  it encodes the chunk and, when it can, appends or uploads it itself, and
  returns what the client needs to know (tile offsets, ETags, or the
  encoded bytes when it could not write them);
* the client half, in the process that runs the job: ``is_done(region)``
  (chunks an interrupted job already wrote) and ``record(region, result)``
  (write what the worker could not, journal). These three are all a
  scheduler sees (:class:`ChunkSink`); an output run at commit (an overview
  level, the parts of an upload) needs nothing more.
* the job's end, also in that process: ``commit(run)`` finishes everything
  but the publication (``run`` lets an output run further chunk jobs, e.g.
  overview levels) and returns ``publish``, a function of no arguments
  that makes the output visible in one step (a rename,
  ``CompleteMultipartUpload``, the root ``zarr.json``) and returns a
  :class:`Committed`: that step is the job's point of no return
  (:mod:`rdask.interrupts`). ``abort(keep_partial)`` removes what the job
  wrote, or keeps it for a resume (returning whether it did); it runs only
  once no task writes any more. ``partial`` names the partial output.

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

#: ``run(job, sink)``: how an output runs a chunk job of its own.
RunChunks = Callable[[ChunkJob, "ChunkSink"], int]


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


#: ``publish()``: the one step that makes a committed output visible.
Publish = Callable[[], Committed]


class ChunkSink(Protocol):
    """What a scheduler writes chunks into (see the module docstring)."""

    writer: Callable[[np.ndarray, Region], Any]

    def is_done(self, region: Region) -> bool: ...

    def record(self, region: Region, result: Any) -> None: ...


class Output(ChunkSink, Protocol):
    """An output of a job: a :class:`ChunkSink` with an end (see the module docstring)."""

    partial: str

    def commit(self, run: RunChunks) -> Publish: ...

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
