"""Tiled mosaics: a directory of COG tiles with an index that opens as one raster.

For clusters on a shared filesystem (NFS, Lustre) where no single file can
be written from many hosts: with ``tile_size`` the target is a directory,

* ``tiles/tile_<row>_<col>.tif``: one Cloud Optimized GeoTIFF per
  ``tile_size`` square of the raster (the last row and column smaller),
  each with its own transform and every piece of the raster's metadata;
* ``index.vrt``: a VRT with every tile as a ``SimpleSource`` (relative
  paths), which opens as the whole raster;
* ``index.gti.gpkg``: the same mosaic for GDAL's GTI driver (3.9+), where
  the raster is north-up with a CRS: a GeoPackage with each tile's extent
  and relative path, and the mosaic's description (size, geotransform,
  bands, metadata) as the layer's ``xml:GTI`` metadata. It is written with
  Python's ``sqlite3``: no vector library is needed.

The chunk plan never lets a chunk straddle two mosaic tiles (chunks are
whole multiples of ``tile_size``). Each chunk's writer, where the chunk was
computed, encodes each of its tiles as a complete COG (GDAL's COG driver,
from an in-memory dataset: rdask's codec defaults, overviews down to one
block) and, when it sees the partial directory (a marker file the client
put there: true of threads, local workers and workers on the same shared
filesystem), writes it there itself, under a temporary name, fsynced, then
renamed; otherwise it returns the encoded tile for the client to write. The
client journals each chunk's tiles (file, bytes), so ``resume`` keeps
every tile that is present with its size and redoes the rest.

Atomic as a whole: everything is written into ``.<OUTDIR>.rdask-partial/``
beside the target, the indexes last, and the directory is then renamed into
place. An existing target is refused without ``overwrite``; with it, only
an earlier mosaic (a directory holding ``index.vrt`` and ``tiles/``) is
replaced. On failure the partial directory is removed (kept with
``resume``) and nothing appears at the target.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import sqlite3
import struct
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rdask.errors import OutputError, first_line
from rdask.meta import RasterMeta
from rdask.outputs.base import ChunkGrid, Committed, OutputSpec, Publish, RunChunks
from rdask.outputs.journal import Journal, partial_paths
from rdask.outputs.options import WriteOptions
from rdask.outputs.staging import check_place, space_note
from rdask.outputs.tiff.gdal import gdal_env
from rdask.outputs.tiff.gdalmeta import creation_kwargs, write_meta
from rdask.recipe import Region

log = logging.getLogger("rdask")

INDEX_VRT = "index.vrt"
INDEX_GTI = "index.gti.gpkg"
TILES = "tiles"
#: The file the client puts in the partial directory: a writer that sees it
#: writes its tiles there itself.
MARKER = ".rdask-mosaic"


def accepts(target: str, options: WriteOptions) -> bool:
    """Any target when ``tile_size`` is set (:func:`check_target` refuses URLs)."""
    return options.tile_size is not None


def open(spec: OutputSpec) -> MosaicOutput:  # noqa: A001
    return MosaicOutput(spec)


def check_target(path: str, *, overwrite: bool) -> str:
    """Validate a mosaic's target directory before any work; return it absolute.

    Raises
    ------
    OutputError
        A URL, an existing target (without ``overwrite``; with it, anything
        but an earlier mosaic), or a missing or unwritable parent directory.
    """
    path = os.fspath(path)
    if "://" in path:
        raise OutputError(f"a tiled mosaic is written to a directory on a (shared) filesystem, not {path}")
    target = os.path.abspath(path)
    if overwrite and os.path.lexists(target) and not is_mosaic(target):
        raise OutputError(f"output exists and is not an rdask mosaic (a directory with {INDEX_VRT} "
                          f"and {TILES}/), so it is not replaced: {path}")
    return check_place(target, path, overwrite=overwrite)


def is_mosaic(path: str) -> bool:
    """Whether ``path`` is a directory an earlier mosaic job published."""
    return (os.path.isdir(path) and not os.path.islink(path)
            and os.path.isfile(os.path.join(path, INDEX_VRT)) and os.path.isdir(os.path.join(path, TILES)))


@dataclass(frozen=True)
class TileGrid:
    """How a ``height x width`` raster is cut into ``size`` squares."""

    height: int
    width: int
    size: int

    @property
    def rows(self) -> int:
        return -(-self.height // self.size)

    @property
    def cols(self) -> int:
        return -(-self.width // self.size)

    def name(self, index: int) -> str:
        """``tiles/tile_<row>_<col>.tif``, zero-padded so names sort in grid order."""
        digits = len(str(max(self.rows, self.cols) - 1))
        r, c = divmod(index, self.cols)
        return f"{TILES}/tile_{r:0{digits}d}_{c:0{digits}d}.tif"

    def window(self, index: int) -> tuple[int, int, int, int]:
        """``(row_off, col_off, height, width)`` of tile ``index``."""
        r, c = divmod(index, self.cols)
        y0, x0 = r * self.size, c * self.size
        return y0, x0, min(self.size, self.height - y0), min(self.size, self.width - x0)

    def within(self, ys: slice, xs: slice) -> list[int]:
        """Indexes of the tiles a chunk covers (it must cover them whole)."""
        rows = range(ys.start // self.size, -(-ys.stop // self.size))
        cols = range(xs.start // self.size, -(-xs.stop // self.size))
        return [r * self.cols + c for r in rows for c in cols]

    def __len__(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class Receipt:
    """What a chunk's writer did: ``files`` is ``[(tile index, bytes), ...]``
    of the tiles it wrote; ``tiles`` the encoded tiles it could not write
    (``[(tile index, data), ...]``), for the client to write."""

    files: tuple[tuple[int, int], ...] = ()
    tiles: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True)
class MosaicTileWriter:
    """Encode each mosaic tile of a chunk as a COG; write it into ``directory``
    when this process sees the client's marker there (picklable)."""

    directory: str
    marker: str
    grid: TileGrid
    dtype: str
    meta: RasterMeta
    cog_options: tuple[tuple[str, str], ...]
    mask: Any = None
    target: str = ""

    def __call__(self, block: np.ndarray, region: Region) -> Receipt:
        _, ys, xs = region
        encoded = []
        for index in self.grid.within(ys, xs):
            y0, x0, h, w = self.grid.window(index)
            pixels = block[:, y0 - ys.start:y0 - ys.start + h, x0 - xs.start:x0 - xs.start + w]
            mask = None if self.mask is None else self.mask.read_mask(y0, y0 + h, x0, x0 + w)
            encoded.append((index, encode_tile(pixels, tile_meta(self.meta, y0, x0), self.dtype,
                                               dict(self.cog_options), mask, self.target)))
        if not os.path.exists(self.marker):
            # Not the client's filesystem: the client writes them.
            return Receipt(tiles=tuple(encoded))
        files = []
        for index, data in encoded:
            write_file(os.path.join(self.directory, self.grid.name(index)), data, self.target)
            files.append((index, len(data)))
        return Receipt(files=tuple(files))


