"""The GTiff output: tiles encoded where chunks are computed, appended to
the partial file by the workers themselves when they can see it.

GDAL still writes the file's structure: the output first has GDAL create
the partial GeoTIFF with every tag (CRS, transform, nodata, metadata,
compression, predictor) but no pixel data (``SPARSE_OK``), so its tile index
is all zeros. Each chunk's task then encodes its tiles (:mod:`.tiles`) and,
where it sees the partial file (threads, workers on this machine), appends
them with one ``O_APPEND`` write, which the kernel places atomically at the
end of the file, returning only the offsets; elsewhere it returns the
encoded tiles and the client appends them. The client journals every
chunk's tile offsets as they arrive and, on commit, writes the tile index
into the place GDAL reserved for it. A resume rebuilds the index from the
journal, so the partial file never needs GDAL's checkpoints.

What rdask cannot encode itself (masks, other codecs, band interleave)
goes to :class:`~rdask.outputs.tiff.gdal.GdalOutput`, GDAL's own writer.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass

import numpy as np

from rdask.config import TIFF_TILE_BYTECOUNTS, TIFF_TILE_OFFSETS
from rdask.errors import OutputError
from rdask.outputs.base import ChunkGrid, Committed, OutputSpec, Publish, RunChunks
from rdask.outputs.options import WriteOptions
from rdask.outputs.staging import Staging, libc_function, space_note
from rdask.outputs.tiff.gdal import GdalOutput, create_dataset, gdal_env
from rdask.outputs.tiff.tiles import TileEncoder, encoder_for
from rdask.recipe import Region

#: Bytes appended between two :func:`start_writeback` calls on a durable file.
WRITEBACK_BYTES = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def accepts(target: str, options: WriteOptions) -> bool:
    """A local GeoTIFF."""
    return options.driver == "GTiff" and "://" not in target


def open(spec: OutputSpec, *, durable: bool = True) -> TileOutput | GdalOutput:  # noqa: A001
    """The tile output when rdask can encode what was asked for, else GDAL's writer.

    ``durable=False`` skips the fsync of a file that is only an intermediate.
    """
    encoder = encoder_of(spec)
    if encoder is None or spec.mask is not None:
        return GdalOutput(spec, durable=durable)
    return TileOutput(spec, encoder, durable=durable)


def encoder_of(spec: OutputSpec) -> TileEncoder | None:
    """The tile encoder for ``spec``'s options, or None when only GDAL can encode them."""
    opts = spec.options.gtiff_creation_options(spec.dtype, spec.threads)
    return encoder_for(opts, spec.dtype, spec.shape[0], spec.shape[2], spec.options.blocksize)


@dataclass(frozen=True)
class Tiles:
    """A chunk's encoded tiles, ``[(tile index, bytes), ...]``, for the client to write."""

    tiles: list[tuple[int, bytes]]


@dataclass(frozen=True)
class Placed:
    """Where a worker appended a chunk's tiles: ``[(index, offset, size), ...]``."""

    placed: list[tuple[int, int, int]]


@dataclass(frozen=True)
class TileWriter:
    """Encode a chunk's tiles; with ``path``, append them there too."""

    encoder: TileEncoder
    path: str | None = None
    target: str = ""  # named in errors: the user knows the target, not the partial file

    def __call__(self, block: np.ndarray, region: Region) -> Tiles | Placed:
        tiles = self.encoder(block, region)
        if self.path is None:
            return Tiles(tiles)
        return Placed(append_tiles(self.path, tiles, shown=self.target or None))


