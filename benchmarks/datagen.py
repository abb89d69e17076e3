"""Synthetic benchmark inputs, generated strip by strip and cached.

The rasters look like imagery to a compressor: smooth gradients and a few
sinusoids per band (separable, so cheap to evaluate as outer products), plus
low-amplitude noise drawn from a pre-computed pool at random offsets.  They
compress with DEFLATE to about 70 % of their size, unlike random bytes (which
do not compress) or constant tiles (which compress to nothing).

The DEM of the neighbourhood workload (:class:`DemRecipe`) is one float32
band of terrain: broad hills, sharp ridges, fine relief and a little noise,
with a nodata region in the top-left corner (see :func:`write_dem`).  W8
(reprojection) uses the same terrain on 30 m pixels centred on its UTM
zone's meridian (:class:`UtmDemRecipe`).

W9's inputs (:class:`TileRecipe`) are larger than RAM but nearly empty on
disk: one band of a repeating uint8 pattern in which every tile is the
same, so the file holds one compressed tile and every tile offset points at
it (see :func:`write_repeated_tile`).

Generation holds one strip of ``block`` rows in memory and lets GDAL
compress the tiles on all cores (``NUM_THREADS=ALL_CPUS``).  A JSON manifest
beside each file records the recipe; a file whose manifest differs from the
requested recipe (or is missing) is regenerated.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

#: Bump when the pixel recipe changes, so cached files are regenerated.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a synthetic raster's bytes."""

    side: int
    bands: int = 3
    block: int = 512
    compress: str = "deflate"
    noise: int = 6
    seed: int = 20240601
    version: int = RECIPE_VERSION


@dataclass(frozen=True)
class DemRecipe:
    """Everything that determines a synthetic DEM's bytes.

    One float32 band, 10 m pixels, elevations in metres; a quarter disc of
    radius ``side * nodata_fraction`` around the top-left corner is
    ``nodata``.
    """

    side: int
    block: int = 512
    compress: str = "deflate"
    predictor: int = 3
    nodata: float = -9999.0
    nodata_fraction: float = 0.15
    noise: float = 0.05
    """Amplitude (metres) of the uniform noise on every pixel."""
    seed: int = 20240602
    kind: str = "dem"
    version: int = RECIPE_VERSION

    def transform(self) -> Affine:
        """Georeferencing: UTM 18N, 10 m pixels, top-left corner at (500 km, 5000 km)."""
        return from_origin(500_000.0, 5_000_000.0, 10.0, 10.0)


@dataclass(frozen=True)
class UtmDemRecipe(DemRecipe):
    """W8's DEM: :class:`DemRecipe`'s terrain on ``pixel`` m pixels, centred on UTM 18N's meridian.

    The raster spans ``side * pixel`` metres east-west, centred on the
    zone's central meridian (easting 500 km, 75 degrees W), its top edge at
    northing ``north`` (5000 km: about 45.1 degrees N).  At 16384 x 30 m it
    reaches 3.2 degrees of longitude either side of the meridian and down to
    about 40.6 degrees N.  The terrain is the same recipe in pixel units
    (periods and amplitudes per pixel), so its slopes are ``10 / pixel``
    times W6's (mostly 1-10 degrees at 30 m).
    """

    pixel: float = 30.0
    north: float = 5_000_000.0
    seed: int = 20240608
    kind: str = "utm-dem"

    def transform(self) -> Affine:
        """Georeferencing: UTM 18N, ``pixel`` m pixels, centred on easting 500 km."""
        west = 500_000.0 - self.side * self.pixel / 2
        return from_origin(west, self.north, self.pixel, self.pixel)


