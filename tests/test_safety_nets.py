"""The safety nets around a job's target, each made to catch something.

* A second job on a target another job is writing is refused (the
  journal's lock), and the first completes unharmed.
* A resume whose journal is unreadable, or whose partial Zarr store is not
  the one the job would make, is refused in one line, before any work.
"""

from __future__ import annotations

import json
import os

import cli
import numpy as np
import pytest
from faultutil import partial_files
from pausing import Held
from rasters import read, synthetic, write

SHAPE = (2, 384, 256)
BLOCK = 128


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    data = synthetic(SHAPE, "uint16", seed=17)
    return write(d / "in.tif", data, block=(BLOCK, BLOCK)), data


def job(src, out, *extra) -> list:
    return ["run", "reverse-bands", src, out, "-j", "2", "--blocksize", BLOCK, "--chunk-mb", "0.05",
            "--no-progress", *extra]


@pytest.mark.parametrize("name", ["out.tif", "out.zarr"])
def test_a_second_job_on_a_target_being_written_is_refused(tmp_path, src, name):
    path, data = src
    out = tmp_path / "out" / name
    out.parent.mkdir()
    first = Held(tmp_path, ("commit",)).start(*job(path, out))
    first.reached("commit")
    second = cli.run(*job(path, out))
    line = cli.one_line_error(second, "another rdask job is writing", str(out))
    assert "Traceback" not in line
    first.go("commit")
    code, err = first.finish()
    assert code == 0, err
    got = read(out) if name.endswith(".tif") else _zarr_pixels(out)
    assert np.array_equal(got, data[::-1])


def _zarr_pixels(path) -> np.ndarray:
    import rdask

    return rdask.open_raster(str(path)).values


def interrupted_with_resume(tmp_path, path, out) -> None:
    """Leave a resumable partial output of the job at ``out`` (SIGTERM at its last chunk)."""
    import signal

    held = Held(tmp_path, ("chunk:256:128",)).start(*job(path, out, "--resume"))
    held.reached("chunk:256:128")
    held.proc.send_signal(signal.SIGTERM)
    held.go("chunk:256:128")
    code, err = held.finish()
    assert code == 130 and "partial output kept for --resume" in err, err


@pytest.mark.parametrize("name", ["out.tif", "out.zarr"])
def test_a_resume_refuses_an_unreadable_journal(tmp_path, src, name):
    path, _ = src
    out = tmp_path / "out" / name
    out.parent.mkdir()
    interrupted_with_resume(tmp_path, path, out)
    partial, journal = partial_files(out)
    assert partial.exists() and journal.exists()
    journal.write_bytes(b"\x00\xffnot a journal\n")
    kept = sorted(os.listdir(out.parent))
    proc = cli.run(*job(path, out, "--resume"))
    cli.one_line_error(proc, f"cannot resume {out}", "journal", "unreadable")
    assert sorted(os.listdir(out.parent)) == kept  # nothing removed, nothing published
    assert cli.run(*job(path, out)).returncode == 0  # without --resume it starts over


def test_a_resume_refuses_a_partial_zarr_store_of_another_shape(tmp_path, src):
    path, _ = src
    out = tmp_path / "out" / "out.zarr"
    out.parent.mkdir()
    interrupted_with_resume(tmp_path, path, out)
    partial, _ = partial_files(out)
    meta_path = partial / "band_data" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [meta["shape"][0], meta["shape"][1] + 1, meta["shape"][2]]
    meta_path.write_text(json.dumps(meta))
    proc = cli.run(*job(path, out, "--resume"))
    cli.one_line_error(proc, f"cannot resume {out}", "another shape, chunking or dtype")
    assert not out.exists()


def test_an_s3_resume_refuses_an_unreadable_parts_journal(tmp_path, s3):
    """The same for an S3 GeoTIFF whose parts the tasks upload (6 MiB of noise)."""
    import signal

    from servers import BUCKET

    from rdask.outputs.staging import s3_staging_path

    noise = np.random.default_rng(5).integers(0, 60000, (3, 1024, 1024), dtype=np.uint16)
    path = write(tmp_path / "noise.tif", noise, block=(BLOCK, BLOCK))
    url = f"s3://{BUCKET}/out.tif"
    held = Held(tmp_path, ("chunk:896:896",)).start(*job(path, url, "--resume"))
    held.reached("chunk:896:896")
    held.proc.send_signal(signal.SIGTERM)
    held.go("chunk:896:896")
    code, err = held.finish()
    assert code == 130 and "partial output kept for --resume" in err, err
    journal = s3_staging_path(url) + ".rdask-parts"
    with open(journal, "wb") as fh:
        fh.write(b"\x00\xffnot a journal\n")
    proc = cli.run(*job(path, url, "--resume"))
    cli.one_line_error(proc, f"cannot resume {url}", "journal", "unreadable")
    assert cli.run(*job(path, url)).returncode == 0  # without --resume it starts over
