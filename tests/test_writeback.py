"""A durable output's bytes are sent to disk while it grows, in contiguous
windows, so the final fsync has little left to wait for."""

from __future__ import annotations

import os

import numpy as np
import pytest
from rasters import read, synthetic, write

import rdask
import rdask.outputs.tiff.gtiff as tilesink


@pytest.fixture
def calls(monkeypatch):
    seen = []
    real = tilesink.start_writeback

    def spy(fd, offset, nbytes):
        seen.append((offset, nbytes))
        real(fd, offset, nbytes)

    monkeypatch.setattr(tilesink, "start_writeback", spy)
    monkeypatch.setattr(tilesink, "WRITEBACK_BYTES", 64 * 1024)
    return seen


def test_writeback_windows_cover_the_file_once(tmp_path, calls):
    data = synthetic((3, 1200, 1100), "uint16", seed=4)
    src = write(tmp_path / "in.tif", data, block=(128, 128))
    dst = str(tmp_path / "out.tif")
    rdask.process(src, dst, "reverse-bands", workers=2, chunk_mb=0.3, blocksize=128)
    np.testing.assert_array_equal(read(dst), data[::-1])
    assert len(calls) > 5
    ranges = sorted(calls)
    for (a, an), (b, _) in zip(ranges, ranges[1:], strict=False):
        assert a + an == b  # back to back: every byte once
    assert all(n >= 64 * 1024 for _, n in ranges)
    assert ranges[-1][0] + ranges[-1][1] <= os.path.getsize(dst)


def test_cog_partial_is_not_written_back(tmp_path, calls):
    """A COG's partial file is re-laid out, not published: no writeback for it."""
    data = synthetic((1, 1000, 1000), "float32", seed=6)
    src = write(tmp_path / "in.tif", data, block=(128, 128))
    dst = str(tmp_path / "cog.tif")
    rdask.process(src, dst, "focal-mean", driver="COG", chunk_mb=0.3, blocksize=128)
    assert calls == []
    assert read(dst).shape == (1, 1000, 1000)


def test_start_writeback_on_a_real_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(1 << 20))
    fd = os.open(path, os.O_RDWR)
    try:
        assert tilesink.start_writeback(fd, 0, 1 << 20)  # Linux: the kernel took the request
        assert not tilesink.start_writeback(fd, -1, 10)  # and a bad one is refused, not ignored
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.stat().st_size == 1 << 20
