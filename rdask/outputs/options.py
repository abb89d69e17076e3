"""How an output is written: one frozen, validated :class:`WriteOptions`.

The API (``to_raster``, ``process``), the CLI and every output kind take
this one object, so each option is named, checked and documented once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from rdask.config import OVERVIEW_RESAMPLINGS

#: Output formats rdask writes, by their canonical (GDAL) name.
DRIVERS = ("GTiff", "COG", "Zarr")

#: Seconds between checkpoints of a partial output; a resume redoes at most this much.
CHECKPOINT_SECONDS = 10.0


@dataclass(frozen=True)
class WriteOptions:
    """Everything about how an output is written.

    Parameters
    ----------
    driver
        ``"GTiff"`` (a tiled GeoTIFF), ``"COG"`` (a Cloud Optimized
        GeoTIFF with internal overviews down to one tile) or ``"Zarr"`` (a
        Zarr store, also chosen by a ``.zarr`` target). Case-insensitive.
    compress
        GDAL compression name (``deflate``, ``zstd``, ``lzw``, ``none``...).
    blocksize
        Output tile size in pixels: a multiple of 16 (for a COG a power of
        two from 64 to 4096).
    creation_options
        Extra GTiff creation options, e.g. ``{"PREDICTOR": 2}``; they win
        over rdask's defaults.
    overview_levels
        COG only: number of overview levels instead of "down to one tile".
    overview_resampling
        COG only: ``nearest`` (default), ``average``, ``mode``,
        ``bilinear`` or ``cubic``.
    overwrite
        Replace an existing output (only once the new one is complete).
    resume
        Continue the partial output of an interrupted identical job, and
        keep this job's partial output if it is interrupted too.
    checkpoint_seconds
        Seconds between checkpoints of the partial output.
    tile_size
        Write a tiled mosaic instead of one file: the target is a directory
        of COG tiles of this many pixels a side (a multiple of
        ``blocksize``) with ``index.vrt`` (see :mod:`rdask.outputs.mosaic`).

    Raises
    ------
    ValueError
        An unknown driver or resampling, or a bad size or count.
    """

    driver: str = "GTiff"
    compress: str | None = "deflate"
    blocksize: int = 512
    creation_options: tuple[tuple[str, str], ...] = ()
    overview_levels: int | None = None
    overview_resampling: str = "nearest"
    overwrite: bool = False
    resume: bool = False
    checkpoint_seconds: float = CHECKPOINT_SECONDS
    tile_size: int | None = None

    def __post_init__(self) -> None:
        drivers = {d.upper(): d for d in DRIVERS}
        if str(self.driver).upper() not in drivers:
            raise ValueError(f"unknown driver {self.driver!r}: use {' or '.join(DRIVERS)}")
        set_ = object.__setattr__
        set_(self, "driver", drivers[str(self.driver).upper()])
        compress = None if self.compress is None else str(self.compress).lower()
        set_(self, "compress", None if compress == "none" else compress)
        set_(self, "creation_options", _pairs(self.creation_options))
        set_(self, "checkpoint_seconds", float(self.checkpoint_seconds))
        if int(self.blocksize) != self.blocksize or self.blocksize < 16 or self.blocksize % 16:
            raise ValueError(f"blocksize must be a multiple of 16, got {self.blocksize}")
        if self.checkpoint_seconds < 0:
            raise ValueError(f"checkpoint_seconds must be >= 0, got {self.checkpoint_seconds}")
        if self.tile_size is not None and (int(self.tile_size) != self.tile_size or self.tile_size < 1
                                           or self.tile_size % self.blocksize):
            raise ValueError(f"tile_size must be a multiple of the blocksize ({self.blocksize}), "
                             f"got {self.tile_size}")
        if self.driver == "COG":
            self._check_cog()
        if self.driver == "Zarr":
            self._check_zarr()

    def _check_zarr(self) -> None:
        if self.compress not in (None, "deflate", "zstd"):
            raise ValueError(f"a Zarr output compresses with deflate (gzip), zstd or none, not {self.compress!r}")
        if self.overview_resampling not in ("nearest", "average"):
            raise ValueError(f"a Zarr output makes nearest or average overviews, not {self.overview_resampling!r}")
        if self.overview_levels is not None and self.overview_levels < 0:
            raise ValueError(f"overview_levels must be >= 0, got {self.overview_levels}")
        unknown = sorted(set(dict(self.creation_options)) - {"ZLEVEL", "ZSTD_LEVEL", "V2_METADATA", "SHARD"})
        if unknown:
            raise ValueError(f"unknown Zarr creation option {unknown[0]!r}; "
                             "a Zarr output takes ZLEVEL, ZSTD_LEVEL, V2_METADATA, SHARD")

    def _check_cog(self) -> None:
        if self.overview_resampling not in OVERVIEW_RESAMPLINGS:
            raise ValueError(f"unknown overview resampling {self.overview_resampling!r}; "
                             f"use one of {', '.join(OVERVIEW_RESAMPLINGS)}")
        if self.overview_levels is not None and self.overview_levels < 0:
            raise ValueError(f"overview_levels must be >= 0, got {self.overview_levels}")
        b = self.blocksize
        if b < 64 or b > 4096 or b & (b - 1):
            # GDAL's overview tiles (GDAL_TIFF_OVR_BLOCKSIZE) must be such a size.
            raise ValueError(f"a COG needs a blocksize that is a power of 2 from 64 to 4096, got {b}")

    @classmethod
    def of(cls, options: WriteOptions | None = None, **changes: Any) -> WriteOptions:
        """``options`` (or the defaults) with ``changes``; an unknown name is a
        ``TypeError`` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown write option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        base = {f.name: getattr(options, f.name) for f in fields(cls)} if options else {}
        return cls(**{**base, **changes})

    def gtiff_creation_options(self, dtype: Any, threads: int = 1) -> dict[str, Any]:
        """The GTiff creation options rdask writes with: tiled, BigTIFF when
        needed, the compression with rdask's defaults, then the user's."""
        opts: dict[str, Any] = {
            "TILED": "YES",
            "BLOCKXSIZE": self.blocksize,
            "BLOCKYSIZE": self.blocksize,
            "BIGTIFF": "IF_SAFER",
            "NUM_THREADS": max(1, int(threads)),
        }
        if self.compress:
            opts["COMPRESS"] = self.compress.upper()
            opts.update(default_compression_options(self.compress, np.dtype(dtype)))
        opts.update(dict(self.creation_options))
        return opts


