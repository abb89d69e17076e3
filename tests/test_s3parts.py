"""S3 GeoTIFF outputs whose tasks upload their tiles as multipart parts
(rdask.outputs.s3.gtiff), against moto's real S3 server on 127.0.0.1.

Every job is compared with the local GeoTIFF output of the same job: same
pixels, same metadata, and a sound tile layout in the object. Faults are
real: a kernel that raises, a client SIGKILLed mid-job, an upload aborted
behind the journal's back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import tempfile

import cli
import numpy as np
import pytest
import rasterio
from coglayout_check import check_cog_layout, layouts
from faultutil import wait_until
from rasters import assert_same_raster, check_layout, read, synthetic, write
from servers import BUCKET, SECRET

import rdask
from rdask.cloud.multipart import MIN_PART
from rdask.errors import KernelError, OutputError, ResumeError
from rdask.outputs import kind_for
from rdask.outputs.options import WriteOptions
from rdask.outputs.staging import s3_staging_path

#: Uploaded-part lines the workers log (threads: this process's log): a
#: chunk's own part (tiles), part 1 (header) or a group of pieces (pieces).
PART_LOG = re.compile(r"part (\d+) uploaded: (\d+) bytes of (tiles|header|pieces) \+ (\d+) bytes of padding")
#: What the chunk tasks log: their tiles as a part, or as a piece.
CHUNK_LOG = re.compile(r"(part|piece) (\d+) (?:uploaded|stored): (\d+) bytes of tiles")

SENTINEL_KERNEL = '''
import numba
import rdask


@rdask.kernel()
@numba.njit(nogil=True)
def explode_on_sentinel(block):
    if block.max() == 65535:
        raise ValueError("boom")
    return block
'''


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """``small``: 6 MiB of uint16 whose 1 MB chunks compress far below 5 MiB
    (padded parts); ``big``: 24 MiB of noise whose 8 MB chunks stay above 5 MiB
    uncompressed; ``sentinel``: ``small`` with 65535 in its last rows."""
    root = tmp_path_factory.mktemp("s3parts-in")
    small = synthetic((3, 1024, 1024), "uint16", seed=5, nodata=0)
    write(root / "small.tif", small, block=(256, 256), nodata=0, descriptions=("r", "g", "b"),
          tags={"SENSOR": "synthetic"})
    big = np.random.default_rng(1).normal(0, 50, size=(3, 1024, 2048)).astype("float32")
    write(root / "big.tif", big, block=(256, 256), compress=None)
    sentinel = small.copy()
    sentinel[:, 1000:, :] = 65535
    write(root / "sentinel.tif", sentinel, block=(256, 256), nodata=0)
    (root / "kernels.py").write_text(SENTINEL_KERNEL)
    return root


def url(key="out.tif"):
    return f"s3://{BUCKET}/{key}"


def objects(client):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def uploads(client):
    return client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def download(s3, dst, key="out.tif"):
    s3.client().download_file(BUCKET, key, str(dst))
    return dst


def part_logs(caplog):
    """``{part number: (kind, data bytes, padding)}`` from the workers' debug lines."""
    out = {}
    for rec in caplog.records:
        m = PART_LOG.search(rec.getMessage())
        if m:
            out[int(m[1])] = (m[3], int(m[2]), int(m[4]))
    return out


def chunk_sizes(caplog):
    """The encoded sizes of the chunks the tasks wrote."""
    return [int(m[3]) for m in (CHUNK_LOG.search(r.getMessage()) for r in caplog.records) if m]


def chunk_logs(caplog):
    """``{part number: "part" or "piece"}`` of the chunks the tasks wrote."""
    out = {}
    for rec in caplog.records:
        m = CHUNK_LOG.search(rec.getMessage())
        if m:
            out[int(m[2])] = m[1]
    return out


def count_requests(monkeypatch):
    """Count the S3 operations of this process's boto3 clients (the threads'
    and the client's): ``{operation: count}``, filled as they go."""
    from rdask.cloud.s3 import clients

    counts: dict[str, int] = {}

    def count(model, **_):
        counts[model.name] = counts.get(model.name, 0) + 1

    class Counting(dict):
        def __setitem__(self, key, client):
            client.meta.events.register("before-call.s3", count)
            super().__setitem__(key, client)

    monkeypatch.setattr(clients(), "_clients", Counting())
    return counts


def journal_path(target):
    return s3_staging_path(target) + ".rdask-parts"


# -- 1. the object equals the local output -------------------------------------


def test_s3parts_is_chosen_for_what_it_encodes():
    gtiff = WriteOptions.of(driver="GTiff")
    assert kind_for(url(), gtiff).__name__ == "rdask.outputs.s3.gtiff"
    assert kind_for(url(), WriteOptions.of(driver="COG")).__name__ == "rdask.outputs.s3.cog"


