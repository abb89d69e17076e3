"""xarray-spatial's ``slope`` on a rioxarray dask array: what a user writes for slope in dask.

``rioxarray.open_rasterio`` with dask chunks of 2048 px and ``lock=False``,
the single band selected, ``xrspatial.slope`` (Horn's method in a numba
kernel, ``map_overlap`` with a 1-pixel halo, NaN beyond the raster edge),
and ``.rio.to_raster`` to a tiled DEFLATE GeoTIFF behind a
``threading.Lock``, on dask's threaded scheduler.

What it naturally does, kept as is: nodata is not masked (a nodata value is
an elevation to it, so slopes next to the nodata region are steep cliffs and
inside it 0); the outer rows and columns are NaN; the chunks are computed
as float32 but the dask array is declared float64 (``meta=np.array(())``),
so the file is written as float64.

Usage: ``xrspatial_slope.py IN OUT -j N [--chunk 2048] [--compress deflate]
[--blocksize 512]``.
"""

from __future__ import annotations

from common import build_parser, compress_option, open_dask, require, write_threaded


def process_file(
    infile: str, outfile: str, *, jobs: int, chunk: int, blocksize: int, compress: str | None
) -> None:
    """Slope in degrees of band 1 of ``infile`` into ``outfile``.

    Parameters
    ----------
    infile, outfile
        Paths of the input DEM and of the GeoTIFF to create.
    jobs
        Threads of dask's threaded scheduler.
    chunk
        Dask chunk side in pixels.
    blocksize
        Output tile size.
    compress
        Output compression, or ``None`` for none.
    """
    xrspatial = require("xrspatial", "xarray-spatial")
    dem = open_dask(infile, chunk).sel(band=1)
    result = xrspatial.slope(dem)
    write_threaded(result, outfile, jobs=jobs, blocksize=blocksize, compress=compress)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = build_parser(__doc__.splitlines()[0], kernel=False, jobs=True, chunk=2048)
    args = parser.parse_args(argv)
    process_file(
        args.infile,
        args.outfile,
        jobs=args.jobs,
        chunk=args.chunk,
        blocksize=args.blocksize,
        compress=compress_option(args.compress, "deflate"),
    )


if __name__ == "__main__":
    main()
