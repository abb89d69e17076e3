"""The same job on every scheduler gives the same bytes of pixels."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from cluster import dask_cluster
from rasters import read, synthetic, write

import rdask
from rdask.errors import SchedulerError
from rdask.schedule import parse_scheduler


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sched")
    data = synthetic((3, 700, 650), "uint16", nodata=0)
    mask = np.full((700, 650), 255, np.uint8)
    mask[100:200, 300:400] = 0
    src = write(tmp / "in.tif", data, block=(128, 128), nodata=0, mask=mask)
    return tmp, src, data, mask


def check(dst, data, mask):
    with rasterio.open(dst) as ds:
        assert np.array_equal(ds.read(), data[::-1])
        assert np.array_equal(ds.dataset_mask(), mask)
        assert ds.nodata == 0


@pytest.mark.parametrize("scheduler,workers", [("sync", None), ("threads", 1), ("threads", 4)])
def test_in_process_schedulers(job, scheduler, workers):
    tmp, src, data, mask = job
    dst = str(tmp / f"{scheduler}-{workers}.tif")
    rdask.process(src, dst, "reverse-bands", scheduler=scheduler, workers=workers, chunk_mb=0.2,
                  blocksize=128)
    check(dst, data, mask)


def test_local_cluster_two_processes(job):
    tmp, src, data, mask = job
    dst = str(tmp / "local.tif")
    rdask.process(src, dst, "reverse-bands", scheduler="local:2", chunk_mb=0.2, blocksize=128)
    check(dst, data, mask)


def test_client_passed_in(job):
    from distributed import Client, LocalCluster

    tmp, src, data, mask = job
    dst = str(tmp / "client.tif")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as lc, \
            Client(lc) as client:
        rdask.process(src, dst, "focal-mean", kernel_args={"radius": 2}, scheduler=client,
                      chunk_mb=0.2, blocksize=128)
    expected = rdask.get_kernel("focal-mean")(data, nodata=0.0, radius=2)
    assert np.array_equal(read(dst), expected, equal_nan=True)


def test_real_cluster_separate_processes(job, tmp_path):
    tmp, src, data, mask = job
    with dask_cluster(tmp_path, n_workers=2) as (address, _):
        dst = str(tmp / "cluster.tif")
        rdask.process(src, dst, "reverse-bands", scheduler=address, chunk_mb=0.2, blocksize=128)
        check(dst, data, mask)
        dst2 = str(tmp / "cluster-halo.tif")
        rdask.process(src, dst2, "focal-mean", kernel_args={"radius": 1}, scheduler=address,
                      chunk_mb=0.2, blocksize=128)
    expected = rdask.get_kernel("focal-mean")(data, nodata=0.0, radius=1)
    assert np.array_equal(read(dst2), expected, equal_nan=True)


def test_unreachable_scheduler_is_one_clear_error(job):
    tmp, src, *_ = job
    with pytest.raises(SchedulerError, match="cannot reach dask scheduler tcp://127.0.0.1:9"):
        rdask.process(src, str(tmp / "never.tif"), "reverse-bands", scheduler="tcp://127.0.0.1:9")
    assert not os.path.exists(tmp / "never.tif")


@pytest.mark.parametrize("bad", ["bogus", "local:x", ""])
def test_bad_scheduler_names(bad):
    with pytest.raises(SchedulerError):
        parse_scheduler(bad)


def _faults_reusing_a_buffer() -> int:
    """Minor page faults of allocating, touching and freeing 16 MB five times."""
    import resource

    def touch() -> None:
        # bytearray: plain malloc and memset (numpy's allocator may ask for huge pages)
        buf = bytearray(16 * 2**20)
        del buf

    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        touch()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_cluster_workers_get_rdasks_allocator_settings(job, tmp_path, monkeypatch):
    """`dask worker`'s nanny makes glibc map and unmap every chunk-sized
    buffer (MALLOC_TRIM_THRESHOLD_=65536): each one faults all its pages in.
    A job on the cluster gives its workers rdask's settings, so a freed
    buffer is reused without faulting."""
    from distributed import Client

    tmp, src, data, mask = job
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__))  # workers import this module
    with dask_cluster(tmp_path, n_workers=1, nanny=True) as (address, _), Client(address) as client:
        before = list(client.run(_faults_reusing_a_buffer).values())
        dst = str(tmp / "tuned.tif")
        rdask.process(src, dst, "reverse-bands", scheduler=address, chunk_mb=0.2, blocksize=128)
        check(dst, data, mask)
        after = list(client.run(_faults_reusing_a_buffer).values())
    pages = 5 * 16 * 2**20 // 4096
    assert before[0] > 0.9 * pages  # every buffer faulted in afresh
    assert after[0] < 0.05 * pages  # reused


def test_local_cluster_workers_reuse_freed_chunk_memory(monkeypatch):
    """``local:N`` workers get rdask's allocator settings from the same
    plugin as any cluster's (not through this process's environment)."""
    from rdask.schedule import open_runner

    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__))  # workers import this module
    with open_runner("local:2") as runner:
        after = list(runner.client.run(_faults_reusing_a_buffer).values())
    pages = 5 * 16 * 2**20 // 4096
    assert len(after) == 2
    assert max(after) < 0.05 * pages  # reused, not faulted in afresh
