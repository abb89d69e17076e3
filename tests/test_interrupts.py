"""SIGINT and SIGTERM at every phase of a job, and aborts racing the tasks
still writing, for every output kind.

Each job is held at a known phase by a pause point (``rdask.pauses``: the
job creates ``<point>.reached`` and waits for ``<point>.go``); the test
waits for that file, sends the signal, then lets the job go on. No sleeps:
the signal arrives while the job is exactly where the test says.

What must hold: until the publication, SIGINT (where not ignored) and
SIGTERM end in exit 130 with nothing published and nothing left behind (no
partial file, journal, hidden S3 piece, multipart upload, Zarr key or
staged file), or, with ``--resume``, the partial output kept and completed
by the next run; after the publication the job completes (exit 0). A job
started with SIGINT ignored keeps ignoring it.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import cli
import numpy as np
import pytest
import rasterio
from pausing import Held
from rasters import read, synthetic, write
from servers import BUCKET

SHAPE = (2, 512, 384)  # 4 x 3 chunks of 128 x 128 (2 x 2 of 256 x 256 in a mosaic)
BIG = (3, 1024, 1024)  # 6 MiB of noise: S3 GeoTIFFs and COGs upload parts
BLOCK = 128
FIRST = "chunk:0:0"

POISONED = '''
import numba
import rdask


@rdask.kernel()
@numba.njit(nogil=True)
def poisoned(block):
    """reverse-bands, except that a block holding 65535 raises."""
    for b in range(block.shape[0]):
        for i in range(block.shape[1]):
            for j in range(block.shape[2]):
                if block[b, i, j] == 65535:
                    raise ValueError("poisoned pixel")
    return block[::-1].copy()
'''

#: Output kinds: (name, target under the output directory or in the bucket, extra options).
KINDS = {
    "gtiff": ("out.tif", ()),
    "cog": ("out.tif", ("--driver", "COG")),
    "zarr": ("out.zarr", ()),
    "mosaic": ("out", ("--tile-size", "256")),
    "s3-tif": ("s3://out.tif", ()),
    "s3-cog": ("s3://out.tif", ("--driver", "COG")),
    "s3-zarr": ("s3://out.zarr", ()),
    "s3-staged": ("s3://staged.tif", ()),  # under 5 MiB: built locally, uploaded whole
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """``small.tif`` and ``big.tif`` (S3 GeoTIFFs and COGs need 5 MiB for
    parts), and each ``poisoned-`` with 65535 in the first row's last chunk."""
    d = tmp_path_factory.mktemp("interrupt-inputs")
    small = synthetic(SHAPE, "uint16", seed=11)
    big = np.random.default_rng(5).integers(0, 60000, BIG, dtype=np.uint16)
    for name, data in (("small", small), ("big", big)):
        write(d / f"{name}.tif", data, block=(BLOCK, BLOCK))
        bad = data.copy()
        bad[0, 10, -4] = 65535
        write(d / f"poisoned-{name}.tif", bad, block=(BLOCK, BLOCK))
    (d / "kernels.py").write_text(POISONED)
    return d


def big(kind: str) -> bool:
    return kind in ("s3-tif", "s3-cog")


def source_for(kind: str, inputs: Path, prefix: str = "") -> Path:
    return inputs / f"{prefix}{'big' if big(kind) else 'small'}.tif"


def last_point(kind: str) -> str:
    """The pause point of the job's last chunk."""
    _, height, width = BIG if big(kind) else SHAPE
    step = 256 if kind == "mosaic" else BLOCK
    return f"chunk:{(height - 1) // step * step}:{(width - 1) // step * step}"


def target_of(kind: str, out_dir: Path) -> str:
    name, _ = KINDS[kind]
    return f"s3://{BUCKET}/{name[5:]}" if name.startswith("s3://") else str(out_dir / name)


def job_args(kind: str, src: Path, target: str, *extra) -> list:
    return ["run", "reverse-bands", src, target, "-j", "2", "--blocksize", BLOCK, "--chunk-mb", "0.05",
            "--no-progress", *KINDS[kind][1], *extra]


def leftovers(out_dir: Path, client) -> list[str]:
    """What a job left: files beside its target, S3 objects, multipart
    uploads, and files staged under $TMPDIR."""
    found = [f"local {p}" for p in sorted(os.listdir(out_dir))]
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        found += [f"object {o['Key']}" for o in page.get("Contents", [])]
    found += [f"upload {u['Key']}" for u in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    staging = Path(tempfile.gettempdir())
    found += [f"staged {p.relative_to(staging)}" for p in staging.rglob("*") if p.is_file()]
    return found


def published(kind: str, target: str, tmp_path: Path, client) -> np.ndarray:
    """The pixels of a published output: downloaded, or read through the
    Zarr store (zarr-python) or the mosaic's VRT."""
    if kind.startswith("s3-") and kind != "s3-zarr":
        local = tmp_path / "downloaded.tif"
        client.download_file(BUCKET, target.split("/", 3)[3], str(local))
        return read(local)
    if kind.endswith("zarr"):
        import rdask

        return rdask.open_raster(target).values
    if kind == "mosaic":
        with rasterio.open(os.path.join(target, "index.vrt")) as ds:
            return ds.read()
    return read(target)


@pytest.fixture
def where(tmp_path, s3):
    """The output directory and an S3 client of the empty bucket."""
    out = tmp_path / "out-dir"
    out.mkdir()
    return out, s3.client()


# -- signals before the line ---------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", [FIRST, "last", "commit", "publish"])
def test_signal_before_publication_publishes_nothing_and_leaves_nothing(tmp_path, where, inputs, sig, point):
    out, client = where
    kind = "gtiff"
    point = last_point(kind) if point == "last" else point
    held = Held(tmp_path, (point,)).start(*job_args(kind, source_for(kind, inputs), target_of(kind, out)))
    held.reached(point)
    held.proc.send_signal(sig)
    held.go(point)
    code, err = held.finish()
    assert code == 130, err
    assert cli.one_line(err) == "rdask: interrupted"
    assert leftovers(out, client) == []


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "gtiff"])
@pytest.mark.parametrize("point", ["last", "commit", "publish"])
def test_every_output_kind_stops_cleanly_at_every_phase(tmp_path, where, inputs, kind, point):
    out, client = where
    point = last_point(kind) if point == "last" else point
    held = Held(tmp_path, (point,)).start(*job_args(kind, source_for(kind, inputs), target_of(kind, out)))
    held.reached(point)
    held.proc.send_signal(signal.SIGINT)
    held.go(point)
    code, err = held.finish()
    assert code == 130, err
    assert leftovers(out, client) == []