class TileOutput:
    """A GeoTIFF whose tiles arrive encoded (see the module docstring)."""

    def __init__(self, spec: OutputSpec, encoder: TileEncoder, *, durable: bool = True) -> None:
        self.spec, self.encoder, self.durable = spec, encoder, durable
        self.staging = Staging(spec.target, spec.job, resume=spec.options.resume,
                               overwrite=spec.options.overwrite)
        self.partial = self.staging.partial
        self.grid = ChunkGrid(spec.chunks)
        self._fd: int | None = None
        self._closed = False
        try:
            self._open_partial()
        except BaseException:
            # Nothing was written yet: leave nothing behind (a resumed job's
            # partial file is kept for the next attempt).
            self.abort(keep_partial=self.staging.resuming)
            raise
        self.writer = TileWriter(encoder, self.partial if spec.shares_files(self.partial) else None,
                                 spec.target)
        self._last_checkpoint = time.monotonic()

    def _open_partial(self) -> None:
        if not self.staging.resuming:
            options = self.spec.options.gtiff_creation_options(self.spec.dtype, self.spec.threads)
            ds = create_dataset(self.partial, self.spec.shape, self.spec.dtype, self.spec.meta,
                                {**options, "SPARSE_OK": "TRUE"}, self.spec.target)
            # GDAL has written the structure; from here on the file is ours.
            with gdal_env():
                ds.close()
        self._index = IndexLocation.read(self.partial, self.encoder)
        self._offsets = np.zeros(self._index.count, dtype=np.uint64)
        self._counts = np.zeros(self._index.count, dtype=np.uint64)
        journal = self.staging.journal
        for i, (off, size) in journal.tiles.items():
            self._offsets[i], self._counts[i] = off, size
        for y0, x0 in journal.done:
            self.grid.claim(y0, x0)
        journal.done.clear()
        journal.tiles.clear()
        try:
            self._fd = os.open(self.partial, os.O_RDWR)
        except OSError as exc:
            raise OutputError(f"cannot write {self.spec.target}: {exc.strerror}") from None
        self._end = self._written_back = os.fstat(self._fd).st_size

    def is_done(self, region: Region) -> bool:
        return region in self.grid

    def record(self, region: Region, result: Tiles | Placed) -> None:
        """Note where a chunk's tiles are (writing them first if the worker could not)."""
        if self._closed:
            raise OutputError(f"{self.spec.target}: write after the job was stopped")
        _, ys, xs = region
        self.grid.claim(ys.start, xs.start)
        placed = result.placed if isinstance(result, Placed) else self._append(result.tiles)
        for index, off, size in placed:
            self._offsets[index], self._counts[index] = off, size
        journal = self.staging.journal
        journal.record_tiles((ys.start, xs.start), placed, sync=False)
        if time.monotonic() - self._last_checkpoint >= self.spec.options.checkpoint_seconds:
            journal.sync()
            self._last_checkpoint = time.monotonic()
        self._write_back(max((off + size for _, off, size in placed), default=0))

    def _append(self, tiles: list[tuple[int, bytes]]) -> list[tuple[int, int, int]]:
        """Write tiles a remote worker sent at the end of the file."""
        placed = _layout(tiles, self._end)
        try:
            for (_, at, _), (_, data) in zip(placed, tiles, strict=True):
                pwrite_all(self._fd, memoryview(data), at)
        except OSError as exc:
            raise OutputError(f"cannot write {self.spec.target}: {exc.strerror}"
                              f"{space_note(self.partial)}") from None
        self._end += sum(len(b) for _, b in tiles)
        return placed

    def _write_back(self, end: int) -> None:
        """Start writing the file's bytes up to ``end`` to disk, a window at a time.

        A durable file is fsynced before it is published; started as the
        file grows, the writeback overlaps the computation instead of
        leaving the commit to wait for all of it (~0.1 s per 400 MB).
        """
        if not self.durable or self._fd is None or end - self._written_back < WRITEBACK_BYTES:
            return
        start_writeback(self._fd, self._written_back, end - self._written_back)
        self._written_back = end

    def close(self) -> None:
        """Write the tile index where GDAL reserved it, then close."""
        self._closed = True
        if self._fd is None:
            return
        try:
            self._index.write(self._fd, self._offsets, self._counts)
            if self.durable:
                os.fsync(self._fd)
        except OSError as exc:
            self.staging.discard(keep_partial=False)
            raise OutputError(f"cannot finish {self.spec.target}: {exc.strerror}") from None
        finally:
            os.close(self._fd)
            self._fd = None

    def commit(self, run: RunChunks) -> Publish:
        self.close()
        return lambda: Committed.of(self.staging.publish())

    def abort(self, *, keep_partial: bool = False) -> bool:
        """Stop; keep partial file and journal (consistent) for a resume, or remove them."""
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if keep_partial:
            self.staging.journal.sync()
        return self.staging.discard(keep_partial=keep_partial)


