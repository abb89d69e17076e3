"""A Zarr output carries what the GeoTIFF output of the same job carries.

The reference is what the readers show of the GeoTIFF: ``rioxarray.
open_rasterio`` (attributes, CF encoding, decoded values) against
``xarray.open_zarr(..., decode_coords="all")`` + rioxarray on the Zarr
store, local and on S3 (moto); rasterio (GDAL) on the GeoTIFF against
``rdask.open_raster`` on the store, and the GeoTIFF a Zarr input gives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from affine import Affine
from rasterio.enums import ColorInterp
from servers import BUCKET

import rdask

TAGS = {"SENSOR": "synthetic", "MISSION": "m-1"}
BAND_TAGS = ({"WAVELENGTH": "665"}, {"WAVELENGTH": "560", "GAIN": "2"}, {"WAVELENGTH": "490"})


def make_input(path, *, scales=(0.5, 0.5, 0.5), offsets=(10.0, 10.0, 10.0)):
    data = (np.arange(3 * 150 * 170).reshape(3, 150, 170) % 900 - 100).astype("int16")
    data[:, :5, :7] = -1
    with rasterio.open(path, "w", driver="GTiff", width=170, height=150, count=3, dtype="int16",
                       crs="EPSG:32631", transform=Affine(10, 0, 500000, 0, -10, 4000000), nodata=-1,
                       tiled=True, blockxsize=64, blockysize=64) as ds:
        ds.write(data)
        ds.descriptions = ("red", "green", "blue")
        ds.scales, ds.offsets = scales, offsets
        ds.units = ("W/m2", "W/m2", "W/m2")
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        ds.update_tags(**TAGS)
        for b, tags in enumerate(BAND_TAGS, start=1):
            if tags:
                ds.update_tags(b, **tags)
    return str(path)


def rio_view(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rioxarray warns when scales differ across bands
        return rioxarray.open_rasterio(path, **kw)


def zarr_view(store, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: v2 metadata beside v3
        ds = xr.open_zarr(store, decode_coords="all", zarr_format=3, **kw)
    return ds["band_data"]


def plain(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def assert_zarr_shows_what_rioxarray_shows(tif: str, store, *, decode: bool):
    """Every attribute and encoding item rioxarray gives the GeoTIFF, the
    Zarr store gives (equal values); decoded values equal."""
    t = rio_view(tif, mask_and_scale=decode)
    z = zarr_view(store, mask_and_scale=decode)
    shown = {k: v for k, v in t.attrs.items() if k != "_FillValue"}
    assert shown, "the GeoTIFF shows nothing: the test would prove nothing"
    for key, value in shown.items():
        assert key in z.attrs, key
        assert plain(z.attrs[key]) == plain(value), key
    for key in ("scale_factor", "add_offset"):
        assert (key in t.encoding) == (key in z.encoding), key
        if key in t.encoding:
            assert float(z.encoding[key]) == float(t.encoding[key])
    assert z.rio.crs == t.rio.crs and z.rio.transform() == t.rio.transform()
    assert z.rio.nodata == t.rio.nodata or (decode and np.isnan(z.rio.nodata) and np.isnan(t.rio.nodata))
    np.testing.assert_array_equal(z.values, t.values.astype(z.dtype))  # xarray decodes int16 to float64
    return t, z


@pytest.mark.parametrize("uniform", [True, False], ids=["cf-scale", "per-band-scales"])
def test_zarr_shows_what_the_geotiff_shows(tmp_path, uniform):
    kw = {} if uniform else dict(scales=(0.5, 1.0, 2.0), offsets=(1.0, 0.0, -3.0))
    src = make_input(tmp_path / "in.tif", **kw)
    tif, store = str(tmp_path / "out.tif"), str(tmp_path / "out.zarr")
    rdask.process(src, tif, "reverse-bands", workers=2, chunk_mb=0.05)
    rdask.process(src, store, "reverse-bands", workers=2, chunk_mb=0.05, overview_levels=1)
    t, z = assert_zarr_shows_what_rioxarray_shows(tif, store, decode=uniform)
    assert ("scale_factor" in z.encoding) == uniform and ("scales" in z.attrs) != uniform
    assert plain(z.attrs["long_name"]) == ["blue", "green", "red"]
    assert z.attrs["colorinterp"] == ["blue", "green", "red"]
    # The overview level carries the same band metadata.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = xr.open_zarr(store, group="1", zarr_format=3, mask_and_scale=False)["band_data"]
    assert level.attrs["long_name"] == z.attrs["long_name"] and level.attrs["band_tags"] == z.attrs["band_tags"]


def test_open_raster_reads_it_back_and_zarr_to_geotiff_keeps_it(tmp_path):
    src = make_input(tmp_path / "in.tif")
    tif, store = str(tmp_path / "out.tif"), str(tmp_path / "out.zarr")
    rdask.process(src, tif, "reverse-bands", workers=2, chunk_mb=0.05)
    rdask.process(src, store, "reverse-bands", workers=2, chunk_mb=0.05)
    want = rdask.open_raster(tif).rdask.meta
    got = rdask.open_raster(store).rdask.meta
    assert got.bands == want.bands and got.tag_dict() == want.tag_dict()
    assert [b.tags for b in got.bands] == [tuple(sorted(t.items())) for t in BAND_TAGS[::-1]]
    back = str(tmp_path / "back.tif")
    rdask.process(store, back, "reverse-bands", workers=2, chunk_mb=0.05)
    with rasterio.open(src) as a, rasterio.open(back) as b:
        assert b.descriptions == a.descriptions and b.scales == a.scales and b.offsets == a.offsets
        assert b.units == a.units and b.colorinterp == a.colorinterp and b.nodata == a.nodata
        assert b.tags() == a.tags()
        assert [b.tags(i) for i in (1, 2, 3)] == [a.tags(i) for i in (1, 2, 3)]
        assert np.array_equal(b.read(), a.read())


def test_gdal_reads_scales_offsets_nodata_and_tags(tmp_path):
    """rasterio's GDAL (3.10) opens the store's data array: CF scale and
    offset, nodata and the dataset tags are the GeoTIFF's."""
    src = make_input(tmp_path / "in.tif")
    tif, store = str(tmp_path / "out.tif"), str(tmp_path / "out.zarr")
    rdask.process(src, tif, "reverse-bands", workers=2, chunk_mb=0.05)
    rdask.process(src, store, "reverse-bands", workers=2, chunk_mb=0.05)
    with rasterio.open(tif) as a, rasterio.open(f'ZARR:"{store}":/band_data') as b:
        assert b.scales == a.scales and b.offsets == a.offsets and b.nodata == a.nodata
        assert {k: b.tags()[k] for k in TAGS} == TAGS
        assert np.array_equal(b.read(), a.read())


