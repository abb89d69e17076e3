"""The Zarr output on S3: ``s3://bucket/prefix/out.zarr``, chunks written
straight to S3 by the tasks that compute them, metadata last.

The layout is the local output's (:mod:`rdask.outputs.zarr.layout`). Its
metadata (and the small coordinate arrays) is built in a local staging
folder under ``$TMPDIR`` (stable per URL, beside the job's journal); the
tasks, threads or cluster workers alike, write their chunks under the final
prefix through zarr's ``ObjectStore`` (:mod:`rdask.cloud.objectstore`), each
process with its own credentials. Nothing comes back to the client but a
byte count.

Publication without rename: a key of the store is a chunk or a metadata
document, and a reader only finds an array through its metadata. On commit
the overview levels are made (their jobs read the level above from S3),
then the staged files go up in this order: coordinate chunks, each array's
``.zattrs``/``.zarray``/``zarr.json`` (deepest nodes first), each group's,
and the root group's ``.zattrs``, ``.zgroup`` and lastly ``zarr.json``
(with the consolidated metadata). So any metadata a reader can see
describes chunks that are all there, and the store as a whole is visible
(root metadata) only when complete; an interrupted job leaves no root
metadata, hence no readable store.

An existing store (root metadata at the URL) is refused unless
``overwrite``; a prefix holding objects but no store (a killed job's
chunks) is refused too, unless ``overwrite`` or this machine's journal says
they are an earlier job's on this URL (then they are reused on ``resume``,
replaced otherwise). S3 cannot swap a prefix atomically, so with
``overwrite`` a reader sees, in turn: the old store; nothing (its metadata is deleted first, root first, before any new
chunk is written, so no reader mixes old metadata with new chunks); and
the new store once its root metadata is written. Old keys the new store
does not overwrite (a larger old array, more old overview levels) are
deleted before the new metadata goes up. A replacing job that fails
leaves no store at all: the old one was unpublished when it began.

Resume: the journal stays on the client's local disk with the staged
metadata; chunks journaled as done are not computed again. A job stopped
without ``resume`` deletes the keys it may have written (the chunk keys of
its own arrays and its metadata keys, never other keys under the prefix);
with ``resume`` it keeps them. The job's runner has first waited for every
task still writing (:meth:`~rdask.schedule.Runner.fence`). What a killed
client's workers wrote anyway is invisible to readers (there is no root
metadata) and removed by the next job on the URL from this machine (its
journal names them), or refused without ``overwrite`` from another.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rdask.cloud.objectstore import (
    chunk_metadata,
    delete_keys,
    list_keys,
    put_file,
    zarr_array,
)
from rdask.cloud.s3 import S3Endpoint, reason
from rdask.errors import OutputError, ResumeError
from rdask.io.remote import check_options
from rdask.io.zarr import DATA, ZarrSource
from rdask.outputs.base import ChunkGrid, Committed, OutputSpec, Publish, RunChunks
from rdask.outputs.journal import Checkpoints, Journal, partial_paths
from rdask.outputs.options import WriteOptions
from rdask.outputs.staging import s3_staging_path
from rdask.outputs.zarr.layout import (
    Layout,
    Level,
    check_resumable,
    consolidate,
    geo_attrs,
    level_job,
    main_level,
    make_overviews,
    overview_levels,
    zarr_asked,
)
from rdask.recipe import Region


def accepts(target: str, options: WriteOptions) -> bool:
    """A Zarr store at ``s3://bucket/prefix/x.zarr`` (see
    :func:`~rdask.outputs.zarr.layout.zarr_asked`)."""
    return zarr_asked(target, options) and target.startswith("s3://")


def open(spec: OutputSpec) -> ZarrS3Output:  # noqa: A001
    return ZarrS3Output(spec)

#: The documents that make a node visible; the root's are written last.
METADATA = ("zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata")
#: Upload order within one node: attributes, then the node itself, v3 last.
_RANK = {".zattrs": 0, ".zarray": 1, ".zgroup": 1, ".zmetadata": 2, "zarr.json": 3}


@dataclass(frozen=True)
class S3Written:
    """A chunk a task wrote to S3: its raw (uncompressed) bytes."""

    nbytes: int


@dataclass(frozen=True)
class S3ZarrWriter:
    """Write a chunk into ``array`` of the store at ``url`` from wherever the
    task runs. Carries the URL, the endpoint and the array's chunk metadata:
    no credentials, no local path."""

    url: str
    endpoint: S3Endpoint
    array: str
    metadata: str  # the array's zarr.json without attributes
    target: str = ""

    def __call__(self, block: np.ndarray, region: Region) -> S3Written:
        try:
            arr = zarr_array(self.url, self.endpoint, self.array, self.metadata, read_only=False)
            arr[region] = block
        except Exception as exc:  # noqa: BLE001 - one line naming the store, no secrets
            raise OutputError(f"cannot write {self.target or self.url}: {reason(exc)}") from None
        return S3Written(block.nbytes)


def is_metadata(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in METADATA


def publish_order(files: list[str]) -> list[str]:
    """Staged files in upload order: chunks, then metadata, deepest node
    first, the root group's ``zarr.json`` last."""
    chunks = sorted(f for f in files if not is_metadata(f))
    meta = sorted((f for f in files if is_metadata(f)),
                  key=lambda f: (-f.count("/"), os.path.dirname(f), _RANK[os.path.basename(f)]))
    return chunks + meta


