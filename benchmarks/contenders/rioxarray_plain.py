"""Plain rioxarray + dask: what a user writes without rdask.

``rioxarray.open_rasterio`` with block-aligned dask chunks and ``lock=False``
(a file handle per read, reads in parallel), ``map_blocks`` of the shared
kernel, and ``.rio.to_raster`` to a tiled GeoTIFF behind a ``threading.Lock``,
on dask's threaded scheduler.

Usage: ``rioxarray_plain.py IN OUT -j N [--iterations K] [--compress deflate]
[--blocksize 512] [--chunk 2048]``.
"""

from __future__ import annotations

from common import build_parser, compress_option, reversed_bands, write_threaded


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
    """Reverse the bands of ``infile`` into ``outfile`` through dask.

    Parameters
    ----------
    infile, outfile
        Paths of the input raster and of the GeoTIFF to create.
    jobs
        Threads of dask's threaded scheduler.
    iterations, backend
        Kernel work and implementation, see :func:`common.select_kernel`.
    chunk
        Chunk side in pixels (all bands in one chunk); a multiple of the
        input's block size keeps reads block-aligned.
    blocksize
        Output tile size.
    compress
        Output compression, or ``None`` for none.
    """
    result = reversed_bands(infile, chunk, iterations, backend)
    write_threaded(result, outfile, jobs=jobs, blocksize=blocksize, compress=compress)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = build_parser(__doc__.splitlines()[0], chunk=2048)
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
