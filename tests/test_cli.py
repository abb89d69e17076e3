"""The CLI as users run it: a real process, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import imagecodecs
import numpy as np
import pytest
import rasterio
from cli import RDASK
from rasters import read, synthetic, write
from scipy import ndimage
from tiffbytes import stored_tiles

DATA = os.path.join(os.path.dirname(__file__), "data")

BAD_KERNELS = '''
import numba
import numpy as np
import rdask


@rdask.kernel()
@numba.njit(nogil=True)
def explode(block, at=0):
    if block.shape[2] > 0 and block[0, 0, 0] >= 0:
        raise ValueError("boom")
    return block


@rdask.kernel()
@numba.njit(nogil=True)
def wrong_shape(block):
    return block[:, :-1, :]


@rdask.kernel()
@numba.njit(nogil=True)
def wrong_dtype(block):
    return block.astype(np.float64)


@numba.njit
def holds_gil(block):
    return block
'''


def rdask_cli(*args, cwd=None):
    return subprocess.run([RDASK, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    return write(tmp / "in.tif", synthetic((3, 300, 200), "uint8"), block=(64, 64))


@pytest.fixture(scope="module")
def kernels_py(tmp_path_factory):
    path = tmp_path_factory.mktemp("k") / "bad_kernels.py"
    path.write_text(BAD_KERNELS)
    return str(path)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rdask: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def no_leftovers(directory, keep=()):
    names = [n for n in os.listdir(directory) if n not in keep]
    assert not [n for n in names if "rdask-" in n], names


def test_run_writes_and_summarises(tmp_path, src):
    out = tmp_path / "out.tif"
    proc = rdask_cli("run", "reverse-bands", src, out, "-j", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(read(out), read(src)[::-1])
    assert proc.stderr.startswith(f"wrote {out}") and "Mpx/s" in proc.stderr


def focal_mean_reference(data: np.ndarray, radius: int) -> np.ndarray:
    """scipy's mean over each clipped (2r+1)^2 window, per band, as float32."""
    ones = np.ones((1, 2 * radius + 1, 2 * radius + 1))
    values = data.astype(np.float64)
    total = ndimage.correlate(values, ones, mode="constant")
    count = ndimage.correlate(np.ones_like(values), ones, mode="constant")
    return (total / count).astype(np.float32)


def test_kernel_args_and_write_options_take_effect(tmp_path, src):
    out = tmp_path / "out.tif"
    proc = rdask_cli("run", "focal-mean", src, out, "--kernel-arg", "radius=2", "--co", "PREDICTOR=1",
                     "--compress", "zstd", "--level", "5", "--blocksize", "64", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    # radius=2, not focal-mean's default radius 1: scipy's 5 x 5 mean, exactly.
    got = read(out)
    assert got.dtype == np.float32
    assert np.array_equal(got, focal_mean_reference(read(src), 2))
    assert not np.array_equal(got, focal_mean_reference(read(src), 1))
    # No predictor (a float output's default is 3), zstd at level 5, 64 px tiles:
    # each stored tile is zstd's level-5 frame of its raw pixels.
    page, tiles = stored_tiles(out)
    assert page.predictor == 1 and page.compression.name == "ZSTD"
    assert (page.tilewidth, page.tilelength) == (64, 64)
    for t in tiles:
        raw = imagecodecs.zstd_decode(t)
        assert imagecodecs.zstd_encode(raw, level=5) == t
    assert any(imagecodecs.zstd_encode(imagecodecs.zstd_decode(t), level=1) != t for t in tiles)


@pytest.mark.parametrize("kernel,co,predictor", [
    ("focal-mean", [], 3), ("focal-mean", ["--co", "PREDICTOR=1"], 1),
    ("focal-mean", ["--co", "PREDICTOR=2"], 2), ("reverse-bands", [], 2),
    ("reverse-bands", ["--co", "predictor=1"], 1),
])
def test_predictor_follows_the_creation_option(tmp_path, src, kernel, co, predictor):
    out = tmp_path / "out.tif"
    proc = rdask_cli("run", kernel, src, out, *co, "-q")
    assert proc.returncode == 0, proc.stderr
    assert stored_tiles(out)[0].predictor == predictor
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR", "1") == str(predictor)


@pytest.mark.parametrize("args,needles", [
    (["-j", "0"], ["--workers", "0"]),
    (["-j", "-1"], ["--workers", "-1"]),
    (["--scheduler", "local:0"], ["local:0"]),
    (["--level", "99"], ["level=99", "deflate"]),
    (["--compress", "zstd", "--level", "0"], ["level=0", "zstd"]),
    (["--level", "x"], ["--level", "'x'"]),
    (["--compress", "zst"], ["--compress", "'zst'"]),
    (["--driver", "tif"], ["--driver", "'tif'"]),
    (["--co", "ZLEVEL=abc"], ["ZLEVEL='abc'"]),
    (["--co", "ZSTD_LEVEL=3"], ["ZSTD_LEVEL=3", "'deflate'"]),
    (["--co", "ZLEVEL=3", "--level", "4"], ["level=4", "ZLEVEL=3"]),
    (["--co", "BIGTIFF=maybe"], ["BIGTIFF", "'maybe'"]),
    (["--co", "NOSUCH=1"], ["NOSUCH"]),
    (["--driver", "COG", "--co", "NOSUCH=1"], ["NOSUCH"]),
    (["--co", "PREDICTOR"], ["--co", "'PREDICTOR' is not NAME=VALUE"]),
    (["--blocksize", "100"], ["blocksize", "100"]),
])
def test_bad_write_options_are_one_line_and_write_nothing(tmp_path, src, args, needles):
    out = tmp_path / "out.tif"
    assert_one_line_error(rdask_cli("run", "reverse-bands", src, out, *args), *needles)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "text", "truncated"])