def default_compression_options(compress: str, dtype: np.dtype) -> dict[str, Any]:
    """rdask's defaults under a compression name; creation options override them.

    A predictor (horizontal differencing: 2 for integers, 3 for floats)
    makes rasters markedly smaller, and with a predictor libdeflate's level 1
    compresses about as well as GDAL's default level 6 at a fraction of the
    CPU (on W2's imagery: 25 MB instead of 34 MB per 4096x4096x3, in 0.26 s
    instead of 0.63 s of CPU; on W6's slope: 49 MB instead of 59 MB in 0.44 s
    instead of 0.66 s). Compression is most of the CPU an I/O-bound job
    spends, so this is where speed is won.
    """
    name = compress.upper()
    if name not in ("DEFLATE", "ZSTD", "LZW", "LERC_DEFLATE", "LERC_ZSTD"):
        return {}
    dt = np.dtype(dtype)
    out: dict[str, Any] = {}
    if not name.startswith("LERC") and dt.kind in "iuf" and dt.itemsize <= 8:
        out["PREDICTOR"] = 3 if dt.kind == "f" else 2
    if name == "DEFLATE":
        out["ZLEVEL"] = 1
    return out


def _pairs(options: Mapping[str, Any] | tuple | None) -> tuple[tuple[str, str], ...]:
    """Creation options as sorted ``(NAME, value)`` string pairs."""
    items = options.items() if isinstance(options, Mapping) else (options or ())
    return tuple(sorted((str(k).upper(), str(v)) for k, v in items))
