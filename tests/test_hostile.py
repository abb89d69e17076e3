"""Hostile inputs end fast, with one line and nothing left beside the output;
Python warnings never reach the terminal as multi-line warnings.

Every run is a real process under a hard time bound: a run still going
after :data:`BOUND` seconds is killed and the test fails.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import hostile
import numpy as np
import pytest
import rasterio
import tifffile

import rdask
from rdask.errors import RasterOpenError
from rdask.io import guard

ROOT = str(Path(__file__).resolve().parent.parent)
RDASK = os.path.join(os.path.dirname(sys.executable), "rdask")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}

#: Seconds a run on a hostile file may take (they take ~1 s; generous for a loaded machine).
BOUND = 60.0

#: What :func:`guard.check_file` says about each case it refuses before GDAL opens it.
REFUSED = {
    "huge_dims": "strip 0 should hold 2.2 TB of uncompressed data from byte 8, but the file ends",
    "many_bands": "declares 65535 bands",
    "strip_past_eof": "runs past the end of the 212-byte file",
    "huge_strip": "strip 0 should hold 4.3 GB of uncompressed data from byte 8",
    "tile_count_mismatch": "in 16 tiles, but lists 3 tile offsets",
    "truncated": "runs past the end of the",
    "lzw_bomb": "LZW expands at most",
    "no_byte_counts": "strip 0 should hold 2.2 TB of uncompressed data from byte 8",
    "zero_byte_count": "strip 0 should hold 2.2 TB of uncompressed data from byte 8",
    "signed_tables": "strip 0 should hold 2.2 TB of uncompressed data from byte 8",
    "text_tables": "its strip offsets are not integers (TIFF field type 2)",
    "tiles_under_strip_tags": "in 16 tiles, but lists 3 tile offsets and 3 byte counts",
    "ycbcr_lzw_bomb": "strip 0 should decode to 2.4 GB but holds",
}

PROCESS = """
import sys
import rdask
try:
    rdask.process(sys.argv[1], sys.argv[2], "reverse-bands")
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(1)
"""


def run_bounded(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=BOUND, env=ENV)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {BOUND:.0f} s (killed): {' '.join(args)}")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """An input directory and an (empty) output directory."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    return tmp_path / "in", tmp_path / "out"


def nothing_left(out_dir: Path) -> None:
    # No output, no partial file, no journal: the directory is as it was.
    assert sorted(os.listdir(out_dir)) == []


# -- the structure check alone -------------------------------------------


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_check_file_refuses_before_gdal(tmp_path: Path, case: str) -> None:
    path = hostile.CASES[case](tmp_path / f"{case}.tif")
    with pytest.raises(RasterOpenError) as err:
        guard.check_file(path)
    text = str(err.value)
    assert text.startswith(f"refusing {path}: ") and "\n" not in text
    assert REFUSED[case] in text, text


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_before_gdal_opens_it(tmp_path: Path, case: str,
                                      caplog: pytest.LogCaptureFixture) -> None:
    # With CPL_DEBUG, GDAL logs each file it opens (through rasterio's
    # logger): it opens the valid file, and never sees the refused one.
    good = str(tmp_path / "good.tif")
    hostile._write_random(Path(good))
    bad = hostile.CASES[case](tmp_path / f"{case}.tif")
    caplog.set_level(logging.DEBUG, logger="rasterio")
    with rasterio.Env(CPL_DEBUG=True):
        rdask.open_raster(good)
        with pytest.raises(RasterOpenError, match="^refusing "):
            rdask.open_raster(bad)
    gdal = [r.getMessage() for r in caplog.records if r.name.startswith("rasterio")]
    assert any(f"GDALOpen({good}" in m for m in gdal), gdal
    assert not any(bad in m for m in gdal), [m for m in gdal if bad in m]


