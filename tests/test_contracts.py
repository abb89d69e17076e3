"""The scheduler and the pipeline on their own: a fake source and a fake
output (tests/fakes.py) in place of GDAL, on every scheduler kind.

What is held: every chunk is computed and recorded exactly once, in any
order, on threads, synchronously and on a cluster; a resumed job computes
only the chunks its partial output lacks; a failing chunk aborts the output
once every task has stopped, and nothing is published; the safety net
before the commit refuses a job whose chunks did not all arrive.
"""

from __future__ import annotations

import os

import fakes
import numba
import numpy as np
import pytest

from rdask.errors import OutputError
from rdask.kernels import kernel
from rdask.outputs.options import WriteOptions
from rdask.pipeline import JobInputs, write
from rdask.schedule import open_runner

SHAPE = (2, 96, 80)  # 6 x 5 chunks of 16 x 16


@pytest.fixture
def memory_kind(monkeypatch):
    """The fake output registered as an output kind, first in line."""
    from rdask import outputs

    monkeypatch.setattr(outputs, "KINDS", ("fakes", *outputs.KINDS))
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__))  # local:N workers import the fakes
    fakes.OPENED.clear()
    fakes.PARTIALS.clear()
    return fakes


def data() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 1000, SHAPE, dtype=np.int32)


def run(recipe, target: str, **kw):
    return write(recipe.job(), recipe.meta, target, WriteOptions.of(**kw.pop("options", {})),
                 JobInputs.of(recipe), **kw)


@pytest.mark.parametrize("scheduler", ["threads", "sync", "local:2"])
def test_every_chunk_is_recorded_exactly_once(memory_kind, scheduler):
    pixels = data()
    recipe = fakes.recipe_of(pixels, chunk=16)
    result = run(recipe, "memory://out", scheduler=scheduler, workers=2)
    out = fakes.OPENED["memory://out"]
    assert out.published and out.aborted is None
    assert sorted(out.written) == sorted((y, x) for y in range(0, 96, 16) for x in range(0, 80, 16))
    assert set(out.written.values()) == {1}
    assert np.array_equal(out.canvas, pixels)
    assert result.chunks == 30 and result.resumed == 0


def test_a_resumed_job_computes_only_what_is_missing(memory_kind):
    pixels = data()
    recipe = fakes.recipe_of(pixels, chunk=16)
    kept = {(0, 0): True, (16, 32): True, (80, 64): True}
    memory_kind.PARTIALS["memory://out"] = kept
    result = run(recipe, "memory://out", options={"resume": True}, workers=2)
    out = fakes.OPENED["memory://out"]
    assert set(out.written) == {(y, x) for y in range(0, 96, 16) for x in range(0, 80, 16)} - set(kept)
    assert result.resumed == 3 * 16 * 16
    reads = {(y0, x0) for y0, _, x0, _ in recipe.source.reads}
    assert not reads & set(kept)  # a kept chunk is never read again


@kernel()
@numba.njit(nogil=True)
def fails_on_a_marked_block(block):
    """Copies the block; raises on a block holding the marker 999999."""
    for b in range(block.shape[0]):
        for i in range(block.shape[1]):
            for j in range(block.shape[2]):
                if block[b, i, j] == 999999:
                    raise ValueError("marked block")
    return block.copy()


@pytest.mark.parametrize("scheduler", ["threads", "local:2"])
@pytest.mark.parametrize("resume", [False, True], ids=["plain", "resume"])
def test_a_failing_chunk_aborts_once_every_task_has_stopped(memory_kind, scheduler, resume):
    from rdask.recipe import extend

    pixels = data()
    pixels[0, 95, 70] = 999999
    recipe = extend(fakes.recipe_of(pixels, chunk=16), fails_on_a_marked_block)
    with pytest.raises(Exception, match="marked block") as err:
        run(recipe, "memory://out", scheduler=scheduler, workers=2, options={"resume": resume})
    out = fakes.OPENED["memory://out"]
    assert out.aborted is resume and not out.published
    if resume:
        assert "partial output kept for --resume: <memory>" in err.value.__notes__


def test_the_commit_refuses_a_job_whose_chunks_did_not_all_arrive(memory_kind, monkeypatch):
    """An output that reports a chunk done only once the job has started
    (a bug of its own) makes the runner skip it without counting it: the
    pixel count before the commit catches it, and nothing is published."""
    pixels = data()
    recipe = fakes.recipe_of(pixels, chunk=16)
    real = fakes.MemoryOutput.is_done
    asked: list = []

    def changes_its_mind(self, region):
        asked.append(region)
        return len(asked) > 30 and region[1].start == 48 and region[2].start == 48

    monkeypatch.setattr(fakes.MemoryOutput, "is_done", changes_its_mind)
    with pytest.raises(OutputError, match=r"memory://out: only 7424 of 7680 pixels were written"):
        run(recipe, "memory://out", workers=2)
    monkeypatch.setattr(fakes.MemoryOutput, "is_done", real)
    out = fakes.OPENED["memory://out"]
    assert not out.committed and not out.published and out.aborted is False


class Sink:
    """Only what a scheduler may use of an output: writer, is_done, record."""

    def __init__(self, output: fakes.MemoryOutput) -> None:
        self.writer, self.is_done, self.record = output.writer, output.is_done, output.record


def test_the_runner_writes_into_any_sink():
    pixels = data()
    recipe = fakes.recipe_of(pixels, chunk=16)
    memory = fakes.MemoryOutput(SHAPE, pixels.dtype)
    with open_runner("threads", 2) as runner:
        assert runner.run(recipe.job(), Sink(memory)) == 96 * 80
    assert np.array_equal(memory.canvas, pixels)
