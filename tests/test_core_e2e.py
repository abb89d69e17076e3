"""End to end through the public API (``rdask.process``, ``rdask.open_raster``
/ ``apply`` / ``to_raster``) and the ``rdask run`` command, on real files.

Inputs are ``tests/data`` files, ``tests/data/odd`` (see its SOURCE.rst) and
files derived from them at test time with ``gdal_translate`` or rasterio (the
derivations of ``tests/test_metadata_io.py``). The oracle is plain rasterio:
reads of the input, and of ``gdal_translate`` output of the same input.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest
import rasterio
import test_metadata_io as tmio
from affine import Affine
from cli import RDASK
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

import rdask
from rdask.outputs.tiff.gdalmeta import is_3d

ROOT = str(Path(__file__).resolve().parent.parent)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}

pytestmark = [
    pytest.mark.skipif(shutil.which("gdal_translate") is None,
                       reason="GDAL command line tools missing (make sysdeps)"),
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]

#: Per-band items a kernel that keeps or reorders bands carries with them.
BAND_KEYS = ("descriptions", "scales", "offsets", "units", "colorinterp", "band_tags")


# -- helpers ---------------------------------------------------------------------

def snap(path: Path) -> dict:
    """Every metadata item of ``path`` (sidecars included), GDAL's
    ``STATISTICS_*`` left out of the band tags (a kernel drops them)."""
    s = tmio.snapshot(path)
    s["band_tags"] = [{k: v for k, v in t.items() if not k.startswith("STATISTICS_")}
                      for t in s["band_tags"]]
    return s


def oracle(src: Path, tmp: Path) -> dict:
    """``gdal_translate`` of ``src``, as :func:`snap` sees it."""
    (tmp / "oracle").mkdir(exist_ok=True)
    return snap(tmio.oracle(src, tmp / "oracle" / "oracle.tif", {}))


def pixels(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RDASK, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=120)


def out_dir(tmp: Path) -> Path:
    d = tmp / "out"
    d.mkdir(exist_ok=True)
    return d


def same(got: dict, want: dict, keys) -> None:
    diff = {k: (got[k], want[k]) for k in keys if got[k] != want[k]}
    assert not diff, diff


def reverse(s: dict, keys=BAND_KEYS) -> dict:
    return {k: list(s[k])[::-1] for k in keys}


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- 1. metadata through kernels ------------------------------------------------

@pytest.mark.parametrize("case", ["bgr_photometric_minisblack", "band_items_bgr"])
def test_focal_mean_keeps_band_items_as_gdal_translate(case: str, tmp_path: Path) -> None:
    src = tmio.CASES[case][0](tmp_path)
    out = out_dir(tmp_path) / "focal.tif"
    rdask.process(src, out, "focal-mean")
    got, want, source = snap(out), oracle(src, tmp_path), snap(src)
    assert got["colorinterp"] == ["blue", "green", "red"] == want["colorinterp"]
    same(got, want, BAND_KEYS)
    same(got, source, ("crs", "transform", "tags"))
    if case == "band_items_bgr":
        assert [t["FOO"] for t in got["band_tags"]] == ["bar1", "bar2", "bar3"]
        assert got["scales"] == (0.25,) * 3 and got["offsets"] == (1.5, 2.5, 3.5)
        assert got["units"] == ("W/m2/sr",) * 3
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)


def test_reverse_bands_twice_is_an_identity_cli(tmp_path: Path) -> None:
    src = tmio.band_items(tmp_path)
    out = out_dir(tmp_path) / "twice.tif"
    r = run_cli("run", "reverse-bands | reverse-bands", src, out)
    assert r.returncode == 0, r.stderr
    same(snap(out), snap(src), BAND_KEYS + ("crs", "transform", "tags", "nodata", "mask_flags"))
    assert np.array_equal(pixels(out), pixels(src))


def test_reverse_bands_moves_each_band_item_with_its_band(tmp_path: Path) -> None:
    src = tmio.band_items(tmp_path)
    out = out_dir(tmp_path) / "rev.tif"
    rdask.process(src, out, "reverse-bands")
    got, source = snap(out), snap(src)
    assert {k: list(got[k]) for k in BAND_KEYS} == reverse(source)
    assert got["descriptions"] == ("band Red", "band Green", "band Blue")
    assert got["colorinterp"][0] == "red"
    assert np.array_equal(pixels(out), pixels(src)[::-1])


def test_slope_new_band_keeps_georeferencing_and_dataset_tags_only(tmp_path: Path) -> None:
    src = tmio.band_items(tmp_path)
    out = out_dir(tmp_path) / "slope.tif"
    rdask.process(src, out, "slope")
    got, source = snap(out), snap(src)
    same(got, source, ("crs", "transform"))
    assert got["tags"]["DATASET_TAG"] == "dataset value"
    # slope's bands are new (one per input band): nothing of the input bands
    n = len(got["descriptions"])
    assert (got["descriptions"], got["scales"], got["offsets"], got["units"], got["band_tags"]) == (
        (None,) * n, (1.0,) * n, (0.0,) * n, (None,) * n, [{}] * n)
    assert "red" not in got["colorinterp"] and got["nodata"] == (-9999.0,) * n


# -- 2. kinds of georeferencing ----------------------------------------------------

@pytest.mark.parametrize("kernel", ["reverse-bands", "focal-mean"])
def test_gcp_only_input_keeps_gcps_and_invents_no_crs(kernel: str, tmp_path: Path) -> None:
    src = tmio.CASES["gcp_only_point"][0](tmp_path)
    out = out_dir(tmp_path) / "gcp.tif"
    rdask.process(src, out, kernel)
    got, source, want = snap(out), snap(src), oracle(src, tmp_path)
    assert got["crs"] is None and want["crs"] is None  # no LOCAL_CS invented
    assert got["gcps"] == source["gcps"] == want["gcps"] and len(got["gcps"]) == 4
    assert got["gcp_crs"] == CRS.from_epsg(4326) == want["gcp_crs"]
    assert got["tags"]["AREA_OR_POINT"] == "Point"


def test_rpc_input_keeps_its_rpcs(tmp_path: Path) -> None:
    src = tmio.vrt("RGB.byte.rpc.vrt")(tmp_path)
    out = out_dir(tmp_path) / "rpc.tif"
    rdask.process(src, out, "reverse-bands")
    got, source, want = snap(out), snap(src), oracle(src, tmp_path)

    def numbers(rpcs: dict) -> dict:
        return {k: [float(x) for x in v.split()] for k, v in rpcs.items()}

    assert len(source["rpcs"]) >= 10
    # GDAL rewrites RPCs as %.15e: exact against gdal_translate, close to the VRT's text
    assert got["rpcs"] == want["rpcs"]
    assert got["rpcs"].keys() == source["rpcs"].keys()
    for key, values in numbers(source["rpcs"]).items():
        assert np.allclose(numbers(got["rpcs"])[key], values, rtol=1e-14, atol=0), key
    assert np.array_equal(pixels(out), pixels(src)[::-1])


def test_palette_input_keeps_colour_table(tmp_path: Path) -> None:
    src = tmio.palette(tmp_path)
    out = out_dir(tmp_path) / "pal.tif"
    rdask.process(src, out, "reverse-bands")
    got, want = snap(out), oracle(src, tmp_path)
    assert got["colorinterp"] == ["palette"] == want["colorinterp"]
    assert got["colormaps"] == want["colormaps"] and got["colormaps"][0][7] == (7, 248, 3, 255)


def test_stack_of_palette_inputs_keeps_band_1_colour_table(tmp_path: Path) -> None:
    # Was a raw CPLE_NotSupportedError: the second band's colour table was
    # written too, and a GeoTIFF holds band 1's only.
    src = tmio.palette(tmp_path)
    out = out_dir(tmp_path) / "pal2.tif"
    rdask.process([src, src], out, "reverse-bands")
    got, source = snap(out), snap(src)
    assert got["colorinterp"][0] == "palette" and got["colormaps"][0] == source["colormaps"][0]
    assert got["colormaps"][1] is None
    assert np.array_equal(pixels(out), np.concatenate([pixels(src)] * 2))


def test_world_file_input_is_georeferenced(tmp_path: Path) -> None:
    # TFW=YES + PROFILE=BASELINE: the transform only in .tfw, the CRS only in .aux.xml
    src = tmio.CASES["world_file_baseline"][0](tmp_path)
    assert (tmp_path / "tfw.tfw").exists()
    out = out_dir(tmp_path) / "tfw.tif"
    rdask.process(src, out, "reverse-bands")
    got, want = snap(out), oracle(src, tmp_path)
    with rasterio.open(tmp_path / "RGB.byte.tif") as ds:
        crs, transform = ds.crs, ds.transform
    assert got["crs"] == crs == want["crs"]
    assert Affine(*got["transform"][:6]).almost_equals(transform, precision=1e-6)
    assert got["transform"] == want["transform"]


def test_crs_only_in_aux_xml_and_rotation_kept(tmp_path: Path) -> None:
    src = tmio.crs_in_aux_xml(tmp_path)
    out = out_dir(tmp_path) / "rot.tif"
    rdask.process(src, out, "reverse-bands")
    got, source, want = snap(out), snap(src), oracle(src, tmp_path)
    assert got["crs"] == CRS.from_epsg(32618) == want["crs"]
    assert got["transform"] == source["transform"] and got["transform"][1] != 0  # rotated, exactly
    assert np.array_equal(pixels(out), pixels(src)[::-1])


def test_rotated_source_refused_by_slope_in_one_line(tmp_path: Path) -> None:
    src = tmp_path / "rotated.tif"
    shutil.copy(tmio.ODD / "rotated.tif", src)
    out = out_dir(tmp_path) / "s.tif"
    with pytest.raises(rdask.KernelError) as err:
        rdask.process(src, out, "slope")
    assert "rotated" in one_line(str(err.value)) and "slope" in str(err.value)
    assert os.listdir(out.parent) == []
    r = run_cli("run", "slope", src, out)
    assert r.returncode != 0 and "rotated" in one_line(r.stderr)
    assert os.listdir(out.parent) == []


def test_geographic_3d_crs_round_trips_in_the_file(tmp_path: Path) -> None:
    src = tmio.CASES["geographic_3d"][0](tmp_path)
    out = out_dir(tmp_path) / "g3d.tif"
    rdask.process(src, out, "focal-mean")
    assert os.listdir(out.parent) == ["g3d.tif"]  # GeoTIFF 1.1 keys, no sidecar needed
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(out) as ds:
        assert ds.crs == CRS.from_epsg(4979) and is_3d(ds.crs)


@pytest.mark.parametrize("how", ["process", "to_raster"])
def test_projected_3d_crs_published_in_a_sidecar(how: str, tmp_path: Path) -> None:
    src = tmio.projected_3d(tmp_path)
    out = out_dir(tmp_path) / "p3d.tif"
    if how == "process":
        rdask.process(src, out, "reverse-bands")
    else:
        rdask.to_raster(rdask.apply(rdask.open_raster(src), "focal-mean"), out)
    assert sorted(os.listdir(out.parent)) == ["p3d.tif", "p3d.tif.aux.xml"]  # no partial names
    got = snap(out)
    assert got["crs"] == snap(src)["crs"] and got["3d"]
    assert got["transform"] == snap(src)["transform"]
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(out) as ds:
        assert ds.crs is None  # only the sidecar holds it, as with gdal_translate


def test_pixel_is_point_kept(tmp_path: Path) -> None:
    src = tmio.CASES["pixel_is_point"][0](tmp_path)
    out = out_dir(tmp_path) / "point.tif"
    rdask.process(src, out, "slope")
    got, want = snap(out), oracle(src, tmp_path)
    assert got["tags"]["AREA_OR_POINT"] == "Point" == want["tags"]["AREA_OR_POINT"]
    assert got["transform"] == want["transform"] == snap(src)["transform"]
    assert got["crs"] == want["crs"]


# -- 3. masks and nodata ----------------------------------------------------------

@pytest.mark.parametrize("how", ["process", "to_raster", "cog"])
def test_nodata_values_input_processes_and_keeps_them(how: str, tmp_path: Path) -> None:
    src = tmio._derived(tmp_path, "ndv.tif", "-a_nodata", "none", "-mo", "NODATA_VALUES=0 0 0")
    out = out_dir(tmp_path) / "ndv.tif"
    if how == "process":
        rdask.process(src, out, "reverse-bands")
    elif how == "cog":
        rdask.process(src, out, "focal-mean", driver="COG")
    else:
        rdask.to_raster(rdask.apply(rdask.open_raster(src), "reverse-bands"), out)
    got = snap(out)
    assert got["tags"]["NODATA_VALUES"] == "0 0 0"
    assert got["mask_flags"] == [["nodata", "per_dataset"]] * 3
    assert os.listdir(out.parent) == ["ndv.tif"]
    if how != "cog":
        assert np.array_equal(pixels(out), pixels(src)[::-1])
        with rasterio.open(out) as a, rasterio.open(src) as b:
            assert np.array_equal(a.dataset_mask(), b.dataset_mask())


def _binary_msk(tmp: Path, nodata_values: str | None = None) -> Path:
    """RGB.byte.tif without nodata, with an external 0/255 ``.msk`` (and
    ``NODATA_VALUES`` if given)."""
    src = tmio._derived(tmp, "msk.tif", "-a_nodata", "none")
    yy, xx = np.mgrid[0:718, 0:791]
    mask = np.where((yy - 300) ** 2 + (xx - 400) ** 2 < 250 ** 2, 255, 0).astype("uint8")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(src, "r+") as ds:
        ds.write_mask(mask)
    if nodata_values:
        with rasterio.open(src, "r+") as ds:
            ds.update_tags(NODATA_VALUES=nodata_values)
    assert (tmp / "msk.tif.msk").exists()
    return src


@pytest.mark.parametrize("how", ["process", "to_raster", "cog"])
def test_nodata_values_with_a_mask_band(how: str, tmp_path: Path) -> None:
    # Was "Write operation not permitted": NODATA_VALUES set on the new file
    # made GDAL hand out its read-only nodata mask instead of a mask band.
    src = _binary_msk(tmp_path, "1 2 3")
    out = out_dir(tmp_path) / "nm.tif"
    if how == "process":
        rdask.process(src, out, "reverse-bands")
    elif how == "cog":
        rdask.process(src, out, "reverse-bands", driver="COG")
    else:
        rdask.to_raster(rdask.apply(rdask.open_raster(src), "focal-mean"), out)
    got, want = snap(out), oracle(src, tmp_path)
    assert got["tags"]["NODATA_VALUES"] == ("1 2 3" if how == "to_raster" else "3 2 1")
    assert got["mask_flags"] == want["mask_flags"] == [["per_dataset"]] * 3
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert np.array_equal(b.dataset_mask(), a.dataset_mask())
        if how != "to_raster":
            assert np.array_equal(b.read(), a.read()[::-1])
    assert not [p for p in os.listdir(out.parent) if "rdask" in p]


@pytest.mark.parametrize("kernel", ["reverse-bands", "focal-mean"])
def test_external_msk_mask_is_carried(kernel: str, tmp_path: Path) -> None:
    src = _binary_msk(tmp_path)
    out = out_dir(tmp_path) / "m.tif"
    rdask.process(src, out, kernel)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        want = a.dataset_mask()
        assert 0.2 < (want == 0).mean() < 0.8
        assert np.array_equal(b.dataset_mask(), want)
        assert [f.name for f in b.mask_flag_enums[0]] == ["per_dataset"]
    with rasterio.open(tmio.oracle(src, tmp_path / "oracle.tif", {})) as o:
        assert np.array_equal(o.dataset_mask(), want)


@pytest.mark.parametrize("name,kernel", [("RGB.byte.tif", "reverse-bands"),
                                         ("odd/float_raster_with_extra_nodata.tif", "reverse-bands"),
                                         ("RGB.byte.tif", "slope")])
def test_nodata_kept(name: str, kernel: str, tmp_path: Path) -> None:
    src = tmio.DATA / name
    out = out_dir(tmp_path) / "nd.tif"
    rdask.process(src, out, kernel)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        want = -9999.0 if kernel == "slope" else a.nodata
        assert b.nodata == want and b.nodata is not None
        if kernel == "reverse-bands":
            assert np.array_equal(b.read(), a.read()[::-1])
            assert np.array_equal(b.dataset_mask(), a.dataset_mask())


# -- 4. data types ----------------------------------------------------------------

def _typed(tmp: Path, dtype: str) -> Path:
    rng = np.random.default_rng(7)
    shape = (3, 70, 90)
    if dtype == "complex_int16":
        data = (rng.integers(-30000, 30000, shape) + 1j * rng.integers(-30000, 30000, shape)).astype("complex64")
    elif dtype.startswith("complex"):
        data = (rng.normal(size=shape) * 1e30 + 1j * rng.normal(size=shape) * 1e-30).astype(dtype)
        data[0, 0, :4] = [np.nan, np.inf, -0.0, complex(np.nan, 1)]
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        data[0, 0, :2] = info.min, info.max
    path = tmp / f"{dtype}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=90, height=70, count=3, dtype=dtype,
                       crs="EPSG:32618", transform=Affine(30, 0, 5e5, 0, -30, 4e6),
                       tiled=True, blockxsize=32, blockysize=32) as ds:
        ds.write(data)
    return path


#: What rasterio reads each stored type as (and so what rdask writes).
READ_AS = {"complex_int16": "complex64"}


@pytest.mark.parametrize("dtype", ["complex_int16", "complex64", "complex128", "int8", "int64", "uint64"])
def test_reverse_bands_on_every_dtype_is_bit_exact(dtype: str, tmp_path: Path) -> None:
    src = _typed(tmp_path, dtype)
    out = out_dir(tmp_path) / "rev.tif"
    rdask.process(src, out, "reverse-bands", chunk_mb=0.01)
    want = pixels(src)[::-1]
    with rasterio.open(out) as ds:
        got = ds.read()
        assert ds.dtypes[0] == READ_AS.get(dtype, dtype)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("kernel", ["slope", "focal-mean"])
def test_complex_refused_before_any_work_api(kernel: str, tmp_path: Path, monkeypatch) -> None:
    src = _typed(tmp_path, "complex64")
    from rdask.io.files import FileSource

    def no_read(*args, **kwargs):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(FileSource, "read", no_read)
    out = out_dir(tmp_path) / "c.tif"
    with pytest.raises(rdask.KernelError) as err:
        rdask.process(src, out, kernel)
    line = one_line(str(err.value))
    assert "complex64" in line and kernel in line
    assert os.listdir(out.parent) == []
    with pytest.raises(rdask.KernelError) as err:
        rdask.apply(rdask.open_raster(src), kernel)
    assert "complex64" in one_line(str(err.value))


def test_complex_refused_cli_one_line_nothing_left(tmp_path: Path) -> None:
    src = _typed(tmp_path, "complex128")
    out = out_dir(tmp_path) / "c.tif"
    r = run_cli("run", "focal-mean radius=2 | slope", src, out)
    assert r.returncode != 0
    line = one_line(r.stderr)
    assert "complex128" in line and "focal-mean" in line
    assert os.listdir(out.parent) == []


# -- 5. the API ------------------------------------------------------------------

@numba.njit(nogil=True)
def _affine_f(block):
    out = np.empty(block.shape, np.float32)
    for b in range(block.shape[0]):
        for i in range(block.shape[1]):
            for j in range(block.shape[2]):
                out[b, i, j] = 0.5 * block[b, i, j] - b
    return out


def test_apply_plain_numba_function(tmp_path: Path) -> None:
    src = tmio.DATA / "RGB.byte.tif"
    da = rdask.open_raster(src, chunks=(60, 791), tile=None)
    assert len(da.chunks[1]) == 12
    out = rdask.apply(da, _affine_f)
    whole = _affine_f(pixels(src))
    assert out.dtype == np.float32 and out.shape == whole.shape
    assert np.array_equal(out.values, whole)
    path = out_dir(tmp_path) / "f.tif"
    rdask.to_raster(out, path)
    assert np.array_equal(pixels(path), whole)
    with rasterio.open(path) as ds, rasterio.open(src) as s:
        assert ds.crs == s.crs and ds.transform == s.transform


def test_plain_python_function_refused_in_one_line() -> None:
    da = rdask.open_raster(tmio.DATA / "RGB.byte.tif")

    def f(block):
        return block

    with pytest.raises(rdask.KernelError) as err:
        rdask.apply(da, f)
    assert "allow_gil=True" in one_line(str(err.value))


def test_plan_and_meta_accessors_match_rdask_info() -> None:
    src = tmio.DATA / "RGB.byte.tif"
    da = rdask.open_raster(src)
    plan = da.rdask.plan
    assert isinstance(plan, rdask.ChunkPlan)
    assert plan.chunks[1:] == da.data.chunks[1:]
    r = run_cli("info", src)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"^chunk plan +{re.escape(plan.describe())}$", r.stdout, re.M), r.stdout
    meta = da.rdask.meta
    assert isinstance(meta, rdask.RasterMeta)
    with rasterio.open(src) as ds:
        assert (meta.crs, meta.transform, meta.nodata, meta.count) == (ds.crs, ds.transform, ds.nodata, 3)
    slope = rdask.apply(da, "slope").rdask.meta
    assert slope.nodata == -9999.0 and slope.bands == (rdask.BandMeta(),) * 3
    assert (slope.crs, slope.transform) == (meta.crs, meta.transform)


def test_not_georeferenced_input_is_quiet_in_api_output(tmp_path: Path) -> None:
    # (the CLI side is tests/test_hostile.py's) the output invents nothing
    src = tmp_path / "plain.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(src, "w", driver="GTiff", width=40, height=30, count=2, dtype="uint16") as ds:
            ds.write(np.arange(2400, dtype="uint16").reshape(2, 30, 40))
    out = out_dir(tmp_path) / "p.tif"
    rdask.process(src, out, "reverse-bands")
    got = snap(out)
    assert (got["crs"], got["gcps"], got["tags"]) == (None, [], {})
    assert np.array_equal(pixels(out), pixels(src)[::-1])
