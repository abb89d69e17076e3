"""How chunks reach the output on a cluster: tiles encoded on workers, appended
by workers on this machine or sent to this process, and kernels that travel
by reference so workers use numba's on-disk cache."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
from rasters import check_layout, read, synthetic, write

import rdask
from rdask.outputs.tiff.gtiff import append_tiles
from rdask.schedule import Runner, open_runner


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dwrite")
    data = synthetic((3, 900, 700), "uint16", nodata=0, seed=3)
    src = write(tmp / "in.tif", data, block=(128, 128), nodata=0)
    return tmp, src, data


@pytest.mark.parametrize("direct", [True, False], ids=["workers-append", "client-writes"])
def test_local_cluster_tile_paths(job, monkeypatch, direct):
    """Both hand-overs give the threaded scheduler's pixels and a sound layout."""
    tmp, src, data = job
    reference = str(tmp / f"threads-{direct}.tif")
    rdask.process(src, reference, "reverse-bands", scheduler="threads", workers=2, chunk_mb=0.3,
                  blocksize=128)
    calls = []
    real = Runner.shares_files

    def spy(self, path):
        calls.append(real(self, path))
        return direct

    monkeypatch.setattr(Runner, "shares_files", spy)
    dst = str(tmp / f"local-{direct}.tif")
    rdask.process(src, dst, "reverse-bands", scheduler="local:2", chunk_mb=0.3, blocksize=128)
    assert calls == [True]  # a local cluster's workers do share this machine's files
    assert np.array_equal(read(dst), data[::-1])
    assert np.array_equal(read(dst), read(reference))
    with rasterio.open(dst) as ds, rasterio.open(reference) as ref:
        assert ds.profile == ref.profile
    check_layout(dst)


def test_separate_process_workers_on_this_machine_append(job, tmp_path):
    """A scheduler address whose workers see the same file: they append directly."""
    from cluster import dask_cluster

    tmp, src, data = job
    with dask_cluster(tmp_path, n_workers=2) as (address, _):
        with open_runner(address) as runner:
            probe = tmp_path / "probe"
            probe.write_bytes(b"x")
            assert runner.shares_files(str(probe))
            assert not runner.shares_files(str(tmp_path / "absent"))
        dst = str(tmp / "address.tif")
        rdask.process(src, dst, "reverse-bands", scheduler=address, chunk_mb=0.3, blocksize=128)
    assert np.array_equal(read(dst), data[::-1])
    check_layout(dst)


def _append_many(path: str, seed: int, count: int, queue) -> None:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        tiles = [(seed * 10_000 + i * 10 + k, rng.bytes(int(rng.integers(1, 5000))))
                 for k in range(int(rng.integers(1, 4)))]
        for (index, offset, size), (_, data) in zip(append_tiles(path, tiles), tiles, strict=True):
            out.append((index, offset, size, data))
    queue.put(out)


def test_concurrent_appends_from_processes_never_interleave(tmp_path):
    """Four processes append at once; every tile reads back exactly where reported."""
    path = tmp_path / "tiles.bin"
    path.write_bytes(b"header")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_append_many, args=(str(path), s, 150, queue)) for s in range(4)]
    for p in procs:
        p.start()
    placed = [t for _ in procs for t in queue.get(timeout=120)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    blob = path.read_bytes()
    assert blob[:6] == b"header"
    extents = sorted((off, size) for _, off, size, _ in placed)
    assert extents[0][0] == 6
    for (a, an), (b, _) in zip(extents, extents[1:], strict=False):
        assert a + an == b  # back to back: no overlap, no gap
    assert extents[-1][0] + extents[-1][1] == len(blob)
    for _, off, size, data in placed:
        assert blob[off : off + size] == data


def test_append_to_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(rdask.OutputError, match="cannot write .*gone.tif"):
        append_tiles(str(tmp_path / "gone.tif"), [(0, b"abc")])


def test_builtin_kernel_unpickles_as_the_cached_module_kernel():
    """Another process gets the module's own dispatcher, with numba's disk cache."""
    k = rdask.get_kernel("reverse-bands")
    blob = pickle.dumps(k)
    code = textwrap.dedent("""
        import pickle, sys
        k = pickle.loads(sys.stdin.buffer.read())
        from rdask.kernels import bands
        print(k.func is bands.reverse_bands.func, type(k.func._cache).__name__, k.name)
    """)
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True)
    assert out.stdout.decode().split() == ["True", "FunctionCache", "reverse-bands"]
    assert pickle.loads(blob) == k


def test_file_kernel_runs_on_a_local_cluster(job, tmp_path):
    """Kernels from .py files are not importable by name: they travel by value."""
    tmp, src, data = job
    kfile = tmp_path / "mykernel.py"
    kfile.write_text(textwrap.dedent("""
        import numba, numpy as np

        @numba.njit(nogil=True)
        def double(block):
            return block * np.uint16(2)
    """))
    dst = str(tmp_path / "double.tif")
    rdask.process(src, dst, f"{kfile}:double", scheduler="local:2", chunk_mb=0.3, blocksize=128)
    assert np.array_equal(read(dst), data * np.uint16(2))


def test_local_cluster_workers_close_cleanly_with_quick_exit(job, tmp_path, caplog):
    """rdask's own cluster gives its workers QuickExit: once closed they leave
    before the interpreter's teardown (an exit handler registered earlier
    never runs), with status 0 and nothing for the nanny to report."""
    import logging

    tmp, src, data = job
    dst = str(tmp / "quick-exit.tif")
    marks = tmp_path / "marks"
    marks.mkdir()

    def mark_at_exit(path=str(marks)):
        import atexit
        import os

        atexit.register(lambda: open(os.path.join(path, str(os.getpid())), "w").close())
        return os.getpid()

    with caplog.at_level(logging.WARNING, logger="distributed"):
        with open_runner("local:2") as runner:
            plugins = runner.client.run(lambda dask_worker: sorted(dask_worker.plugins))
            pids = runner.client.run(mark_at_exit)
            processes = [n.process.process for n in runner.client.cluster.workers.values()]
            rdask.process(src, dst, "reverse-bands", scheduler=runner.client, chunk_mb=0.3, blocksize=128)
    assert [("rdask-quick-exit" in p) for p in plugins.values()] == [True, True]
    assert len(set(pids.values())) == 2
    assert [p.exitcode for p in processes] == [0, 0]
    assert os.listdir(marks) == []  # the teardown that would have run the handlers was skipped
    assert not [r for r in caplog.records if r.name.startswith("distributed.nanny")], caplog.text
    assert np.array_equal(read(dst), data[::-1])