def tile_meta(meta: RasterMeta, y0: int, x0: int) -> RasterMeta:
    """``meta`` for the tile whose first pixel is at row ``y0``, column ``x0``:
    its own transform (GCPs and RPC offsets moved with it)."""
    from affine import Affine

    if meta.gcps:
        gcps = tuple(g._replace(row=g.row - y0, col=g.col - x0) for g in meta.gcps)
        meta = replace(meta, gcps=gcps)
    elif meta.transform is not None:
        meta = replace(meta, transform=meta.transform @ Affine.translation(x0, y0))
    if meta.rpcs:
        shift = {"LINE_OFF": y0, "SAMP_OFF": x0}
        meta = replace(meta, rpcs=tuple((k, repr(float(v) - shift[k]) if k in shift else v)
                                        for k, v in meta.rpcs))
    return meta


def encode_tile(pixels: np.ndarray, meta: RasterMeta, dtype: str, options: dict[str, str],
                mask: np.ndarray | None = None, shown: str = "") -> bytes:
    """``pixels`` (bands, rows, cols) as a complete COG file, in memory."""
    import warnings

    import rasterio
    import rasterio.shutil
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    bands, height, width = pixels.shape
    try:
        with gdal_env(), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(f"rdask-tile-{uuid.uuid4().hex}", "w", driver="MEM", width=width,
                               height=height, count=bands, dtype=np.dtype(dtype),
                               **creation_kwargs(meta, dtype)) as ds:
                if mask is not None:
                    # Before NODATA_VALUES (see tiff.gdal.create_dataset).
                    ds.write_mask(mask)
                write_meta(ds, meta)
                ds.write(pixels)
                with MemoryFile() as out:
                    rasterio.shutil.copy(ds, out.name, driver="COG", **options)
                    return out.read()
    except Exception as exc:  # noqa: BLE001 - GDAL errors vary; report one line
        raise OutputError(f"cannot encode a tile of {shown}: {first_line(exc)}") from None


