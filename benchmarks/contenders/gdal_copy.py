"""gdal_translate-style copy: the I/O floor for a tiled, compressed rewrite.

``rasterio.shutil.copy`` (GDAL's ``CreateCopy``) decodes the input and
encodes a tiled output with GDAL's own multi-threaded compression; no band
reversal, no Python per block.

Usage: ``gdal_copy.py IN OUT [--compress deflate] [--blocksize 512]
[--threads ALL_CPUS]``.
"""

from __future__ import annotations

import rasterio.shutil
from common import build_parser, compress_option


def copy(infile: str, outfile: str, *, blocksize: int, compress: str | None, threads: str) -> None:
    """Copy ``infile`` to a tiled GeoTIFF ``outfile``.

    Parameters
    ----------
    infile, outfile
        Paths of the input raster and of the GeoTIFF to create.
    blocksize
        Output tile size.
    compress
        Output compression, or ``None`` for none.
    threads
        GDAL ``NUM_THREADS`` creation option (``ALL_CPUS`` or a number).
    """
    options = {"COMPRESS": compress.upper()} if compress else {}
    rasterio.shutil.copy(
        infile,
        outfile,
        driver="GTiff",
        TILED="YES",
        BLOCKXSIZE=blocksize,
        BLOCKYSIZE=blocksize,
        NUM_THREADS=threads,
        **options,
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = build_parser(__doc__.splitlines()[0], kernel=False)
    parser.add_argument("--threads", default="ALL_CPUS", help="GDAL NUM_THREADS")
    args = parser.parse_args(argv)
    copy(
        args.infile,
        args.outfile,
        blocksize=args.blocksize,
        compress=compress_option(args.compress, "deflate"),
        threads=args.threads,
    )


if __name__ == "__main__":
    main()
