"""W6's kernel-library rows: aspect and TRI vs gdaldem, calc vs rio calc,
focal median vs dask-image (issue 21); called by :mod:`workloads.neighbourhood`.

Checks: aspect and TRI equal gdaldem's output bit for bit (the kernels
follow gdaldem 3.6 operation for operation); calc's normalized difference
equals numpy's on sampled windows (float64 then float32, nodata where
either band is); the focal median equals ``numpy.nanmedian`` over the
clipped window on sampled windows.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import checks
import numpy as np
import rasterio
from context import Context
from machine import GDALDEM
from model import Case, Contender, Ref, Target
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window
from rows import CONTENDERS, OUT, rdask_kernel  # noqa: F401 - re-exported there

#: The expression of the calc row, in rdask's and rio calc's syntax.
NDVI = "(b2 - b1) / (b2 + b1)"
RIO_NDVI = "(/ (- (read 2 1) (read 1 1)) (+ (read 2 1) (read 1 1)))"
MEDIAN_RADIUS = 2
_CO = ("-co", "TILED=YES", "-co", "BLOCKXSIZE=512", "-co", "BLOCKYSIZE=512", "-co",
       "COMPRESS=DEFLATE", "-co", "NUM_THREADS=ALL_CPUS")


def gdaldem_mode(mode: str, inp: Path, out: Path | str = OUT) -> list[str]:
    """argv of ``gdaldem MODE`` to a tiled DEFLATE GeoTIFF, compressing on all cores."""
    return [GDALDEM, mode, str(inp), str(out), "-of", "GTiff", *_CO]


def int16_pair(ctx: Context, dem: Path, side: int) -> tuple[Path, Path]:
    """Two int16 rasters made from the DEM by gdal_translate (cached): the
    elevations, and the elevations mirrored in 0..3000; nodata -9999."""
    out = []
    for name, scale in (("red", ()), ("nir", ("-scale", "0", "3000", "3000", "0"))):
        path = ctx.workdir / "inputs" / f"w6-{name}-int16-{side}.tif"
        if not path.exists():
            ctx.log(f"  input {path.name}: int16 from {dem.name} (gdal_translate)")
            subprocess.run(["gdal_translate", "-q", "-ot", "Int16", *scale, "-a_nodata", "-9999",
                            str(dem), str(path), *_CO], check=True)
        out.append(path)
    return out[0], out[1]


def _windows(side: int, size: int = 256) -> list[Window]:
    far, mid = side - size, side // 2 - size // 2
    return [Window(c, r, size, size) for r, c in ((0, 0), (mid, mid), (far, far), (0, far))]


def ndvi_sampled(red: Path, nir: Path, side: int) -> checks.Check:
    """calc's output equals numpy's normalized difference on sampled windows."""

    def check(_inp: Path, out: Path) -> list[str]:
        problems = []
        with rasterio.open(red) as a, rasterio.open(nir) as b, rasterio.open(out) as o:
            for w in _windows(side):
                r, n = a.read(1, window=w).astype(np.float64), b.read(1, window=w).astype(
                    np.float64)
                with np.errstate(all="ignore"):
                    want = ((n - r) / (n + r)).astype(np.float32)
                bad = (a.read(1, window=w) == -9999) | (b.read(1, window=w) == -9999)
                want[bad] = o.nodata
                if not np.array_equal(o.read(1, window=w), want, equal_nan=True):
                    problems.append(f"calc differs from numpy in {w}")
        return problems

    return check


def median_sampled(side: int, radius: int = MEDIAN_RADIUS) -> checks.Check:
    """focal median equals numpy's nanmedian over the clipped window, sampled."""

    def check(inp: Path, out: Path) -> list[str]:
        problems = []
        with rasterio.open(inp) as src, rasterio.open(out) as o:
            for w in _windows(side):
                grown = Window(w.col_off - radius, w.row_off - radius, w.width + 2 * radius,
                               w.height + 2 * radius)
                vals = src.read(1, window=grown, boundless=True, fill_value=np.nan).astype(
                    np.float64)
                vals[vals == src.nodata] = np.nan
                win = sliding_window_view(vals, (2 * radius + 1,) * 2)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    want = np.nanmedian(win, axis=(-2, -1)).astype(np.float32)
                want[np.isnan(want)] = np.nan if o.nodata is None else o.nodata  # no valid pixel
                got = o.read(1, window=w)
                if not np.array_equal(got, want, equal_nan=True):
                    problems.append(f"focal median differs from numpy in {w}")
        return problems

    return check