def write_file(path: str, data: bytes, shown: str = "") -> None:
    """Write ``path`` whole or not at all: a temporary name, fsync, rename."""
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(f"cannot write {shown or path}: {exc.strerror}{space_note(path)}") from None


def cog_options(options: WriteOptions, dtype: Any) -> dict[str, str]:
    """GDAL COG driver options for a tile: rdask's codec defaults
    (:meth:`~.options.WriteOptions.compression_options`), the block size and
    overview settings, then the user's creation options in COG spelling."""
    opts: dict[str, Any] = {"BLOCKSIZE": options.blocksize, "BIGTIFF": "IF_SAFER", "NUM_THREADS": 1,
                            "OVERVIEW_RESAMPLING": options.overview_resampling.upper()}
    if options.overview_levels is not None:
        opts["OVERVIEW_COUNT"] = options.overview_levels
        if options.overview_levels == 0:
            opts["OVERVIEWS"] = "NONE"
    opts.update(options.compression_options(dtype))
    opts.update(dict(options.creation_options))
    # GTiff spellings the COG driver names otherwise.
    for name in ("ZLEVEL", "ZSTD_LEVEL", "LZMA_PRESET"):
        if name in opts:
            opts["LEVEL"] = opts.pop(name)
    predictor = str(opts.get("PREDICTOR", ""))
    if predictor in ("1", "2", "3"):
        opts["PREDICTOR"] = {"1": "NO", "2": "STANDARD", "3": "FLOATING_POINT"}[predictor]
    for name in ("TILED", "BLOCKXSIZE", "BLOCKYSIZE", "SPARSE_OK"):
        opts.pop(name, None)
    return {k: str(v) for k, v in sorted(opts.items())}