@pytest.mark.parametrize("case", ["small-chunks-merged", "big-chunks", "big-chunks-deflate"])
def test_threads_give_the_local_output(case, s3, inputs, tmp_path, caplog):
    src, kw = {
        "small-chunks-merged": ("small.tif", dict(chunk_mb=1, compress="deflate")),
        "big-chunks": ("big.tif", dict(chunk_mb=8, compress="none")),
        "big-chunks-deflate": ("big.tif", dict(chunk_mb=8, compress="deflate")),
    }[case]
    local = tmp_path / "local.tif"
    rdask.process(str(inputs / src), str(local), "reverse-bands", workers=2, **kw)
    caplog.set_level(logging.DEBUG, logger="rdask")
    result = rdask.process(str(inputs / src), url(), "reverse-bands", workers=2, **kw)
    assert result.path == url()
    got = download(s3, tmp_path / "from-s3.tif")
    assert_same_raster(got, local)
    check_layout(str(got))
    assert result.bytes == os.path.getsize(got)
    parts, chunks = part_logs(caplog), chunk_logs(caplog)
    last = max(parts)
    assert parts[1][0] == "header" and len(chunks) == result.chunks
    # Every part but the last is >= 5 MiB; only part 1 may be padded.
    for number, (_, data, pad) in parts.items():
        assert data + pad >= MIN_PART or number == last, (number, data, pad)
        assert pad == 0 or number == 1
    if case == "small-chunks-merged":
        # Every chunk is a piece: part 1 takes them all (5.6 MB), no padding.
        assert set(chunks.values()) == {"piece"} and list(parts) == [1] and parts[1][2] == 0
        assert abs(result.bytes - os.path.getsize(local)) < 16384, (result.bytes, os.path.getsize(local))
    else:
        # The first chunk is a piece whatever its size: part 1 takes it, no
        # padding; the others are parts of their own.
        assert chunks.pop(2) == "piece" and set(chunks.values()) == {"part"}
        assert sorted(parts) == [1, *range(3, last + 1)] and parts[1][2] == 0
        assert all(data > MIN_PART for kind, data, _ in parts.values() if kind == "tiles")
        assert abs(result.bytes - os.path.getsize(local)) < 16384, (result.bytes, os.path.getsize(local))
    assert any("bytes of padding" in r.getMessage() and "parts" in r.getMessage() for r in caplog.records)
    assert objects(s3.client()) == ["out.tif"] and not uploads(s3.client())  # pieces deleted
    assert not [f for _, _, fs in os.walk(tempfile.gettempdir()) for f in fs]  # journal and header gone


def test_local_cluster_gives_the_local_output(s3, inputs, tmp_path):
    """Spawned worker processes upload the parts (and the header part) with
    credentials from their own environment."""
    src = str(inputs / "small.tif")
    local = tmp_path / "local.tif"
    rdask.process(src, str(local), "reverse-bands", chunk_mb=1, blocksize=128)
    result = rdask.process(src, url(), "reverse-bands", scheduler="local:2", chunk_mb=1, blocksize=128)
    assert result.chunks > 2
    got = download(s3, tmp_path / "from-s3.tif")
    assert_same_raster(got, local)
    check_layout(str(got))
    assert not uploads(s3.client())


def test_nothing_at_the_key_before_completion(s3, inputs, tmp_path):
    client = s3.client()
    seen = []

    def progress(done, total):
        # In the client, after each chunk is recorded: its part or piece is
        # uploaded, the object must not exist yet (the pieces are hidden).
        keys = objects(client)
        seen.append((keys, len(uploads(client))))
        assert all(k.startswith("out.tif.rdask-partial/") for k in keys)

    rdask.process(str(inputs / "small.tif"), url(), "reverse-bands", chunk_mb=1, progress=progress)
    assert len(seen) > 2 and all(n == 1 for _, n in seen), seen
    assert len(seen[-1][0]) == len(seen)  # a piece per chunk
    assert objects(client) == ["out.tif"] and not uploads(client)