def legit_files(tmp_path: Path) -> list[str]:
    """Real files at the edges the check must let through."""
    paths = []
    zeros = np.zeros((2, 600, 700), dtype="uint16")
    layouts = {
        "deflate_zeros": dict(tiled=True, blockxsize=256, blockysize=256, compress="deflate"),
        "lzw_zeros_one_strip": dict(compress="lzw", blockysize=600),
        "packbits_strips": dict(compress="packbits", blockysize=7),
        "plain_strips": dict(blockysize=16),
        "planar_bigtiff": dict(tiled=True, blockxsize=128, blockysize=128, interleave="band",
                               compress="deflate", BIGTIFF="YES"),
        "sparse_tiles": dict(tiled=True, blockxsize=256, blockysize=256, compress="zstd",
                             SPARSE_OK="TRUE"),
    }
    for name, layout in layouts.items():
        path = str(tmp_path / f"{name}.tif")
        with rasterio.open(path, "w", driver="GTiff", width=700, height=600, count=2,
                           dtype="uint16", **layout) as dst:
            if name != "sparse_tiles":
                dst.write(zeros)
            else:
                dst.write(np.ones((2, 256, 256), "uint16"), window=((0, 256), (0, 256)))
        paths.append(path)
    big_endian = str(tmp_path / "big_endian.tif")
    tifffile.imwrite(big_endian, np.arange(300 * 200, dtype=">f4").reshape(300, 200),
                     byteorder=">", tile=(64, 64), compression="zlib")
    return [*paths, big_endian]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_real_files_pass(tmp_path: Path) -> None:
    for path in legit_files(tmp_path):
        guard.check_file(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.Env(**dict(guard.READ_OPTIONS)), rasterio.open(path) as ds:
                guard.check_declared(ds, path)
                ds.read()


# -- end to end: the CLI and rdask.process --------------------------------


@pytest.mark.parametrize("case", sorted(hostile.CASES))
def test_cli_ends_with_one_line_and_nothing_left(dirs: tuple[Path, Path], case: str) -> None:
    in_dir, out_dir = dirs
    bad = hostile.CASES[case](in_dir / f"{case}.tif")
    proc = run_bounded(RDASK, "run", "reverse-bands", bad, str(out_dir / "out.tif"), "--no-progress")
    assert proc.returncode != 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rdask: error: ") and f"{case}.tif" in lines[0], lines[0]
    # Refused up front, or (structurally sound files) failed at a named window.
    assert ("refusing " in lines[0]) == (case in REFUSED), lines[0]
    assert case in REFUSED or "at rows " in lines[0], lines[0]
    nothing_left(out_dir)


@pytest.mark.parametrize("case", sorted(hostile.CASES))
def test_process_raises_one_line_and_leaves_nothing(dirs: tuple[Path, Path], case: str) -> None:
    in_dir, out_dir = dirs
    bad = hostile.CASES[case](in_dir / f"{case}.tif")
    # -W ignore: the library leaves warnings to its caller; this is about the error.
    proc = run_bounded(sys.executable, "-W", "ignore", "-c", PROCESS, bad, str(out_dir / "out.tif"))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("RasterOpenError: "), proc.stderr
    assert f"{case}.tif" in lines[0], lines[0]
    nothing_left(out_dir)


# -- warnings --------------------------------------------------------------


@pytest.fixture(scope="module")
def not_georeferenced(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A raster with no CRS and no transform: rasterio warns on every open."""
    path = str(tmp_path_factory.mktemp("nogeo") / "nogeo.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", driver="GTiff", width=300, height=200, count=2,
                           dtype="uint8") as dst:
            dst.write(np.ones((2, 200, 300), dtype="uint8"))
    return path


def run_nogeo(src: str, out_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = run_bounded(RDASK, "run", "reverse-bands", src, str(out_dir / "out.tif"), "--no-progress",
                       *extra)
    assert proc.returncode == 0, proc.stderr
    assert "site-packages" not in proc.stderr and ".py:" not in proc.stderr, proc.stderr
    return proc


def test_no_warning_text_without_verbose(dirs: tuple[Path, Path], not_georeferenced: str) -> None:
    proc = run_nogeo(not_georeferenced, dirs[1])
    assert "Warning" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("wrote ") and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_verbose_shows_each_warning_as_one_log_line(dirs: tuple[Path, Path],
                                                    not_georeferenced: str) -> None:
    proc = run_nogeo(not_georeferenced, dirs[1], "-v")
    warned = [ln for ln in proc.stderr.splitlines() if "Warning" in ln]
    assert warned, proc.stderr
    assert all(ln.startswith("rdask: INFO: NotGeoreferencedWarning: ") for ln in warned), warned
    # The reader's warning, raised once per open in every thread, is one line.
    assert sum("Dataset has no geotransform" in ln for ln in warned) == 1, warned


def test_local_cluster_workers_print_no_warnings(dirs: tuple[Path, Path],
                                                 not_georeferenced: str) -> None:
    proc = run_nogeo(not_georeferenced, dirs[1], "--scheduler", "local:1")
    assert "Warning" not in proc.stderr, proc.stderr