class MosaicOutput:
    """A tiled mosaic being written (see the module docstring)."""

    def __init__(self, spec: OutputSpec) -> None:
        opts = spec.options
        self.spec = spec
        self.target = check_target(spec.target, overwrite=opts.overwrite)
        _, height, width = spec.shape
        self.grid = TileGrid(height, width, int(opts.tile_size))
        _check_chunks(spec.chunks, self.grid.size)
        self.cog = cog_options(opts, spec.dtype)
        job = replace(spec.job, options=_fingerprint(spec.job.options, self.grid.size, self.cog))
        self.partial, journal_path = partial_paths(self.target)
        self.chunks = ChunkGrid(spec.chunks)
        self.sizes = np.zeros(len(self.grid), dtype=np.int64)
        self._closed = False
        self.resuming = opts.resume and os.path.exists(journal_path) and os.path.isdir(self.partial)
        if self.resuming:
            self.journal = Journal.resume(journal_path, job, self.target)
        else:
            if opts.resume:
                log.info("nothing to resume for %s; starting from scratch", self.target)
            self.journal = Journal.start(journal_path, job)
        try:
            self._prepare()
        except BaseException:
            self.abort(keep_partial=self.resuming)
            raise
        marker = os.path.join(self.partial, MARKER)
        self.writer = MosaicTileWriter(self.partial, marker, self.grid, np.dtype(spec.dtype).str, spec.meta,
                                 tuple(self.cog.items()), spec.mask, spec.target)
        self._last_checkpoint = time.monotonic()

    def _prepare(self) -> None:
        """Create the partial directory, or keep what a resumed job wrote."""
        if self.resuming:
            _remove_stray(os.path.join(self.partial, TILES))
            kept = self._resumed()
            log.info("resuming %s: %d chunks already written", self.target, kept)
        else:
            _discard_tree(self.partial)
        try:
            os.makedirs(os.path.join(self.partial, TILES), exist_ok=True)
            with builtins.open(os.path.join(self.partial, MARKER), "w") as fh:
                fh.write(f"{self.target}\n")
        except OSError as exc:
            raise OutputError(f"cannot write {self.spec.target}: {exc.strerror}") from None

    def _resumed(self) -> int:
        """Claim the journaled chunks whose tiles are all present, whole."""
        journal = self.journal
        present = {i for i, (_, size) in journal.tiles.items()
                   if _size(os.path.join(self.partial, self.grid.name(i))) == size}
        kept = 0
        for y0, x0 in journal.done:
            i, j = self.chunks.index(y0, x0)
            ys = slice(y0, y0 + self.spec.chunks[1][i])
            xs = slice(x0, x0 + self.spec.chunks[2][j])
            tiles = self.grid.within(ys, xs)
            if all(t in present for t in tiles):
                self.chunks.claim(y0, x0)
                for t in tiles:
                    self.sizes[t] = journal.tiles[t][1]
                kept += 1
        journal.done.clear()
        journal.tiles.clear()
        return kept

    def is_done(self, region: Region) -> bool:
        return region in self.chunks

    def record(self, region: Region, result: Receipt) -> None:
        """Journal a chunk's tiles (writing them first if the worker could not)."""
        if self._closed:
            raise OutputError(f"{self.spec.target}: write after the job was stopped")
        _, ys, xs = region
        self.chunks.claim(ys.start, xs.start)
        files = list(result.files)
        for index, data in result.tiles:
            write_file(os.path.join(self.partial, self.grid.name(index)), data, self.spec.target)
            files.append((index, len(data)))
        for index, size in files:
            self.sizes[index] = size
        # Offset 0: a tile is a whole file; the journal keeps its size.
        self.journal.record_tiles((ys.start, xs.start), [(i, 0, n) for i, n in files], sync=False)
        if time.monotonic() - self._last_checkpoint >= self.spec.options.checkpoint_seconds:
            self.journal.sync()
            self._last_checkpoint = time.monotonic()

    def commit(self, run: RunChunks) -> Publish:
        """Write the indexes; publishing moves the directory into place."""
        self._closed = True
        missing = int(np.count_nonzero(self.sizes == 0))
        if missing:
            raise OutputError(f"{self.spec.target}: {missing} of {len(self.grid)} tiles were not written")
        try:
            with gdal_env():
                vrt = write_vrt(os.path.join(self.partial, INDEX_VRT), self.spec, self.grid)
                reason = write_gti(self.partial, self.spec, self.grid, vrt)
            if reason:
                log.info("%s: no GTI index (%s)", self.spec.target, reason)
            _unlink(os.path.join(self.partial, MARKER))
            _remove_stray(os.path.join(self.partial, TILES))
            for d in (os.path.join(self.partial, TILES), self.partial):
                _fsync_dir(d)
        except OSError as exc:
            raise OutputError(f"cannot finish {self.spec.target}: {exc.strerror or exc}"
                              f"{space_note(self.partial)}") from None
        total = int(self.sizes.sum()) + sum(_size(os.path.join(self.partial, name)) or 0
                                            for name in (INDEX_VRT, INDEX_GTI))

        def publish() -> Committed:
            self._publish()
            self.journal.close(remove=True)
            return Committed(self.target, total)

        return publish

    def _publish(self) -> None:
        """Rename the partial directory to the target (an earlier mosaic is
        moved aside first, and removed once the new one is in place)."""
        old = None
        if os.path.lexists(self.target):
            if not (self.spec.options.overwrite and is_mosaic(self.target)):
                raise OutputError(f"output appeared while writing: {self.target}")
            old = self.partial[: -len("partial")] + "old"
            _remove_tree(old)
            os.rename(self.target, old)
        try:
            os.rename(self.partial, self.target)
        except OSError as exc:
            if old is not None:
                os.rename(old, self.target)
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # it appeared meanwhile
                raise OutputError(f"output appeared while writing: {self.target}") from None
            raise OutputError(f"cannot move {self.spec.target} into place: {exc.strerror}") from None
        _fsync_dir(os.path.dirname(self.target))
        if old is not None:
            _remove_tree(old)

    def abort(self, *, keep_partial: bool = False) -> bool:
        """Stop; keep the partial directory and journal for a resume, or remove them."""
        self._closed = True
        if keep_partial:
            self.journal.sync()
        else:
            _discard_tree(self.partial)
        self.journal.close(remove=not keep_partial)
        return keep_partial and os.path.isdir(self.partial) and os.path.exists(self.journal.path)


