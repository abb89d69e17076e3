"""The job journal: what a partial output already holds, for ``--resume``.

Beside the target ``out.tif`` a job keeps ``.out.tif.rdask-partial`` (the
file being written) and ``.out.tif.rdask-journal`` (text). The journal's
first line is JSON naming the job (fingerprints of its input, kernel chain,
output options and chunk plan); each further line records a chunk whose
pixels are in the partial file: ``row col idx:offset:size ... .`` (where its
tiles are, for the GTiff output, which writes the tile index itself on
commit) or ``row col`` (the GDAL fallback, journaled only after a
checkpoint has put GDAL's tile index on disk). Either way the pair is
consistent after a SIGKILL at any moment; a torn last line is ignored and
its chunk redone. The journal keeps nothing in memory while a job runs.

The journal is also the job's lock (``flock``): a second job on the same
target is refused instead of interleaving with the first.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass

from rdask.errors import OutputError, ResumeError

VERSION = 1


@dataclass(frozen=True)
class JobId:
    """Fingerprints that a resumed job must match."""

    input: str
    kernel: str
    options: str
    chunks: str = ""

    def differences(self, other: JobId) -> list[str]:
        names = {"input": "input", "kernel": "kernel", "options": "options",
                 "chunks": "chunk plan (keep -j and --chunk-mb; by default threads use 4 MB "
                           "chunks and a cluster 16 MB)"}
        return [label for name, label in names.items() if getattr(self, name) != getattr(other, name)]


def partial_paths(target: str) -> tuple[str, str]:
    """``(partial_file, journal_file)`` beside ``target``."""
    head, tail = os.path.split(target)
    return os.path.join(head, f".{tail}.rdask-partial"), os.path.join(head, f".{tail}.rdask-journal")


class LockedFile:
    """A journal file held open under its ``flock``: syncing and closing."""

    def __init__(self, path: str, fh) -> None:
        self.path = path
        self._fh = fh

    def sync(self) -> None:
        """Force what was recorded to disk."""
        if not self._fh.closed:
            _sync(self._fh)

    def close(self, *, remove: bool) -> None:
        """Release the lock (closing the file), removing it first with ``remove``."""
        if self._fh.closed:
            return
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._fh.close()


class Checkpoints:
    """Chunk windows journaled a checkpoint at a time (every ``seconds``),
    for outputs whose chunks are durable only once synced: a chunk written
    but not yet journaled when the job dies is simply computed again."""

    def __init__(self, journal: Journal, seconds: float) -> None:
        self.journal, self.seconds = journal, seconds
        self._pending: list[tuple[int, int]] = []
        self._last = time.monotonic()

    def add(self, window: tuple[int, int]) -> None:
        """Note a written chunk; journal the batch when a checkpoint is due."""
        self._pending.append(window)
        if time.monotonic() - self._last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        """Journal every chunk noted so far."""
        if self._pending:
            self.journal.record(self._pending)
            self._pending = []
        self._last = time.monotonic()


class Journal(LockedFile):
    """An open, locked journal. Use :meth:`start` or :meth:`resume`."""

    def __init__(
        self, path: str, fh, done: set[tuple[int, int]], tiles: dict[int, tuple[int, int]] | None = None
    ) -> None:
        super().__init__(path, fh)
        #: What an interrupted job had written, read once on resume (the
        #: journal itself keeps nothing in memory as a job records chunks).
        self.done = done
        #: tile index -> (file offset, byte count), for outputs that place tiles.
        self.tiles = tiles or {}

    @classmethod
    def start(cls, path: str, job: JobId) -> Journal:
        """Begin a fresh journal (replacing a stale one)."""
        fh = open_locked(path, "a+")
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"rdask_journal": VERSION, **job.__dict__}) + "\n")
        _sync(fh)
        return cls(path, fh, set())

    @classmethod
    def resume(cls, path: str, job: JobId, target: str) -> Journal:
        """Reopen the journal of an interrupted job, checking it is this job.

        Raises
        ------
        ResumeError
            When the interrupted job had another input, kernel or options.
        """
        fh = open_locked(path, "a+")
        fh.seek(0)
        try:
            text = fh.read()
        except UnicodeDecodeError:
            fh.close()
            raise ResumeError(f"cannot resume {target}: its journal {path} is unreadable "
                              "(rerun without --resume to start over)") from None
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            # A torn last line (a SIGKILL mid-write): that chunk is redone.
            lines.pop()
        try:
            head = json.loads(lines[0])
            old = JobId(head["input"], head["kernel"], head["options"], head.get("chunks", ""))
        except (IndexError, ValueError, KeyError):
            fh.close()
            raise ResumeError(f"cannot resume {target}: its journal {path} is unreadable "
                              "(rerun without --resume to start over)") from None
        diff = job.differences(old)
        if diff:
            fh.close()
            raise ResumeError(
                f"cannot resume {target}: the interrupted job used a different "
                f"{' and '.join(diff)} (rerun without --resume to start over)"
            )
        done: set[tuple[int, int]] = set()
        tiles: dict[int, tuple[int, int]] = {}
        for line in lines[1:]:
            parts = line.split()
            # A line without its "." marker is torn too: that chunk is redone.
            if len(parts) == 2:
                done.add((int(parts[0]), int(parts[1])))
            elif len(parts) > 3 and parts[-1] == ".":
                for item in parts[2:-1]:
                    i, off, n = (int(v) for v in item.split(":"))
                    tiles[i] = (off, n)
                done.add((int(parts[0]), int(parts[1])))
        return cls(path, fh, done, tiles)

    def record(self, windows: list[tuple[int, int]]) -> None:
        """Durably add chunks whose data the partial file now holds."""
        if windows:
            self._fh.write("".join(f"{r} {c}\n" for r, c in windows))
            _sync(self._fh)

    def record_tiles(self, window: tuple[int, int], placed: list[tuple[int, int, int]], *, sync: bool = True) -> None:
        """Add a chunk and where its tiles are: ``(index, offset, bytes)``.

        Flushed to the OS at once (enough to survive SIGKILL); ``sync``
        also forces it to disk.
        """
        items = " ".join(f"{i}:{o}:{n}" for i, o, n in placed)
        self._fh.write(f"{window[0]} {window[1]} {items} .\n")
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())



def open_locked(path: str, mode: str, shown: str | None = None):
    """Open ``path`` with an exclusive ``flock``: the job's lock on its target
    (``shown``, by default the target this journal's name is beside)."""
    try:
        fh = open(path, mode)
    except OSError as exc:
        raise OutputError(f"cannot write job journal {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        head, tail = os.path.split(path)
        target = shown or os.path.join(head, tail[1 : -len(".rdask-journal")])
        raise OutputError(f"another rdask job is writing {target}") from None
    return fh


def _sync(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())
