"""``s3://bucket/key`` GeoTIFFs whose tiles the tasks upload themselves, as
the parts of one S3 multipart upload.

The staged output (:mod:`.staged`) builds the file on the client's disk,
so on a cluster every encoded tile crosses to the client. Here the client
only creates the multipart upload; each chunk's task encodes its tiles
(:mod:`.tiles`, as the GTiff output's) and uploads them as one part
(:class:`~.parts.PartWriter`), returning ``(part, ETag, size, tile layout)``.

* Part numbers: part 1 is the TIFF header, chunk ``(i, j)`` of the grid is
  part ``2 + i * columns + j``. S3 wants every part but the last to be at
  least 5 MiB: a chunk whose tiles are fewer stores them as a piece, a
  temporary object under ``<key>.rdask-partial/<upload token>/small/``,
  and at commit the pieces are grouped into parts of at least 5 MiB
  (:func:`~.parts.plan_parts`), each taking the number of its first piece.
  The tile index says where every tile is, so tiles need no order.
* The header: GDAL creates the structure exactly as the GTiff output does
  (``SPARSE_OK``, a small local file, so tags and metadata are GDAL's own)
  and on commit the client fills in the tile index: a tile's offset is the
  start of its part plus its offset in the part. Part 1 is the header then
  the first pieces, up to 5 MiB (padded only when the whole object is
  smaller and other parts follow); every part's size is known before the
  index is filled (the header's size is fixed by the tile count).
* Part 1 and the groups are uploaded by one :class:`~rdask.recipe.ChunkJob`
  (a chunk per part, :class:`~.parts.Assemble`) run through
  ``commit(run)``, the contract's way for an output to run more tasks (as
  the COG's overview levels do): it runs wherever chunk tasks run, so the
  scheduler needs no new branch, on a cluster a worker fetches a group's
  pieces, and the client sends only the header bytes (inside the task).
* Publication is atomic: nothing is at the key until
  CompleteMultipartUpload. A failure or Ctrl-C aborts the upload, unless
  ``resume`` keeps it for the resume.
* Resume: the upload id and each chunk's part or piece are journaled on
  the client's disk (:mod:`.journal`, one locked file per URL). A
  resume keeps only the chunks whose part ListParts shows with the same
  ETag and size, or whose piece one LIST of the prefix shows with the same
  size, and recomputes the others; an upload that is gone means starting
  over. The groups are formed anew at each commit (a killed commit's parts
  are overwritten or, unnamed, dropped by the completion). A job without
  ``resume`` aborts what a killed job left on the key, pieces included.

What this output cannot do goes to :mod:`.staged`: what only GDAL can
encode (masks, other codecs) and rasters under 5 MiB of pixels (one part's
worth: nothing to spread; the staged upload is one PUT). COGs are
:mod:`.cog`, which adds the overview levels to this output.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import numpy as np

from rdask.cloud.multipart import MAX_PARTS, MIN_PART, MultipartUpload, check_key
from rdask.cloud.s3 import S3Endpoint, split_s3
from rdask.errors import OutputError
from rdask.io.remote import check_options
from rdask.outputs.base import ChunkGrid, Committed, OutputSpec, Publish, RunChunks
from rdask.outputs.options import WriteOptions
from rdask.outputs.s3.journal import PartJournal
from rdask.outputs.s3.parts import (
    Assemble,
    Part,
    PartNumbers,
    PartPlan,
    PartWriter,
    Piece,
    complete,
    delete_pieces,
    pieces_listed,
    plan_parts,
    token,
)
from rdask.outputs.sidecar import sidecars
from rdask.outputs.staging import s3_staging_path, unlink_quietly
from rdask.outputs.tiff.gdal import create_dataset, gdal_env
from rdask.outputs.tiff.gtiff import IndexLocation, encoder_of
from rdask.outputs.tiff.tiles import TileEncoder
from rdask.recipe import ChunkJob, ComputeTask, Region

log = logging.getLogger("rdask")


def accepts(target: str, options: WriteOptions) -> bool:
    """An S3 GeoTIFF (what :func:`takes` refuses, :mod:`.staged` writes)."""
    return target.startswith("s3://") and options.driver == "GTiff"


def takes(spec: OutputSpec) -> bool:
    """Whether the tasks can upload this job's tiles as parts (see :func:`parts_encoder`)."""
    return parts_encoder(spec) is not None


def open(spec: OutputSpec) -> PartsOutput:  # noqa: A001
    """Parts uploaded by the tasks."""
    encoder = parts_encoder(spec)
    assert encoder is not None
    return PartsOutput(spec, encoder)


def parts_encoder(spec: OutputSpec) -> TileEncoder | None:
    """The tile encoder when the tasks can upload the tiles as parts: rdask
    encodes them, no mask, and at least 5 MiB of pixels; else None."""
    bands, height, width = spec.shape
    if spec.mask is not None or bands * height * width * np.dtype(spec.dtype).itemsize < MIN_PART:
        return None
    return encoder_of(spec)


