"""COG output: valid, full resolution equal to the GeoTIFF path, overviews
equal to what GDAL builds from the same full-resolution image."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasters import synthetic, write
from rio_cogeo.cogeo import cog_validate

import rdask
from rdask.outputs.tiff.coglayout import overview_factors

DATA = os.path.join(os.path.dirname(__file__), "data")


def gdal_overviews(gtiff: str, tmp, factors, resampling: str, blocksize: int) -> list[np.ndarray]:
    """Independent reference: GDAL's own overview builder on a copy of the GeoTIFF."""
    ref = str(tmp / "gdal-ovr.tif")
    shutil.copy(gtiff, ref)
    with rasterio.Env(GDAL_TIFF_OVR_BLOCKSIZE=str(blocksize)), rasterio.open(ref, "r+") as ds:
        ds.build_overviews(factors, getattr(Resampling, resampling))
    return read_levels(ref, len(factors))


def read_levels(path: str, n: int) -> list[np.ndarray]:
    out = []
    for level in range(n):
        with rasterio.open(path, OVERVIEW_LEVEL=level) as ds:
            out.append(ds.read())
    return out


def read_masks(path: str, n: int) -> list[np.ndarray]:
    out = []
    for level in range(-1, n):
        kw = {} if level < 0 else {"OVERVIEW_LEVEL": level}
        with rasterio.open(path, **kw) as ds:
            out.append(ds.dataset_mask())
    return out


CASES = [
    # shape, dtype, nodata, blocksize, resampling
    ((1, 1000, 700), "uint8", None, 128, "nearest"),
    ((3, 1001, 999), "uint16", 0, 64, "nearest"),
    ((1, 1537, 67), "float32", float("nan"), 64, "nearest"),
    ((3, 517, 389), "uint8", 0, 64, "average"),
    ((2, 333, 1001), "int16", -9999, 64, "nearest"),
    ((4, 529, 257), "uint16", None, 64, "mode"),
    ((7, 200, 150), "float32", float("nan"), 64, "bilinear"),
    ((5, 97, 301), "float64", -1.0, 64, "cubic"),
]


