"""Decoded input blocks shared by a process's threads, so that a halo read
decodes each block of the file about once.

A chunk grown by a halo reads a window that reaches into its neighbours'
blocks: with 1024² chunks of 512² tiles and a 1-pixel halo, 16 blocks to
use 4. Each thread has its own GDAL dataset (:mod:`.files`), whose block
cache the others cannot see, so without help every block is decoded by up
to four chunks. Here a block is decoded once, by the first chunk that needs
it, and kept until every chunk whose grown window touches it has read it
(:meth:`Chunking.consumers` knows which from the chunk edges and the halo),
then dropped.

What is kept at once is bounded by :attr:`BlockCache.limit`. Chunks run in
row-major order, so what waits is the row of blocks below the current chunk
row that its halo decoded early (its owners run one chunk row later), a few
blocks beside the chunks in flight, and the strip of the row above not yet
read: about one block row of the raster. Beyond the limit, the block
needed furthest in the future (row-major) is not kept and will be decoded
again; the limit is never exceeded. Blocks whose remaining readers run in
another process (a cluster) or were skipped (a resumed job) are the first
to go.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

#: Bytes of decoded blocks a process keeps for halo reads (64 MiB): one
#: block row of a 16384-pixel-wide float32 raster of 512² tiles is 32 MiB.
BLOCK_CACHE_BYTES = 64 * 1024 * 1024

#: Units dropped for room whose remaining readers are remembered.
MAX_DROPPED = 4096

#: A block whose readers left are all more than this many chunks (and two
#: chunk rows) before the earliest chunk being read is dropped.
SWEEP_CHUNKS = 64


@dataclass(frozen=True)
class Chunking:
    """The chunk edges of a job and the halo its reads grow by.

    ``ys`` and ``xs`` are the chunk edges along y and x, from 0 to the
    raster's height and width. A chunk's id is its row-major index, the
    order in which schedulers submit chunks.
    """

    ys: tuple[int, ...]
    xs: tuple[int, ...]
    halo: int

    @classmethod
    def of(cls, chunks_y: tuple[int, ...], chunks_x: tuple[int, ...], halo: int) -> Chunking:
        """From chunk sizes in dask's notation."""
        return cls(tuple(itertools.accumulate(chunks_y, initial=0)),
                   tuple(itertools.accumulate(chunks_x, initial=0)), int(halo))

    def chunk_id(self, y0: int, y1: int, x0: int, x1: int) -> int | None:
        """The id of the chunk at rows ``y0:y1``, cols ``x0:x1``, or None
        when that window is not one of the chunks."""
        r, c = _index(self.ys, y0, y1), _index(self.xs, x0, x1)
        return None if r is None or c is None else r * (len(self.xs) - 1) + c

    def consumers(self, r0: int, r1: int, c0: int, c1: int, head: int = 0) -> frozenset[int]:
        """Ids of the chunks whose grown windows touch rows ``r0:r1``, cols
        ``c0:c1``, less those that reach only its first ``head`` rows from
        above (:meth:`head_only`)."""
        rows = [r for r in _touching(self.ys, r0, r1, self.halo)
                if not (head and self.ys[r] - self.halo < r0 and self.ys[r + 1] + self.halo <= r0 + head)]
        cols = _touching(self.xs, c0, c1, self.halo)
        n = len(self.xs) - 1
        return frozenset(r * n + c for r in rows for c in cols)

    def head_only(self, chunk: int, r0: int, head: int) -> bool:
        """Whether chunk ``chunk``'s grown window, coming from above, ends
        within the ``head`` rows from row ``r0`` on: what the chunk row
        above a unit needs of it for its halo, which such a chunk decodes
        for itself (a short prefix of the unit's blocks' streams) instead of
        the whole unit early."""
        r = chunk // (len(self.xs) - 1)
        return bool(head) and self.ys[r] - self.halo < r0 and self.ys[r + 1] + self.halo <= r0 + head

    def reach(self, ids: set[int]) -> tuple[int, int, int, int]:
        """Rows ``r0:r1`` and cols ``c0:c1`` of the box around the grown
        windows of chunks ``ids`` (unclipped)."""
        n = len(self.xs) - 1
        rows = [i // n for i in ids]
        cols = [i % n for i in ids]
        h = self.halo
        return (self.ys[min(rows)] - h, self.ys[max(rows) + 1] + h,
                self.xs[min(cols)] - h, self.xs[max(cols) + 1] + h)


def _index(edges: tuple[int, ...], a: int, b: int) -> int | None:
    i = bisect.bisect_left(edges, a)
    if i + 1 < len(edges) and edges[i] == a and edges[i + 1] == b:
        return i
    return None


def _touching(edges: tuple[int, ...], a: int, b: int, halo: int) -> range:
    """Chunks ``k`` (along one axis) with ``edges[k] - halo < b`` and ``edges[k+1] + halo > a``."""
    n = len(edges) - 1
    first = max(0, bisect.bisect_right(edges, a - halo) - 1)
    while first < n and edges[first + 1] + halo <= a:
        first += 1
    last = min(n - 1, bisect.bisect_left(edges, b + halo) - 1)
    return range(first, last + 1)


@dataclass(eq=False)
class _Entry:
    job: Hashable
    chunking: Chunking
    pending: set[int]  # chunks still to read it
    ready: threading.Event = field(default_factory=threading.Event)
    piece: Piece | None = None
    held: bool = False  # counted in BlockCache.held


class Piece(NamedTuple):
    """Pixels of a unit of caching, ``(bands, rows, cols)``, whose first
    pixel is at row ``y``, col ``x`` of the raster: the whole unit, or the
    part of it the chunks still to read it reach."""

    data: np.ndarray
    y: int
    x: int


@dataclass(frozen=True)
class CacheStats:
    """What a :class:`BlockCache` did: blocks decoded (GDAL blocks, the unit
    the tests compare with the file's), bytes held now and at most."""

    decoded: int
    held: int
    peak: int
    partial: float = 0.0  # blocks' worth of rows decoded by head reads


class BlockCache:
    """Decoded blocks by key, each decoded by one thread while the others
    that need it wait, kept until its last reader has read it (see the
    module docstring). Thread-safe; one per process (:func:`block_cache`)."""

    def __init__(self, limit: int = BLOCK_CACHE_BYTES) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._entries: dict[Hashable, _Entry] = {}
        self._reading: dict[Hashable, dict[int, int]] = {}  # job -> chunk id -> reads in progress
        # (job, unit) -> readers left, when dropped for room: a unit's key
        # names the file's blocks, which another job may read too.
        self._dropped: dict[tuple[Hashable, Hashable], set[int]] = {}
        self._decoded = 0
        self._partial = 0.0
        self._held = 0
        self._peak = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._decoded, self._held, self._peak, self._partial)

    def count_partial(self, blocks: float) -> None:
        """Count a head read: ``blocks`` blocks' worth of rows decoded."""
        with self._lock:
            self._partial += blocks

    def peek(self, key: Hashable, need: tuple[int, int, int, int]) -> Piece | None:
        """Unit ``key`` if it is decoded and holds rows ``need[0]:need[1]``,
        cols ``need[2]:need[3]``, without counting as one of its reads (for
        chunks that are not among its consumers: head reads)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.ready.is_set() and _covers(entry.piece, need):
                return entry.piece
        return None

    @contextmanager
    def reading(self, job: Hashable, chunk: int) -> Iterator[None]:
        """Mark chunk ``chunk`` of ``job`` as being read: blocks only chunks
        before the earliest one being read still wait for are stale."""
        with self._lock:
            ids = self._reading.setdefault(job, {})
            ids[chunk] = ids.get(chunk, 0) + 1
            self._sweep(job, min(ids))
        try:
            yield
        finally:
            with self._lock:
                ids[chunk] -= 1
                if not ids[chunk]:
                    del ids[chunk]
                if not ids:
                    del self._reading[job]

    def release_idle(self) -> int:
        """Drop the blocks of every job with no chunk being read (a job that
        ended, or failed before its readers came); return the bytes freed.
        Called when a job ends, so that an aborted one does not leave its
        blocks held until the next halo read makes room."""
        with self._lock:
            before = self._held
            for key, entry in list(self._entries.items()):
                if entry.held and entry.job not in self._reading:
                    self._drop(key, entry)
            return before - self._held

    def _sweep(self, job: Hashable, first: int) -> None:
        """Drop ``job``'s blocks whose readers left are all well before the
        earliest chunk being read (``first``): in another process (the band
        above, on a cluster) or skipped. Well before: more than two chunk
        rows, or :data:`SWEEP_CHUNKS`, so that the chunks just submitted
        but not started yet are never taken for gone."""
        for key, entry in list(self._entries.items()):
            if entry.job == job and entry.held:
                margin = max(SWEEP_CHUNKS, 2 * (len(entry.chunking.xs) - 1))
                if max(entry.pending) < first - margin:
                    self._drop(key, entry)

    def take(self, key: Hashable, job: Hashable, chunking: Chunking, chunk: int,
             window: tuple[int, int, int, int], decode: Callable[[], tuple[np.ndarray, int]],
             *, wait: bool = True, head: int = 0) -> Piece | None:
        """Unit ``key`` (rows ``window[0]:window[1]``, cols
        ``window[2]:window[3]``) for chunk ``chunk`` of ``job``, decoding it
        here if no thread has; None if another thread is decoding it and
        ``wait`` is false. ``decode()`` returns the unit and how many GDAL
        blocks that decoded. The piece returned holds at least the part of
        the unit the chunk's grown window covers. ``head``: see
        :meth:`Chunking.consumers`."""
        need = _overlap(window, chunking.reach({chunk}))
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is None:
                    pending = self._dropped.pop((job, key), None)
                    if pending is None:
                        pending = set(chunking.consumers(*window, head=head))
                    entry = _Entry(job, chunking, pending - {chunk})
                    self._entries[key] = entry
                    break  # decode it below, outside the lock
                if entry.ready.is_set():
                    if _covers(entry.piece, need):
                        return self._read(key, entry, chunk)
                    # Kept for other chunks only (this one read it already,
                    # or came unannounced): decode it for this one alone.
                    entry = None
                    break
            if not wait:
                return None
            entry.ready.wait()
            with self._lock:
                if _covers(entry.piece, need):
                    return self._read(key, entry, chunk)
            # Its decoding failed: look again.
        try:
            data, blocks = decode()
        except BaseException:
            if entry is not None:
                with self._lock:
                    if self._entries.get(key) is entry:
                        del self._entries[key]
                entry.ready.set()
            raise
        whole = Piece(data, window[0], window[2])
        with self._lock:
            self._decoded += blocks
            if entry is not None:
                try:
                    self._keep(key, entry, whole)
                except BaseException:
                    if self._entries.get(key) is entry:
                        del self._entries[key]  # its waiters decode it themselves
                    raise
                finally:
                    entry.ready.set()  # never leave a waiter waiting
        return whole

    def _keep(self, key: Hashable, entry: _Entry, whole: Piece) -> None:
        """Keep what the chunks in ``entry.pending`` will read of ``whole``,
        if room can be made for it (readers waiting get it either way)."""
        entry.piece = _crop(whole, entry.chunking.reach(entry.pending)) if entry.pending else whole
        nbytes = entry.piece.data.nbytes
        if entry.pending and self._make_room(entry, nbytes):
            entry.held = True
            self._held += nbytes
            self._peak = max(self._peak, self._held)
        else:
            del self._entries[key]
            if entry.pending:
                self._remember(key, entry)

    def _read(self, key: Hashable, entry: _Entry, chunk: int) -> Piece:
        piece = entry.piece
        entry.pending.discard(chunk)
        if self._entries.get(key) is not entry:
            return piece  # type: ignore[return-value]
        if not entry.pending:
            self._drop(key, entry)
        else:
            # What is left to read may be a strip: keep only that.
            smaller = _crop(piece, entry.chunking.reach(entry.pending))  # type: ignore[arg-type]
            if entry.held:
                self._held += smaller.data.nbytes - piece.data.nbytes  # type: ignore[union-attr]
            entry.piece = smaller
        return piece  # type: ignore[return-value]

    def _drop(self, key: Hashable, entry: _Entry) -> None:
        del self._entries[key]
        if entry.held:
            self._held -= entry.piece.data.nbytes  # type: ignore[union-attr]
            entry.held = False

    def _remember(self, key: Hashable, entry: _Entry) -> None:
        """Note who still has to read a unit dropped for room, so that when
        it is decoded again the chunks that read it already are not waited for."""
        self._dropped[entry.job, key] = set(entry.pending)
        while len(self._dropped) > MAX_DROPPED:
            del self._dropped[next(iter(self._dropped))]

    def _make_room(self, new: _Entry, nbytes: int) -> bool:
        """Drop held blocks, stale or needed later than ``new``, until
        ``nbytes`` more fit under the limit; False if ``new`` itself is
        the one to go."""
        while self._held + nbytes > self.limit:
            victim = max(
                ((k, e) for k, e in self._entries.items() if e.held),
                key=lambda ke: self._priority(ke[1]),
                default=None,
            )
            if victim is None or self._priority(victim[1]) <= self._priority(new):
                return False
            self._drop(*victim)
            self._remember(*victim)
        return True

    def _priority(self, entry: _Entry) -> tuple[int, int]:
        """Higher goes first: stale blocks (no reader left to come, as far
        as this process can tell), then the one next read latest."""
        reading = self._reading.get(entry.job)
        first = min(entry.pending)
        if not reading or first < min(reading):
            return (1, 0)
        return (0, first)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])


def _covers(piece: Piece | None, need: tuple[int, int, int, int]) -> bool:
    """Whether ``piece`` holds rows ``need[0]:need[1]``, cols ``need[2]:need[3]``."""
    if piece is None:
        return False
    data, y, x = piece
    return (y <= need[0] and need[1] <= y + data.shape[1]
            and x <= need[2] and need[3] <= x + data.shape[2])


def _crop(piece: Piece, reach: tuple[int, int, int, int]) -> Piece:
    """``piece`` cut to the rows and cols in ``reach`` (a copy when that is
    at most half of it, so the rest can be freed), else ``piece``."""
    data, y, x = piece
    r0, r1 = max(reach[0], y), min(reach[1], y + data.shape[1])
    c0, c1 = max(reach[2], x), min(reach[3], x + data.shape[2])
    if 2 * (r1 - r0) * (c1 - c0) > data.shape[1] * data.shape[2]:
        return piece
    return Piece(data[:, r0 - y : r1 - y, c0 - x : c1 - x].copy(), r0, c0)


def block_cache() -> BlockCache:
    """This process's :class:`BlockCache` (a forked child makes its own)."""
    return _cache_of(os.getpid())