@pytest.mark.parametrize(("scheduler", "name"), [("threads", "small"), ("local:2", "small"), ("threads", "big")])
def test_small_chunks_are_merged_without_padding(scheduler, name, s3, inputs, tmp_path, caplog, monkeypatch):
    """6 MiB (or 24 MiB: several groups) in 0.3 MB chunks (once a 115.7 MB
    object of padding): every chunk is a piece; part 1 and the groups take
    them, in tasks (on a cluster the client never reads a piece); the object
    is the local file's size."""
    from rdask.outputs.s3 import parts

    src = str(inputs / f"{name}.tif")
    kw = dict(chunk_mb=0.3, blocksize=128)
    local = tmp_path / "local.tif"
    rdask.process(src, str(local), "reverse-bands", **kw)
    counts = count_requests(monkeypatch)
    if scheduler == "local:2":
        def no_piece_here(upload, piece):
            raise AssertionError("the client read a piece")

        monkeypatch.setattr(parts, "get_piece", no_piece_here)  # the workers are other processes
    caplog.set_level(logging.DEBUG, logger="rdask")
    result = rdask.process(src, url(), "reverse-bands", scheduler=scheduler, workers=2, **kw)
    got = download(s3, tmp_path / "from-s3.tif")
    assert_same_raster(got, local)
    check_layout(str(got))
    print(f"\n{scheduler} {name}: object {result.bytes} bytes, local {os.path.getsize(local)} bytes, "
          f"{result.chunks} chunks, requests {dict(sorted(counts.items()))}")
    assert result.bytes == os.path.getsize(got)
    assert abs(result.bytes - os.path.getsize(local)) < 16384
    assert objects(s3.client()) == ["out.tif"] and not uploads(s3.client())
    if scheduler == "threads":
        assert set(chunk_logs(caplog).values()) == {"piece"} and len(chunk_logs(caplog)) == result.chunks
        parts = part_logs(caplog)
        assert parts[1][0] == "header" and all(kind == "pieces" for n, (kind, _, _) in parts.items() if n > 1)
        assert all(pad == 0 for _, _, pad in parts.values())
        assert len(parts) > (3 if name == "big" else 1)  # part 1 and groups
        # A PUT per piece; a GET per piece and an UploadPart per part, in the
        # commit's tasks; one LIST (and DELETE) of stale pieces at the start and at the end.
        assert counts["PutObject"] == counts["GetObject"] == result.chunks
        assert counts["UploadPart"] == len(parts) and counts["CompleteMultipartUpload"] == 1
    else:
        assert counts.get("GetObject", 0) == 0  # the client's own clients never read a piece


def test_mixed_chunks_give_parts_and_groups(s3, tmp_path, caplog):
    """A noisy half (chunks of 8 MB: parts of their own) and a constant half
    (pieces): both kinds, a sound layout, the local pixels, no padding."""
    data = np.random.default_rng(3).normal(0, 50, size=(3, 2048, 2048)).astype("float32")
    data[:, 1024:, :] = 7
    src = write(tmp_path / "mixed.tif", data, block=(256, 256), compress=None)
    kw = dict(chunk_mb=6, compress="deflate", workers=2)
    local = tmp_path / "local.tif"
    rdask.process(src, str(local), "reverse-bands", **kw)
    caplog.set_level(logging.DEBUG, logger="rdask")
    result = rdask.process(src, url(), "reverse-bands", **kw)
    chunks = chunk_logs(caplog)
    assert sorted(set(chunks.values())) == ["part", "piece"], chunks
    got = download(s3, tmp_path / "from-s3.tif")
    assert_same_raster(got, local)
    check_layout(str(got))
    print(f"\nmixed: object {result.bytes} bytes, local {os.path.getsize(local)} bytes, chunks {chunks}")
    assert abs(result.bytes - os.path.getsize(local)) < 16384
    assert all(pad == 0 for _, _, pad in part_logs(caplog).values())
    assert objects(s3.client()) == ["out.tif"] and not uploads(s3.client())


def _layout_is_sound(plan, parts):
    """Every chunk's bytes in the object: no overlap, part 1's pieces right
    after the header, the rest after part 1's padding."""
    starts = plan.starts()
    chunks = sorted([*plan.first, *parts, *(m for g in plan.groups for m in g)], key=lambda c: starts[c.number])
    at = plan.head
    for k, c in enumerate(chunks):
        if k == len(plan.first):
            at += plan.padding
        assert starts[c.number] == at, (c, starts[c.number], at)  # back to back
        at += c.size


def test_plan_parts_pads_only_part_1_and_only_when_small():
    """The grouping alone (no S3): groups of >= 5 MiB, the last part may be
    small, part 1 padded only when header and pieces stay under 5 MiB and a
    part follows."""
    from rdask.outputs.s3.parts import Part, Piece, plan_parts

    def pieces(numbers, size):
        return [Piece(n, f"k/{n}", size) for n in numbers]

    # All small, 3 MB in all: one part (header + every piece), no padding.
    plan = plan_parts(1000, pieces(range(2, 12), 300_000))
    assert len(plan.first) == 10 and not plan.groups and plan.padding == 0
    # A part of its own and 1 MB of pieces: part 1 is padded, once.
    big = Part(5, "e", 6 * MIN_PART)
    plan = plan_parts(1000, [big, *pieces([2, 3, 4], 300_000)])
    assert plan.padding == MIN_PART - 1000 - 900_000 and not plan.groups
    _layout_is_sound(plan, [big])
    # 62 pieces of 1 MB: part 1, groups of >= 5 MiB, the rest last (small).
    plan = plan_parts(1000, pieces(range(2, 64), 1_000_000))
    assert plan.padding == 0 and all(sum(p.size for p in g) >= MIN_PART for g in plan.groups[:-1])
    assert sum(p.size for p in plan.groups[-1]) < MIN_PART  # the last part: allowed
    numbers = [p.number for p in plan.first] + [p.number for g in plan.groups for p in g]
    assert numbers == list(range(2, 64))  # pieces stay in number order
    _layout_is_sound(plan, [])
    # A part numbered after the leftover: the leftover joins the last group instead.
    tail = Part(64, "e", 6 * MIN_PART)
    plan = plan_parts(1000, [*pieces(range(2, 64), 1_000_000), tail])
    assert all(sum(p.size for p in g) >= MIN_PART for g in plan.groups) and plan.padding == 0
    _layout_is_sound(plan, [tail])
    # A lead piece (a COG's smallest levels) comes first in part 1, right after the header.
    lead = Piece(0, "k/tail", 10)
    plan = plan_parts(1000, pieces([2, 3], 100), lead=[lead])
    assert plan.first[0] == lead and plan.starts()[0] == 1000


