"""Compression levels: size and CPU per codec and level, as rdask encodes them.

The evidence behind ``rdask.writeoptions.CODEC_LEVELS`` (one default
level per codec, for every output): each candidate level encodes the same
rasters the way each output does, on one thread, and the table gives the
compressed size and the CPU to encode and to decode them.

* GeoTIFF, COG and mosaic tiles: rdask's tile encoder (512 x 512 pixel-
  interleaved tiles, TIFF predictor 2 for integers and 3 for floats, then
  libdeflate or zstd through imagecodecs), decoded as GDAL reads them (the
  same libraries).
* GeoTIFF through GDAL's writer, for the codecs only GDAL encodes (LERC
  with deflate or zstd, LZMA).
* Zarr: the chunk bytes zarr's ``GzipCodec`` and ``ZstdCodec`` write
  (numcodecs' zlib and zstd, no predictor: Zarr has none), ``(bands, 512,
  512)`` chunks.

Inputs are those of the benchmark workloads (``datagen.py``): W2's imagery
(three uint8 bands, smooth fields and noise) and W6's float32 DEM. Run::

    benchmarks/.venv/bin/python benchmarks/levels.py            # 4096^2, 3 runs (~3 min)
    benchmarks/.venv/bin/python benchmarks/levels.py --quick    # 2048^2, 1 run

CPU is ``time.process_time`` of this process (one thread), the median of
``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
import rasterio
from datagen import DemRecipe, Recipe, ensure_raster
from numcodecs import GZip, Zstd
from rdask.outputs.tiles import TileEncoder

HERE = Path(__file__).resolve().parent
TILE = 512

#: Levels measured per codec rdask encodes itself (GeoTIFF and Zarr); GDAL's
#: defaults are 6 for deflate and 9 for zstd.
CANDIDATES = {"deflate": (1, 2, 3, 4, 6, 9), "zstd": (1, 2, 3, 4, 6, 9, 12)}

#: Levels measured per codec only GDAL's writer encodes (GeoTIFF), with
#: their GDAL option; GDAL's defaults are 6 (ZLEVEL, LZMA_PRESET) and 9.
GDAL_CANDIDATES = {"lerc_deflate": ("ZLEVEL", (1, 6, 9)), "lerc_zstd": ("ZSTD_LEVEL", (1, 3, 9)),
                   "lzma": ("LZMA_PRESET", (0, 1, 3, 6, 9))}


def load(side: int, workdir: Path) -> dict[str, np.ndarray]:
    """W2's imagery and W6's DEM at ``side`` pixels, as ``(bands, y, x)`` arrays."""
    made = {
        "imagery uint8 x3": ensure_raster(workdir / f"w2-{side}.tif", Recipe(side=side)),
        "DEM float32": ensure_raster(workdir / f"dem-{side}.tif", DemRecipe(side=side)),
    }
    out = {}
    for name, generated in made.items():
        with rasterio.open(generated.path) as ds:
            out[name] = ds.read()
    return out


def geotiff_codec(data: np.ndarray, codec: str, level: int) -> tuple[Callable, Callable]:
    """Encode and decode every tile as rdask's GeoTIFF output does."""
    kind = data.dtype.kind
    encoder = TileEncoder(codec.upper(), level, 3 if kind == "f" else 2, TILE, data.dtype.str,
                          data.shape[0], data.shape[2])
    decode = imagecodecs.deflate_decode if codec == "deflate" else imagecodecs.zstd_decode

    def enc() -> list[bytes]:
        return [b for _, b in encoder(data, (slice(None), slice(0, data.shape[1]), slice(0, data.shape[2])))]

    def dec(pieces: list[bytes]) -> None:
        for p in pieces:
            decode(p)
    return enc, dec


def zarr_codec(data: np.ndarray, codec: str, level: int) -> tuple[Callable, Callable]:
    """Encode and decode every chunk as zarr's gzip and zstd codecs do."""
    numcodec = GZip(level) if codec == "deflate" else Zstd(level=level, checksum=False)
    chunks = [np.ascontiguousarray(data[:, y:y + TILE, x:x + TILE])
              for y in range(0, data.shape[1], TILE) for x in range(0, data.shape[2], TILE)]

    def enc() -> list[bytes]:
        return [bytes(numcodec.encode(c)) for c in chunks]

    def dec(pieces: list[bytes]) -> None:
        for p in pieces:
            numcodec.decode(p)
    return enc, dec


def gdal_codec(data: np.ndarray, codec: str, level: int) -> tuple[Callable, Callable]:
    """Encode and decode as GDAL's GeoTIFF writer does (in this thread:
    ``NUM_THREADS=1``), with rdask's predictor rule (none for LERC)."""
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    option, _ = GDAL_CANDIDATES[codec]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": data.shape[0], "dtype": data.dtype.name, "tiled": True,
               "blockxsize": TILE, "blockysize": TILE, "compress": codec, option: level,
               "NUM_THREADS": 1, "interleave": "pixel", "crs": "EPSG:32618",
               "transform": from_origin(500_000.0, 5_000_000.0, 10.0, 10.0)}

    def enc() -> list[bytes]:
        with MemoryFile() as mem:
            with mem.open(**profile) as ds:
                ds.write(data)
            return [mem.read()]

    def dec(pieces: list[bytes]) -> None:
        with MemoryFile(pieces[0]) as mem, mem.open() as ds:
            ds.read()
    return enc, dec


def measure(make: Callable, data: np.ndarray, codec: str, level: int, repeat: int) -> dict:
    enc, dec = make(data, codec, level)
    enc_cpu, dec_cpu = [], []
    for _ in range(repeat):
        t = time.process_time()
        pieces = enc()
        enc_cpu.append(time.process_time() - t)
        t = time.process_time()
        dec(pieces)
        dec_cpu.append(time.process_time() - t)
    size = sum(len(p) for p in pieces)
    return {"ratio": size / data.nbytes, "mb": size / 1e6, "enc": statistics.median(enc_cpu),
            "dec": statistics.median(dec_cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2048^2 inputs, one run")
    parser.add_argument("--side", type=int, default=None, help="raster side (default 4096)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per level (default 3)")
    parser.add_argument("--workdir", type=Path, default=HERE / ".work" / "levels")
    args = parser.parse_args()
    side = args.side or (2048 if args.quick else 4096)
    repeat = args.repeat or (1 if args.quick else 3)
    print(f"load: {os.getloadavg()[0]:.2f}; {side}^2 px, median of {repeat}; CPU s of one thread")
    rasters = load(side, args.workdir)
    print("| data | output | codec | level | size (% of raw) | MB | encode CPU s | decode CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, data in rasters.items():
        for output, make in (("GeoTIFF", geotiff_codec), ("Zarr", zarr_codec)):
            for codec, levels in CANDIDATES.items():
                for level in levels:
                    r = measure(make, data, codec, level, repeat)
                    row(name, output, codec, level, r)
        for codec, (_, levels) in GDAL_CANDIDATES.items():
            for level in levels:
                row(name, "GeoTIFF (GDAL)", codec, level, measure(gdal_codec, data, codec, level, repeat))


def row(name: str, output: str, codec: str, level: int, r: dict) -> None:
    print(f"| {name} | {output} | {codec} | {level} | {100 * r['ratio']:.1f} | "
          f"{r['mb']:.1f} | {r['enc']:.2f} | {r['dec']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