@functools.cache
def _cache_of(pid: int) -> BlockCache:
    return BlockCache()


# -- windows from blocks ----------------------------------------------------------


#: Smallest side of a unit of caching, in pixels: files of small blocks
#: (1-row strips, 64² tiles) are cached in groups of blocks, so that a
#: window is not assembled from thousands of pieces.
MIN_UNIT_SIDE = 128


def unit_shape(block: tuple[int, int]) -> tuple[int, int]:
    """The unit of caching for a file of ``block``-shaped GDAL blocks: a
    whole number of blocks, at least :data:`MIN_UNIT_SIDE` on each side."""
    return tuple(b * -(-MIN_UNIT_SIDE // b) if b < MIN_UNIT_SIDE else b for b in block)  # type: ignore[return-value]


#: ``fetch(r0, r1, c0, c1, wait)``: the unit at rows ``r0:r1``, cols
#: ``c0:c1`` (or the part of it the chunk reaches), or None when it is
#: being decoded by another thread and ``wait`` is false.
Fetch = Callable[[int, int, int, int, bool], "Piece | None"]


def assemble(out: np.ndarray, y0: int, x0: int, unit: tuple[int, int], size: tuple[int, int],
             fetch: Fetch) -> None:
    """Fill ``out`` (``(bands, h, w)``, the window at ``(y0, x0)`` of a
    raster of ``size``) from the units of caching it touches. Units another
    thread is decoding are copied last, so this thread decodes meanwhile."""
    uh, uw = unit
    height, width = size
    y1, x1 = y0 + out.shape[1], x0 + out.shape[2]
    later = []
    for i in range(y0 // uh, (y1 - 1) // uh + 1):
        for j in range(x0 // uw, (x1 - 1) // uw + 1):
            r0, c0 = i * uh, j * uw
            r1, c1 = min(r0 + uh, height), min(c0 + uw, width)
            piece = fetch(r0, r1, c0, c1, False)
            if piece is None:
                later.append((r0, r1, c0, c1))
            else:
                _copy(out, y0, x0, piece)
    for r0, r1, c0, c1 in later:
        _copy(out, y0, x0, fetch(r0, r1, c0, c1, True))  # type: ignore[arg-type]


def _copy(out: np.ndarray, y0: int, x0: int, piece: Piece) -> None:
    """Copy the overlap of ``piece`` into ``out`` (whose first pixel is at ``(y0, x0)``)."""
    data, r0, c0 = piece
    top, left = max(y0, r0), max(x0, c0)
    bottom = min(y0 + out.shape[1], r0 + data.shape[1])
    right = min(x0 + out.shape[2], c0 + data.shape[2])
    out[:, top - y0 : bottom - y0, left - x0 : right - x0] = data[:, top - r0 : bottom - r0,
                                                                   left - c0 : right - c0]
