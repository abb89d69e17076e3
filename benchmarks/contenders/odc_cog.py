"""odc-geo's ``save_cog_with_dask``: a COG written straight from a dask array.

``rioxarray.open_rasterio`` (chunks of ``--chunk`` px, all bands in one,
``lock=False``), ``map_blocks`` of the shared kernel, then
``odc.geo.cog.save_cog_with_dask(xx, OUT, compression="deflate",
blocksize=512, overview_resampling="nearest")`` computed on dask's threaded
scheduler with ``-j`` threads.  ``import odc.geo.xr`` registers the ``.odc``
accessor that reads the geobox from rioxarray's ``spatial_ref``
coordinate.

odc-geo compresses the tiles itself (tifffile + imagecodecs), computes each
overview level from the previous one with ``.odc.reproject`` (nearest) and
streams the parts into the file.  Its own defaults are kept: a predictor
(2 for integers), the codec's default DEFLATE level, a band-interleaved
(planar) layout for a ``(band, y, x)`` array, BigTIFF, and band statistics
in the metadata.  The chunk default (512, the tile size) follows its
docstring: "pre-chunk your data to the desired COG block sizes".

Usage: ``odc_cog.py IN OUT -j N [--iterations K] [--blocksize 512]
[--chunk 512]``.
"""

from __future__ import annotations

from common import build_parser, compress_option, require, reversed_bands


def process_file(
    infile: str,
    outfile: str,
    *,
    jobs: int,
    iterations: int,
    backend: str,
    chunk: int,
    blocksize: int,
    compress: str | None,
) -> None:
    """Reverse the bands of ``infile`` into the COG ``outfile`` with odc-geo.

    Parameters
    ----------
    infile, outfile
        Paths of the input raster and of the COG to create.
    jobs
        Threads of dask's threaded scheduler.
    iterations, backend
        Kernel work and implementation, see :func:`common.select_kernel`.
    chunk
        Dask chunk side in pixels.
    blocksize
        Tile size of every level.
    compress
        Compression name for odc-geo (``deflate``...).
    """
    import dask

    require("odc.geo.xr", "odc-geo")  # registers the .odc accessor
    cog = require("odc.geo.cog", "odc-geo")
    result = reversed_bands(infile, chunk, iterations, backend)
    options = {"compression": compress} if compress else {}
    with dask.config.set(scheduler="threads", num_workers=jobs):
        job = cog.save_cog_with_dask(
            result, outfile, blocksize=blocksize, overview_resampling="nearest", **options
        )
        job.compute()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = build_parser(__doc__.splitlines()[0], chunk=512)
    args = parser.parse_args(argv)
    process_file(
        args.infile,
        args.outfile,
        jobs=args.jobs,
        iterations=args.iterations,
        backend=args.kernel,
        chunk=args.chunk,
        blocksize=args.blocksize,
        compress=compress_option(args.compress, "deflate"),
    )


if __name__ == "__main__":
    main()
