"""The tile sink: chunks arrive already encoded; the lock only reserves bytes.

GDAL still writes the file's structure: the sink first has GDAL create the
partial GeoTIFF with every tag (CRS, transform, nodata, metadata,
compression, predictor) but no pixel data (``SPARSE_OK``), so its tile index
is all zeros. Encoded tiles (:mod:`rdask.io.tiles`) are then appended at the
end of the file: under the lock a chunk only reserves its byte range; the
``pwrite`` happens outside it. Each chunk's tile offsets go to the journal
once its bytes are written, and on commit the tile index is written into
the place GDAL reserved for it. A resume rebuilds the index from the
journal, so the partial file never needs GDAL's checkpoints.
"""

from __future__ import annotations

import functools
import os
import struct
import time
from typing import Any

import numpy as np

from rdask.errors import OutputError
from rdask.io.sink import RasterSink, rasterio_env
from rdask.io.tiles import TileEncoder

_TILE_OFFSETS, _TILE_BYTECOUNTS = 324, 325

#: Bytes appended between two :func:`start_writeback` calls on a durable file.
WRITEBACK_BYTES = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


class TileSink(RasterSink):
    """A :class:`RasterSink` fed with ``sink[region] = [(tile index, bytes), ...]``.

    Takes the arguments of :class:`RasterSink` plus the ``encoder`` whose
    output it receives; the runner applies the encoder in the compute task.
    """

    def __init__(self, *args: Any, encoder: TileEncoder, **kwargs: Any) -> None:
        self.encoder = encoder
        extra = dict(kwargs.pop("creation_options", None) or {})
        extra["SPARSE_OK"] = "TRUE"
        self._fd = None
        # Writers between reserving their bytes and recording them; an abort
        # meanwhile leaves the descriptor to the last of them to close, so
        # none writes through a closed (or reused) descriptor number.
        self._writers = 0
        self._orphan_fd: int | None = None
        super().__init__(*args, creation_options=extra, **kwargs)
        try:
            # GDAL has written the structure; from here on the file is ours.
            with rasterio_env():
                self._ds.close()
            self._index = _IndexLocation.read(self.tmp, self.encoder)
            n = self._index.count
            self._offsets = np.zeros(n, dtype=np.uint64)
            self._counts = np.zeros(n, dtype=np.uint64)
            for i, (off, size) in self.journal.tiles.items():
                self._offsets[i], self._counts[i] = off, size
            try:
                self._fd = os.open(self.tmp, os.O_RDWR)
            except OSError as exc:
                raise OutputError(f"cannot write {self.target}: {exc.strerror}") from None
            self._end = self._written_back = os.fstat(self._fd).st_size
        except BaseException:
            # Nothing was written yet: leave nothing behind (a resumed job's
            # partial file is kept for the next attempt).
            self.abort(keep_partial=bool(self.journal.done))
            raise

    def __setitem__(self, key: tuple[slice, slice, slice], tiles: list[tuple[int, bytes]]) -> None:
        total = sum(len(b) for _, b in tiles)
        with self._lock:
            self._claim(key)
            start = self._end
            self._end += total
            fd = self._fd
            self._writers += 1
        try:
            placed = _layout(tiles, start)
            try:
                for (_, at, _), (_, data) in zip(placed, tiles, strict=True):
                    pwrite_all(fd, memoryview(data), at)
            except OSError as exc:
                raise OutputError(f"cannot write {self.target}: {exc.strerror}") from None
            self._record(key, placed)
            self._write_back(start + total, fd)
        finally:
            with self._lock:
                self._writers -= 1
                if not self._writers and self._orphan_fd is not None:
                    os.close(self._orphan_fd)
                    self._orphan_fd = None

    def place(self, key: tuple[slice, slice, slice], placed: list[tuple[int, int, int]]) -> None:
        """Record tiles another process appended with :func:`append_tiles`."""
        with self._lock:
            self._claim(key)
        self._record(key, placed)
        self._write_back(max((off + size for _, off, size in placed), default=0))

    def _write_back(self, end: int, fd: int | None = None) -> None:
        """Start writing the file's bytes up to ``end`` to disk, a window at a time.

        A durable file is fsynced before it is published; started as the
        file grows, the writeback overlaps the computation instead of
        leaving the commit to wait for all of it (~0.1 s per 400 MB).
        ``fd`` is a writer's own descriptor (kept open until it is done);
        without it, this thread must be the one that would abort.
        """
        if not self.durable:
            return
        with self._lock:
            fd = self._fd if fd is None else fd
            start = self._written_back
            if end - start < WRITEBACK_BYTES or fd is None or self._closed:
                return
            self._written_back = end
        start_writeback(fd, start, end - start)

    def _claim(self, key: tuple[slice, slice, slice]) -> None:
        # Called with the lock held.
        if self._closed:
            raise OutputError(f"{self.target}: write after the job was stopped")
        y0, x0 = key[1].indices(self.shape[1])[0], key[2].indices(self.shape[2])[0]
        if (y0, x0) in self._written:
            raise RuntimeError(f"rdask bug: window at row {y0} col {x0} written twice")
        self._written.add((y0, x0))

    def _record(self, key: tuple[slice, slice, slice], placed: list[tuple[int, int, int]]) -> None:
        _, ysl, xsl = key
        y0, y1, _ = ysl.indices(self.shape[1])
        x0, x1, _ = xsl.indices(self.shape[2])
        with self._lock:
            if self._closed:
                raise OutputError(f"{self.target}: write after the job was stopped")
            for index, off, size in placed:
                self._offsets[index], self._counts[index] = off, size
            self.journal.record_tiles((y0, x0), placed, sync=False)
            if time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
                self.journal.sync()
                self._last_checkpoint = time.monotonic()
        if self.on_write is not None:
            self.on_write((y1 - y0) * (x1 - x0))

    def _close_dataset(self) -> None:
        """Write the tile index where GDAL reserved it, then close."""
        if getattr(self, "_fd", None) is None:
            return
        try:
            self._index.write(self._fd, self._offsets, self._counts)
            if self.durable:
                os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(f"cannot finish {self.target}: {exc.strerror}") from None
        finally:
            os.close(self._fd)
            self._fd = None

    def _abort_dataset(self, keep_partial: bool) -> bool:
        # Called with the lock held.
        if getattr(self, "_fd", None) is not None:
            if self._writers:
                self._orphan_fd = self._fd  # the last writer closes it
            else:
                os.close(self._fd)
            self._fd = None
        if keep_partial:
            self.journal.sync()
        return keep_partial