# -- 2. failures leave nothing; refusals come first -------------------------------


def test_kernel_error_mid_job_aborts_the_upload(s3, inputs, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="rdask")
    kernel = f"{inputs / 'kernels.py'}:explode_on_sentinel"
    with pytest.raises(KernelError, match="boom"):
        rdask.process(str(inputs / "sentinel.tif"), url(), kernel, chunk_mb=1, workers=1)
    assert "piece" in chunk_logs(caplog).values(), "some pieces were stored before the error"
    assert objects(s3.client()) == [] and not uploads(s3.client())  # no piece, no upload
    assert not os.path.exists(journal_path(url()))


def test_kernel_error_with_resume_keeps_the_upload(s3, inputs, tmp_path):
    kernel = f"{inputs / 'kernels.py'}:explode_on_sentinel"
    with pytest.raises(KernelError) as err:
        rdask.process(str(inputs / "sentinel.tif"), url(), kernel, chunk_mb=1, workers=1, resume=True)
    assert any("kept for --resume" in n for n in getattr(err.value, "__notes__", []))
    assert len(uploads(s3.client())) == 1
    assert all(k.startswith("out.tif.rdask-partial/") for k in objects(s3.client()))  # pieces kept
    with open(journal_path(url())) as fh:
        head = json.loads(fh.readline())
    assert head["upload"] == uploads(s3.client())[0]["UploadId"]
    # The next run without resume aborts it and starts over.
    rdask.process(str(inputs / "small.tif"), url(), "reverse-bands", chunk_mb=1)
    assert objects(s3.client()) == ["out.tif"] and not uploads(s3.client())


def test_too_many_parts_is_refused_before_any_work(s3, tmp_path):
    src = write(tmp_path / "many.tif", synthetic((1, 1600, 1600), "float64", seed=2), block=(16, 16))
    with pytest.raises(OutputError) as err:
        rdask.process(src, url(), "reverse-bands", blocksize=16, chunk_mb=0.000001)
    msg = str(err.value)
    assert "10000" in msg and "--chunk-mb" in msg and "\n" not in msg, msg
    assert objects(s3.client()) == [] and not uploads(s3.client())


def test_existing_object_needs_overwrite(s3, inputs, tmp_path):
    src = str(inputs / "small.tif")
    s3.client().put_object(Bucket=BUCKET, Key="out.tif", Body=b"old")
    with pytest.raises(OutputError, match="overwrite"):
        rdask.process(src, url(), "reverse-bands", chunk_mb=1)
    assert not uploads(s3.client())
    rdask.process(src, url(), "reverse-bands", chunk_mb=1, overwrite=True)
    assert np.array_equal(read(download(s3, tmp_path / "o.tif")), read(src)[::-1])


# -- 3. resume after the client is SIGKILLed --------------------------------------


def journal_records(journal) -> list:
    """The chunk records of a parts journal: its complete lines after the
    header (a SIGKILL can tear the last one, which rdask skips too)."""
    try:
        text = open(journal).read()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[1:-1]  # the header; after the last newline, a torn line or nothing
    return [json.loads(line) for line in lines]


def killed_run(inputs, target, *extra, after_parts=3):
    """``rdask run`` on 1 thread, SIGKILLed once ``after_parts`` chunks are
    journaled; returns the journal's chunk records."""
    journal = journal_path(target)
    proc = cli.start("run", "reverse-bands", inputs / "small.tif", target, "-j", "1", "--chunk-mb", "0.3",
                     "--resume", *extra)
    try:
        wait_until(lambda: len(journal_records(journal)) >= after_parts, f"{after_parts} journaled chunks",
                   proc=proc)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, err
    return journal_records(journal)


