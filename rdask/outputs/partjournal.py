"""The client's journal of an S3 multipart output, for ``--resume``.

One local file per URL (beside :func:`~rdask.io.remote.staging_path`),
``flock``ed as the job's lock. Its first line is JSON naming the job
(:class:`~rdask.outputs.journal.JobId`) and the upload id; each further
line is JSON for one chunk whose part was uploaded: ``[row, col, part,
ETag, size, padding, [[tile, offset in part, size], ...]]``. Lines are flushed as
they are written, so a SIGKILL loses at most a torn last line, whose chunk
is redone. Nothing here is trusted on resume until ListParts confirms it.
"""

from __future__ import annotations

import json
import os

from rdask.errors import ResumeError
from rdask.outputs.journal import JobId, open_locked
from rdask.outputs.parts import Part

VERSION = 1


class PartJournal:
    """An open, locked journal; :meth:`read` what a killed job left, then
    :meth:`start` (a fresh upload) or keep appending (a resumed one)."""

    def __init__(self, path: str, url: str) -> None:
        self.path, self.url = path, url
        self._fh = open_locked(path, "a+", shown=url)

    def read(self, job: JobId) -> tuple[str | None, dict[tuple[int, int], Part]]:
        """``(upload id, {(row, col): Part})`` a killed identical job recorded,
        or ``(None, {})`` when there is none.

        Raises
        ------
        ResumeError
            The killed job had another input, kernel, options or chunk plan.
        """
        self._fh.seek(0)
        text = self._fh.read()
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines.pop()  # torn by a SIGKILL mid-write: that chunk is redone
        try:
            head = json.loads(lines[0])
            old = JobId(head["input"], head["kernel"], head["options"], head["chunks"])
            upload_id = str(head["upload"])
        except (IndexError, ValueError, KeyError):
            return None, {}
        diff = job.differences(old)
        if diff:
            raise ResumeError(f"cannot resume {self.url}: the interrupted job used a different "
                              f"{' and '.join(diff)} (rerun without --resume to start over)")
        parts: dict[tuple[int, int], Part] = {}
        for line in lines[1:]:
            try:
                y0, x0, number, etag, size, padding, tiles = json.loads(line)
            except ValueError:
                continue
            parts[(int(y0), int(x0))] = Part(int(number), str(etag), int(size),
                                             tuple((int(i), int(o), int(n)) for i, o, n in tiles), int(padding))
        return upload_id, parts

    def start(self, job: JobId, upload_id: str) -> None:
        """Begin afresh for ``upload_id`` (replacing what was there)."""
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(json.dumps({"rdask_s3parts": VERSION, **job.__dict__, "upload": upload_id}) + "\n")
        self.sync()

    def record(self, window: tuple[int, int], part: Part, *, sync: bool = False) -> None:
        """Add a chunk's part (flushed at once: enough to survive a SIGKILL)."""
        line = [window[0], window[1], part.number, part.etag, part.size, part.padding,
                [list(t) for t in part.tiles]]
        self._fh.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())

    def sync(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self, *, remove: bool) -> None:
        if self._fh.closed:
            return
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._fh.close()
