"""W8, reprojection: UTM DEM to EPSG:4326 (bilinear), and to EPSG:3857 then slope; -j2."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import checks
import datagen
import grids
import numpy as np
import rasterio
import rasterio.warp
from context import CONTENDERS, HERE, Context
from grids import Grid
from machine import GDALDEM
from model import OUT, Case, Contender, Ref, Target
from rasterio.windows import Window
from registry import workload

#: GDAL's warper, from Debian's gdal-bin (GDAL 3.6; rasterio's wheels carry 3.10).
GDALWARP = shutil.which("gdalwarp") or "gdalwarp"

#: Creation options of every W8 output (and intermediate file): rdask's default
#: GeoTIFF for float32 (tiled 512, DEFLATE with the floating-point predictor,
#: level 1), compressed on all cores.
W8_CODEC = (
    "TILED=YES",
    "BLOCKXSIZE=512",
    "BLOCKYSIZE=512",
    "COMPRESS=DEFLATE",
    "PREDICTOR=3",
    "ZLEVEL=1",
    "NUM_THREADS=ALL_CPUS",
)

#: W8's target pixel sizes.  GDAL's own choice for EPSG:4326 at full size
#: is 0.000323 degrees (35.8 m north-south, 30 m source pixels): GDAL then
#: widens its bilinear kernel (4x4 taps in y, its XSCALE/YSCALE below 0.95)
#: where odc-geo forces 2x2 (XSCALE=1), and outputs differ by up to 0.4 m
#: by design.  These sizes keep every axis at or above the source
#: resolution (EPSG:4326: 28.8 m north-south, 20-22 m east-west;
#: EPSG:3857: 27-29 m on the ground at 40.7-45.2 degrees N), so bilinear
#: is the same 2x2 formula for every program; checked at full size:
#: ``gdalwarp -et 0`` with and without ``-wo XSCALE=1 -wo YSCALE=1`` give
#: identical files.  Multiples of a power of two: exact in binary.
W8_RES = {"EPSG:4326": 272 * 2**-20, "EPSG:3857": 38.0}

#: W8's second case: the DEM warped to this CRS, then slope.
W8_SLOPE_CRS = "EPSG:3857"


def gdalwarp(inp: Path, out: Path | str, grid: Grid, et: float | None) -> list[str]:
    """argv of ``gdalwarp`` onto ``grid``, bilinear, multi-threaded, W8's codec.

    ``et=None`` leaves ``-et`` out: GDAL's default approximation (0.125 px).
    """
    argv = [GDALWARP, "-t_srs", grid.crs, "-te", *(repr(v) for v in grid.bounds)]
    argv += ["-ts", str(grid.width), str(grid.height), "-r", "bilinear"]
    argv += ["-et", f"{et:g}"] if et is not None else []
    argv += ["-multi", "-wo", "NUM_THREADS=ALL_CPUS"]
    argv += [arg for co in W8_CODEC for arg in ("-co", co)]
    return [*argv, str(inp), str(out)]


def gdaldem_slope_w8(inp: Path | str, out: Path | str) -> list[str]:
    """argv of ``gdaldem slope`` with W8's codec (scale 1: the CRS units are metres)."""
    argv = [GDALDEM, "slope", str(inp), str(out), "-of", "GTiff"]
    return argv + [arg for co in W8_CODEC for arg in ("-co", co)]


def warp_step(grid: Grid, *, et: float | None = None) -> str:
    """rdask's warp step onto ``grid``: ``warp crs=... resampling=bilinear bounds=... res=...``."""
    step = f"warp crs={grid.crs} resampling=bilinear bounds={grid.bounds_arg()} res={grid.res!r}"
    return step + (f" et={et:g}" if et is not None else "")


def rdask_run(ctx: Context, recipe: str, inp: Path | str, out: Path | str) -> list[str]:
    """argv of ``rdask run RECIPE IN OUT -j 2 --overwrite --no-progress``."""
    return [ctx.rdask, "run", recipe, str(inp), str(out), "-j", "2", "--overwrite", "--no-progress"]


def steps(python: str, *commands: list[str]) -> tuple[str, ...]:
    """argv of ``contenders/steps.py``: ``commands`` one after the other (``{tmp}`` between)."""
    argv: list[str] = []
    for cmd in commands:
        argv += ["--then", *cmd] if argv else cmd
    return (python, str(CONTENDERS / "steps.py"), OUT, "--", *argv)