def test_resume_after_sigkill_uploads_only_missing_chunks(s3, inputs, tmp_path, caplog):
    client = s3.client()
    recorded = killed_run(inputs, url())
    assert len(uploads(client)) == 1 and "out.tif" not in objects(client)
    assert {r[7] for r in recorded} <= set(objects(client))  # the journaled pieces
    upload_id = uploads(client)[0]["UploadId"]
    listed = client.list_parts(Bucket=BUCKET, Key="out.tif", UploadId=upload_id).get("Parts", [])
    # 0.3 MB chunks are pieces (hidden objects), not parts: none is uploaded yet.
    assert listed == [] and len(recorded) >= 3 and all(len(r) == 8 for r in recorded)
    # A journaled piece S3 does not hold as journaled is never trusted: one
    # deleted behind rdask's back, one replaced by other bytes.
    client.delete_object(Bucket=BUCKET, Key=recorded[0][7])
    client.put_object(Bucket=BUCKET, Key=recorded[1][7], Body=b"not the tiles")

    caplog.set_level(logging.DEBUG, logger="rdask")
    result = rdask.process(str(inputs / "small.tif"), url(), "reverse-bands", workers=1, chunk_mb=0.3,
                           resume=True)
    redone = chunk_logs(caplog)
    chunks = {2 + i for i in range(result.chunks)}
    kept = {r[2] for r in recorded[2:]}
    assert set(redone) == chunks - kept  # the two tampered chunks and the unjournaled ones
    assert {recorded[0][2], recorded[1][2]} <= set(redone)
    assert any("resuming" in r.getMessage() and f"{len(kept)} chunks" in r.getMessage() for r in caplog.records)
    local = tmp_path / "local.tif"
    rdask.process(str(inputs / "small.tif"), str(local), "reverse-bands", workers=1, chunk_mb=0.3)
    got = download(s3, tmp_path / "from-s3.tif")
    assert_same_raster(got, local)
    check_layout(str(got))
    assert abs(os.path.getsize(got) - os.path.getsize(local)) < 16384  # no padding
    assert objects(client) == ["out.tif"]  # the pieces deleted
    assert not uploads(client) and not os.path.exists(journal_path(url()))


def test_resume_after_a_failed_commit_regroups(s3, inputs, tmp_path, caplog, monkeypatch):
    """A commit that fails after part 1 and the groups are uploaded: the
    resume recomputes no chunk, forms the groups anew (same numbers,
    overwritten) and completes with the local pixels."""
    from rdask.cloud.multipart import MultipartUpload as Upload

    src, kw = str(inputs / "big.tif"), dict(chunk_mb=0.3, blocksize=128, workers=2)
    real = Upload.complete

    def fail(self, parts):
        raise OutputError(f"cannot finish {self.url}: injected")

    monkeypatch.setattr(Upload, "complete", fail)
    with pytest.raises(OutputError, match="injected"):
        rdask.process(src, url(), "reverse-bands", resume=True, **kw)
    client = s3.client()
    (up,) = uploads(client)
    assert len(client.list_parts(Bucket=BUCKET, Key="out.tif", UploadId=up["UploadId"])["Parts"]) > 2
    monkeypatch.setattr(Upload, "complete", real)
    caplog.set_level(logging.DEBUG, logger="rdask")
    result = rdask.process(src, url(), "reverse-bands", resume=True, **kw)
    assert not chunk_logs(caplog) and result.resumed == result.pixels  # every chunk kept
    assert len(part_logs(caplog)) > 2  # part 1 and the groups again
    local = tmp_path / "local.tif"
    rdask.process(src, str(local), "reverse-bands", **kw)
    got = download(s3, tmp_path / "from-s3.tif")
    assert_same_raster(got, local)
    check_layout(str(got))
    assert objects(client) == ["out.tif"] and not uploads(client)


def test_resume_whose_upload_is_gone_starts_over(s3, inputs, tmp_path, caplog):
    client = s3.client()
    killed_run(inputs, url())
    (up,) = uploads(client)
    client.abort_multipart_upload(Bucket=BUCKET, Key="out.tif", UploadId=up["UploadId"])
    caplog.set_level(logging.DEBUG, logger="rdask")
    result = rdask.process(str(inputs / "small.tif"), url(), "reverse-bands", workers=1, chunk_mb=0.3,
                           resume=True)
    assert len(chunk_logs(caplog)) == result.chunks  # everything again
    assert any("is gone; starting from scratch" in r.getMessage() for r in caplog.records)
    assert np.array_equal(read(download(s3, tmp_path / "o.tif")), read(inputs / "small.tif")[::-1])
    assert objects(client) == ["out.tif"] and not uploads(client)  # the gone upload's pieces too


def test_run_without_resume_aborts_the_killed_upload(s3, inputs, tmp_path):
    client = s3.client()
    killed_run(inputs, url())
    (old,) = uploads(client)
    rdask.process(str(inputs / "small.tif"), url(), "reverse-bands", chunk_mb=0.3)
    assert objects(client) == ["out.tif"] and not uploads(client)  # the killed one aborted, pieces and all
    assert np.array_equal(read(download(s3, tmp_path / "o.tif")), read(inputs / "small.tif")[::-1])
    with pytest.raises(client.exceptions.NoSuchUpload):
        client.list_parts(Bucket=BUCKET, Key="out.tif", UploadId=old["UploadId"])


