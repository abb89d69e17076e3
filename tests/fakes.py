"""A fake source and a fake output: the read and write contracts with no
GDAL behind them, to test the scheduler and the pipeline on their own.

:class:`ArraySource` is a numpy array read as a source (rdask's read
contract, :class:`rdask.io.base.Source`); :class:`MemoryOutput` keeps what
it is given in memory (rdask's write contract,
:class:`rdask.outputs.base.Output`). Their writer is picklable (a cluster's
workers run it) and hands the chunk back, so the client records every
pixel; both count what happens to them, so tests can assert every chunk
was written exactly once, and what an abort or a resume did.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dask.base import tokenize

from rdask.io.base import SourceArray
from rdask.outputs.base import Committed


@dataclass(frozen=True, eq=False)
class ArraySource(SourceArray):
    """A ``(bands, y, x)`` numpy array read as a source."""

    data: np.ndarray
    reads: list = field(default_factory=list, compare=False)  # (y0, y1, x0, x1) of each read

    @property
    def count(self) -> int:
        return self.data.shape[0]

    @property
    def height(self) -> int:
        return self.data.shape[1]

    @property
    def width(self) -> int:
        return self.data.shape[2]

    @property
    def dtype(self) -> str:
        return str(self.data.dtype)

    files: tuple = ()
    per_dataset_mask: bool = False
    gdal_options: tuple = ()

    def __dask_tokenize__(self) -> str:
        return tokenize(self.data)

    def env(self) -> contextlib.nullcontext:
        return contextlib.nullcontext()

    def read(self, y0: int, y1: int, x0: int, x1: int, *, bands: tuple[int, int] | None = None) -> np.ndarray:
        self.reads.append((y0, y1, x0, x1))
        b0, b1 = bands or (0, self.count)
        return self.data[b0:b1, y0:y1, x0:x1].copy()


@dataclass(frozen=True)
class HandBack:
    """The fake output's writer: the chunk itself (what the client records)."""

    def __call__(self, block: np.ndarray, region: tuple[slice, slice, slice]) -> np.ndarray:
        return block


class MemoryOutput:
    """An output kept in memory: a canvas, the regions written (each must be
    new), and what the job's end did. ``kept`` plays a resumable partial
    output: regions an earlier run wrote, which ``is_done`` reports."""

    partial = "<memory>"

    def __init__(self, shape: tuple[int, int, int], dtype: Any, kept: dict | None = None) -> None:
        self.writer = HandBack()
        self.canvas = np.zeros(shape, dtype=dtype)
        self.written: dict[tuple[int, int], int] = {}
        self.kept = dict(kept or {})
        self.lock = threading.Lock()
        self.committed = self.published = False
        self.aborted: bool | None = None  # keep_partial of the abort, once aborted

    def is_done(self, region: tuple[slice, slice, slice]) -> bool:
        return (region[1].start, region[2].start) in self.kept

    def record(self, region: tuple[slice, slice, slice], result: np.ndarray) -> None:
        key = (region[1].start, region[2].start)
        with self.lock:
            assert key not in self.written and key not in self.kept, f"chunk {key} written twice"
            self.written[key] = self.written.get(key, 0) + 1
            self.canvas[region] = result

    def commit(self, run: Any) -> Any:
        self.committed = True

        def publish() -> Committed:
            self.published = True
            return Committed(self.partial, int(self.canvas.nbytes))

        return publish

    def abort(self, *, keep_partial: bool = False) -> bool:
        self.aborted = keep_partial
        return keep_partial


# -- as a registered output kind (what a test adds to rdask.outputs.KINDS) ----------

#: The outputs the kind opened, by target, for the test to look at.
OPENED: dict[str, MemoryOutput] = {}
#: Partial outputs to resume, by target (``kept`` of the next open).
PARTIALS: dict[str, dict] = {}


def accepts(target: str, options: Any) -> bool:
    return target.startswith("memory://")


def open(spec: Any) -> MemoryOutput:  # noqa: A001 - the output kinds' name
    kept = PARTIALS.pop(spec.target, None) if spec.options.resume else None
    out = OPENED[spec.target] = MemoryOutput(spec.shape, spec.dtype, kept)
    return out


def recipe_of(data: np.ndarray, *, chunk: int, steps: tuple = ()) -> Any:
    """A recipe over ``data`` (an :class:`ArraySource`) in ``chunk`` x ``chunk`` chunks."""
    from affine import Affine

    from rdask.meta import BandMeta, RasterMeta
    from rdask.plan import plan_chunks
    from rdask.recipe import Recipe

    source = ArraySource(data)
    meta = RasterMeta(None, Affine.identity(), bands=tuple(BandMeta() for _ in range(data.shape[0])))
    plan = plan_chunks(data.shape[1:], data.shape[0], data.dtype, (chunk, chunk), tile=None,
                       chunks=(chunk, chunk))
    return Recipe(source, plan, (chunk, chunk), meta, data.dtype, steps, name=f"fake-{tokenize(data)}")
