"""Tile encoding in the compute tasks: TIFF predictors and codecs.

GDAL's GeoTIFF writer compresses in the thread that calls ``write`` (its
``NUM_THREADS`` pool does not engage for windowed writes, measured on GDAL
3.10), so with one writer and a lock, compression runs on one core. rdask
instead encodes each chunk's tiles in the task that computed the chunk, in
parallel on every core (or on the workers of a cluster, so only compressed
bytes travel), and the output only appends bytes, with no lock.

The encodings are the TIFF ones GDAL reads: predictor 2 (horizontal
differencing of samples) and 3 (floating point: bytes of each row split
into planes, most significant first, then differenced), DEFLATE as a zlib
stream (libdeflate through imagecodecs), ZSTD frames, or no compression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rdask.outputs.options import CODEC_LEVELS

#: Compressions the tile encoder produces; others go through GDAL's writer.
CODECS = ("NONE", "DEFLATE", "ZSTD")


@dataclass(frozen=True)
class TileEncoder:
    """Turns a chunk into its encoded tiles. Small, picklable, stateless."""

    compress: str  # one of CODECS
    level: int
    predictor: int  # 1, 2 or 3
    tile: int
    dtype: str
    bands: int
    width: int  # raster width, for tile numbering

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile)

    def __call__(self, block: np.ndarray, region: tuple[slice, slice, slice]) -> list[tuple[int, bytes]]:
        """Encode a ``(bands, y, x)`` chunk at ``region`` into ``(tile index, bytes)``."""
        _, ysl, xsl = region
        y0, x0 = ysl.start or 0, xsl.start or 0
        if block.dtype != np.dtype(self.dtype):
            block = block.astype(self.dtype)
        # Pixel-interleaved, as the file stores it: (y, x, bands).
        pix = np.ascontiguousarray(np.moveaxis(block, 0, -1))
        t = self.tile
        out = []
        for ty in range(0, pix.shape[0], t):
            for tx in range(0, pix.shape[1], t):
                piece = pix[ty : ty + t, tx : tx + t]
                if piece.shape[0] != t or piece.shape[1] != t:
                    # TIFF tiles are always whole; pad edge tiles with zeros.
                    full = np.zeros((t, t, self.bands), dtype=pix.dtype)
                    full[: piece.shape[0], : piece.shape[1]] = piece
                    piece = full
                index = ((y0 + ty) // t) * self.tiles_across + (x0 + tx) // t
                out.append((index, self.encode_tile(piece)))
        return out

    def encode_tile(self, tile: np.ndarray) -> bytes:
        """Predictor then codec for one ``(tile, tile, bands)`` array."""
        if self.predictor == 2:
            data = _horizontal_diff(tile)
        elif self.predictor == 3:
            data = _float_diff(tile)
        else:
            data = np.ascontiguousarray(tile).tobytes()
        if self.compress == "DEFLATE":
            import imagecodecs

            return imagecodecs.deflate_encode(data, level=self.level)
        if self.compress == "ZSTD":
            import imagecodecs

            return imagecodecs.zstd_encode(data, level=self.level)
        return data if isinstance(data, bytes) else bytes(data)


def _horizontal_diff(tile: np.ndarray) -> bytes:
    """TIFF predictor 2: each sample minus the same sample one pixel left,
    modulo 2**bits (done on the unsigned view)."""
    u = tile.view(np.dtype(f"u{tile.dtype.itemsize}"))
    d = u.copy()
    d[:, 1:, :] -= u[:, :-1, :]
    return d.astype(d.dtype.newbyteorder("<"), copy=False).tobytes()


def _float_diff(tile: np.ndarray) -> bytes:
    """TIFF predictor 3 (libtiff's ``fpDiff``): per row, the samples' bytes
    big-endian, regrouped into byte planes, then differenced bytewise with a
    stride of one pixel."""
    h, w, spp = tile.shape
    size = tile.dtype.itemsize
    be = np.ascontiguousarray(tile).astype(tile.dtype.newbyteorder(">")).view(np.uint8)
    planes = be.reshape(h, w * spp, size).transpose(0, 2, 1).reshape(h, size * w * spp)
    d = planes.copy()
    d[:, spp:] -= planes[:, :-spp]
    return d.tobytes()


def encoder_for(options: dict[str, Any], dtype: np.dtype, bands: int, width: int, tile: int) -> TileEncoder | None:
    """A :class:`TileEncoder` for these GTiff creation options, or ``None``
    when only GDAL's writer can produce them (other codecs, band interleave,
    JPEG photometrics, ...)."""
    opts = {str(k).upper(): str(v).upper() for k, v in options.items()}
    compress = opts.get("COMPRESS", "NONE")
    known = {"TILED", "BLOCKXSIZE", "BLOCKYSIZE", "BIGTIFF", "NUM_THREADS", "COMPRESS", "PREDICTOR",
             "ZLEVEL", "ZSTD_LEVEL", "INTERLEAVE"}
    if compress not in CODECS or set(opts) - known:
        return None
    if bands > 1 and opts.get("INTERLEAVE", "PIXEL") != "PIXEL":
        return None
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return None
    predictor = int(opts.get("PREDICTOR", "1"))
    dt = np.dtype(dtype)
    if predictor not in (1, 2, 3) or (predictor == 3 and dt.kind != "f") or (predictor == 2 and dt.kind not in "iu"):
        return None
    codec = CODEC_LEVELS.get(compress.lower())
    level = int(opts.get(codec.option, codec.default)) if codec else 0
    return TileEncoder(compress, level, predictor, tile, dt.str, bands, width)
