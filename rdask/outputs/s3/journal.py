"""The client's journal of an S3 multipart output, for ``--resume``.

One local file per URL (beside :func:`~rdask.outputs.staging.s3_staging_path`),
``flock``ed as the job's lock. Its first line is JSON naming the job
(:class:`~rdask.outputs.journal.JobId`) and the upload id; each further
line is JSON for one chunk whose part was uploaded: ``[row, col, part,
ETag, size, padding, [[tile, offset in part, size], ...]]``, or whose piece
was stored: the same with an empty ETag, no padding and the piece's key
appended. Lines are flushed as they are written, so a SIGKILL loses at most
a torn last line, whose chunk is redone. Nothing here is trusted on resume
until ListParts (a part) or a LIST of the pieces (a piece) confirms it.
"""

from __future__ import annotations

import json
import os

from rdask.errors import ResumeError
from rdask.outputs.journal import JobId, LockedFile, open_locked
from rdask.outputs.s3.parts import Part, Piece

VERSION = 1


class PartJournal(LockedFile):
    """An open, locked journal; :meth:`read` what a killed job left, then
    :meth:`start` (a fresh upload) or keep appending (a resumed one)."""

    def __init__(self, path: str, url: str) -> None:
        super().__init__(path, open_locked(path, "a+", shown=url))
        self.url = url

    def read(self, job: JobId) -> tuple[str | None, dict[tuple[int, int], Part | Piece]]:
        """``(upload id, {(row, col): Part or Piece})`` a killed identical job recorded,
        or ``(None, {})`` when there is none.

        Raises
        ------
        ResumeError
            The killed job had another input, kernel, options or chunk plan.
        """
        self._fh.seek(0)
        try:
            text = self._fh.read()
        except UnicodeDecodeError:
            raise ResumeError(f"cannot resume {self.url}: its journal {self.path} is unreadable "
                              "(rerun without --resume to start over)") from None
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
        parts: dict[tuple[int, int], Part | Piece] = {}
        for line in lines[1:]:
            try:
                y0, x0, number, etag, size, padding, tiles, *key = json.loads(line)
                layout = tuple((int(i), int(o), int(n)) for i, o, n in tiles)
            except (ValueError, TypeError):
                continue  # not a line this version wrote: that chunk is redone
            parts[(int(y0), int(x0))] = (Piece(int(number), str(key[0]), int(size), layout) if key
                                         else Part(int(number), str(etag), int(size), layout, int(padding)))
        return upload_id, parts

    def start(self, job: JobId, upload_id: str) -> None:
        """Begin afresh for ``upload_id`` (replacing what was there)."""
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(json.dumps({"rdask_s3parts": VERSION, **job.__dict__, "upload": upload_id}) + "\n")
        self.sync()

    def record(self, window: tuple[int, int], part: Part | Piece, *, sync: bool = False) -> None:
        """Add a chunk's part or piece (flushed at once: enough to survive a SIGKILL)."""
        tiles = [list(t) for t in part.tiles]
        line: list = ([window[0], window[1], part.number, "", part.size, 0, tiles, part.key]
                      if isinstance(part, Piece) else
                      [window[0], window[1], part.number, part.etag, part.size, part.padding, tiles])
        self._fh.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())