def test_bad_inputs(tmp_path, case):
    bad = tmp_path / f"bad-{case}.tif"
    if case == "directory":
        bad.mkdir()
    elif case == "empty":
        bad.write_bytes(b"")
    elif case == "text":
        bad.write_text("this is not a raster\n")
    elif case == "truncated":
        bad.write_bytes(open(os.path.join(DATA, "RGB.byte.tif"), "rb").read()[:600])
    out = tmp_path / "out.tif"
    proc = rdask_cli("run", "reverse-bands", bad, out)
    assert_one_line_error(proc, str(bad))
    expected = {"missing": "no such file", "directory": "is a directory", "empty": "empty file",
                "text": "not a raster", "truncated": "cannot open"}[case]
    assert expected in proc.stderr
    assert not out.exists()
    no_leftovers(tmp_path)


def test_corrupt_tile_data_names_file_and_window(tmp_path):
    import hostile

    (tmp_path / "src").mkdir()
    src = hostile.corrupt_tile_data(tmp_path / "src" / "corrupt.tif")
    out = tmp_path / "out.tif"
    proc = rdask_cli("run", "reverse-bands", src, out)
    assert_one_line_error(proc, "corrupt.tif", "rows ", "cols ")
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_truncated_file_is_refused_at_open(tmp_path):
    """tests/data/corrupt.tif is truncated (a tile runs past the end of the
    file): refused before any work, naming the file."""
    out = tmp_path / "out.tif"
    proc = rdask_cli("run", "reverse-bands", os.path.join(DATA, "corrupt.tif"), out)
    assert_one_line_error(proc, "corrupt.tif", "refusing")
    assert not out.exists()
    no_leftovers(tmp_path)


def test_existing_output_is_left_untouched(tmp_path, src):
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    proc = rdask_cli("run", "reverse-bands", src, out)
    assert_one_line_error(proc, "output exists", str(out), "--overwrite")
    assert out.read_bytes() == b"precious"
    proc = rdask_cli("run", "reverse-bands", src, out, "--overwrite", "-q")
    assert proc.returncode == 0 and np.array_equal(read(out), read(src)[::-1])


def test_missing_output_directory(tmp_path, src):
    out = tmp_path / "nope" / "out.tif"
    assert_one_line_error(rdask_cli("run", "reverse-bands", src, out), "does not exist",
                          str(tmp_path / "nope"))


def test_unwritable_output(tmp_path, src):
    if os.geteuid() == 0:
        # Root ignores permission bits; /proc refuses new files for everyone.
        out = "/proc/rdask-test-out.tif"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out = str(ro / "out.tif")
    proc = rdask_cli("run", "reverse-bands", src, out)
    assert_one_line_error(proc, os.path.dirname(out))
    assert not os.path.exists(out)


