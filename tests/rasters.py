"""Synthetic GeoTIFFs for tests, written with plain rasterio."""

from __future__ import annotations

import numpy as np
import rasterio
import tifffile
from affine import Affine


def synthetic(shape: tuple[int, int, int], dtype: str, seed: int = 0, nan_frac: float = 0.0,
              nodata: float | None = None) -> np.ndarray:
    """Deterministic pixels with structure and noise, NaN/nodata sprinkled in."""
    bands, h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 7.0 + b) * np.cos(yy / 5.0 - b) for b in range(bands)])
    dt = np.dtype(dtype)
    if dt.kind == "f":
        data = (base * 100 + rng.normal(0, 1, size=shape)).astype(dt)
        if nan_frac:
            data[rng.random(shape) < nan_frac] = np.nan
    else:
        info = np.iinfo(dt)
        lo, hi = max(info.min, -30000), min(info.max, 60000)
        span = (hi - lo) / 2.2
        data = np.clip((base + 1.1) * span + lo + rng.integers(0, 3, size=shape), lo, hi).astype(dt)
    if nodata is not None and not np.isnan(nodata):
        data[rng.random(shape) < 0.02] = nodata
    return data


def write(path, data: np.ndarray, *, block: tuple[int, int] | None = (256, 256),
          interleave: str = "pixel", crs: str | None = "EPSG:32618",
          transform: Affine | None = None, nodata: float | None = None,
          compress: str | None = "deflate", mask: np.ndarray | None = None,
          descriptions: tuple[str, ...] | None = None, tags: dict | None = None) -> str:
    """Write ``data`` as a GeoTIFF; ``block=None`` makes it striped."""
    bands, h, w = data.shape
    profile = dict(
        driver="GTiff", height=h, width=w, count=bands, dtype=data.dtype, crs=crs,
        transform=transform or Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0),
        nodata=nodata, interleave=interleave,
    )
    if compress:
        profile["compress"] = compress
    if block is None:
        profile.update(tiled=False, blockysize=1 if h < 16 else 8)
    else:
        profile.update(tiled=True, blockysize=block[0], blockxsize=block[1])
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if mask is not None:
            dst.write_mask(mask)
        if descriptions:
            for i, d in enumerate(descriptions, 1):
                dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
    return str(path)


def read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def tile_extents(path: str) -> list[tuple[int, int]]:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return sorted(zip(page.dataoffsets, page.databytecounts, strict=True))


def check_layout(path: str) -> None:
    """Every tile is present, and no two tiles share a byte."""
    extents = tile_extents(path)
    assert all(size > 0 for _, size in extents)
    for (a, an), (b, _) in zip(extents, extents[1:], strict=False):
        assert a + an <= b, f"tiles at {a} (+{an}) and {b} overlap"


def assert_same_raster(a, b):
    """Same pixels, masks and metadata. (Not the same bytes: chunks are written
    as they finish, so tiles sit at different offsets from run to run.)"""
    with rasterio.open(a) as x, rasterio.open(b) as y:
        px, py = dict(x.profile), dict(y.profile)
        nx, ny = px.pop("nodata"), py.pop("nodata")
        assert px == py
        assert nx == ny or (np.isnan(nx) and np.isnan(ny)), (nx, ny)
        assert x.tags() == y.tags() and x.descriptions == y.descriptions
        assert [x.tags(i) for i in x.indexes] == [y.tags(i) for i in y.indexes]
        assert (x.colorinterp, x.scales, x.offsets, x.units) == (y.colorinterp, y.scales, y.offsets, y.units)
        assert np.array_equal(x.read(), y.read())
        assert np.array_equal(x.read_masks(), y.read_masks())
