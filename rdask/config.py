"""Settings shared by several stages, defined once.

Nothing here is read from the environment at import time: these are the
values rdask passes explicitly (GDAL options travel inside each task).
"""

from __future__ import annotations

#: GDAL's block cache, in MB, for readers and writers alike. Reads decode
#: whole blocks straight into the caller's buffer and writers get whole
#: tiles, so a small cache suffices and keeps peak memory flat in raster size.
GDAL_CACHEMAX_MB = 128

#: GDAL options entered around every read of a local file.
READ_GDAL_OPTIONS: tuple[tuple[str, object], ...] = (
    ("GDAL_CACHEMAX", GDAL_CACHEMAX_MB),
    ("VSI_CACHE", "FALSE"),
)

#: GDAL options entered while rdask has GDAL create or update an output.
WRITE_GDAL_OPTIONS: dict[str, object] = {
    "GDAL_CACHEMAX": GDAL_CACHEMAX_MB,
    "GDAL_TIFF_INTERNAL_MASK": "YES",
}

#: TIFF tags rdask reads or writes itself.
TIFF_TILE_OFFSETS = 324
TIFF_TILE_BYTECOUNTS = 325

#: Overview resamplings a COG output accepts.
OVERVIEW_RESAMPLINGS = ("nearest", "average", "mode", "bilinear", "cubic")

#: Resamplings of the warp step (GDAL's warper's names). Not ``sum``: GDAL's
#: sum (GWKSumPreserving) is not chunk-independent, not even in gdalwarp's
#: own block-by-block warp, so a chunked result could not equal the whole one.
WARP_RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode",
                    "min", "max", "med", "q1", "q3", "rms")

#: The warp's default error threshold, in source pixels (gdalwarp's default
#: ``-et``): its fast mode, deterministic at any chunking; 0 is exact.
WARP_ERROR_THRESHOLD = 0.125

#: glibc allocator settings for rdask's own processes (the CLI and the workers
#: of a ``local`` cluster). Every chunk allocates a few MB of pixels and
#: tiles; above glibc's mmap threshold (and with distributed's trim-at-64-KB
#: default) each such buffer is a fresh mapping, faulted in page by page and
#: unmapped again: about a third of a worker's CPU on W4. Freed chunk
#: buffers are reused instead.
MALLOC_MMAP_THRESHOLD = 256 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 512 * 1024 * 1024
WORKER_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(MALLOC_MMAP_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": str(MALLOC_TRIM_THRESHOLD),
}