@pytest.mark.parametrize("shape,dtype,nodata,blocksize,resampling", CASES)
def test_cog_valid_and_equal_to_gtiff_and_gdal(tmp_path, shape, dtype, nodata, blocksize, resampling):
    data = synthetic(shape, dtype, nan_frac=0.02 if dtype.startswith("float") else 0, nodata=nodata)
    src = write(tmp_path / "in.tif", data, block=(64, 64), nodata=nodata)
    gtiff, cog = str(tmp_path / "out.tif"), str(tmp_path / "out.cog.tif")
    kw = dict(chunk_mb=0.05, blocksize=blocksize, workers=2)
    rdask.process(src, gtiff, "reverse-bands", **kw)
    rdask.process(src, cog, "reverse-bands", driver="COG", overview_resampling=resampling, **kw)
    valid, errors, warnings = cog_validate(cog, quiet=True)
    assert valid, errors
    with rasterio.open(cog) as c, rasterio.open(gtiff) as g:
        assert np.array_equal(c.read(), g.read(), equal_nan=True)
        assert c.transform.to_gdal() == g.transform.to_gdal() and c.crs == g.crs
        assert (c.nodata is None and g.nodata is None) or np.array_equal(c.nodata, g.nodata, equal_nan=True)
        assert c.block_shapes[0] == (blocksize, blocksize)
        factors = overview_factors(c.height, c.width, blocksize)
        assert len(c.overviews(1)) == len(factors) >= 1
        # Sizes as GDAL's GeoTIFF overview builder makes them: ceil(n / factor);
        # down to one tile.
        for level, f in enumerate(factors):
            with rasterio.open(cog, OVERVIEW_LEVEL=level) as ovr:
                assert (ovr.height, ovr.width) == (-(-c.height // f), -(-c.width // f))
                last = ovr
        assert last.width <= blocksize and last.height <= blocksize
    ours = read_levels(cog, len(factors))
    ref = gdal_overviews(gtiff, tmp_path, factors, resampling, blocksize)
    for level, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert a.shape == b.shape, level
        assert np.array_equal(a, b, equal_nan=True), f"overview {level} differs from GDAL's"


def test_cog_keeps_mask_and_tags(tmp_path):
    data = synthetic((3, 300, 280), "uint8")
    mask = np.full((300, 280), 255, np.uint8)
    mask[40:120, 10:200] = 0
    src = write(tmp_path / "in.tif", data, mask=mask, tags={"MISSION": "test"}, block=(32, 32))
    cog = str(tmp_path / "o.tif")
    rdask.process(src, cog, "reverse-bands", driver="COG", blocksize=64, chunk_mb=0.05)
    assert cog_validate(cog, quiet=True)[0]
    with rasterio.open(cog) as ds:
        assert np.array_equal(ds.dataset_mask(), mask)
        assert ds.tags()["MISSION"] == "test"
        n = len(ds.overviews(1))
    masks = read_masks(cog, n)
    assert all(m.dtype == np.uint8 for m in masks) and len(masks) == n + 1
    assert (masks[-1] == 0).any() and (masks[-1] == 255).any()


def test_overview_levels_option_and_cli(tmp_path):
    src = os.path.join(DATA, "RGB.byte.tif")
    out = tmp_path / "o.tif"
    rdask_bin = os.path.join(os.path.dirname(sys.executable), "rdask")
    proc = subprocess.run([rdask_bin, "run", "reverse-bands", src, str(out), "--driver", "COG",
                           "--overview-levels", "1", "--overview-resampling", "average",
                           "--blocksize", "128", "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert cog_validate(str(out), quiet=True)[0]
    with rasterio.open(out) as ds:
        assert ds.overviews(1) == [2] and ds.block_shapes[0] == (128, 128)
        with rasterio.open(src) as s:
            assert np.array_equal(ds.read(), s.read()[::-1])


def test_cog_failure_leaves_nothing(tmp_path):
    src = os.path.join(DATA, "RGB.byte.tif")
    out = tmp_path / "o.tif"
    with pytest.raises(ValueError, match="resampling"):
        rdask.process(src, out, "reverse-bands", driver="COG", overview_resampling="lanczos9")
    with pytest.raises(ValueError, match="power of 2"):
        rdask.process(src, out, "reverse-bands", driver="COG", blocksize=48)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("shape", [(3, 1001, 999), (1, 770, 1283)])
def test_level1_made_in_the_main_pass_equals_level1_read_back(tmp_path, monkeypatch, shape):
    """The main pass's level-1 picks (odd sizes, picks across chunk seams) give
    the same COG, byte for byte, as picking level 1 from the finished file,
    on threads and on a local cluster; the scratch file is gone afterwards."""
    from rdask.outputs.tiff.cog import CogOutput
    from rdask.outputs.tiff.overviews import LevelTap

    data = synthetic(shape, "uint16", nodata=0, seed=5)
    src = write(tmp_path / "in.tif", data, block=(64, 64), nodata=0)
    kw = dict(chunk_mb=0.1, blocksize=64, driver="COG")
    calls = []
    real_call = LevelTap.__call__

    def counting(self, block, region):
        calls.append(region)
        return real_call(self, block, region)

    monkeypatch.setattr(LevelTap, "__call__", counting)
    tapped = str(tmp_path / "tapped.tif")
    rdask.process(src, tapped, "reverse-bands", workers=2, **kw)
    assert len(calls) > 4  # every chunk went through the tap
    with monkeypatch.context() as m:
        m.setattr(CogOutput, "_tap", lambda self: None)
        read_back = str(tmp_path / "read-back.tif")
        rdask.process(src, read_back, "reverse-bands", workers=2, **kw)
    cluster = str(tmp_path / "cluster.tif")
    rdask.process(src, cluster, "reverse-bands", scheduler="local:2", **kw)
    with open(tapped, "rb") as a, open(read_back, "rb") as b, open(cluster, "rb") as c:
        first = a.read()
        assert first == b.read()
        assert first == c.read()
    assert cog_validate(tapped, quiet=True)[0]
    assert sorted(os.listdir(tmp_path)) == ["cluster.tif", "in.tif", "read-back.tif", "tapped.tif"]


def test_cog_resume_completes_with_the_same_bytes(tmp_path):
    """A COG job that fails part-way resumes (level 1 then read back from the
    finished file) to the same bytes as an uninterrupted job (level 1 made in
    the kernel pass), leaving no scratch or level files behind."""
    data = synthetic((3, 1001, 999), "uint16", nodata=0, seed=7)
    src = write(tmp_path / "in.tif", data, block=(64, 64), nodata=0)
    flag = tmp_path / "fail-now"
    kfile = tmp_path / "flaky.py"
    kfile.write_text(
        "import os\nimport rdask\ncalls = [0]\n\n"
        "def _flaky(block):\n"
        f"    if os.path.exists({str(flag)!r}):\n"
        "        calls[0] += 1\n"
        "        if calls[0] > 6:\n"
        "            raise ValueError('injected failure')\n"
        "    return block[::-1].copy()\n\n"
        "flaky = rdask.kernel(_flaky, name='flaky', allow_gil=True)\n"
    )
    outdir = tmp_path / "out"
    outdir.mkdir()
    kw = dict(chunk_mb=0.1, blocksize=64, driver="COG", workers=2)
    clean = str(outdir / "clean.tif")
    with pytest.warns(RuntimeWarning, match="holds the GIL"):
        rdask.process(src, clean, f"{kfile}:flaky", **kw)
    flag.touch()
    resumed = outdir / "resumed.tif"
    with pytest.raises(rdask.KernelError, match="injected failure"):
        rdask.process(src, resumed, f"{kfile}:flaky", resume=True, **kw)
    assert not resumed.exists()
    left = sorted(os.listdir(outdir))
    assert left == [f".{resumed.name}.rdask-journal", f".{resumed.name}.rdask-partial", "clean.tif"]
    flag.unlink()
    written: list[int] = []
    result = rdask.process(src, resumed, f"{kfile}:flaky", resume=True,
                           progress=lambda done, _total: written.append(done), **kw)
    assert 0 < len(written) < result.chunks  # only the missing chunks ran
    assert 0 < result.resumed < result.pixels and "resumed" in result.summary()
    assert resumed.read_bytes() == open(clean, "rb").read()
    assert cog_validate(str(resumed), quiet=True)[0]
    assert sorted(os.listdir(outdir)) == ["clean.tif", "resumed.tif"]


def test_level1_scratch_is_per_attempt_and_stale_ones_are_removed(tmp_path):
    """Each attempt's level-1 scratch has its own name (a chunk thread left
    over from an interrupted attempt cannot write into the next one's), and a
    scratch file a killed attempt left beside the target is removed."""
    from rdask.outputs.tiff.overviews import LevelPieces

    assert LevelPieces.path_for("/x/p") != LevelPieces.path_for("/x/p")
    data = synthetic((1, 300, 280), "uint16", nodata=0, seed=9)
    src = write(tmp_path / "in.tif", data, block=(64, 64), nodata=0)
    outdir = tmp_path / "out"
    outdir.mkdir()
    stale = outdir / ".o.tif.rdask-partial.ovr1.0123456789ab.raw"
    stale.write_bytes(b"left by a killed job")
    rdask.process(src, str(outdir / "o.tif"), "reverse-bands", chunk_mb=0.05, blocksize=64,
                  driver="COG", workers=2)
    assert sorted(os.listdir(outdir)) == ["o.tif"]
