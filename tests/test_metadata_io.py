"""Metadata from open to write: an output written from :class:`RasterMeta`
carries what ``gdal_translate`` carries.

Every case is a real file (``tests/data/odd``, see its SOURCE.rst) or one
derived from them with GDAL's own tools. The oracle is ``gdal_translate
-of GTiff`` of the input (same compression); rdask's way is
``read_meta`` -> a new GeoTIFF created with ``creation_kwargs`` +
``creation_options_for`` + ``write_meta`` in a partial file -> sidecars
published -> renamed into place. Both are reopened with rasterio and every
item compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from rdask.io.inspect import inspect, read_meta
from rdask.meta import GCP, BandMeta, RasterMeta
from rdask.outputs.sidecar import publish_sidecars, sidecars
from rdask.outputs.tiff.gdalmeta import creation_kwargs, creation_options_for, is_3d, write_meta

DATA = Path(__file__).parent / "data"
ODD = DATA / "odd"
READDIR_OFF = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}

pytestmark = pytest.mark.skipif(shutil.which("gdal_translate") is None,
                                reason="GDAL command line tools missing (make sysdeps)")


# -- helpers -----------------------------------------------------------------

def gdal(tool: str, *args: str, config: dict[str, str] | None = None) -> None:
    """Run a GDAL command line tool quietly; fail the test on error."""
    env = dict(os.environ, **(config or {}))
    subprocess.run([tool, "-q", *map(str, args)] if tool == "gdal_translate" else [tool, *map(str, args)],
                   check=True, env=env, capture_output=True)


def co_args(options: dict[str, str]) -> list[str]:
    return [a for k, v in options.items() for a in ("-co", f"{k}={v}")]


def oracle(src: Path, dst: Path, options: dict[str, str]) -> Path:
    """``gdal_translate -of GTiff`` of ``src``."""
    gdal("gdal_translate", "-of", "GTiff", *co_args(options), src, dst)
    return dst


def rdask_copy(src: Path, dst: Path, options: dict[str, str], meta: RasterMeta | None = None) -> Path:
    """Write ``src``'s pixels with its :func:`read_meta` the way rdask's
    outputs do: partial file, metadata, sidecars published, rename."""
    with warnings.catch_warnings():
        # rasterio warns on opening or creating a dataset without a transform
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(src) as ds:
            meta = meta or read_meta(ds)
            data, dtype = ds.read(), ds.dtypes[0]
        partial = dst.parent / f".{dst.name}.rdask-partial"
        profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
                   "count": data.shape[0], "dtype": dtype, **creation_kwargs(meta, dtype),
                   **options, **creation_options_for(meta)}
        with rasterio.open(partial, "w", **profile) as out:
            write_meta(out, meta)
            out.write(data)
    assert sorted(sidecars(str(partial))) == sorted(str(p) for p in partial.parent.glob(partial.name + ".*"))
    publish_sidecars(str(partial), str(dst))
    os.replace(partial, dst)
    return dst


def snapshot(path: Path) -> dict:
    """Every metadata item of ``path`` as GDAL reads it (sidecars included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = rasterio.open(path)
    with ds:
        gcps, gcp_crs = ds.gcps
        return {
            # CRS objects compare as GDAL does (OSRIsSame): the GDAL of the
            # command line tools may spell the same CRS differently
            "crs": ds.crs, "3d": is_3d(ds.crs), "transform": tuple(ds.transform),
            "gcps": [(g.row, g.col, g.x, g.y, g.z) for g in gcps], "gcp_crs": gcp_crs,
            "rpcs": ds.tags(ns="RPC"), "tags": ds.tags(), "nodata": ds.nodatavals,
            "colorinterp": [c.name for c in ds.colorinterp],
            "colormaps": [_colormap(ds, i) for i in ds.indexes],
            "descriptions": ds.descriptions, "scales": ds.scales, "offsets": ds.offsets,
            "units": ds.units, "band_tags": [ds.tags(i) for i in ds.indexes],
            "mask_flags": [sorted(f.name for f in flags) for flags in ds.mask_flag_enums],
        }


def _colormap(ds, i: int) -> dict | None:
    try:
        return ds.colormap(i)
    except ValueError:
        return None


def assert_same(got: dict, want: dict) -> None:
    diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not diff, diff


# -- inputs ------------------------------------------------------------------

def _rgb(tmp: Path) -> Path:
    shutil.copy(DATA / "RGB.byte.tif", tmp / "RGB.byte.tif")
    return tmp / "RGB.byte.tif"


def _derived(tmp: Path, name: str, *args: str, src: Path | None = None,
             config: dict[str, str] | None = None) -> Path:
    out = tmp / name
    gdal("gdal_translate", *args, src or _rgb(tmp), out, config=config)
    return out


BAND_VRT = """<VRTDataset rasterXSize="791" rasterYSize="718">
  <SRS>EPSG:32618</SRS>
  <GeoTransform>101985.0, 300.0379266750948, 0.0, 2826915.0, 0.0, -300.041782729805</GeoTransform>
  <Metadata><MDI key="DATASET_TAG">dataset value</MDI></Metadata>
  {bands}
</VRTDataset>"""

BAND = """<VRTRasterBand dataType="Byte" band="{n}">
    <Description>{desc}</Description>
    <Metadata><MDI key="FOO">bar{n}</MDI></Metadata>
    <NoDataValue>0</NoDataValue>
    <ColorInterp>{interp}</ColorInterp>
    <Offset>{n}.5</Offset><Scale>0.25</Scale><UnitType>W/m2/sr</UnitType>
    <SimpleSource><SourceFilename relativeToVRT="1">RGB.byte.tif</SourceFilename>
      <SourceBand>{src}</SourceBand></SimpleSource>
  </VRTRasterBand>"""

PALETTE_VRT = """<VRTDataset rasterXSize="791" rasterYSize="718">
  <SRS>EPSG:32618</SRS>
  <GeoTransform>101985.0, 300.0379266750948, 0.0, 2826915.0, 0.0, -300.041782729805</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1">
    <ColorInterp>Palette</ColorInterp>
    <ColorTable>{entries}</ColorTable>
    <SimpleSource><SourceFilename relativeToVRT="1">RGB.byte.tif</SourceFilename>
      <SourceBand>1</SourceBand></SimpleSource>
  </VRTRasterBand>
</VRTDataset>"""


def band_items(tmp: Path) -> Path:
    """BGR bands with descriptions, tags, scales, offsets, units (a VRT)."""
    _rgb(tmp)
    bands = "\n".join(BAND.format(n=n, src=4 - n, interp=c, desc=f"band {c}")
                      for n, c in ((1, "Blue"), (2, "Green"), (3, "Red")))
    (tmp / "bands.vrt").write_text(BAND_VRT.format(bands=bands))
    return _derived(tmp, "bands.tif", "-co", "COMPRESS=DEFLATE", src=tmp / "bands.vrt")


def palette(tmp: Path) -> Path:
    _rgb(tmp)
    entries = "".join(f'<Entry c1="{i}" c2="{255 - i}" c3="{i // 2}" c4="255"/>' for i in range(256))
    (tmp / "palette.vrt").write_text(PALETTE_VRT.format(entries=entries))
    return _derived(tmp, "palette.tif", src=tmp / "palette.vrt")


def projected_3d(tmp: Path) -> Path:
    """GeoTIFF 1.1 keys ProjectedCSTypeGeoKey=32631 + VerticalGeoKey=4979
    (GDAL reads a projected 3D CRS; like GDAL's epsg32631_4979_geotiff1_1.tif,
    which GDAL itself cannot write)."""
    import tifffile

    keys = (1, 1, 1, 4, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32631, 4096, 0, 1, 4979)
    path = tmp / "epsg32631_4979.tif"
    tifffile.imwrite(path, np.arange(64, dtype="uint8").reshape(8, 8), extratags=[
        (33550, "d", 3, (10.0, 10.0, 0.0), False),
        (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4500000.0, 0.0), False),
        (34735, "H", len(keys), keys, False)])
    return path


