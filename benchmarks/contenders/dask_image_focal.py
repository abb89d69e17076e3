"""dask-image's ``uniform_filter`` on a rioxarray dask array: a focal mean in plain dask.

``rioxarray.open_rasterio`` with dask chunks of 2048 px and ``lock=False``,
``dask_image.ndfilters.uniform_filter(arr, size=(1, 2r+1, 2r+1))`` (scipy's
filter per chunk through ``map_overlap``), and ``.rio.to_raster`` to a tiled
DEFLATE GeoTIFF behind a ``threading.Lock``, on dask's threaded scheduler.

What it naturally does, kept as is: nodata is averaged in as a value, and
the window is reflected at the raster edge instead of clipped; the output
keeps the input's dtype (float32) and nodata tag.

Usage: ``dask_image_focal.py IN OUT -j N [--radius 5] [--chunk 2048]
[--compress deflate] [--blocksize 512]``.
"""

from __future__ import annotations

from common import build_parser, compress_option, open_dask, require, write_threaded


def process_file(
    infile: str,
    outfile: str,
    *,
    jobs: int,
    radius: int,
    chunk: int,
    blocksize: int,
    compress: str | None,
    filter: str = "uniform",
) -> None:
    """Mean over (2r+1)^2 windows of every band of ``infile`` into ``outfile``.

    Parameters
    ----------
    infile, outfile
        Paths of the input raster and of the GeoTIFF to create.
    jobs
        Threads of dask's threaded scheduler.
    radius
        Window half-size ``r``.
    chunk
        Dask chunk side in pixels.
    blocksize
        Output tile size.
    compress
        Output compression, or ``None`` for none.
    """
    ndfilters = require("dask_image.ndfilters", "dask-image")
    data = open_dask(infile, chunk)
    size = 2 * radius + 1
    func = ndfilters.median_filter if filter == "median" else ndfilters.uniform_filter
    result = data.copy(data=func(data.data, size=(1, size, size)))
    write_threaded(result, outfile, jobs=jobs, blocksize=blocksize, compress=compress)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = build_parser(__doc__.splitlines()[0], kernel=False, jobs=True, chunk=2048)
    parser.add_argument("--radius", type=int, default=5, help="window half-size (pixels)")
    parser.add_argument("--filter", choices=("uniform", "median"), default="uniform",
                        help="uniform_filter (a focal mean) or median_filter")
    args = parser.parse_args(argv)
    process_file(
        args.infile,
        args.outfile,
        jobs=args.jobs,
        radius=args.radius,
        chunk=args.chunk,
        blocksize=args.blocksize,
        compress=compress_option(args.compress, "deflate"),
        filter=args.filter,
    )


if __name__ == "__main__":
    main()