@pytest.mark.parametrize("kernel,needle", [
    ("no-such-kernel", "unknown kernel 'no-such-kernel'"),
    ("reverse-bands --kernel-arg nope=1", "has no argument 'nope'"),
    ("focal-mean --kernel-arg radius=abc", "radius='abc' is not a valid int"),
    ("missing_file.py:k", "missing_file.py"),
])
def test_bad_kernels(tmp_path, src, kernel, needle):
    name, *extra = kernel.split()
    out = tmp_path / "out.tif"
    assert_one_line_error(rdask_cli("run", name, src, out, *extra), needle)
    assert not out.exists()


@pytest.mark.parametrize("func,needles", [
    ("explode", ["'explode'", "boom", "window rows 0:"]),
    ("wrong_shape", ["'wrong-shape'", "shape", "expected (3, "]),
    ("wrong_dtype", ["'wrong-dtype'", "dtype float64", "expected uint8"]),
    ("holds_gil", ["'holds-gil'", "nogil"]),
])
def test_user_kernels_that_misbehave(tmp_path, src, kernels_py, func, needles):
    out = tmp_path / "out.tif"
    proc = rdask_cli("run", f"{kernels_py}:{func}", src, out)
    assert_one_line_error(proc, *needles)
    assert not out.exists()
    no_leftovers(tmp_path)


def test_debug_shows_traceback(tmp_path):
    proc = rdask_cli("--debug", "run", "reverse-bands", tmp_path / "missing.tif", tmp_path / "o.tif")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_info_and_kernels():
    proc = rdask_cli("info", os.path.join(DATA, "RGB.byte.tif"))
    assert proc.returncode == 0, proc.stderr
    assert "791 x 718 px, 3 bands" in proc.stdout
    assert "block shape" in proc.stdout and "3 x 791" in proc.stdout
    assert "chunk plan" in proc.stdout
    proc = rdask_cli("kernels")
    assert proc.returncode == 0
    for name in ("reverse-bands", "focal-mean", "slope", "hillshade", "normalized-difference", "ndvi"):
        assert name in proc.stdout
    assert "radius=1" in proc.stdout


def test_stack_inputs_on_the_command_line(tmp_path):
    a = write(tmp_path / "B04.tif", synthetic((1, 60, 50), "uint16", seed=1), block=(16, 16))
    b = write(tmp_path / "B08.tif", synthetic((1, 60, 50), "uint16", seed=2), block=(32, 32))
    out = tmp_path / "ndvi.tif"
    proc = rdask_cli("run", "ndvi", a, b, out, "--kernel-arg", "red=1", "--kernel-arg", "nir=2", "-q")
    assert proc.returncode == 0, proc.stderr
    red, nir = read(a)[0].astype(np.float64), read(b)[0].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = ((nir - red) / (nir + red)).astype(np.float32)
    assert np.array_equal(read(out)[0], expected, equal_nan=True)


def test_demo_runs(tmp_path):
    proc = rdask_cli("demo", "--iterations", "10", "-j", "2")
    assert proc.returncode == 0, proc.stderr
    assert "-j 1:" in proc.stdout and "-j 2:" in proc.stdout and "speedup" in proc.stdout


#: What `--help` must not import: GDAL, numpy, dask, numba (~0.4 s of start-up).
HEAVY = ("numpy", "rasterio", "dask", "distributed", "numba", "zarr", "xarray", "imagecodecs")


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["info", "--help"]])
def test_help_imports_no_heavy_module(argv):
    code = ("import sys\nfrom rdask.cli.main import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_help_says_what_rdask_writes_and_plugin_is_registered():
    proc = rdask_cli("--help")
    assert proc.returncode == 0
    summary = " ".join(proc.stdout.split())
    for what in ("GeoTIFF", "COG", "Zarr", "mosaic", "S3"):
        assert what in summary, what
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "rio"), "rdask", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "run" in proc.stdout and "Zarr" in proc.stdout


def test_progress_bar_on_a_terminal_and_summary(tmp_path, src):
    """On a terminal: a bar with percent, throughput and ETA, then the summary."""
    import pty

    out = tmp_path / "o.tif"
    pid, fd = pty.fork()
    if pid == 0:  # child: stderr is the pty, so rdask sees a terminal
        os.execv(RDASK, [RDASK, "run", "reverse-bands", src, str(out), "--chunk-mb", "0.01",
                         "--kernel-arg", "iterations=200"])
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    assert os.WEXITSTATUS(status) == 0, text
    assert "100.0%" in text and "Mpx/s" in text and "ETA" in text and "[#" in text
    assert f"wrote {out}" in text
    # Hidden with --no-progress even on a terminal is covered by the other tests'
    # captured stderr (not a terminal): only the summary line appears there.