def write_vrt(path: str, spec: OutputSpec, grid: TileGrid) -> ET.Element:
    """``index.vrt``: GDAL writes the dataset with ``spec.meta`` (as for a
    GeoTIFF), then every tile is added as a ``SimpleSource`` with a path
    relative to the VRT. Returns the document."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    bands, height, width = spec.shape
    dtype = np.dtype(spec.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="VRT", width=width, height=height, count=bands, dtype=dtype,
                           **creation_kwargs(spec.meta, dtype)) as ds:
            write_meta(ds, spec.meta)
    tree = ET.parse(path)
    root = tree.getroot()
    type_name = root.find("VRTRasterBand").get("dataType")
    block = str(spec.options.blocksize)
    for band_el in root.iter("VRTRasterBand"):
        band = band_el.get("band")
        for index in range(len(grid)):
            band_el.append(_source(grid, index, band, type_name, block))
    if spec.mask is not None:
        mask_el = ET.SubElement(ET.SubElement(root, "MaskBand"), "VRTRasterBand", dataType="Byte")
        for index in range(len(grid)):
            mask_el.append(_source(grid, index, "mask,1", "Byte", block))
    ET.indent(tree)
    tmp = path + ".tmp"
    tree.write(tmp, encoding="unicode")
    os.replace(tmp, path)
    return root


def _source(grid: TileGrid, index: int, band: str, type_name: str, block: str) -> ET.Element:
    y0, x0, h, w = grid.window(index)
    src = ET.Element("SimpleSource")
    ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = grid.name(index)
    ET.SubElement(src, "SourceBand").text = band
    ET.SubElement(src, "SourceProperties", RasterXSize=str(w), RasterYSize=str(h), DataType=type_name,
                  BlockXSize=block, BlockYSize=block)
    ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
    ET.SubElement(src, "DstRect", xOff=str(x0), yOff=str(y0), xSize=str(w), ySize=str(h))
    return src


def write_gti(directory: str, spec: OutputSpec, grid: TileGrid, vrt: ET.Element) -> str:
    """``index.gti.gpkg``: one polygon and relative path per tile, and the
    GTI description (the VRT's SRS, geotransform, metadata and bands) as the
    layer's ``xml:GTI`` metadata.

    Returns why none was written ("" when it was): GDAL without the GTI or
    GPKG driver, or a raster that is not north-up with a CRS (GTI places
    tiles by their extents in the index's CRS).
    """
    import rasterio

    meta = spec.meta
    with rasterio.Env() as env:
        drivers = env.drivers()
    if "GTI" not in drivers or "GPKG" not in drivers:
        return "this GDAL has no GTI or GPKG driver"
    t = meta.transform
    if meta.gcps or not meta.crs or t is None or t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        return "GTI needs a north-up raster with a CRS"
    root = ET.Element("GDALTileIndexDataset")
    ET.SubElement(root, "IndexLayer").text = "tiles"
    ET.SubElement(root, "LocationField").text = "location"
    for name in ("SRS", "GeoTransform"):
        el = vrt.find(name)
        if el is not None:
            ET.SubElement(root, name).text = el.text.strip()
    _, height, width = spec.shape
    for name, value in (("XSize", width), ("YSize", height), ("BlockXSize", spec.options.blocksize),
                        ("BlockYSize", spec.options.blocksize)):
        ET.SubElement(root, name).text = str(value)
    for band_el in vrt.iter("VRTRasterBand"):
        if band_el.get("band") is None:
            continue  # the mask band
        band = ET.SubElement(root, "Band", band=band_el.get("band"), dataType=band_el.get("dataType"))
        for child in band_el:
            if child.tag not in ("SimpleSource", "ComplexSource"):
                band.append(child)
    for md in vrt.findall("Metadata"):
        root.append(md)
    holder = ET.Element("GDALMetadata")
    ET.SubElement(holder, "Metadata", domain="xml:GTI", format="xml").append(root)
    path = os.path.join(directory, INDEX_GTI)
    tmp = os.path.join(directory, f".{INDEX_GTI}.tmp")
    write_gpkg(tmp, meta, grid, ET.tostring(holder, encoding="unicode"))
    os.replace(tmp, path)
    return ""


def write_gpkg(path: str, meta: RasterMeta, grid: TileGrid, layer_metadata: str) -> None:
    """A minimal GeoPackage: layer ``tiles`` with each tile's extent
    (polygon) and ``location`` (path relative to the GeoPackage), and
    ``layer_metadata`` (GDAL's metadata XML) attached to the layer."""
    _unlink(path)
    code = meta.crs.to_epsg()
    srs_id = code if code and code > 0 else 100000
    org, org_id = ("EPSG", code) if code else ("NONE", srs_id)
    t = meta.transform
    rows = []
    for index in range(len(grid)):
        y0, x0, h, w = grid.window(index)
        minx, maxy = t @ (x0, y0)
        maxx, miny = t @ (x0 + w, y0 + h)
        rows.append((_gpkg_polygon(srs_id, minx, miny, maxx, maxy), grid.name(index)))
    left, top = t @ (0, 0)
    right, bottom = t @ (grid.width, grid.height)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(GPKG_SCHEMA)
        db.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", [
            ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", None),
            ("Undefined geographic SRS", 0, "NONE", 0, "undefined", None),
            (meta.crs.to_string(), srs_id, org, org_id, meta.crs.to_wkt(), None),
        ])
        db.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, min_x, min_y, max_x, max_y, "
                   "srs_id) VALUES ('tiles', 'features', 'tiles', ?, ?, ?, ?, ?)",
                   (min(left, right), min(top, bottom), max(left, right), max(top, bottom), srs_id))
        db.execute("INSERT INTO gpkg_geometry_columns VALUES ('tiles', 'geom', 'POLYGON', ?, 0, 0)", (srs_id,))
        db.executemany("INSERT INTO tiles (geom, location) VALUES (?, ?)", rows)
        db.execute("INSERT INTO gpkg_metadata (id, md_scope, md_standard_uri, mime_type, metadata) "
                   "VALUES (1, 'dataset', 'http://gdal.org', 'text/xml', ?)", (layer_metadata,))
        db.execute("INSERT INTO gpkg_metadata_reference (reference_scope, table_name, md_file_id) "
                   "VALUES ('table', 'tiles', 1)")
        db.executemany("INSERT INTO gpkg_extensions VALUES (?, NULL, 'gpkg_metadata', "
                       "'http://www.geopackage.org/spec120/#extension_metadata', 'read-write')",
                       [("gpkg_metadata",), ("gpkg_metadata_reference",)])