def limits(name: str) -> tuple[Target, ...]:
    return (Target(Ref(name), Ref(name, "cpu_limit"), 1.15), Target(Ref(name, "rss"), None, 300))


def library_cases(ctx: Context, inp: Path, side: int, title: str, refs: Path) -> list[Case]:
    """The four rows, each rdask against the tool a user would run."""
    cases = []
    for mode, kernel in (("aspect", "aspect"), ("TRI", "tri")):
        ref = checks.Reference(f"gdaldem {mode}", lambda i, o, m=mode: gdaldem_mode(m, i, o), refs)
        name = f"rdask {kernel}"
        cases.append(Case(
            f"W6-{kernel}", f"{kernel} (gdaldem {mode}), {title}", inp,
            contenders=(
                Contender(f"gdaldem {mode}", tuple(gdaldem_mode(mode, inp)),
                          checks.adopted_as(ref, lambda _i, _o: []),
                          notes=("gdaldem 3.6 (apt), one thread computing, DEFLATE on all cores",)),
                rdask_kernel(ctx, name, kernel, inp, checks.matches_reference(
                    ref, tolerance=0, compress="deflate", dtype="float32")),
            ),
            references=(f"gdaldem {mode}",),
            targets=(Target(Ref(name), Ref(f"gdaldem {mode}"), 0.5), *limits(name)),
            scratch=(ref,),
        ))
    red, nir = int16_pair(ctx, inp, side)
    calc_check = ndvi_sampled(red, nir, side)
    cases.append(Case(
        "W6-calc", f"calc {NDVI} of two {side}x{side} int16 files to float32", red,
        contenders=(
            Contender("rio calc", (str(Path(ctx.python).parent / "rio"), "calc", RIO_NDVI, "--dtype", "float32", "--co",
                                   "tiled=true", "--co", "blockxsize=512", "--co",
                                   "blockysize=512", "--co", "compress=deflate", str(red),
                                   str(nir), OUT, "--overwrite"),
                      lambda _i, _o: [], notes=("rio calc (rasterio's), one process; "
                                                "no nodata masking",)),
            Contender("rdask calc", (ctx.rdask, "-v", "run", f"calc expr='{NDVI}' dtype=float32",
                                     str(red), str(nir), OUT, "-j", "2", "--overwrite",
                                     "--no-progress"), calc_check),
        ),
        references=("rio calc",),
        targets=(Target(Ref("rdask calc"), Ref("rio calc"), 0.3), *limits("rdask calc")),
    ))
    argv = (ctx.python, str(CONTENDERS / "dask_image_focal.py"), str(inp), OUT, "-j", "2",
            "--radius", str(MEDIAN_RADIUS), "--filter", "median", "--chunk", "2048",
            "--compress", "deflate", "--blocksize", "512")
    cases.append(Case(
        "W6-median", f"focal median radius={MEDIAN_RADIUS} (5x5), {title}", inp,
        contenders=(
            Contender("dask-image median", argv, lambda _i, _o: [],
                      notes=("scipy's median_filter per chunk: nodata is a value, edges "
                             "reflected",)),
            rdask_kernel(ctx, "rdask focal median", f"focal stat=median radius={MEDIAN_RADIUS}",
                         inp, median_sampled(side)),
        ),
        references=("dask-image median",),
        targets=(Target(Ref("rdask focal median"), Ref("dask-image median"), 0.5),
                 *limits("rdask focal median")),
    ))
    return cases
