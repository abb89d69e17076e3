"""odc-geo's ``xr_reproject`` on a rioxarray dask array, then ``.rio.to_raster``.

``rioxarray.open_rasterio`` with dask chunks of ``--chunk`` px and
``lock=False``, ``odc.geo.xr.xr_reproject(data, GeoBox(...),
resampling="bilinear")`` onto the given grid (output chunks of the same
size: odc-geo's default), optionally xarray-spatial's ``slope`` of the
result (``--slope``; nodata made NaN first, see
:func:`common.masked_slope`), and ``.rio.to_raster`` to a tiled GeoTIFF
with the ``--co`` creation options behind a ``threading.Lock``, on dask's
threaded scheduler with ``-j`` threads.

What odc-geo does its own way, kept: each output chunk is one
``rasterio.warp.reproject`` call on the source chunks it overlaps,
assembled in memory, with rasterio's default approximate transformer
(error threshold 0.125 px, as ``gdalwarp`` without ``-et``) and
``XSCALE=1, YSCALE=1`` (a 2x2 bilinear whatever the scale change); the
input's nodata (``_FillValue``) is the source and destination nodata.

Usage: ``odc_reproject.py IN OUT --crs EPSG:4326 --bounds l,b,r,t --res R
-j N [--chunk 2048] [--slope] [--co NAME=VALUE ...]``.
"""

from __future__ import annotations

from common import (
    add_grid_options,
    build_parser,
    creation_options,
    masked_slope,
    open_dask,
    require,
    target_grid,
    write_threaded,
)


def process_file(
    infile: str,
    outfile: str,
    *,
    grid,
    jobs: int,
    chunk: int,
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
        Threads of dask's threaded scheduler.
    chunk
        Dask chunk side in pixels, input and output.
    slope
        Write xarray-spatial's slope of the reprojected DEM instead.
    blocksize
        Output tile size.
    options
        GDAL creation options of the output (tiling, compression...).
    """
    geobox = require("odc.geo.geobox", "odc-geo")
    xr = require("odc.geo.xr", "odc-geo")
    dem = open_dask(infile, chunk).sel(band=1)
    box = geobox.GeoBox((grid.height, grid.width), grid.transform, grid.crs)
    result = xr.xr_reproject(dem, box, resampling="bilinear")
    if slope:
        result = masked_slope(result)
    write_threaded(result, outfile, jobs=jobs, blocksize=blocksize, compress=None, options=options)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = build_parser(__doc__.splitlines()[0], kernel=False, jobs=True, chunk=2048)
    add_grid_options(parser)
    args = parser.parse_args(argv)
    process_file(
        args.infile,
        args.outfile,
        grid=target_grid(args),
        jobs=args.jobs,
        chunk=args.chunk,
        slope=args.slope,
        blocksize=args.blocksize,
        options=creation_options(args),
    )


if __name__ == "__main__":
    main()
