"""``calc`` against ``gdal_calc.py`` and numpy, and hostile expressions.

``gdal_calc.py`` (Debian's GDAL 3.6) runs the same expression (bands as A,
B) on the same files; its output and rdask's are compared pixel for pixel,
on 16-bit stacks with nodata across chunk seams, run with two threads in
1 MB chunks.  Smaller cases compare the kernel with numpy evaluating the
expression directly.  Hostile expressions must be refused in one line
before any work, with nothing written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine

import rdask
from rdask.errors import KernelError
from rdask.kernels import builtin_kernels, get_kernel

GDAL_CALC = shutil.which("gdal_calc.py")
RDASK = os.path.join(os.path.dirname(sys.executable), "rdask")
NODATA = -9999


def write(path, a, nodata, block=256):
    ny, nx = a.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=nx, height=ny, count=1, dtype=a.dtype, nodata=nodata,
        transform=Affine(10, 0, 300000, 0, -10, 5000000), crs="EPSG:32631", tiled=True,
        blockxsize=block, blockysize=block,
    ) as dst:
        dst.write(a, 1)
    return str(path)


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.nodata


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two int16 rasters of 700 x 600 (1 MB chunks: 512 x 512 after the stack),
    nodata in each, across the seams and on the edges."""
    tmp = tmp_path_factory.mktemp("calc")
    rng = np.random.default_rng(5)
    a = rng.integers(-2000, 12000, (700, 600)).astype(np.int16)
    b = rng.integers(0, 20000, (700, 600)).astype(np.int16)
    a[505:520, 100:140] = NODATA
    b[200:230, 508:516] = NODATA
    a[0, :10] = b[699, 590:] = NODATA
    b[300:310, 300:310] = -a[300:310, 300:310]  # a + b == 0: division by zero
    return write(tmp / "red.tif", a, NODATA), write(tmp / "nir.tif", b, NODATA)


def gdal_calc(tmp_path, expr, files, *opts):
    out = tmp_path / "gdal_calc.tif"
    # Only the bands the expression reads, so that gdal_calc.py masks their nodata only.
    letters = [x for i, (f, letter) in enumerate(zip(files, "AB", strict=False))
               if f"b{i + 1}" in expr for x in (f"-{letter}", f)]
    calc = expr.replace("b1", "A").replace("b2", "B")
    subprocess.run([GDAL_CALC, *letters, "--outfile", str(out), "--calc", calc, "--quiet",
                    *opts], check=True, capture_output=True)
    return read(out)


needs_gdal_calc = pytest.mark.skipif(GDAL_CALC is None, reason="needs gdal_calc.py on PATH")

# (expression, rdask arguments, gdal_calc.py options): results identical
CASES = [
    ("(b2 - b1) / (b2 + b1)", {"dtype": "float32"}, ["--type", "Float32"]),
    ("where(b1 > 1000, b1, b2)", {}, []),
    ("(b1 + b2) * 2", {"nodata": "0"}, ["--NoDataValue", "0"]),
    ("b1 // 7 + b2 % 5", {"dtype": "Int32"}, ["--type", "Int32"]),
    ("clip(b1, 0, 255)", {"dtype": "uint8"}, ["--type", "Byte"]),
    ("round(b1 / 3.0) + floor(b2 / 7.0) - ceil(b1 / 9.0)", {"dtype": "float64"},
     ["--type", "Float64"]),
    ("(b1 > 500) & (b2 < 10000) | ~(b1 == b2)", {"dtype": "byte"}, ["--type", "Byte"]),
    ("minimum(b1, b2) - maximum(b1 / 2, b2 / 3)", {"dtype": "float32", "nodata": "-1"},
     ["--type", "Float32", "--NoDataValue", "-1"]),
    ("b1 * 1.7 - 3", {"dtype": "uint16"}, ["--type", "UInt16"]),
]


@needs_gdal_calc
@pytest.mark.parametrize(("expr", "args", "opts"), CASES, ids=[c[0] for c in CASES])
def test_equals_gdal_calc(tmp_path, pair, expr, args, opts):
    ref, ref_nodata = gdal_calc(tmp_path, expr, pair, *opts)
    out = tmp_path / "rdask.tif"
    rdask.process(list(pair), out, "calc", kernel_args=dict(args, expr=expr), workers=2,
                  chunk_mb=1)
    got, nodata = read(out)
    assert nodata == ref_nodata and got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)
    assert (got == nodata).sum() > 500  # nodata from both bands, across the seams


