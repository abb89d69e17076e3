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

from rdask.io.remote import S3Upload, staging_path
from rdask.outputs import cog, gtiff
from rdask.outputs.base import Committed, OutputSpec, Publish, RunChunks
from rdask.outputs.options import WriteOptions
from rdask.recipe import Region


def accepts(target: str, options: WriteOptions) -> bool:
    return target.startswith("s3://")


def open(spec: OutputSpec) -> StagedUpload:  # noqa: A001
    return StagedUpload(spec)


class StagedUpload:
    """A local output whose commit uploads it (see the module docstring)."""

    def __init__(self, spec: OutputSpec) -> None:
        self.upload = S3Upload(spec.target, dict(spec.gdal_options))
        self.upload.check(overwrite=spec.options.overwrite)
        local = staging_path(spec.target)
        if not spec.options.resume:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)
        local_spec = replace(spec, target=local)
        self.inner = (cog if spec.options.driver == "COG" else gtiff).open(local_spec)
        self.writer = self.inner.writer
        self.partial = self.inner.partial
        self._sent: tuple[str, list] | None = None  # an upload whose parts are sent
        self.url = spec.target

    def is_done(self, region: Region) -> bool:
        return self.inner.is_done(region)

    def record(self, region: Region, result) -> None:
        self.inner.record(region, result)

    def commit(self, run: RunChunks) -> Publish:
        """Finish the local file and upload its parts; publishing completes the upload."""
        local = self.inner.commit(run)()
        try:
            self._sent = self.upload.send(local.path)
        finally:
            os.unlink(local.path)

        def publish() -> Committed:
            assert self._sent is not None
            upload_id, parts = self._sent
            self._sent = None
            self.upload.complete(upload_id, parts)
            return Committed(self.url, local.bytes)

        return publish

    def abort(self, *, keep_partial: bool = False) -> bool:
        if self._sent is not None:
            self.upload.abort(self._sent[0])
            self._sent = None
        return self.inner.abort(keep_partial=keep_partial)