@dataclass(frozen=True)
class TileRecipe:
    """A one-band uint8 raster whose tiles are all the same tile.

    The pixel at ``(row, col)`` is ``pattern()[row % period, col % period]``,
    a ``period x period`` block of random bytes repeated (``block`` is a
    multiple of ``period``, so every tile is the same).  Decoding and
    encoding such tiles is cheap: what a run costs beyond the codec is the
    bookkeeping per tile and per chunk.  The file is a BigTIFF, tiled
    ``block``, DEFLATE (level ``level``, no predictor).
    """

    side: int
    block: int = 512
    period: int = 32
    compress: str = "deflate"
    level: int = 6
    seed: int = 20240609
    kind: str = "repeated-tile"
    version: int = RECIPE_VERSION

    def pattern(self) -> np.ndarray:
        """The repeated ``period x period`` uint8 block."""
        rng = np.random.default_rng(self.seed)
        return rng.integers(0, 256, size=(self.period, self.period), dtype=np.uint8)

    def expected(self, window: Window) -> np.ndarray:
        """The pixels of ``window`` (2-D, ``height x width``)."""
        rows = np.arange(window.row_off, window.row_off + window.height) % self.period
        cols = np.arange(window.col_off, window.col_off + window.width) % self.period
        return self.pattern()[rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class Generated:
    """A synthetic raster on disk and what producing it cost."""

    path: Path
    recipe: Recipe | DemRecipe | TileRecipe
    seconds: float | None
    """Generation wall time, or ``None`` when the cached file was reused."""
    size_bytes: int


def ensure_raster(path: Path, recipe: Recipe | DemRecipe | TileRecipe) -> Generated:
    """Return the raster at ``path``, generating it unless cached for ``recipe``.

    Parameters
    ----------
    path
        Where the GeoTIFF lives; ``<path>.json`` holds its manifest.
    recipe
        The requested content: imagery (:class:`Recipe`), a DEM
        (:class:`DemRecipe`) or one repeated tile (:class:`TileRecipe`).

    Returns
    -------
    Generated
        ``seconds`` is ``None`` when the cached file matched.
    """
    manifest = path.with_name(path.name + ".json")
    if path.exists() and _read_manifest(manifest) == _manifest_of(recipe, path):
        return Generated(path, recipe, None, path.stat().st_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)
    tmp = path.with_name(path.name + ".partial")
    start = time.perf_counter()
    if isinstance(recipe, DemRecipe):
        write_dem(tmp, recipe)
    elif isinstance(recipe, TileRecipe):
        write_repeated_tile(tmp, recipe)
    else:
        write_raster(tmp, recipe)
    seconds = time.perf_counter() - start
    tmp.replace(path)
    manifest.write_text(json.dumps(_manifest_of(recipe, path), indent=1))
    return Generated(path, recipe, seconds, path.stat().st_size)


def _manifest_of(recipe: Recipe | DemRecipe | TileRecipe, path: Path) -> dict:
    """Manifest content: the recipe plus the file size (catches truncation)."""
    return {"recipe": asdict(recipe), "size_bytes": path.stat().st_size if path.exists() else -1}


def _read_manifest(manifest: Path) -> dict | None:
    """Parsed manifest, or ``None`` if absent or unreadable."""
    try:
        return json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None


def write_raster(path: Path, recipe: Recipe) -> None:
    """Write the synthetic uint8 GeoTIFF for ``recipe`` to ``path``, strip by strip."""
    side, block = recipe.side, recipe.block
    rng = np.random.default_rng(recipe.seed)
    strip_len = block * side
    pool = rng.integers(0, recipe.noise + 1, size=2 * strip_len, dtype=np.uint8)
    waves = [_BandWaves.random(rng, side) for _ in range(recipe.bands)]
    with rasterio.open(path, "w", **_profile(recipe)) as dst:
        for row in range(0, side, block):
            height = min(block, side - row)
            strip = np.empty((recipe.bands, height, side), dtype=np.uint8)
            for b, band in enumerate(waves):
                offset = int(rng.integers(0, strip_len))
                noise = pool[offset : offset + height * side].reshape(height, side)
                strip[b] = band.render(row, height, noise, recipe.noise)
            dst.write(strip, window=Window(0, row, side, height))


def _profile(recipe: Recipe) -> dict:
    """Creation profile: tiled, compressed, georeferenced (UTM 18N, 10 m pixels)."""
    return {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": recipe.bands,
        "width": recipe.side,
        "height": recipe.side,
        "crs": CRS.from_epsg(32618),
        "transform": from_origin(500_000.0, 5_000_000.0, 10.0, 10.0),
        "tiled": True,
        "blockxsize": recipe.block,
        "blockysize": recipe.block,
        "compress": recipe.compress,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }


@dataclass(frozen=True)
class _BandWaves:
    """One band's smooth field: a ramp plus three sinusoids, all separable.

    ``value(y, x) = base + ramp * (x + y) / side
    + a1 * sin(kx1 x) * cos(ky1 y) + a2 * sin(kx2 x + ky2 y)``.
    """

    xs: np.ndarray  # sin(kx1 x), float32, length side
    sx2: np.ndarray  # sin(kx2 x)
    cx2: np.ndarray  # cos(kx2 x)
    ky1: float
    ky2: float
    base: float
    ramp: float
    a1: float
    a2: float
    side: int

    @classmethod
    def random(cls, rng: np.random.Generator, side: int) -> _BandWaves:
        """Draw wave numbers (periods of 300-3000 px) and amplitudes."""
        kx1, ky1, kx2, ky2 = 2 * np.pi / rng.uniform(300, 3000, size=4)
        x = np.arange(side, dtype=np.float64)
        return cls(
            xs=np.sin(kx1 * x).astype(np.float32),
            sx2=np.sin(kx2 * x).astype(np.float32),
            cx2=np.cos(kx2 * x).astype(np.float32),
            ky1=float(ky1),
            ky2=float(ky2),
            base=float(rng.uniform(70, 110)),
            ramp=float(rng.uniform(20, 50)),
            a1=float(rng.uniform(25, 45)),
            a2=float(rng.uniform(15, 30)),
            side=side,
        )

    def render(self, row: int, height: int, noise: np.ndarray, amplitude: int) -> np.ndarray:
        """Rows ``row:row+height`` as uint8, with ``noise`` (0..amplitude) added."""
        y = np.arange(row, row + height, dtype=np.float64)
        x = np.arange(self.side, dtype=np.float32)
        cy1 = np.cos(self.ky1 * y).astype(np.float32)
        sy2 = np.sin(self.ky2 * y).astype(np.float32)
        cy2 = np.cos(self.ky2 * y).astype(np.float32)
        field = np.outer(cy1 * self.a1, self.xs)
        field += np.outer(cy2 * self.a2, self.sx2)  # a2 sin(kx2 x) cos(ky2 y)
        field += np.outer(sy2 * self.a2, self.cx2)  # + a2 cos(kx2 x) sin(ky2 y)
        field += (self.ramp / self.side) * x
        field += (self.base + self.ramp * y / self.side).astype(np.float32)[:, None]
        field += noise
        field -= amplitude / 2
        return np.clip(field, 0, 255).astype(np.uint8)


# -- DEM ----------------------------------------------------------------------


def write_dem(path: Path, recipe: DemRecipe) -> None:
    """Write the synthetic float32 DEM for ``recipe`` to ``path``, strip by strip.

    Elevation (metres, 10 m pixels) is the sum of

    * hills: two plane waves of random direction per octave, periods from
      40 km down to 300 m, amplitude proportional to the period (so every
      octave adds about the same slope, as in real relief);
    * ridges: two sets of ``1 - |sin|`` crests (periods 5-15 km, 80-200 m),
      sharp at the top, their lines bent by a slow phase warp;
    * uniform noise of +-``recipe.noise`` m drawn from a pre-generated pool
      at random offsets.

    Elevations span roughly 300-2800 m and slopes mostly 2-30 degrees.  A
    quarter disc around the top-left corner is ``recipe.nodata``.  Each
    strip of ``block`` rows is evaluated on its own (plane waves as outer
    products), so memory stays at a few strips; GDAL compresses the tiles
    on all cores.
    """
    side, block = recipe.side, recipe.block
    rng = np.random.default_rng(recipe.seed)
    strip_len = block * side
    pool = rng.uniform(-recipe.noise, recipe.noise, size=2 * strip_len).astype(np.float32)
    hills = [
        _PlaneWave.random(rng, side, period, 0.1 * period)
        for period in (4000, 2000, 1000, 500, 250, 120, 60, 30)
        for _ in range(2)
    ]
    ridges = [
        _PlaneWave.random(rng, side, rng.uniform(500, 1500), rng.uniform(80, 200)) for _ in range(2)
    ]
    warp = _PlaneWave.random(rng, side, 3000, 2.5)  # radians
    corner = side * recipe.nodata_fraction
    x = np.arange(side, dtype=np.float32)
    with rasterio.open(path, "w", **_dem_profile(recipe)) as dst:
        for row in range(0, side, block):
            height = min(block, side - row)
            y = np.arange(row, row + height, dtype=np.float64)
            z = np.full((height, side), 1500.0, dtype=np.float32)
            for wave in hills:
                z += wave.values(y)
            bend = warp.values(y)
            for wave in ridges:
                crest = np.sin(wave.phase(y) + bend)
                np.abs(crest, out=crest)
                z += wave.amplitude * (np.float32(1.0) - crest)
            offset = int(rng.integers(0, strip_len))
            z += pool[offset : offset + height * side].reshape(height, side)
            yy = (y.astype(np.float32) + np.float32(0.5))[:, None]
            xx = x[None, :] + np.float32(0.5)
            z[xx * xx + yy * yy < corner * corner] = recipe.nodata
            dst.write(z[None], window=Window(0, row, side, height))


def _dem_profile(recipe: DemRecipe) -> dict:
    """Creation profile of the DEM: float32, tiled, DEFLATE + floating-point predictor."""
    return {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "width": recipe.side,
        "height": recipe.side,
        "crs": CRS.from_epsg(32618),
        "transform": recipe.transform(),
        "nodata": recipe.nodata,
        "tiled": True,
        "blockxsize": recipe.block,
        "blockysize": recipe.block,
        "compress": recipe.compress,
        "predictor": recipe.predictor,
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }


@dataclass(frozen=True)
class _PlaneWave:
    """``amplitude * sin(kx x + ky y + phase)``, evaluated as two outer products."""

    sx: np.ndarray  # sin(kx x + phase), float32, length side
    cx: np.ndarray  # cos(kx x + phase)
    kx: float
    ky: float
    phase0: float
    amplitude: np.float32

    @classmethod
    def random(
        cls, rng: np.random.Generator, side: int, period: float, amplitude: float
    ) -> _PlaneWave:
        """A wave of random direction and phase; ``period`` in pixels."""
        k = 2 * np.pi / period
        angle = rng.uniform(0, 2 * np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        kx, ky = k * np.cos(angle), k * np.sin(angle)
        x = np.arange(side, dtype=np.float64)
        return cls(
            sx=np.sin(kx * x + phase).astype(np.float32),
            cx=np.cos(kx * x + phase).astype(np.float32),
            kx=float(kx),
            ky=float(ky),
            phase0=float(phase),
            amplitude=np.float32(amplitude),
        )

    def values(self, y: np.ndarray) -> np.ndarray:
        """The wave for rows ``y``: float32, ``len(y) x side``."""
        sy = np.sin(self.ky * y).astype(np.float32) * self.amplitude
        cy = np.cos(self.ky * y).astype(np.float32) * self.amplitude
        out = np.outer(cy, self.sx)
        out += np.outer(sy, self.cx)
        return out

    def phase(self, y: np.ndarray) -> np.ndarray:
        """``kx x + ky y + phase`` for rows ``y`` (float32, ``len(y) x side``)."""
        x = np.arange(self.sx.size, dtype=np.float32)
        rows = (self.ky * y + self.phase0).astype(np.float32)
        return rows[:, None] + np.float32(self.kx) * x[None, :]


# -- one repeated tile (W9) -----------------------------------------------------

#: numpy dtypes of the TIFF field types an offset or byte-count array can have.
_TIFF_INT_TYPES = {3: "u2", 4: "u4", 16: "u8"}


def write_repeated_tile(path: Path, recipe: TileRecipe) -> None:
    """Write ``recipe``'s raster to ``path``: a BigTIFF in which every tile is the same tile.

    GDAL writes the file's structure with ``SPARSE_OK=TRUE`` and no pixels
    (georeferencing, tiling, DEFLATE, BigTIFF; every TileOffsets and
    TileByteCounts entry 0).  Then one tile, compressed here with zlib as
    GDAL's DEFLATE without predictor would, is appended to the file and
    every entry of both arrays (located with tifffile, in whatever integer
    type libtiff chose) is pointed at it.  A 163840 x 163840 raster (26.8 GB
    of pixels) is ~1.2 MB on disk and takes well under a second.  Windows
    across tile seams and at the corners are read back with rasterio and
    compared with :meth:`TileRecipe.expected`; a mismatch raises.
    """
    import tifffile

    if recipe.compress != "deflate" or recipe.block % recipe.period:
        raise ValueError(f"unsupported recipe {recipe}")
    side, block = recipe.side, recipe.block
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "width": side,
        "height": side,
        "crs": CRS.from_epsg(32618),
        "transform": from_origin(500_000.0, 5_000_000.0, 10.0, 10.0),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "predictor": 1,
        "BIGTIFF": "YES",
        "SPARSE_OK": "TRUE",
    }
    with rasterio.open(path, "w", **profile):
        pass  # structure only: no tile is written
    tiles = (-(-side // block)) ** 2
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if not tif.is_bigtiff or page.compression != 8 or page.predictor != 1:
            raise RuntimeError(f"{path}: unexpected layout written by GDAL")
        arrays = []
        for name in ("TileOffsets", "TileByteCounts"):
            tag = page.tags[name]
            if tag.count != tiles or int(tag.dtype) not in _TIFF_INT_TYPES:
                raise RuntimeError(f"{path}: {name} has {tag.count} x type {tag.dtype}")
            arrays.append((tag.valueoffset, tif.byteorder + _TIFF_INT_TYPES[int(tag.dtype)]))
    tile = recipe.expected(Window(0, 0, block, block))
    data = zlib.compress(tile.tobytes(), recipe.level)
    with open(path, "r+b") as fh:
        end = fh.seek(0, 2)
        fh.write(data)
        for (where, dtype), value in zip(arrays, (end, len(data)), strict=True):
            fh.seek(where)
            fh.write(np.full(tiles, value, dtype=dtype).tobytes())
    _verify_repeated_tile(path, recipe)


def _verify_repeated_tile(path: Path, recipe: TileRecipe) -> None:
    """Read windows of ``path`` (corners, tile seams) and compare with the recipe."""
    side, block = recipe.side, recipe.block
    size = min(side, block + block // 2)
    far, mid = side - size, max(0, side // 2 - size // 2 - 7)
    with rasterio.open(path) as src:
        if (src.width, src.height, src.count, src.dtypes[0]) != (side, side, 1, "uint8"):
            raise RuntimeError(f"{path}: wrong shape or dtype")
        for row, col in ((0, 0), (far, far), (mid, min(mid + 3, far)), (0, far), (far, 0)):
            window = Window(col, row, size, size)
            if not np.array_equal(src.read(1, window=window), recipe.expected(window)):
                raise RuntimeError(f"{path}: {window} does not read back the repeated tile")