def xr_reproject(
    ctx: Context, script: str, inp: Path, grid: Grid, *, slope: bool = False
) -> tuple[str, ...]:
    """argv of ``contenders/SCRIPT`` (odc-geo or rioxarray) onto ``grid``, -j2, W8's codec."""
    argv = [ctx.python, str(CONTENDERS / script), str(inp), OUT, "-j", "2"]
    # --bounds=...: a value starting with "-" would be taken for an option
    argv += [f"--crs={grid.crs}", f"--bounds={grid.bounds_arg()}", f"--res={grid.res!r}"]
    argv += [f"--co={co}" for co in W8_CODEC]
    return (*argv, *(["--slope"] if slope else []))


def deviation(ref: checks.Reference, check: checks.Check) -> checks.Check:
    """``check``, plus two columns: the pixels differing from ``ref``'s
    output (nodata against a value counts), and the largest difference
    where both have a value."""

    def run(inp: Path, out: Path) -> list[str]:
        found = check(inp, out)
        want_path = ref.path(inp) if out.exists() else None
        if want_path is None or any(not isinstance(f, checks.Note) for f in found):
            return found
        differ = total = 0
        worst = 0.0
        with rasterio.open(out) as got_ds, rasterio.open(want_path) as want_ds:
            for window in checks.strips(got_ds):
                got, want = got_ds.read(1, window=window), want_ds.read(1, window=window)
                got_bad, want_bad = checks.invalid(got, got_ds.nodata), checks.invalid(want, want_ds.nodata)
                both = ~got_bad & ~want_bad
                unequal = (got_bad != want_bad) | (both & (got != want))
                differ += int(unequal.sum())
                total += unequal.size
                if both.any():
                    worst = max(worst, float(np.abs(got[both].astype(np.float64) - want[both]).max()))
        share = f"{differ} ({100 * differ / total:.3g}%)"
        return [*found, checks.Measure(f"px != {ref.name}", share),
                checks.Measure("max |diff|", f"{worst:.3g}")]

    run.__doc__ = check.__doc__
    return run