def crs_in_aux_xml(tmp: Path) -> Path:
    """A GeoTIFF without CRS whose CRS is only in its .aux.xml."""
    path = tmp / "rotated.tif"
    shutil.copy(ODD / "rotated.tif", path)
    wkt = CRS.from_epsg(32618).to_wkt()
    (tmp / "rotated.tif.aux.xml").write_text(f"<PAMDataset><SRS>{wkt}</SRS></PAMDataset>")
    return path


def vrt(name: str):
    def make(tmp: Path) -> Path:
        _rgb(tmp)
        shutil.copy(ODD / name, tmp / name)
        return tmp / name
    return make


def copied(name: str):
    def make(tmp: Path) -> Path:
        shutil.copy(ODD / name, tmp / name)
        return tmp / name
    return make


GCP_ARGS = ("-gcp", "0", "0", "-78.0", "25.6", "-gcp", "791", "0", "-75.6", "25.6",
            "-gcp", "0", "718", "-78.0", "23.6", "-gcp", "791", "718", "-75.6", "23.6")

#: name -> (make input, creation options for both the oracle and rdask)
CASES = {
    "rgb_with_aux_stats": (lambda t: (shutil.copy(ODD / "RGB.byte.tif.aux.xml", t), _rgb(t))[1], {}),
    "band_items_bgr": (band_items, {"COMPRESS": "DEFLATE"}),
    "bgr_photometric_minisblack": (lambda t: _derived(
        t, "bgr.tif", "-b", "3", "-b", "2", "-b", "1", "-colorinterp", "blue,green,red",
        "-co", "PHOTOMETRIC=MINISBLACK"), {}),
    "rgba_alpha": (lambda t: _derived(
        t, "rgba.tif", "-b", "1", "-b", "2", "-b", "3", "-b", "mask", "-colorinterp_4", "alpha",
        "-a_nodata", "none", "-co", "ALPHA=YES"), {}),
    "gray_alpha": (lambda t: _derived(
        t, "ga.tif", "-b", "1", "-b", "mask", "-colorinterp_2", "alpha", "-a_nodata", "none",
        "-co", "ALPHA=YES"), {}),
    "palette": (palette, {}),
    "palette_expanded": (lambda t: _derived(t, "expanded.tif", "-expand", "rgb", src=palette(t)), {}),
    "pixel_is_point": (lambda t: _derived(t, "point.tif", "-mo", "AREA_OR_POINT=Point"), {}),
    "dataset_tags": (lambda t: _derived(t, "tags.tif", "-mo", "FOO=bar", "-mo", "BAZ=1 2"), {}),
    "float_nodata": (copied("float_raster_with_extra_nodata.tif"), {}),
    "esri_wkt": (copied("test_esri_wkt.tif"), {}),
    "rotated_no_crs": (copied("rotated.tif"), {}),
    "crs_in_aux_xml": (crs_in_aux_xml, {}),
    "geographic_3d": (lambda t: _derived(t, "g3d.tif", "-a_srs", "EPSG:4979"), {}),
    "compound": (lambda t: _derived(t, "cmp.tif", "-a_srs", "EPSG:32618+5773"), {}),
    "projected_3d_geotiff_1_1": (projected_3d, {}),
    "local_cs": (lambda t: _derived(
        t, "local.tif", "-a_srs", 'LOCAL_CS["arbitrary",UNIT["metre",1],AXIS["Easting",EAST],'
        'AXIS["Northing",NORTH]]'), {}),
    "gcps_vrt": (vrt("RGB.byte.gcp.vrt"), {}),
    "gcp_only_point": (lambda t: _derived(
        t, "gcp.tif", *GCP_ARGS, "-a_srs", "EPSG:4326", "-mo", "AREA_OR_POINT=Point"), {}),
    "rpcs_vrt": (vrt("RGB.byte.rpc.vrt"), {}),
    "nodata_values": (lambda t: _derived(
        t, "ndv.tif", "-a_nodata", "none", "-mo", "NODATA_VALUES=0 0 0"), {}),
    "world_file_baseline": (lambda t: _derived(
        t, "tfw.tif", "-co", "TFW=YES", "-co", "PROFILE=BASELINE"), {}),
    "external_mask": (lambda t: _derived(
        t, "msk.tif", "-a_nodata", "none", "-mask", "1", config={"GDAL_TIFF_INTERNAL_MASK": "NO"}), {}),
    "bigtiff": (lambda t: _derived(t, "big.tif", "-co", "BIGTIFF=YES"), {"BIGTIFF": "YES"}),
    "ycbcr_jpeg": (lambda t: _derived(
        t, "jpeg.tif", "-a_nodata", "none", "-co", "COMPRESS=JPEG", "-co", "PHOTOMETRIC=YCBCR"),
        {"COMPRESS": "JPEG"}),
    # NBITS is image structure: gdal_translate keeps it, RasterMeta does not
    # (the output's structure is its own), so both get it as an option.
    "nbits_12": (lambda t: _derived(t, "n12.tif", "-ot", "UInt16", "-co", "NBITS=12"),
                 {"NBITS": "12"}),
    "nbits_1": (lambda t: _derived(t, "n1.tif", "-b", "1", "-scale", "0", "255", "0", "1",
                                   "-co", "NBITS=1"), {"NBITS": "1"}),
}