def check_part_count(url: str, parts: int) -> None:
    """Refuse, before any work, a job that needs more parts than S3 allows."""
    if parts > MAX_PARTS:
        raise OutputError(f"cannot write {url}: its chunks need {parts} multipart parts, S3 "
                          f"allows {MAX_PARTS} (use larger chunks: --chunk-mb)")


class PartsOutput:
    """A GeoTIFF whose tiles the tasks upload as parts (see the module docstring)."""

    def __init__(self, spec: OutputSpec, encoder: TileEncoder, *, first: int = 2) -> None:
        """``first``: the chunks' first part number (a COG's levels come before them)."""
        self.spec, self.url = spec, spec.target
        check_options(dict(spec.gdal_options))  # refuses secret options
        self.endpoint = S3Endpoint.from_options(dict(spec.gdal_options))
        self.grid = ChunkGrid(spec.chunks)
        self.numbers = PartNumbers.of(spec.chunks, first=first)
        check_part_count(self.url, self.numbers.last)
        base = s3_staging_path(self.url)
        self.header_path = base + ".header.tif"
        self.journal = PartJournal(base + ".rdask-parts", self.url)
        self.partial = f"{self.url} (its multipart upload, journaled in {self.journal.path})"
        self.parts: dict[int, Part | Piece] = {}  # by the chunk's part number
        self.upload: MultipartUpload | None = None
        self._closed = False
        try:
            self.index = self._make_header(encoder)
            self.upload = self._open_upload()
        except BaseException:
            # A failed resume keeps its journal: the upload may still be there.
            self._drop_header()
            self.journal.close(remove=not spec.options.resume)
            raise
        self.writer = PartWriter(encoder, self.upload, self.numbers)
        self._last_sync = time.monotonic()

    def _make_header(self, encoder: TileEncoder) -> IndexLocation:
        """Have GDAL write the structure, no pixels, as the GTiff output does."""
        spec = self.spec
        options = spec.options.gtiff_creation_options(spec.dtype, spec.threads)
        unlink_quietly(self.header_path)
        ds = create_dataset(self.header_path, spec.shape, spec.dtype, spec.meta,
                            {**options, "SPARSE_OK": "TRUE"}, self.url)
        with gdal_env():
            ds.close()
        index = IndexLocation.read(self.header_path, encoder)
        # Know now if classic TIFF offsets can overflow: the most the tiles can
        # encode to (as a TileEncoder's worst case) and part 1's padding.
        if index.offsets[1] == 4 and worst_size(spec, encoder) + MIN_PART >= 2**32:
            raise OutputError(f"cannot write {self.url}: its parts exceed 4 GB in a classic TIFF; "
                              "pass --co BIGTIFF=YES")
        return index

    def _open_upload(self) -> MultipartUpload:
        """Continue the journaled upload (``resume``) or start a new one."""
        opts, endpoint = self.spec.options, self.endpoint
        upload_id, recorded = self.journal.read(self.spec.job) if opts.resume else (None, {})
        check_key(endpoint, self.url, overwrite=opts.overwrite)
        MultipartUpload.abort_stale(endpoint, self.url, keep=upload_id)  # what killed jobs left
        if upload_id is not None:
            upload = MultipartUpload(endpoint, *split_s3(self.url), upload_id)
            listed = upload.listed()
            if listed is not None:
                self.journal.start(self.spec.job, upload_id)
                delete_pieces(upload, keep=token(upload_id))  # other killed jobs' pieces
                self._adopt(recorded, listed, pieces_listed(upload) if any(
                    isinstance(p, Piece) for p in recorded.values()) else {})
                log.info("resuming %s: %d chunks already uploaded", self.url, len(self.parts))
                return upload
            log.info("the multipart upload of %s is gone; starting from scratch", self.url)
        elif opts.resume:
            log.info("nothing to resume for %s; starting from scratch", self.url)
        upload = MultipartUpload.create(endpoint, self.url)
        self.journal.start(self.spec.job, upload.upload_id)
        delete_pieces(upload, keep=token(upload.upload_id))  # killed jobs' pieces
        return upload

    def _adopt(self, recorded: dict[tuple[int, int], Part | Piece], listed: dict[int, tuple[str, int]],
               pieces: dict[str, int]) -> None:
        """Keep the journaled chunks whose part S3 holds with the same ETag and
        size, or whose piece with the same size (journaling them again); the
        others are recomputed."""
        for (y0, x0), part in recorded.items():
            try:
                number = self.numbers.at(y0, x0)
                self.grid.index(y0, x0)
            except (ValueError, RuntimeError):
                continue
            held = (pieces.get(part.key) == part.size if isinstance(part, Piece)
                    else listed.get(number) == (part.etag, part.size))
            if number == part.number and held:
                self.grid.claim(y0, x0)
                self.parts[number] = part
                self.journal.record((y0, x0), part)
        self.journal.sync()

    def is_done(self, region: Region) -> bool:
        return region in self.grid

    def record(self, region: Region, result: Part | Piece) -> None:
        """Note a chunk's part or piece, and journal it."""
        if self._closed:
            raise OutputError(f"{self.url}: write after the job was stopped")
        _, ys, xs = region
        self.grid.claim(ys.start, xs.start)
        self.parts[result.number] = result
        sync = time.monotonic() - self._last_sync >= self.spec.options.checkpoint_seconds
        self.journal.record((ys.start, xs.start), result, sync=sync)
        if sync:
            self._last_sync = time.monotonic()

    def close(self) -> None:
        """No more chunks: the main pass is over."""
        self._closed = True

    def commit(self, run: RunChunks) -> Publish:
        """Group the pieces, fill in the tile index, upload part 1 and the
        groups; publishing completes the upload."""
        assert self.upload is not None
        self.close()
        plan = plan_parts(os.path.getsize(self.header_path), self.parts.values())
        header = self._header(plan.starts())
        made = run_parts(run, Assemble(self.upload, plan.assemblies(header)))
        return self.publisher([*made, *plan.parts], plan)

    def publisher(self, parts: list[Part], plan: PartPlan) -> Publish:
        """``publish``: complete the upload of ``parts``, then drop the pieces."""
        upload = self.upload
        assert upload is not None

        def publish() -> Committed:
            complete(upload, parts)
            self.finish()
            return Committed(self.url, summary(self.url, plan))

        return publish

    def finish(self) -> None:
        """After the completion: the pieces, the journal and the local header go."""
        assert self.upload is not None
        delete_pieces(self.upload)
        self.journal.close(remove=True)
        self._drop_header()

    def _header(self, starts: dict[int, int]) -> bytes:
        """The header GDAL wrote, its tile index pointing into the parts."""
        offsets = np.zeros(self.index.count, dtype=np.uint64)
        counts = np.zeros(self.index.count, dtype=np.uint64)
        for part in self.parts.values():
            for i, off, n in part.tiles:
                offsets[i], counts[i] = starts[part.number] + off, n
        if not counts.all():
            raise OutputError(f"cannot finish {self.url}: rdask bug: {int((counts == 0).sum())} tiles missing")
        fd = os.open(self.header_path, os.O_RDWR)
        try:
            self.index.write(fd, offsets, counts)
            return os.pread(fd, os.fstat(fd).st_size, 0)
        except OSError as exc:
            raise OutputError(f"cannot finish {self.url}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def abort(self, *, keep_partial: bool = False) -> bool:
        """Abort the upload, or (``keep_partial``) leave it and the journal for a resume."""
        self._closed = True
        self._drop_header()
        if keep_partial and self.upload is not None:
            self.journal.sync()
            self.journal.close(remove=False)
            return True
        if self.upload is not None:
            self.upload.abort()
            delete_pieces(self.upload)
        self.journal.close(remove=True)
        return False

    def _drop_header(self) -> None:
        for path in (self.header_path, *sidecars(self.header_path)):
            unlink_quietly(path)


def worst_size(spec: OutputSpec, encoder: TileEncoder) -> int:
    """The most bytes the tiles can encode to: whole tiles, plus what
    DEFLATE or ZSTD add to incompressible data."""
    bands, height, width = spec.shape
    t = encoder.tile
    raw = t * t * bands * np.dtype(spec.dtype).itemsize
    return -(-height // t) * -(-width // t) * (raw + raw // 64 + 1024)


def summary(url: str, plan: PartPlan) -> int:
    """Log what the object is made of (at debug level); return its size."""
    pieces = len(plan.first) + sum(len(g) for g in plan.groups)
    total = plan.head + plan.padding + sum(p.size for p in plan.parts) + sum(
        p.size for p in (*plan.first, *(m for g in plan.groups for m in g)))
    log.debug("%s: %d parts (%d of them groups of %d pieces), %d bytes, of which %d bytes of padding "
              "(in the header part)", url, 1 + len(plan.groups) + len(plan.parts), len(plan.groups), pieces,
              total, plan.padding)
    return total


def run_parts(run: RunChunks, writer: Assemble) -> list[Part]:
    """Upload part 1 and the groups through ``run``: a job of its own, a
    chunk per part, so they are made where the chunk tasks run."""
    n = len(writer.parts)
    job = ChunkJob(shape=(1, 1, n), dtype=np.dtype("u1"), chunks=((1,), (1,), (1,) * n),
                   name=f"rdask-s3-parts-{uuid.uuid4().hex}",
                   make=lambda region, key: ComputeTask(region, key, _no_pixels))
    output = Collect(writer)
    run(job, output)
    if len(output.parts) != n:
        raise OutputError(f"cannot finish {writer.upload.url}: {n - len(output.parts)} parts were not uploaded")
    return list(output.parts.values())


def _no_pixels(region: Region) -> np.ndarray:
    """The commit job's chunks have no pixels, only the writer's bytes."""
    return np.zeros((1, 1, 1), dtype=np.uint8)


class Collect:
    """The write contract for a job run at commit (the parts, a COG level):
    it only collects the parts and pieces its tasks uploaded."""

    partial = ""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.parts: dict[int, Any] = {}

    def is_done(self, region: Region) -> bool:
        return False

    def record(self, region: Region, result: Any) -> None:
        self.parts[result.number] = result