#: The GeoPackage tables a feature layer with layer metadata needs (GeoPackage 1.3).
GPKG_SCHEMA = """
PRAGMA application_id = 1196444487;
PRAGMA user_version = 10300;
CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY,
    organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL,
    definition TEXT NOT NULL, description TEXT);
CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
    identifier TEXT UNIQUE, description TEXT DEFAULT '',
    last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
    CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
    geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL,
    m TINYINT NOT NULL, CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name));
CREATE TABLE gpkg_extensions (table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL,
    definition TEXT NOT NULL, scope TEXT NOT NULL,
    CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));
CREATE TABLE gpkg_metadata (id INTEGER CONSTRAINT m_pk PRIMARY KEY ASC NOT NULL,
    md_scope TEXT NOT NULL DEFAULT 'dataset', md_standard_uri TEXT NOT NULL,
    mime_type TEXT NOT NULL DEFAULT 'text/xml', metadata TEXT NOT NULL DEFAULT '');
CREATE TABLE gpkg_metadata_reference (reference_scope TEXT NOT NULL, table_name TEXT,
    column_name TEXT, row_id_value INTEGER,
    timestamp DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    md_file_id INTEGER NOT NULL, md_parent_id INTEGER);
CREATE TABLE tiles (fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, geom POLYGON,
    location TEXT NOT NULL);
"""