@pytest.mark.parametrize("kind", ["gtiff", "zarr", "s3-tif", "s3-zarr"])
def test_interrupted_with_resume_keeps_the_partial_and_the_next_run_completes(tmp_path, where, inputs, kind):
    out, client = where
    src = source_for(kind, inputs)
    target = target_of(kind, out)
    point = last_point(kind)
    held = Held(tmp_path, (point,)).start(*job_args(kind, src, target, "--resume"))
    held.reached(point)
    held.proc.send_signal(signal.SIGTERM)
    held.go(point)
    code, err = held.finish()
    assert code == 130, err
    assert "partial output kept for --resume" in cli.one_line(err)
    assert leftovers(out, client)  # the partial output, for the next run
    proc = cli.run(*job_args(kind, src, target, "--resume"))
    assert proc.returncode == 0, proc.stderr
    assert "of them resumed" in proc.stderr
    assert np.array_equal(published(kind, target, tmp_path, client), read(src)[::-1])


# -- after the line ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gtiff", "zarr", "s3-tif", "s3-zarr"])
def test_signal_after_the_point_of_no_return_lets_the_job_finish(tmp_path, where, inputs, kind):
    out, client = where
    src = source_for(kind, inputs)
    target = target_of(kind, out)
    held = Held(tmp_path, ("publishing",)).start(*job_args(kind, src, target))
    held.reached("publishing")
    held.proc.send_signal(signal.SIGINT)
    held.go("publishing")
    code, err = held.finish()
    assert code == 0, err
    assert np.array_equal(published(kind, target, tmp_path, client), read(src)[::-1])


# -- SIGINT ignored at start ------------------------------------------------------


def test_a_job_started_with_sigint_ignored_ignores_it_but_not_sigterm(tmp_path, where, inputs):
    out, client = where
    src = source_for("gtiff", inputs)
    target = target_of("gtiff", out)
    held = Held(tmp_path, ("commit",)).start(*job_args("gtiff", src, target), sigint_ignored=True)
    held.reached("commit")
    held.proc.send_signal(signal.SIGINT)
    held.go("commit")
    code, err = held.finish()
    assert code == 0, err
    assert np.array_equal(read(target), read(src)[::-1])
    os.unlink(target)
    (tmp_path / "again").mkdir()
    again = Held(tmp_path / "again", ("commit",)).start(*job_args("gtiff", src, target), sigint_ignored=True)
    again.reached("commit")
    again.proc.send_signal(signal.SIGTERM)
    again.go("commit")
    code, err = again.finish()
    assert code == 130, err
    assert leftovers(out, client) == []


# -- aborts racing the tasks still writing ------------------------------------------


# Every kind on threads; on a local cluster the four whose workers write
# to a store of their own (a file, Zarr keys, S3 parts, S3 pieces).
RACES = [(kind, "threads") for kind in KINDS] + [(kind, "local:2") for kind in
                                                 ("gtiff", "zarr", "s3-tif", "s3-cog")]


@pytest.mark.parametrize(("kind", "scheduler"), RACES, ids=[f"{k}-{s}" for k, s in RACES])
def test_an_error_abort_waits_for_the_chunk_still_writing(tmp_path, where, inputs, kind, scheduler):
    """The chunk right of the first raises while the first is held in its
    task; the abort is held too, then both go: the first chunk's write
    (append, piece, part, Zarr key, tile) happens during the abort, which
    must wait for it and only then remove everything."""
    out, client = where
    target = target_of(kind, out)
    held = Held(tmp_path, (FIRST, "abort"))
    args = ["run", f"{inputs / 'kernels.py'}:poisoned", source_for(kind, inputs, "poisoned-"), target, "-j", "2",
            "--blocksize", BLOCK, "--chunk-mb", "0.05", "--no-progress", "--scheduler", scheduler,
            *KINDS[kind][1]]
    held.start(*args)
    held.reached("abort")
    held.reached(FIRST)
    held.go(FIRST)
    held.go("abort")
    code, err = held.finish()
    assert code == 1, err
    assert "poisoned pixel" in cli.one_line(err)
    assert leftovers(out, client) == []