def test_system_gdal_reads_scales_offsets_nodata_and_tags_band_by_band(tmp_path):
    """Debian's gdalinfo (GDAL 3.6) opens a 3-D Zarr array one band at a time
    (``ZARR:"store":/band_data:i``): each band's scale and offset (CF, the
    same for every band: GDAL knows no per-band ones), nodata and the
    dataset tags are the GeoTIFF's."""
    gdalinfo = shutil.which("gdalinfo")
    assert gdalinfo, "gdalinfo (GDAL's command-line tools) is needed on PATH"
    src = make_input(tmp_path / "in.tif")
    tif, store = str(tmp_path / "out.tif"), str(tmp_path / "out.zarr")
    rdask.process(src, tif, "reverse-bands", workers=2, chunk_mb=0.05)
    rdask.process(src, store, "reverse-bands", workers=2, chunk_mb=0.05)
    with rasterio.open(tif) as ds:
        want = [(ds.scales[i], ds.offsets[i], ds.nodata) for i in range(3)]
    for i in range(3):
        out = subprocess.run([gdalinfo, "-json", f'ZARR:"{store}":/band_data:{i}'], capture_output=True,
                             text=True, check=True).stdout
        info = json.loads(out)
        band = info["bands"][0]
        assert (band.get("scale", 1.0), band.get("offset", 0.0), band["noDataValue"]) == want[i]
        assert {k: info["metadata"][""][k] for k in TAGS} == TAGS


def test_s3_zarr_shows_what_the_geotiff_shows(s3, tmp_path):
    import obstore.store
    from zarr.storage import ObjectStore

    src = make_input(tmp_path / "in.tif")
    tif = str(tmp_path / "out.tif")
    rdask.process(src, tif, "reverse-bands", workers=2, chunk_mb=0.05)
    rdask.process(src, f"s3://{BUCKET}/meta.zarr", "reverse-bands", workers=2, chunk_mb=0.05)
    store = obstore.store.S3Store(BUCKET, prefix="meta.zarr", endpoint=f"http://{os.environ['AWS_S3_ENDPOINT']}",
                                  client_options={"allow_http": True}, virtual_hosted_style_request=False)
    assert_zarr_shows_what_rioxarray_shows(tif, ObjectStore(store, read_only=True), decode=True)
    got = rdask.open_raster(f"s3://{BUCKET}/meta.zarr").rdask.meta
    assert got.bands == rdask.open_raster(tif).rdask.meta.bands