#: The external mask is pixels, not metadata: the lead's mask logic writes it.
MASKS_DIFFER = {"external_mask"}
#: RGB.byte.gcp.vrt has a CRS, an identity GeoTransform *and* GCPs; a
#: GeoTIFF holds one CRS and either GCPs or a transform. gdal_translate keeps
#: the CRS and the meaningless identity transform and drops the GCPs; rdask
#: keeps the GCPs with their CRS (what georeferences the pixels).
KEEPS_GCPS = {"gcps_vrt"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_carries_what_gdal_translate_carries(case: str, tmp_path: Path) -> None:
    make, options = CASES[case]
    src = make(tmp_path)
    (tmp_path / "out").mkdir()
    want = snapshot(oracle(src, tmp_path / "out" / "oracle.tif", options))
    got = snapshot(rdask_copy(src, tmp_path / "out" / "rdask.tif", options))
    if case in MASKS_DIFFER:
        got.pop("mask_flags"), want.pop("mask_flags")
    if case in KEEPS_GCPS:
        source = snapshot(src)
        assert (got["gcps"], got["gcp_crs"], got["crs"]) == (source["gcps"], source["gcp_crs"], None)
        assert (want["gcps"], want["crs"]) == ([], source["crs"])
        for key in ("gcps", "gcp_crs", "crs"):
            got.pop(key), want.pop(key)
    assert_same(got, want)
    assert not list((tmp_path / "out").glob(".*rdask-partial*")), "a partial sidecar was left behind"


# -- bands follow their metadata ----------------------------------------------

def _meta(path: Path) -> RasterMeta:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return read_meta(ds)


def test_for_bands_moves_every_band_item_with_its_band(tmp_path: Path) -> None:
    meta = _meta(band_items(tmp_path))
    meta = replace(meta, bands=tuple(replace(b, nodata_component=float(i), colormap=((0, (i, 0, 0, 255)),))
                                     for i, b in enumerate(meta.bands)))
    moved = meta.for_bands((2, 1, 0), 3)
    assert moved.bands == meta.bands[::-1]
    assert moved.nodata_values == (2.0, 1.0, 0.0)
    assert (moved.crs, moved.transform, moved.tags, moved.nodata) == (meta.crs, meta.transform, meta.tags, meta.nodata)
    got = snapshot(rdask_copy(tmp_path / "bands.tif", tmp_path / "moved.tif", {},
                              meta=replace(moved, bands=tuple(replace(b, colormap=()) for b in moved.bands))))
    src = snapshot(tmp_path / "bands.tif")
    for key in ("descriptions", "scales", "offsets", "units", "colorinterp", "band_tags"):
        assert list(got[key]) == list(src[key])[::-1], key
    assert got["tags"]["NODATA_VALUES"] == "2 1 0"
    assert hash(moved) == hash(meta.for_bands((2, 1, 0), 3))


def test_for_bands_of_new_bands_keeps_georeferencing_and_dataset_tags(tmp_path: Path) -> None:
    for make in (vrt("RGB.byte.gcp.vrt"), vrt("RGB.byte.rpc.vrt"), band_items):
        meta = _meta(make(tmp_path))
        new = meta.for_bands(None, 1)
        assert new.bands == (BandMeta(),)
        assert (new.crs, new.transform, new.gcps, new.gcp_crs, new.rpcs, new.tags, new.nodata) == (
            meta.crs, meta.transform, meta.gcps, meta.gcp_crs, meta.rpcs, meta.tags, meta.nodata)
    got = snapshot(rdask_copy(tmp_path / "bands.tif", tmp_path / "one.tif", {}, meta=new))
    assert got["descriptions"] == (None, None, None) and got["band_tags"] == [{}, {}, {}]
    assert got["tags"]["DATASET_TAG"] == "dataset value" and got["crs"] == meta.crs


def test_meta_is_hashable_and_equal_across_reads(tmp_path: Path) -> None:
    for make in (vrt("RGB.byte.gcp.vrt"), vrt("RGB.byte.rpc.vrt"), palette, band_items):
        path = make(tmp_path)
        a, b = _meta(path), _meta(path)
        assert a == b and hash(a) == hash(b)
    assert _meta(tmp_path / "RGB.byte.gcp.vrt").gcps[0] == GCP(11521.5, 0.5, -123.6185142818, 48.99561141949,
                                                              89.13533782959, "0", "")


# -- georeferencing corner cases ----------------------------------------------

def test_dropped_gcps_do_not_invent_a_local_cs(tmp_path: Path) -> None:
    src = CASES["gcp_only_point"][0](tmp_path)
    meta = _meta(src)
    assert meta.crs is None and meta.gcp_crs == CRS.from_epsg(4326) and meta.tag_dict()["AREA_OR_POINT"] == "Point"
    got = snapshot(rdask_copy(src, tmp_path / "nogcp.tif", {}, meta=replace(meta, gcps=(), gcp_crs=None)))
    assert (got["crs"], got["gcps"], got["transform"][:6]) == (None, [], (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    # What GDAL does with a lone AREA_OR_POINT=Point: GeoKeys, read back as LOCAL_CS.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "gdal.tif", "w", driver="GTiff", width=1, height=1, count=1,
                           dtype="uint8") as ds:
            ds.update_tags(AREA_OR_POINT="Point")
        with rasterio.open(tmp_path / "gdal.tif") as ds:
            assert "LOCAL_CS" in ds.crs.to_wkt()


def test_point_gcps_round_trip_exactly(tmp_path: Path) -> None:
    src = CASES["gcp_only_point"][0](tmp_path)
    got = snapshot(rdask_copy(src, tmp_path / "out.tif", {}))
    assert got["gcps"][:2] == [(0.0, 0.0, -78.0, 25.6, 0.0), (0.0, 791.0, -75.6, 25.6, 0.0)]


def test_3d_crs_options_and_sidecar(tmp_path: Path) -> None:
    compound = _meta(CASES["compound"][0](tmp_path))
    assert creation_options_for(compound)["GEOTIFF_VERSION"] == "1.1"
    assert snapshot(rdask_copy(tmp_path / "cmp.tif", tmp_path / "cmp_out.tif", {}))["crs"] == compound.crs
    p3d = projected_3d(tmp_path)
    meta = _meta(p3d)
    assert is_3d(meta.crs) and creation_options_for(meta) == {"GEOTIFF_VERSION": "1.1"}
    out = tmp_path / "out" / "p3d.tif"
    out.parent.mkdir()
    (out.parent / "p3d.tif.aux.xml").write_text("<PAMDataset/>")  # stale: replaced
    rdask_copy(p3d, out, {})
    assert sorted(p.name for p in out.parent.iterdir()) == ["p3d.tif", "p3d.tif.aux.xml"]
    assert "<SRS" in (out.parent / "p3d.tif.aux.xml").read_text()
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(out) as ds:
        assert ds.crs is None  # the CRS is only in the sidecar, as with gdal_translate


def test_publish_sidecars_names_and_stale_files(tmp_path: Path) -> None:
    partial, target = tmp_path / ".o.tif.rdask-partial", tmp_path / "o.tif"
    for name in (".o.tif.rdask-partial", ".o.tif.rdask-partial.aux.xml", ".o.tif.rdask-partial.msk",
                 ".o.tif.tfw", ".o.tif_RPC.TXT"):
        (tmp_path / name).write_text(name)
    for stale in ("o.tif.ovr", "o.RPB"):
        (tmp_path / stale).write_text("stale")
    assert len(sidecars(str(partial))) == 4
    published = publish_sidecars(str(partial), str(target))
    assert sorted(Path(p).name for p in published) == ["o.tfw", "o.tif.aux.xml", "o.tif.msk", "o_RPC.TXT"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".o.tif.rdask-partial", "o.RPB", "o.tfw", "o.tif.aux.xml", "o.tif.msk", "o_RPC.TXT"]
    assert (tmp_path / "o.tif.aux.xml").read_text() == ".o.tif.rdask-partial.aux.xml"


# -- local sidecars are read ----------------------------------------------------

def test_local_sidecars_are_read_unless_readdir_is_disabled(tmp_path: Path) -> None:
    rgb = _meta(_rgb(tmp_path))
    tfw = CASES["world_file_baseline"][0](tmp_path)
    assert {p.name for p in tmp_path.glob("tfw.*")} == {"tfw.tif", "tfw.tfw", "tfw.tif.aux.xml"}
    (tmp_path / "aux").mkdir()
    with_aux = CASES["rgb_with_aux_stats"][0](tmp_path / "aux")
    msk = CASES["external_mask"][0](tmp_path)
    assert (tmp_path / "msk.tif.msk").exists()

    seen = _meta(tfw)
    assert seen.crs == rgb.crs and seen.transform.almost_equals(rgb.transform, precision=1e-6)
    # RGB.byte.tif has statistics inside too; its .aux.xml (PAM) wins
    assert dict(_meta(with_aux).bands[0].tags)["STATISTICS_MEAN"] == "44.434478650699"
    assert inspect(str(msk), ()).per_dataset_mask

    with rasterio.Env(**READDIR_OFF):
        blind = _meta(tfw)
        assert blind.crs is None and tuple(blind.transform)[:6] == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        assert dict(_meta(with_aux).bands[0].tags)["STATISTICS_MEAN"] == "29.947726688477"
    assert not inspect(str(msk), tuple(READDIR_OFF.items())).per_dataset_mask


# -- masks: how NODATA_VALUES shows --------------------------------------------

def test_nodata_values_are_per_band_and_tell_apart_from_mask_bands(tmp_path: Path) -> None:
    ndv = _derived(tmp_path, "ndv.tif", "-a_nodata", "none", "-mo", "NODATA_VALUES=1 2 3")
    meta = _meta(ndv)
    assert meta.nodata is None and meta.nodata_values == (1.0, 2.0, 3.0)
    assert "NODATA_VALUES" not in meta.tag_dict()
    flags = {
        "nodata_values": snapshot(ndv)["mask_flags"],
        "mask_band": snapshot(CASES["external_mask"][0](tmp_path))["mask_flags"],
        "alpha": snapshot(CASES["rgba_alpha"][0](tmp_path))["mask_flags"],
        "nodata": snapshot(_rgb(tmp_path))["mask_flags"],
    }
    assert flags["nodata_values"] == [["nodata", "per_dataset"]] * 3
    assert flags["mask_band"] == [["per_dataset"]] * 3
    assert flags["alpha"][:3] == [["alpha", "per_dataset"]] * 3
    assert flags["nodata"] == [["nodata"]] * 3