def test_resume_of_another_job_is_refused(s3, inputs, tmp_path):
    killed_run(inputs, url())
    with pytest.raises(ResumeError, match="different kernel"):
        rdask.process(str(inputs / "small.tif"), url(), "focal-mean", chunk_mb=0.3, workers=1, resume=True)
    assert len(uploads(s3.client())) == 1  # still there for the right resume


# -- 4. the CLI; errors are one line without secrets --------------------------------


def test_cli_run_to_s3(s3, inputs, tmp_path):
    proc = cli.run("-vv", "run", "reverse-bands", inputs / "small.tif", url(), "--chunk-mb", "1")
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert "bytes of padding" in proc.stderr  # the client's summary at -vv
    got = download(s3, tmp_path / "o.tif")
    local = tmp_path / "local.tif"
    rdask.process(str(inputs / "small.tif"), str(local), "reverse-bands", chunk_mb=1)
    assert_same_raster(got, local)
    check_layout(str(got))


def test_cli_errors_are_one_line_without_secret(s3, inputs, tmp_path):
    proc = cli.run("-vv", "run", "reverse-bands", inputs / "small.tif", "s3://no-such-bucket-rdask/o.tif")
    assert SECRET not in proc.stdout + proc.stderr
    cli.one_line_error(proc, "s3://no-such-bucket-rdask/o.tif", "not found")
    kernel = f"{inputs / 'kernels.py'}:explode_on_sentinel"
    proc = cli.run("-vv", "run", kernel, inputs / "sentinel.tif", url(), "--chunk-mb", "1")
    assert proc.returncode != 0 and SECRET not in proc.stdout + proc.stderr
    assert objects(s3.client()) == [] and not uploads(s3.client())
    s3.client().put_object(Bucket=BUCKET, Key="out.tif", Body=b"old")
    proc = cli.run("run", "reverse-bands", inputs / "small.tif", url())
    cli.one_line_error(proc, url(), "--overwrite")