def _gpkg_polygon(srs_id: int, minx: float, miny: float, maxx: float, maxy: float) -> bytes:
    """A GeoPackage geometry blob: header with envelope, then WKB polygon."""
    minx, maxx = sorted((minx, maxx))
    miny, maxy = sorted((miny, maxy))
    header = b"GP" + struct.pack("<BBi4d", 0, 0b011, srs_id, minx, maxx, miny, maxy)
    ring = [(minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy), (minx, miny)]
    wkb = struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<2d", *p) for p in ring)
    return header + wkb


def _check_chunks(chunks: tuple[tuple[int, ...], ...], size: int) -> None:
    """Every chunk must cover whole mosaic tiles."""
    for name, sizes in (("row", chunks[1]), ("column", chunks[2])):
        edges = np.cumsum(sizes)[:-1]
        if np.any(edges % size):
            raise OutputError(f"chunks straddle mosaic tiles: {name} chunk edges must be multiples of "
                              f"tile_size {size}; rechunk to whole tiles (got {tuple(sizes)[:4]}...)")


def _fingerprint(options: str, size: int, cog: dict[str, str]) -> str:
    """The job's output-options fingerprint, extended with the mosaic's own."""
    text = repr((options, "mosaic", size, sorted(cog.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove_tree(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        _unlink(path)


def _discard_tree(path: str) -> None:
    """Remove a partial directory that tasks still in flight may write into:
    renamed first, so no new file can appear in it, then removed."""
    if not os.path.lexists(path):
        return
    trash = f"{path}.{uuid.uuid4().hex[:12]}.discard"
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    for _ in range(20):
        _remove_tree(trash)
        if not os.path.lexists(trash):
            return
        time.sleep(0.05)  # a task was finishing a tile in it


def _remove_stray(directory: str) -> None:
    """Remove the temporary files of tiles that were being written when a
    job stopped (a resumed job redoes those tiles)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if name.endswith(".tmp"):
                _unlink(os.path.join(directory, name))


def _fsync_dir(path: str) -> None:
    """Make a directory's entries durable (where the filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