def w8_samples(inp: Path, grid: Grid, size: int = 256) -> list[checks.Sample]:
    """Windows of ``grid`` where a warp goes wrong first.

    Around where the input's corners, edge midpoints, centre and the edge
    of its nodata corner land (the footprint's edges, rotated and curved,
    with nodata outside), plus one across the output's 2048-px seams.
    """
    with rasterio.open(inp) as src:
        w, h, st, crs = src.width, src.height, src.transform, src.crs
    radius = 0.15 * w / 2**0.5  # the nodata quarter disc, on its diagonal
    spots = {
        "nodata corner boundary": (radius, radius),
        "source top-right corner": (w, 0),
        "source bottom-left corner": (0, h),
        "source bottom-right corner": (w, h),
        "source left edge": (0, h / 2),
        "source top edge": (w / 2, 0),
        "centre": (w / 2, h / 2),
    }
    xs, ys = zip(*(st * spot for spot in spots.values()), strict=True)
    tx, ty = rasterio.warp.transform(crs, grid.crs, xs, ys)
    inverse = ~grid.transform
    windows = []
    for label, x, y in zip(spots, tx, ty, strict=True):
        col, row = inverse * (x, y)
        windows.append((label, row, col))
    windows.append(("seams at 2048 px", 2048.0, 2048.0))
    size = min(size, grid.width, grid.height)
    return [
        (
            label,
            Window(
                min(max(round(col) - size // 2, 0), grid.width - size),
                min(max(round(row) - size // 2, 0), grid.height - size),
                size,
                size,
            ),
        )
        for label, row, col in windows
    ]


#: What every W8 row writes, as a note.
W8_CODEC_NOTE = "tiled 512, DEFLATE + PREDICTOR=3, ZLEVEL=1 (rdask's default GeoTIFF)"



@workload("W8", "reprojection: UTM DEM to EPSG:4326 (bilinear), and to EPSG:3857 then slope; -j2")
def reprojection(ctx: Context) -> list[Case]:
    """rdask's warp against gdalwarp, odc-geo and rioxarray; a warp-then-slope chain vs two runs.

    The input is W6's terrain on 30 m pixels in UTM 18N (``datagen.UtmDemRecipe``).
    Every row writes the same grid (:data:`W8_RES`, GDAL's suggested extent;
    :mod:`geos`) with the same codec (:data:`W8_CODEC`).  Checks:
    ``gdalwarp -et 0`` against numpy's bilinear warp (GDAL's rule, exact
    transformation) on sampled windows, then it is the reference of the
    others over the whole raster (masks equal but within 2 px of its
    nodata boundary; values within 1e-3 m where the transformation is
    exact, 1 m where it is approximated to 0.125 px).  The slope case
    likewise against ``gdalwarp -et 0`` + ``gdaldem slope`` (3 px, 1e-3
    or 1 degree).
    """
    _preflight_w8(ctx)
    side = ctx.side(16384, quick=4096)
    inp, _ = ctx.dem("w8", side, kind=datagen.UtmDemRecipe)
    refs = ctx.workdir / "ref"
    title = f"synthetic DEM {side}x{side} float32, UTM 18N, 30 m"

    geo = grids.warp_grid(inp, "EPSG:4326", W8_RES["EPSG:4326"])
    ctx.log(f"  W8-warp grid: {geo.describe()}")
    exact = checks.Reference("gdalwarp -et 0", lambda i, o: gdalwarp(i, o, geo, 0), refs)
    same = {"tolerance": 1e-3, "boundary": 2, "edge_limit": 50.0, "compress": "deflate"}
    approx = {**same, "tolerance": 1.0}
    exact_note = "exact transformation of every pixel centre (-et 0)"
    approx_note = "approximate transformation, error threshold 0.125 px"
    fast_note = (
        "exact points every 64 px fixed to the output grid, biquadratic in between, error "
        "bound under 1e-6 px; the same pixels at any chunking"
    )
    warp = Case(
        "W8-warp",
        f"warp to EPSG:4326 (bilinear), {title}",
        inp,
        contenders=(
            Contender(
                "gdalwarp -et 0",
                tuple(gdalwarp(inp, OUT, geo, 0)),
                deviation(exact, checks.adopted_as(
                    exact, checks.warp_sampled(geo, w8_samples(inp, geo), compress="deflate")
                )),
                notes=(f"gdalwarp 3.6 (apt), {exact_note}; {W8_CODEC_NOTE}",),
            ),
            Contender(
                "gdalwarp -et 0.125",
                tuple(gdalwarp(inp, OUT, geo, None)),
                deviation(exact, checks.warp_matches(exact, geo, **approx)),
                notes=(f"gdalwarp without -et: GDAL's default, {approx_note}",),
            ),
            Contender(
                "odc-geo",
                xr_reproject(ctx, "odc_reproject.py", inp, geo),
                deviation(exact, checks.warp_matches(exact, geo, **approx)),
                notes=(
                    "xr_reproject(bilinear) on rioxarray chunks of 2048, to_raster; rasterio's "
                    f"reproject per chunk: {approx_note}",
                ),
            ),
            Contender(
                "rioxarray",
                xr_reproject(ctx, "rioxarray_reproject.py", inp, geo),
                deviation(exact, checks.warp_matches(exact, geo, **approx)),
                notes=(
                    "open_rasterio, .rio.reproject(bilinear, num_threads=2), to_raster: the whole "
                    f"raster in memory; {approx_note}",
                ),
            ),
            Contender(
                "rdask warp",
                tuple(rdask_run(ctx, warp_step(geo), inp, OUT)),
                deviation(exact, checks.warp_matches(exact, geo, **same)),
                notes=(f"the default, fast mode (et=0.125): {fast_note}",),
            ),
            Contender(
                "rdask warp et=0",
                tuple(rdask_run(ctx, warp_step(geo, et=0), inp, OUT)),
                deviation(exact, checks.warp_matches(exact, geo, **same)),
                notes=(f"the exact mode: {exact_note}, as gdalwarp -et 0",),
            ),
        ),
        references=("gdalwarp -et 0", "gdalwarp -et 0.125", "odc-geo"),
        targets=(
            Target(Ref("rdask warp"), Ref("odc-geo"), 0.5),
            Target(Ref("rdask warp"), Ref("gdalwarp -et 0.125"), 0.6),
            Target(Ref("rdask warp et=0"), Ref("gdalwarp -et 0"), 0.7),
            Target(Ref("rdask warp", "rss"), None, 400),
            Target(Ref("rdask warp et=0", "rss"), None, 400),
        ),
        scratch=(exact,),
    )

    merc = grids.warp_grid(inp, W8_SLOPE_CRS, W8_RES[W8_SLOPE_CRS])
    ctx.log(f"  W8-slope grid: {merc.describe()}")
    slope_ref = checks.Reference(
        "gdalwarp + gdaldem",
        lambda i, o: [str(a).replace(OUT, str(o)) for a in gdal_slope_steps(ctx.python, i, merc)],
        refs,
    )
    same = {**same, "boundary": 3, "edge_limit": 15.0}
    loose = {**same, "tolerance": 1.0}
    gdal_steps = gdal_slope_steps(ctx.python, inp, merc)
    rdask_steps = steps(
        ctx.python,
        rdask_run(ctx, warp_step(merc), inp, "{tmp}"),
        rdask_run(ctx, "slope", "{tmp}", OUT),
    )
    xrspatial_note = (
        "then xarray-spatial's slope (nodata made NaN first), to_raster; rasterio's reproject: "
        f"{approx_note}"
    )
    chain = Case(
        "W8-slope",
        f"warp to {W8_SLOPE_CRS} (bilinear) then slope (degrees), {title}",
        inp,
        contenders=(
            Contender(
                "gdalwarp + gdaldem",
                gdal_steps,
                checks.adopted_as(
                    slope_ref,
                    checks.warp_sampled(
                        merc, w8_samples(inp, merc), slope=True, compress="deflate"
                    ),
                ),
                notes=(
                    "gdalwarp -et 0 to an intermediate file, then gdaldem slope (apt's GDAL 3.6); "
                    "both with W8's codec",
                ),
            ),
            Contender(
                "odc-geo + xarray-spatial",
                xr_reproject(ctx, "odc_reproject.py", inp, merc, slope=True),
                checks.warp_matches(slope_ref, merc, **loose),
                notes=(f"xr_reproject on chunks of 2048 {xrspatial_note}",),
            ),
            Contender(
                "rioxarray + xarray-spatial",
                xr_reproject(ctx, "rioxarray_reproject.py", inp, merc, slope=True),
                checks.warp_matches(slope_ref, merc, **loose),
                notes=(f".rio.reproject (in memory) {xrspatial_note}",),
            ),
            Contender(
                "rdask two steps",
                rdask_steps,
                checks.warp_matches(slope_ref, merc, **same),
                notes=(
                    "rdask run warp to an intermediate file (rdask's default GeoTIFF), then "
                    "rdask run slope; peak RSS is the larger process's",
                ),
            ),
            Contender(
                "rdask chain",
                tuple(rdask_run(ctx, f"{warp_step(merc)} | slope", inp, OUT)),
                checks.warp_matches(slope_ref, merc, **same),
                notes=(
                    "one pass: each chunk warps its window grown by the slope's 1 px halo, "
                    "then computes the slope; no intermediate file",
                ),
            ),
        ),
        references=("gdalwarp + gdaldem", "rdask two steps"),
        targets=(
            Target(Ref("rdask chain"), Ref("rdask two steps"), 1.0),
            Target(Ref("rdask chain", "rss"), None, 400),
        ),
        scratch=(slope_ref,),
    )
    return [warp, chain]


def gdal_slope_steps(python: str, inp: Path | str, grid: Grid) -> tuple[str, ...]:
    """``gdalwarp -et 0`` to an intermediate file, then ``gdaldem slope``, via ``steps.py``."""
    return steps(python, gdalwarp(Path(inp), "{tmp}", grid, 0), gdaldem_slope_w8("{tmp}", OUT))


def _preflight_w8(ctx: Context) -> None:
    """Say how to install what W8's contenders need, if it is missing (their rows will fail)."""
    for module, package in (("odc.geo", "odc-geo"), ("xrspatial", "xarray-spatial")):
        if importlib.util.find_spec(module) is None:
            ctx.log(
                f"  ! {package} is not installed; its rows will fail. Install it with: "
                f"{ctx.python} -m pip install -r {HERE / 'requirements.txt'}"
            )
    for tool in (GDALWARP, GDALDEM):
        if shutil.which(tool) is None:
            ctx.log(f"  ! {tool} is missing; install GDAL's tools with `make sysdeps` (gdal-bin)")