@needs_gdal_calc
def test_transcendental_functions_within_two_ulps_of_gdal_calc(tmp_path, pair):
    # numpy's SIMD exp/log/arctan2 and numba's libm may differ in the last bit.
    # Float32 bands: numpy 1.x (Debian's gdal_calc.py) and numpy 2 (rdask)
    # then agree on every dtype (they differ for integers with float literals).
    floats = []
    for path in pair:
        a, nd = read(path)
        floats.append(write(tmp_path / f"f{len(floats)}.tif", a[0].astype(np.float32), nd))
    pair = tuple(floats)
    expr = "log10(abs(b1) + 1) + exp(b2 / 10000.0) + arctan2(b1, b2) * 180 / pi + sqrt(abs(b2))"
    ref, _ = gdal_calc(tmp_path, expr, pair, "--type", "Float64")
    out = tmp_path / "rdask.tif"
    rdask.process(list(pair), out, "calc", kernel_args={"expr": expr, "dtype": "float64"},
                  workers=2, chunk_mb=1)
    got, nodata = read(out)
    np.testing.assert_array_equal(got == nodata, ref == nodata)
    valid = ref != nodata
    # numpy's float32 exp/log10/arctan2 (SIMD) and libm's differ by an ulp
    # or so per term; summed terms of up to ~250 stay within two float32 ulps
    # at 128..256 (measured: 3.05e-5 on 1.6% of the pixels, the rest equal).
    assert np.abs(got[valid] - ref[valid]).max() <= 2 * np.spacing(np.float32(128))


@needs_gdal_calc
def test_cli_quoted_chain_equals_gdal_calc_then_focal(tmp_path, pair):
    """The issue's example: a quoted expression in a chain, on the CLI."""
    expr = "(b2 - b1) / (b2 + b1)"
    # (gdal_calc.py's nodata blend turns every pixel NaN with a NaN nodata)
    ref, _ = gdal_calc(tmp_path, expr, pair, "--type", "Float32", "--NoDataValue", "-2")
    out = tmp_path / "ndvi.tif"
    proc = subprocess.run(
        [RDASK, "run", f"calc expr='{expr}' dtype=float32 nodata=-2", *pair, str(out),
         "-j", "2", "--chunk-mb", "1", "-q"], capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    got, nodata = read(out)
    assert nodata == -2
    np.testing.assert_array_equal(got, ref)
    chained = tmp_path / "chained.tif"
    proc = subprocess.run(
        [RDASK, "run", f"calc expr='{expr}' dtype=float32 nodata=-2 | focal-mean radius=1",
         *pair, str(chained), "-j", "2", "--chunk-mb", "1", "-q"], capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    direct = get_kernel("focal-mean")(ref, nodata=-2.0, radius=1)
    np.testing.assert_array_equal(read(chained)[0], direct)


def numpy_reference(expr, block):
    names = {f"b{i + 1}": block[i] for i in range(block.shape[0])}
    names.update(where=np.where, sqrt=np.sqrt, abs=np.abs, floor=np.floor, pi=np.pi,
                 minimum=np.minimum, clip=np.clip, round=np.round, sin=np.sin, log=np.log)
    with np.errstate(all="ignore"):
        return np.asarray(eval(expr, {"__builtins__": {}}, names))  # the test's oracle only


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32",
                                   "int64", "uint64", "float32", "float64", "bool"])
@pytest.mark.parametrize("expr", ["b1 - b2 * 3", "-b1 + abs(b2)", "b1 // b2 + b1 % b2",
                                  "where(b1 > b2, b1, b2 + 1)", "sqrt(b1) + sin(b2)",
                                  "minimum(b1, b2) ** 2", "floor(b1 / 3) - round(b2 / 2)"])
def test_numpy_semantics_for_every_dtype(dtype, expr):
    """Integers wrap, divisions by zero give numpy's values, float16 results
    (sqrt of bytes) are half precision: as numpy computes them."""
    rng = np.random.default_rng(2)
    block = rng.integers(0, 120, (2, 6, 7)).astype(dtype)
    block[1, 0, :3] = 0
    k = get_kernel("calc")
    try:
        ref = numpy_reference(expr, block)
    except TypeError:  # numpy refuses (say, bool - bool): so does calc
        with pytest.raises(KernelError, match="expr cannot be computed on"):
            k.out_dtype(block.dtype, 2, k.resolve_args({"expr": expr, "dtype": "float64"}))
        return
    args = k.resolve_args({"expr": expr, "dtype": "float64", "nodata": "none"})
    got = k(block, nodata=float("nan"), **args)
    np.testing.assert_array_equal(got[0], ref.astype(np.float64))