def start_writeback(fd: int, offset: int, nbytes: int) -> bool:
    """Have the kernel start writing ``nbytes`` at ``offset`` of ``fd`` to disk
    and return at once (Linux ``sync_file_range``); False where it cannot.
    Only a hint: the fsync before publishing is what makes the file durable."""
    fn = libc_function("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return fn is not None and fn(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE) == 0


def pwrite_all(fd: int, data: memoryview, at: int) -> None:
    """Write all of ``data`` at offset ``at`` (``pwrite`` may write less)."""
    while data:
        n = os.pwrite(fd, data, at)
        data, at = data[n:], at + n


def append_tiles(path: str, tiles: list[tuple[int, bytes]], *, shown: str | None = None,
                 ) -> list[tuple[int, int, int]]:
    """Append a chunk's encoded tiles to ``path``; return ``(index, offset, size)``.

    For worker processes on the writer's machine: one ``O_APPEND`` write is
    placed atomically at the end of the file by the kernel, so processes
    need no lock between them and the tiles never travel to the writer;
    only their offsets do (recorded by :meth:`TileOutput.record`). Errors
    name ``shown`` (the target) instead of ``path``.
    """
    shown = shown or path
    blobs = [b for _, b in tiles]
    total = sum(len(b) for b in blobs)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            # One gathered write: atomic at the end of the file, no copy.
            written = os.writev(fd, blobs) if total else 0
            end = os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: {exc.strerror}{space_note(path)}") from None
    if written != total:
        # A short append cannot be continued atomically: the space ran out.
        raise OutputError(f"cannot write {shown}: only {written} of {total} bytes fit{space_note(path)}")
    return _layout(tiles, end - total)


def _layout(tiles: list[tuple[int, bytes]], start: int) -> list[tuple[int, int, int]]:
    """``(index, offset, size)`` of ``tiles`` written back to back from ``start``."""
    placed, at = [], start
    for index, blob in tiles:
        placed.append((index, at, len(blob)))
        at += len(blob)
    return placed


class IndexLocation:
    """Where GDAL put the TileOffsets and TileByteCounts arrays."""

    def __init__(self, offsets: tuple[int, int, int], counts: tuple[int, int, int]) -> None:
        self.offsets, self.counts = offsets, counts  # (file offset, TIFF type, count)

    @property
    def count(self) -> int:
        return self.offsets[2]

    @classmethod
    def read(cls, path: str, encoder: TileEncoder) -> IndexLocation:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if tif.byteorder != "<" or page.planarconfig != 1 and encoder.bands > 1:
                raise OutputError(f"{path}: unexpected TIFF layout from GDAL")
            expect = {"DEFLATE": 8, "ZSTD": 50000, "NONE": 1}[encoder.compress]
            if int(page.compression) != expect or int(page.predictor) != encoder.predictor:
                raise OutputError(f"{path}: GDAL wrote compression/predictor other than requested")
            locs = []
            for code in (TIFF_TILE_OFFSETS, TIFF_TILE_BYTECOUNTS):
                tag = page.tags[code]
                locs.append((tag.valueoffset, int(tag.dtype), tag.count))
        if locs[0][2] != -(-page.imagelength // encoder.tile) * encoder.tiles_across:
            raise OutputError(f"{path}: unexpected tile count")
        return cls(locs[0], locs[1])

    def write(self, fd: int, offsets: np.ndarray, counts: np.ndarray) -> None:
        for (at, typ, n), values in ((self.offsets, offsets), (self.counts, counts)):
            dtype = {4: "<u4", 16: "<u8", 3: "<u2"}[typ]
            if typ == 4 and values.max(initial=0) >= 2**32:
                raise OSError(0, "output exceeds 4 GB in a classic TIFF; pass --co BIGTIFF=YES")
            # One array of n values, not n Python objects: the index of a
            # terapixel output is gigabytes of those (W9, 'Memory' in DESIGN.md).
            os.pwrite(fd, np.asarray(values[:n]).astype(dtype).tobytes(), at)