def start_writeback(fd: int, offset: int, nbytes: int) -> bool:
    """Have the kernel start writing ``nbytes`` at ``offset`` of ``fd`` to disk
    and return at once (Linux ``sync_file_range``); False where it cannot.
    Only a hint: the fsync before publishing is what makes the file durable."""
    fn = _sync_file_range()
    return fn is not None and fn(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE) == 0


@functools.cache
def _sync_file_range() -> Any:
    import ctypes
    import ctypes.util

    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


def pwrite_all(fd: int, data: memoryview, at: int) -> None:
    """Write all of ``data`` at offset ``at`` (``pwrite`` may write less)."""
    while data:
        n = os.pwrite(fd, data, at)
        data, at = data[n:], at + n


def append_tiles(path: str, tiles: list[tuple[int, bytes]]) -> list[tuple[int, int, int]]:
    """Append a chunk's encoded tiles to ``path``; return ``(index, offset, size)``.

    For worker processes on the writer's machine: one ``O_APPEND`` write is
    placed atomically at the end of the file by the kernel, so processes
    need no lock between them and the tiles never travel to the writer;
    only their offsets do (recorded with :meth:`TileSink.place`).
    """
    data = b"".join(b for _, b in tiles)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            written = os.write(fd, data) if data else 0
            end = os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    if written != len(data):
        # A short append cannot be continued atomically: the space ran out.
        raise OutputError(f"cannot write {path}: only {written} of {len(data)} bytes fit")
    return _layout(tiles, end - len(data))


def _layout(tiles: list[tuple[int, bytes]], start: int) -> list[tuple[int, int, int]]:
    """``(index, offset, size)`` of ``tiles`` written back to back from ``start``."""
    placed, at = [], start
    for index, blob in tiles:
        placed.append((index, at, len(blob)))
        at += len(blob)
    return placed


class _IndexLocation:
    """Where GDAL put the TileOffsets and TileByteCounts arrays."""

    def __init__(self, offsets: tuple[int, int, int], counts: tuple[int, int, int]) -> None:
        self.offsets, self.counts = offsets, counts  # (file offset, TIFF type, count)

    @property
    def count(self) -> int:
        return self.offsets[2]

    @classmethod
    def read(cls, path: str, encoder: TileEncoder) -> _IndexLocation:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if tif.byteorder != "<" or page.planarconfig != 1 and encoder.bands > 1:
                raise OutputError(f"{path}: unexpected TIFF layout from GDAL")
            expect = {"DEFLATE": 8, "ZSTD": 50000, "NONE": 1}[encoder.compress]
            if int(page.compression) != expect or int(page.predictor) != encoder.predictor:
                raise OutputError(f"{path}: GDAL wrote compression/predictor other than requested")
            locs = []
            for code in (_TILE_OFFSETS, _TILE_BYTECOUNTS):
                tag = page.tags[code]
                locs.append((tag.valueoffset, int(tag.dtype), tag.count))
        if locs[0][2] != -(-page.imagelength // encoder.tile) * encoder.tiles_across:
            raise OutputError(f"{path}: unexpected tile count")
        return cls(locs[0], locs[1])

    def write(self, fd: int, offsets: np.ndarray, counts: np.ndarray) -> None:
        for (at, typ, n), values in ((self.offsets, offsets), (self.counts, counts)):
            fmt = {4: "<I", 16: "<Q", 3: "<H"}[typ]
            if typ == 4 and values.max(initial=0) >= 2**32:
                raise OSError(0, "output exceeds 4 GB in a classic TIFF; pass --co BIGTIFF=YES")
            data = b"".join(struct.pack(fmt, int(v)) for v in values[:n])
            os.pwrite(fd, data, at)

