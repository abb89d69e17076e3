"""The partial file, its journal, the lock and the final rename: one piece
that every file output reuses.

Beside the target ``out.tif`` a job keeps ``.out.tif.rdask-partial`` (the
file being written; same directory, so the rename is atomic and never
crosses devices) and ``.out.tif.rdask-journal`` (what the partial file
holds, for ``--resume``; ``flock``ed, so a second job on the same target is
refused). :meth:`Staging.publish` moves a finished file into place:
``os.replace`` with ``overwrite``, otherwise a hard link that fails if the
target appeared meanwhile, so an existing file is never clobbered.
:meth:`Staging.discard` removes the partial file and journal, unless asked
to keep them for a resume.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import logging
import os
import shutil
import tempfile
from typing import Any
from urllib.parse import urlsplit

from rdask.errors import OutputError
from rdask.outputs.journal import JobId, Journal, partial_paths
from rdask.outputs.sidecar import publish_sidecars, sidecars

log = logging.getLogger("rdask")

def check_target(path: str, *, overwrite: bool) -> str:
    """Validate an output path before any work is done; return it absolute.

    Raises
    ------
    OutputError
        The target exists (without ``overwrite``), is a directory, or its
        directory is missing or not writable.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise OutputError(f"output is a directory: {path}")
    return check_place(target, path, overwrite=overwrite)


def check_place(target: str, shown: str, *, overwrite: bool) -> str:
    """What every output kind checks of its (absolute) ``target``: it does not
    exist unless ``overwrite``, and its directory exists and is writable.
    Errors name ``shown``, the path as the user gave it."""
    parent = os.path.dirname(target)
    if os.path.lexists(target) and not overwrite:
        raise OutputError(f"output exists: {shown} (pass overwrite=True / --overwrite to replace it)")
    if not os.path.isdir(parent):
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory is not writable: {parent}")
    return target


class Staging:
    """A target's partial file and locked journal.

    ``resuming`` is True when an interrupted identical job left both
    behind and ``resume`` was asked for; then ``journal`` holds what they
    contain. Otherwise any stale partial file is removed and a fresh
    journal started.
    """

    def __init__(self, target: str, job: JobId, *, resume: bool, overwrite: bool) -> None:
        self.target = check_target(target, overwrite=overwrite)
        self.overwrite = overwrite
        self.partial, journal_path = partial_paths(self.target)
        self.resuming = resume and os.path.exists(journal_path) and os.path.exists(self.partial)
        if self.resuming:
            self.journal = Journal.resume(journal_path, job, self.target)
            log.info("resuming %s: %d chunks already written", self.target, len(self.journal.done))
        else:
            if resume:
                log.info("nothing to resume for %s; starting from scratch", self.target)
            self.journal = Journal.start(journal_path, job)
            self.remove_partial()

    def publish(self, path: str | None = None) -> str:
        """Move ``path`` (default: the partial file) to the target, with any
        sidecar GDAL wrote beside the partial file; remove partial and journal."""
        path = path or self.partial
        try:
            # What the GeoTIFF cannot hold (GDAL's .aux.xml...) goes into place
            # first, so a reader never sees the file without it.
            publish_sidecars(self.partial, self.target)
            self._place(path)
        finally:
            if path != self.partial:
                unlink_quietly(path)
            self.remove_partial()
            self.journal.close(remove=True)
        return self.target

    def discard(self, *, keep_partial: bool) -> bool:
        """Remove partial file and journal unless ``keep_partial``; return
        whether they are there for a resume. Safe to call twice."""
        if not keep_partial:
            self.remove_partial()
        self.journal.close(remove=not keep_partial)
        return keep_partial and os.path.exists(self.partial) and os.path.exists(self.journal.path)

    def remove_partial(self) -> None:
        for p in (self.partial, *sidecars(self.partial)):
            unlink_quietly(p)

    def _place(self, path: str) -> None:
        if self.overwrite:
            os.replace(path, self.target)
            return
        try:
            os.link(path, self.target)
        except FileExistsError:
            raise OutputError(f"output appeared while writing: {self.target}") from None
        except OSError:
            # No hard links here (some network filesystems): rename, after
            # checking once more.
            if os.path.lexists(self.target):
                raise OutputError(f"output appeared while writing: {self.target}") from None
            os.rename(path, self.target)


@functools.cache
def libc_function(name: str, *argtypes: Any) -> Any:
    """The C library's ``name`` (returning an int) with ``argtypes``, or None
    where this libc lacks it: the Linux calls outputs use when they can
    (``sync_file_range``, ``renameat2``, ``syncfs``)."""
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


def space_note(path: str) -> str:
    """Why a write failed when the disk (or quota) beside ``path`` is full.

    GDAL reports a full disk as a generic write error; the errno only
    reaches stderr through libtiff, so name the cause from the free space.
    """
    directory = os.path.dirname(path)
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return ""
    if free >= 1 << 20:
        return ""
    return f" (No space left on device: {free} bytes free in {directory})"


def unlink_quietly(path: str) -> None:
    """Remove ``path`` if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def s3_staging_path(url: str) -> str:
    """A stable local path where an S3 output keeps what it builds on the
    client (stable per URL, so ``--resume`` finds it)."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), "rdask-s3-staging", digest)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, os.path.basename(urlsplit(url).path) or "output.tif")