def test_nodata_only_from_the_bands_the_expression_reads():
    k = get_kernel("calc")
    block = np.arange(2 * 4 * 5, dtype=np.int16).reshape(2, 4, 5)
    block[0, 0, 0] = block[1, 1, 1] = -1
    got = k(block, nodata=-1.0, expr="b1 * 2")
    assert got[0, 0, 0] == -32768 and got[0, 1, 1] == block[0, 1, 1] * 2
    both = k(block, nodata=-1.0, expr="b1 + 0 * b2")
    assert both[0, 1, 1] == -32768
    nan = k(block.astype(np.float32), nodata=float("nan"), expr="b2", out_nodata="none")
    assert nan[0, 1, 1] == -1  # no output nodata: nothing masked, as gdal_calc.py
    assert k.out_nodata(None, {"expr": "b1"}, np.int64) is None


HOSTILE = [
    ("b1.real", "attribute access is not allowed: 'b1.real'"),
    ("().__class__.__bases__", "attribute access is not allowed"),
    ("__import__('os').system('touch pwned')", "attribute access is not allowed"),
    ("__import__('os')", "unknown function: '__import__'"),
    ("open('/etc/passwd')", "unknown function"),
    ("eval('1')", "unknown function"),
    ("lambda: b1", "lambda is not allowed"),
    ("[b1 for _ in b2]", "listcomp is not allowed"),
    ("{x: 1 for x in b1}", "dictcomp is not allowed"),
    ("(x for x in b1)", "generatorexp is not allowed"),
    ("b1[0]", "Subscript is not allowed"),
    ("__builtins__", "unknown name"),
    ("b1 and b2", "and/or/not do not work on arrays"),
    ("not b1", "and/or/not do not work on arrays"),
    ("b1 if b2 else 0", "use where"),
    ("numpy.load('x.npy')", "attribute access is not allowed: 'numpy.load'"),
    ("np.linalg.inv(b1)", "attribute access is not allowed"),
    ("sqrt(x=b1)", "keyword arguments are not allowed"),
    ("sqrt(*b1)", "starred arguments are not allowed"),
    ("'text'", "only numbers are allowed"),
    ("b0 + 1", "unknown name"),
    ("(b1 := 3)", "NamedExpr is not allowed"),
    ("b1 <= b2 < 3", "chained comparisons"),
    ("b1 +", "is not an expression"),
    ("", "expr is empty"),
]


@pytest.mark.parametrize(("expr", "message"), HOSTILE, ids=[h[0] or "empty" for h in HOSTILE])
def test_hostile_expressions_refused_in_one_line(expr, message):
    with pytest.raises(KernelError) as err:
        get_kernel("calc").resolve_args({"expr": expr})
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith("kernel 'calc': expr")


@pytest.mark.parametrize(("expr", "message"), [
    ("__import__('os').system('touch pwned')", "attribute access is not allowed"),
    ("b3 + 1", "expr reads b3 but the input has 2 bands"),
    ("~b1", "cannot be computed on float32 bands"),
])
def test_cli_refuses_before_any_work_nothing_written(tmp_path, expr, message):
    rng = np.random.default_rng(0)
    files = [write(tmp_path / f"{n}.tif", rng.random((40, 30)).astype(np.float32), None)
             for n in ("a", "b")]
    out = tmp_path / "out.tif"
    proc = subprocess.run([RDASK, "run", f'calc expr="{expr}"', *files, str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_arguments_and_listing():
    k = builtin_kernels()["calc"]
    assert k.halo == 0 and k.out_bands(3, {"expr": "b1 + b3"}) == 1
    args = k.resolve_args({"expr": "b1", "dtype": "Float32", "nodata": "-1"})
    assert args == {"expr": "b1", "dtype": "float32", "out_nodata": "-1.0"}
    assert k.resolve_args(args) == args
    assert k.out_dtype(np.int16, 1, {"expr": "b1"}) == np.int16  # the input's, as gdal_calc
    assert k.out_nodata(None, {"expr": "b1", "dtype": "uint16"}, np.int16) == 65535
    with pytest.raises(KernelError, match="dtype='float16' is not one of"):
        k.resolve_args({"expr": "b1", "dtype": "float16"})
    with pytest.raises(KernelError, match="nodata='x' is not a number or none"):
        k.resolve_args({"expr": "b1", "nodata": "x"})
    with pytest.raises(KernelError, match="cannot take complex64"):
        k.check_input(np.complex64, 1)
