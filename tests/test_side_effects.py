"""rdask leaves its caller as it found it: environment, working directory
and signal handlers, after a job on every kind of scheduler.

A notebook that ran one ``local:N`` job must not start every later
subprocess with rdask's or distributed's worker settings
(``MALLOC_*``, ``OMP_NUM_THREADS``, ``PYTHONHASHSEED``), and a library
call must not keep handlers it installed for the job's duration.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from cluster import dask_cluster
from rasters import read, synthetic, write

import rdask


def process_state() -> dict:
    handlers = {}
    for sig in sorted(signal.valid_signals()):
        try:
            handlers[int(sig)] = signal.getsignal(sig)
        except (OSError, ValueError):
            continue
    return {"environ": dict(os.environ), "cwd": os.getcwd(), "handlers": handlers}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("side-effects")
    data = synthetic((2, 256, 256), "uint16", seed=2)
    return write(d / "in.tif", data, block=(128, 128)), data


@pytest.fixture(scope="module")
def tcp(tmp_path_factory):
    with dask_cluster(tmp_path_factory.mktemp("tcp-cluster"), n_workers=1) as (address, _):
        yield address


@pytest.mark.parametrize("scheduler", ["threads", "sync", "local:2", "tcp", "client"])
def test_a_job_leaves_environment_cwd_and_signal_handlers_unchanged(tmp_path, src, tcp, scheduler):
    path, data = src
    sched = tcp if scheduler in ("tcp", "client") else scheduler
    before = process_state()
    out = tmp_path / "out.tif"
    if scheduler == "client":
        from distributed import Client

        with Client(tcp) as client:
            rdask.process(path, out, "reverse-bands", scheduler=client, chunk_mb=0.05, blocksize=128)
    else:
        rdask.process(path, out, "reverse-bands", scheduler=sched, chunk_mb=0.05, blocksize=128)
    assert np.array_equal(read(out), data[::-1])
    after = process_state()
    assert after["environ"] == before["environ"]
    assert after["cwd"] == before["cwd"]
    assert after["handlers"] == before["handlers"]


def test_an_interrupted_job_restores_the_handlers_too(tmp_path, src):
    """The job's SIGINT/SIGTERM handlers go away even when the job ends in an error."""
    path, _ = src
    before = process_state()
    with pytest.raises(rdask.errors.KernelError):
        rdask.process(path, tmp_path / "out.tif", "slope", kernel_args={"no_such_argument": 3})
    assert process_state()["handlers"] == before["handlers"]
    assert os.listdir(tmp_path) == []


def gdal_config(name: str) -> str | None:
    """``name`` in GDAL's process-wide configuration (not the environment)."""
    import ctypes

    import rasterio._base

    get = ctypes.CDLL(rasterio._base.__file__).CPLGetGlobalConfigOption
    get.argtypes, get.restype = [ctypes.c_char_p, ctypes.c_char_p], ctypes.c_char_p
    value = get(name.encode(), None)
    return None if value is None else value.decode()


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_settings_from_the_environment_stay_in_the_environment(tmp_path, s3, scheduler):
    """A job on an ``s3://`` input passes the endpoint (read from the
    environment) to GDAL; afterwards GDAL's own configuration holds none of
    it, so a caller that points ``AWS_S3_ENDPOINT`` elsewhere is heard."""
    data = synthetic((1, 256, 256), "uint16", seed=4)
    # A key of its own: GDAL keeps what this process read of another test's
    # object under the same URL.
    key = f"{tmp_path.name}.tif"
    s3.client().upload_file(str(write(tmp_path / "in.tif", data, block=(128, 128))),
                            "rdask-test", key)
    names = ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING", "GDAL_HTTP_MAX_RETRY")
    before = {name: gdal_config(name) for name in names}
    rdask.process(f"s3://rdask-test/{key}", tmp_path / "out.tif", "reverse-bands",
                  scheduler=scheduler, chunk_mb=0.05, blocksize=128)
    assert np.array_equal(read(tmp_path / "out.tif"), data)
    assert {name: gdal_config(name) for name in names} == before