def test_read_back_through_gdal(s3, inputs, tmp_path):
    """GDAL reads the object in place (/vsis3/), tags and all."""
    rdask.process(str(inputs / "small.tif"), url(), "reverse-bands", chunk_mb=1)
    with rasterio.Env(AWS_S3_ENDPOINT=s3.endpoint, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE"), \
            rasterio.open(f"/vsis3/{BUCKET}/out.tif") as ds:
        assert ds.tags()["SENSOR"] == "synthetic" and ds.descriptions == ("b", "g", "r")
        assert np.array_equal(ds.read(), read(inputs / "small.tif")[::-1])


# -- 5. COG: overview levels built by the tasks too ---------------------------------


def overview_pixels(path):
    """Every level's pixels, full resolution first."""
    with rasterio.open(path) as ds:
        n = len(ds.overviews(1))
    out = []
    for level in range(-1, n):
        opts = {} if level < 0 else {"OVERVIEW_LEVEL": level}
        with rasterio.open(path, **opts) as ds:
            out.append(ds.read())
    return out


@pytest.mark.parametrize(("scheduler", "name", "levels_in_header"), [
    ("threads", "small", 3),  # every level fits in part 1
    ("threads", "big", 4),  # level 1 is a chunk job of its own; the 4 others fit in part 1
    ("local:2", "big", 4),
])
def test_cog_gives_the_local_cog(scheduler, name, levels_in_header, s3, inputs, tmp_path, caplog):
    from rio_cogeo.cogeo import cog_validate

    src = str(inputs / f"{name}.tif")
    kw = dict(driver="COG", chunk_mb=1, blocksize=128 if name == "small" else 64)
    local = tmp_path / "local.tif"
    rdask.process(src, str(local), "reverse-bands", workers=2, **kw)
    caplog.set_level(logging.DEBUG, logger="rdask")
    rdask.process(src, url(), "reverse-bands", scheduler=scheduler, workers=2, **kw)
    got = download(s3, tmp_path / "from-s3.tif")
    valid, errors, warnings = cog_validate(str(got), quiet=True)
    assert valid, errors
    assert_same_raster(got, local)
    mine, theirs = overview_pixels(got), overview_pixels(local)
    assert len(mine) == len(theirs) == levels_in_header + (name == "big") + 1
    for a, b in zip(mine, theirs, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    assert objects(s3.client()) == ["out.tif"] and not uploads(s3.client())  # pieces deleted
    # GDAL's COG layout, as the local COG's: the same bytes, no padding.
    assert check_cog_layout(str(got))["levels"] == len(mine)
    assert set(layouts(str(got)).values()) == {"COG"}
    assert got.read_bytes() == local.read_bytes()
    if scheduler == "threads":
        assert any(f"the {levels_in_header} smallest levels' tiles stored" in r.getMessage() for r in caplog.records)


def test_cog_of_mixed_chunks(s3, tmp_path, caplog):
    """Noisy chunks (over 5 MiB) beside constant ones (far under), in the
    main pass and in level 1, chunks not spanning the width: GDAL's COG
    layout, the local COG's bytes."""
    from rio_cogeo.cogeo import cog_validate

    data = np.random.default_rng(4).normal(0, 50, size=(3, 2048, 3072)).astype("float32")
    data[:, 1024:, :] = 7
    data[:, :, :512] = 3
    src = write(tmp_path / "mixed.tif", data, block=(256, 256), compress=None)
    kw = dict(driver="COG", chunk_mb=8, compress="deflate", blocksize=256, workers=2)
    local = tmp_path / "local.tif"
    rdask.process(src, str(local), "reverse-bands", **kw)
    caplog.set_level(logging.DEBUG, logger="rdask")
    rdask.process(src, url(), "reverse-bands", **kw)
    sizes = chunk_sizes(caplog)
    assert min(sizes) < MIN_PART < max(sizes)
    got = download(s3, tmp_path / "from-s3.tif")
    assert cog_validate(str(got), strict=True, quiet=True)[:2] == (True, [])
    for a, b in zip(overview_pixels(got), overview_pixels(local), strict=True):
        assert np.array_equal(a, b)
    check_cog_layout(str(got))
    assert set(layouts(str(got)).values()) == {"COG"}
    assert got.read_bytes() == local.read_bytes()
    assert objects(s3.client()) == ["out.tif"] and not uploads(s3.client())


def test_cog_of_chunks_spanning_the_width_is_copied_by_s3(s3, tmp_path, caplog, monkeypatch):
    """A striped input gives chunks that span the width: each noisy chunk's
    piece is one range of the COG's row-major order, and S3 copies it into
    its part (UploadPartCopy); the object is the local COG's bytes."""
    data = np.random.default_rng(5).normal(0, 50, size=(3, 1536, 1024)).astype("float32")
    src = write(tmp_path / "striped.tif", data, block=None, compress=None)
    kw = dict(driver="COG", chunk_mb=8, compress="deflate", blocksize=256, workers=2)
    local = tmp_path / "local.tif"
    rdask.process(src, str(local), "reverse-bands", **kw)
    caplog.set_level(logging.DEBUG, logger="rdask")
    requests = count_requests(monkeypatch)
    rdask.process(src, url(), "reverse-bands", **kw)
    copies = [r for r in caplog.records if "copied by S3" in r.getMessage()]
    assert len(copies) >= 2 and requests["UploadPartCopy"] == len(copies)
    got = download(s3, tmp_path / "from-s3.tif")
    check_cog_layout(str(got))
    assert got.read_bytes() == local.read_bytes()
    assert objects(s3.client()) == ["out.tif"] and not uploads(s3.client())


def test_cog_resume_after_sigkill(s3, inputs, tmp_path, caplog):
    from rio_cogeo.cogeo import cog_validate

    client = s3.client()
    recorded = killed_run(inputs, url(), "--driver", "COG", "--blocksize", "128")
    # The level-1 pieces of the journaled chunks are hidden objects beside the key.
    hidden = objects(client)
    assert "out.tif" not in hidden and len(hidden) >= len(recorded)
    assert all(k.startswith("out.tif.rdask-partial/") for k in hidden)
    caplog.set_level(logging.DEBUG, logger="rdask")
    kw = dict(driver="COG", blocksize=128, chunk_mb=0.3, workers=1)
    result = rdask.process(str(inputs / "small.tif"), url(), "reverse-bands", resume=True, **kw)
    main_parts = {r[2] for r in recorded}
    written = set(chunk_logs(caplog))
    assert not main_parts & written  # the journaled chunks were not redone...
    last = max(written | main_parts)
    main_range = set(range(last - result.chunks + 1, last + 1))
    assert main_parts <= main_range and main_range == main_parts | (written & main_range)  # ...the rest was
    assert any("smallest levels' tiles stored" in r.getMessage() for r in caplog.records)  # the levels again
    local = tmp_path / "local.tif"
    rdask.process(str(inputs / "small.tif"), str(local), "reverse-bands", **kw)
    got = download(s3, tmp_path / "from-s3.tif")
    assert cog_validate(str(got), quiet=True)[0]
    for a, b in zip(overview_pixels(got), overview_pixels(local), strict=True):
        assert np.array_equal(a, b)
    assert objects(client) == ["out.tif"] and not uploads(client)


def test_cog_kernel_error_leaves_no_object_no_piece_no_upload(s3, inputs):
    kernel = f"{inputs / 'kernels.py'}:explode_on_sentinel"
    with pytest.raises(KernelError):
        rdask.process(str(inputs / "sentinel.tif"), url(), kernel, driver="COG", chunk_mb=1, workers=1)
    assert objects(s3.client()) == [] and not uploads(s3.client())


@pytest.mark.parametrize("kw", [dict(driver="COG", overview_resampling="average"), dict(compress="lzw")],
                         ids=["cog-average", "gtiff-lzw"])
def test_what_only_gdal_writes_goes_to_the_staged_upload(kw, s3, inputs, tmp_path, caplog):
    """GDAL's overview builder and codecs need the whole file: the staged
    upload writes it (no part is uploaded by the tasks), with the same result."""
    src = str(inputs / "small.tif")
    local = tmp_path / "local.tif"
    rdask.process(src, str(local), "reverse-bands", chunk_mb=1, **kw)
    caplog.set_level(logging.DEBUG, logger="rdask")
    rdask.process(src, url(), "reverse-bands", chunk_mb=1, **kw)
    assert not part_logs(caplog)
    got = download(s3, tmp_path / "from-s3.tif")
    assert_same_raster(got, local)
    assert os.path.getsize(got) == os.path.getsize(local)
    assert objects(s3.client()) == ["out.tif"] and not uploads(s3.client())


def test_missing_boto3_is_one_line_naming_the_extra(monkeypatch):
    """Without boto3 an S3 output says which extra to install, in one line."""
    import sys

    from rdask.cloud.s3 import Clients, S3Endpoint
    from rdask.errors import OutputError

    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ModuleNotFoundError
    with pytest.raises(OutputError, match=r"^S3 outputs need boto3: pip install 'rdask\[s3\]'$"):
        Clients().get(S3Endpoint.from_options({}))


def test_cog_parts_keep_row_major_order_and_s3_s_part_rules():
    """The commit's plan (rdask.outputs.s3.order) on made-up pieces: the
    ranges follow each level's tiles row by row across chunks; parts are at
    least 5 MiB but the last, in order, cover every byte once; a range of
    5 MiB or more starting a part is copied alone; a big range after a
    short start gives the part just what it lacks."""
    from rdask.outputs.s3.order import Grid, Segment, places, plan_order, segments, tile_offsets
    from rdask.outputs.s3.parts import Piece

    mib = 1024 * 1024

    def piece(name, rows, cols, across, size):
        """A chunk's piece: tiles of ``rows`` x ``cols`` (row-major), each ``size`` bytes wrapped."""
        tiles, at = [], 0
        for r in rows:
            for c in cols:
                tiles.append((r * across + c, at + 4, size))
                at += size + 8
        return Piece(0, name, at, tuple(tiles))

    # Two chunk columns of 2 x 2 tiles over a 4-tile-wide level: row-major
    # order interleaves them row by row.
    left, right = piece("L", (0, 1), (0, 1), 4, 100), piece("R", (0, 1), (2, 3), 4, 100)
    got = segments([Grid(((left, right),), 4)])
    assert got == [Segment("L", 0, 216), Segment("R", 0, 216), Segment("L", 216, 432), Segment("R", 216, 432)]
    # A chunk spanning the width is one range.
    whole = piece("W", (0, 1), (0, 1, 2, 3), 4, 100)
    assert segments([Grid(((whole,),), 4)]) == [Segment("W", 0, whole.size)]
    # Parts: a header, a short range, a big one, small ones, a big one alone.
    ranges = [Segment("a", 0, 1 * mib), Segment("b", 0, 12 * mib), Segment("c", 0, 2 * mib),
              Segment("d", 0, 2 * mib), Segment("e", 0, 2 * mib), Segment("f", 0, 7 * mib),
              Segment("g", 0, 100)]
    parts = plan_order(1000, [Segment("tail", 0, 3000)], ranges)
    sizes = [sum(s.size for s in p.segments) + (1000 if p.number == 1 else 0) for p in parts]
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert all(n >= MIN_PART for n in sizes[:-1])
    flat = [s for p in parts for s in p.segments]
    assert sum(s.size for s in flat) == 3000 + sum(s.size for s in ranges)
    assert [s.key for s in flat] == ["tail", "a", "b", "b", "c", "d", "e", "f", "g"]  # order kept
    assert parts[0].segments[-1] == Segment("b", 0, MIN_PART - 1000 - 3000 - mib)  # just what part 1 lacks
    assert parts[1].copy and parts[1].segments[0].key == "b"  # the rest of b, copied by S3
    where = places(1000, parts)
    assert where[("tail", 0)] == 1000 and where[("a", 0)] == 4000
    # A tile straddling the cut in b is found through the range it starts in.
    b = Piece(0, "b", 12 * mib, ((0, 4, 12 * mib - 8),))
    spans = sorted((s.key, s.start, s.stop) for s in flat if s.key == "b")
    assert tile_offsets(b, where, spans) == [(0, where[("b", 0)] + 4)]