def delete_in_order(url: str, endpoint: S3Endpoint, keys: list[str]) -> None:
    """Delete ``keys``: the root metadata first (the store is gone for
    readers from then on), then the other nodes' metadata, then chunks; as
    separate requests, since one bulk delete has no order."""
    root = [k for k in keys if k in METADATA]
    meta = [k for k in keys if is_metadata(k) and k not in METADATA]
    for group in (root, meta, [k for k in keys if not is_metadata(k)]):
        if group:
            delete_keys(url, endpoint, group)


class ZarrS3Output:
    """A Zarr store being written to S3 (see the module docstring)."""

    def __init__(self, spec: OutputSpec) -> None:
        spec = replace(spec, options=WriteOptions.of(spec.options, driver="Zarr"))
        self.spec = spec
        opts = spec.options
        options = dict(spec.gdal_options)
        check_options(options)  # secrets come from each process's environment
        self.url = spec.target.rstrip("/")
        self.endpoint = S3Endpoint.from_options(options)
        self.staged, journal_path = partial_paths(s3_staging_path(self.url))
        self.partial = self.url  # what a resume finishes
        self.grid = ChunkGrid(spec.chunks)
        self.main = main_level(spec)
        self.levels = [self.main, *overview_levels(self.main, opts.overview_levels)]
        keys = self._list()
        ours = os.path.exists(journal_path)
        resuming = (opts.resume and ours and os.path.exists(os.path.join(self.staged, DATA, "zarr.json")))
        root = [k for k in METADATA if k in keys]
        if root and not opts.overwrite:
            raise OutputError(f"output exists: {self.url} (pass overwrite=True / --overwrite to replace it)")
        if keys and not root and not (opts.overwrite or ours):
            raise OutputError(f"{self.url} holds {len(keys)} objects but no Zarr store (an interrupted job's?): "
                              "pass overwrite=True / --overwrite to replace them")
        self.journal = (Journal.resume(journal_path, spec.job, self.url) if resuming
                        else Journal.start(journal_path, spec.job))
        self.resuming = resuming
        self._had_keys = bool(keys)  # then commit deletes what the new store does not overwrite
        self.checkpoints = Checkpoints(self.journal, spec.options.checkpoint_seconds)
        self._closed = False
        try:
            if root:
                # The old store disappears before any new chunk lands: root
                # metadata first, then every other node's.
                delete_in_order(self.url, self.endpoint, [k for k in keys if is_metadata(k)])
            if resuming:
                check_resumable(self.staged, self.main, spec.dtype, self.url, "staged")
                for y0, x0 in self.journal.done:
                    self.grid.claim(y0, x0)
                self.journal.done.clear()
            else:
                _remove_tree(self.staged)
                os.makedirs(self.staged)
                layout = Layout(self.staged, spec)
                _, h, w = spec.shape
                layout.create_root(geo_attrs(spec.meta, spec.meta.transform, (h, w)))
                layout.create_level(self.main)
        except (OutputError, ResumeError):
            self.abort(keep_partial=resuming)
            raise
        except Exception as exc:  # noqa: BLE001 - a local or an S3 error, in one line
            self.abort(keep_partial=resuming)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else reason(exc)
            raise OutputError(f"cannot write {self.url}: {why}") from None
        except BaseException:
            self.abort(keep_partial=resuming)
            raise
        self.writer = self._writer(self.main)

    # -- S3 -------------------------------------------------------------------

    def _list(self) -> dict[str, int]:
        try:
            return list_keys(self.url, self.endpoint)
        except Exception as exc:  # noqa: BLE001 - one line, no secrets
            raise OutputError(f"cannot write {self.url}: {reason(exc)}") from None

    def _writer(self, level: Level) -> S3ZarrWriter:
        meta = chunk_metadata(os.path.join(self.staged, level.data))
        return S3ZarrWriter(self.url, self.endpoint, level.data, meta, self.spec.target)

    def _staged_files(self) -> list[str]:
        out = []
        for folder, _, files in os.walk(self.staged):
            rel = os.path.relpath(folder, self.staged)
            out += [f if rel == "." else f"{rel}/{f}" for f in files]
        return out

    def _is_chunk(self, key: str) -> bool:
        """Whether ``key`` is a chunk of one of this job's data arrays."""
        head, _, tail = key.rpartition("/")
        for level in self.levels:
            if not (head == level.data or head.startswith(level.data + "/")):
                continue
            idx = key[len(level.data) + 1:].split("/")
            grid = [math.ceil(n / c) for n, c in zip(level.shape, level.objects, strict=True)]
            if len(idx) == 3 and all(i.isdigit() and int(i) < g for i, g in zip(idx, grid, strict=True)):
                return True
        return False

    # -- the client half -------------------------------------------------------

    def is_done(self, region: Region) -> bool:
        return region in self.grid

    def record(self, region: Region, result: Any) -> None:
        """Note a chunk written (tasks write S3 chunks themselves)."""
        if self._closed:
            raise OutputError(f"{self.url}: write after the job was stopped")
        if not isinstance(result, S3Written):
            raise RuntimeError(f"rdask bug: a chunk of {self.url} came back unwritten")
        _, ys, xs = region
        self.grid.claim(ys.start, xs.start)
        self.checkpoints.add((ys.start, xs.start))

    def commit(self, run: RunChunks) -> Publish:
        """Overview levels, consolidated metadata, stale keys out, metadata up
        but for the root ``zarr.json``, whose upload publishes."""
        self.checkpoints.flush()
        self._closed = True
        try:
            if len(self.levels) > 1:
                make_overviews(self.staged, self.spec, self.main, self.levels[1:],
                               lambda level, above, mb: self._level(level, above, mb, run))
            consolidate(self.staged)
            files = self._staged_files()
            keys = list_keys(self.url, self.endpoint)
            stale = [k for k in keys if k not in files and not self._is_chunk(k)] if self._had_keys else []
            delete_in_order(self.url, self.endpoint, stale)
            *nodes, root = publish_order(files)
            for name in nodes:
                put_file(self.url, self.endpoint, name, os.path.join(self.staged, name))
        except OutputError:
            raise
        except Exception as exc:  # noqa: BLE001 - one line, no secrets
            raise OutputError(f"cannot finish {self.url}: {reason(exc)}") from None
        size = sum(n for k, n in keys.items() if k not in stale and k not in files)
        size += sum(os.path.getsize(os.path.join(self.staged, f)) for f in files)

        def publish() -> Committed:
            try:
                put_file(self.url, self.endpoint, root, os.path.join(self.staged, root))
            except OutputError:
                raise
            except Exception as exc:  # noqa: BLE001 - one line, no secrets
                raise OutputError(f"cannot finish {self.url}: {reason(exc)}") from None
            self.journal.close(remove=True)
            _remove_tree(self.staged)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(self.staged))  # the URL's staging folder, now empty
            return Committed(self.url, size)

        return publish

    def _level(self, level: Level, above: Level, chunk_mb: float, run: RunChunks) -> None:
        """Fill ``level`` from ``above``: tasks read S3 and write S3."""
        opts = self.spec.options
        meta = chunk_metadata(os.path.join(self.staged, above.data))
        source = ZarrSource.of_array(self.url, above.data, endpoint=self.endpoint, metadata=meta)
        job = level_job(source, level, opts.overview_resampling, self.spec.meta.nodata, opts.blocksize,
                        chunk_mb)
        run(job, S3LevelSink(self._writer(level), self.url))

    def abort(self, *, keep_partial: bool = False) -> bool:
        """Stop; keep the chunks, staged metadata and journal for a resume,
        or delete the keys this job may have written."""
        self._closed = True
        if keep_partial:
            with contextlib.suppress(OSError):
                self.checkpoints.flush()
        else:
            # The job's runner has waited for every task still writing.
            with contextlib.suppress(Exception):
                files = set(self._staged_files())
                keys = list_keys(self.url, self.endpoint)
                delete_in_order(self.url, self.endpoint, [k for k in keys if k in files or self._is_chunk(k)])
            _remove_tree(self.staged)
        self.journal.close(remove=not keep_partial)
        return keep_partial and os.path.exists(self.journal.path)


class S3LevelSink:
    """An overview level's chunks, run through the job's scheduler."""

    def __init__(self, writer: S3ZarrWriter, url: str) -> None:
        self.writer, self.partial = writer, url

    def is_done(self, region: Region) -> bool:
        return False

    def record(self, region: Region, result: Any) -> None:
        if not isinstance(result, S3Written):
            raise RuntimeError(f"rdask bug: a chunk of {self.partial} came back unwritten")



def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
