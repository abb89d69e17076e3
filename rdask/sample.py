"""A small synthetic sample raster, so the demo needs no download."""

from __future__ import annotations

import numpy as np


def make_sample(path: str, *, height: int = 1024, width: int = 1024, bands: int = 3) -> str:
    """Write a tiled, DEFLATE-compressed uint8 GeoTIFF of smooth bands plus noise.

    A little larger than rasterio's ``RGB.byte.tif`` (the docs' example input),
    so that it splits into four equal 512 x 512 chunks.

    Returns
    -------
    str
        ``path``.
    """
    import rasterio
    from rasterio.transform import from_origin

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    data = np.empty((bands, height, width), dtype=np.uint8)
    for b in range(bands):
        wave = np.sin(xx / (40.0 + 15 * b)) + np.cos(yy / (55.0 + 10 * b)) + (xx + yy) / (width + height)
        noise = rng.normal(0, 0.08, size=(height, width)).astype(np.float32)
        data[b] = np.clip((wave + 1.5 + noise) * 60 + 10, 1, 255).astype(np.uint8)
    profile = {
        "driver": "GTiff", "height": height, "width": width, "count": bands, "dtype": "uint8",
        "crs": "EPSG:32618", "transform": from_origin(101985.0, 2826915.0, 300.0, 300.0),
        "nodata": 0, "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
