"""rioxarray's ``.rio.reproject``, then ``.rio.to_raster``: the whole raster in memory.

``rioxarray.open_rasterio(IN)`` (no chunks: ``reproject`` loads the
whole band), ``.rio.reproject(crs, shape=..., transform=...,
resampling=Resampling.bilinear, num_threads=-j)`` onto the given grid
(one ``rasterio.warp.reproject`` call, GDAL's warper on ``-j`` threads,
rasterio's default approximate transformer: error threshold 0.125 px, as
``gdalwarp`` without ``-et``), optionally xarray-spatial's ``slope``
(``--slope``, on the numpy array; nodata made NaN first, see
:func:`common.masked_slope`), and ``.rio.to_raster`` to a tiled GeoTIFF
with the ``--co`` creation options.  Input and output are both in memory
at once: peak RSS grows with the raster.

Usage: ``rioxarray_reproject.py IN OUT --crs EPSG:4326 --bounds l,b,r,t
--res R -j N [--slope] [--co NAME=VALUE ...]``.
"""

from __future__ import annotations

from common import (
    add_grid_options,
    build_parser,
    creation_options,
    masked_slope,
    target_grid,
    write_threaded,
)


def process_file(
    infile: str,
    outfile: str,
    *,
    grid,
    jobs: int,
    slope: bool,
    blocksize: int,
    options: dict,
) -> None:
    """Reproject band 1 of ``infile`` onto ``grid`` (bilinear) into ``outfile``.

    Parameters
    ----------
    infile, outfile
        Paths of the input DEM and of the GeoTIFF to create.
    grid
        The target grid (:class:`common.TargetGrid`).
    jobs
        Threads of GDAL's warper (``num_threads``).
    slope
        Write xarray-spatial's slope of the reprojected DEM instead.
    blocksize
        Output tile size.
    options
        GDAL creation options of the output (tiling, compression...).
    """
    import rioxarray
    from rasterio.enums import Resampling

    dem = rioxarray.open_rasterio(infile).sel(band=1)
    result = dem.rio.reproject(
        grid.crs,
        shape=(grid.height, grid.width),
        transform=grid.transform,
        resampling=Resampling.bilinear,
        num_threads=jobs,
    )
    if slope:
        result = masked_slope(result)
    write_threaded(result, outfile, jobs=jobs, blocksize=blocksize, compress=None, options=options)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = build_parser(__doc__.splitlines()[0], kernel=False, jobs=True)
    add_grid_options(parser)
    args = parser.parse_args(argv)
    process_file(
        args.infile,
        args.outfile,
        grid=target_grid(args),
        jobs=args.jobs,
        slope=args.slope,
        blocksize=args.blocksize,
        options=creation_options(args),
    )


if __name__ == "__main__":
    main()
