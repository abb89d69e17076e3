"""``s3://bucket/key`` outputs, built locally and uploaded whole.

The GTiff or COG output writes into a staging folder under ``$TMPDIR``
(stable per URL, so ``--resume`` finds it); on commit the finished file is
sent with one multipart upload, whose completion is atomic: nothing appears
at the key before. A failed upload is aborted; an upload a killed job left
behind is aborted by the next job on that key.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace

from rdask.cloud.multipart import MultipartUpload, check_key
from rdask.cloud.s3 import S3Endpoint
from rdask.io.remote import check_options
from rdask.outputs.base import Committed, OutputSpec, Publish, RunChunks
from rdask.outputs.options import WriteOptions
from rdask.outputs.staging import s3_staging_path
from rdask.outputs.tiff import cog, gtiff
from rdask.recipe import Region


def accepts(target: str, options: WriteOptions) -> bool:
    return target.startswith("s3://")


def open(spec: OutputSpec) -> StagedUpload:  # noqa: A001
    return StagedUpload(spec)


class StagedUpload:
    """A local output whose commit uploads it (see the module docstring)."""

    def __init__(self, spec: OutputSpec) -> None:
        check_options(dict(spec.gdal_options))  # as for inputs: secrets come from the environment
        self.endpoint = S3Endpoint.from_options(dict(spec.gdal_options))
        check_key(self.endpoint, spec.target, overwrite=spec.options.overwrite)
        MultipartUpload.abort_stale(self.endpoint, spec.target)  # what killed jobs left
        local = s3_staging_path(spec.target)
        if not spec.options.resume:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)
        local_spec = replace(spec, target=local)
        self.inner = (cog if spec.options.driver == "COG" else gtiff).open(local_spec)
        self.writer = self.inner.writer
        self.partial = self.inner.partial
        self._upload: MultipartUpload | None = None  # its parts sent, not completed
        self.url = spec.target

    def is_done(self, region: Region) -> bool:
        return self.inner.is_done(region)

    def record(self, region: Region, result) -> None:
        self.inner.record(region, result)

    def commit(self, run: RunChunks) -> Publish:
        """Finish the local file and upload its parts; publishing completes the upload."""
        local = self.inner.commit(run)()
        try:
            self._upload = MultipartUpload.create(self.endpoint, self.url)
            parts = self._upload.send_file(local.path)
        finally:
            os.unlink(local.path)

        def publish() -> Committed:
            assert self._upload is not None
            self._upload.complete(parts)
            self._upload = None
            return Committed(self.url, local.bytes)

        return publish

    def abort(self, *, keep_partial: bool = False) -> bool:
        if self._upload is not None:
            self._upload.abort()
            self._upload = None
        return self.inner.abort(keep_partial=keep_partial)
