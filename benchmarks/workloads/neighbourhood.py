"""W6, neighbourhood kernels on a float32 DEM: slope, focal-mean r=5, a chain; -j2."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import checks
from context import HERE, Context
from machine import GDALDEM
from model import Case, Contender, Ref, Target
from rasterio.windows import Window
from registry import workload
from rows import (
    GDAL_DEFLATE_DEFAULTS,
    dask_image_focal,
    gdaldem_slope,
    rdask_kernel,
    rdask_two_steps,
    xrspatial_slope,
)

from workloads.kernel_library import library_cases


@workload("W6", "neighbourhood kernels on a float32 DEM: slope, focal-mean r=5, a chain; -j2")
def neighbourhood(ctx: Context) -> list[Case]:
    """Halo kernels against gdaldem, xarray-spatial and dask-image, and a chain vs two runs.

    ``rdask slope (64 MB chunks)`` is the same slope with chunks 16 times
    larger: halo reads decode each block of the input about once
    (``rdask.io.blocks``), so its CPU time should match the default row's.

    The input is a synthetic DEM (``datagen.write_dem``) with nodata in the
    top-left corner.  Checks: rdask's slope equals gdaldem's within 1e-3
    degrees with the same nodata mask (gdaldem's output is checked against
    numpy's Horn slope on sampled windows, then is the reference);
    xarray-spatial is compared loosely where both are valid (99 % within
    1e-3 degrees, all within 0.01: it forms Horn's sums in float32 in
    another order, which moves ~0.2 % of the pixels by up to ~0.002
    degrees on this DEM) and its other differences are reported; rdask's focal
    mean against numpy on sampled windows (nodata corner, raster edges,
    chunk seams); dask-image only on full windows away from nodata and
    edges; the chain bit for bit against the two separate runs.
    """
    _preflight(ctx)
    side = ctx.side(16384, quick=4096)
    inp, recipe = ctx.dem("w6", side)
    samples = dem_samples(side, recipe.nodata_fraction)
    refs = ctx.workdir / "ref"
    gdaldem = checks.Reference("gdaldem slope", gdaldem_slope, refs)

    def two_steps_command(src: Path, out: Path) -> list[str]:
        return rdask_two_steps(ctx, src, CHAIN_STEPS, 2, checks.band_order("same")).command(out)

    two_steps_ref = checks.Reference("rdask two steps", two_steps_command, refs)
    library = library_cases(ctx, inp, side, f"synthetic DEM {side}x{side} float32", refs)
    slope_checks = checks.slope_sampled(samples, compress="deflate")
    title = f"synthetic DEM {side}x{side} float32"
    return [
        Case(
            "W6-slope",
            f"slope (degrees), {title}",
            inp,
            contenders=(
                Contender(
                    "gdaldem",
                    tuple(gdaldem_slope(inp)),
                    checks.adopted_as(gdaldem, slope_checks),
                    notes=("gdaldem 3.6 (apt), one thread computing, DEFLATE on all cores",),
                ),
                xrspatial_slope(
                    ctx,
                    inp,
                    2,
                    checks.loosely_matches_reference(gdaldem, tolerance=1e-3, compress="deflate"),
                ),
                rdask_kernel(
                    ctx,
                    "rdask slope",
                    "slope",
                    inp,
                    checks.matches_reference(
                        gdaldem, tolerance=1e-3, compress="deflate", dtype="float32"
                    ),
                ),
                rdask_kernel(
                    ctx,
                    "rdask slope (64 MB chunks)",
                    "slope",
                    inp,
                    checks.matches_reference(
                        gdaldem, tolerance=1e-3, compress="deflate", dtype="float32"
                    ),
                    extra=("--chunk-mb", "64"),
                ),
                rdask_kernel(
                    ctx,
                    "rdask slope (GDAL deflate defaults)",
                    "slope",
                    inp,
                    checks.matches_reference(
                        gdaldem, tolerance=1e-3, compress="deflate", dtype="float32"
                    ),
                    extra=GDAL_DEFLATE_DEFAULTS,
                ),
            ),
            references=("gdaldem", "xarray-spatial"),
            targets=(
                Target(Ref("rdask slope"), Ref("gdaldem"), 0.5),
                Target(Ref("rdask slope"), Ref("xarray-spatial"), 0.15),
                *rdask_limits("rdask slope"),
            ),
            scratch=(gdaldem,),
        ),
        Case(
            "W6-focal",
            f"focal-mean radius=5 (11x11), {title}",
            inp,
            contenders=(
                dask_image_focal(
                    ctx,
                    inp,
                    2,
                    FOCAL_RADIUS,
                    checks.focal_mean_sampled(
                        samples, FOCAL_RADIUS, full_windows_only=True, rtol=1e-5, compress="deflate"
                    ),
                ),
                rdask_kernel(
                    ctx,
                    "rdask focal-mean",
                    "focal-mean",
                    inp,
                    checks.focal_mean_sampled(samples, FOCAL_RADIUS, compress="deflate"),
                    kernel_args=(f"radius={FOCAL_RADIUS}",),
                ),
            ),
            references=("dask-image",),
            targets=(
                Target(Ref("rdask focal-mean"), Ref("dask-image"), 0.5),
                *rdask_limits("rdask focal-mean"),
            ),
        ),
        Case(
            "W6-chain",
            f'"{" | ".join(CHAIN_STEPS)}" in one pass vs two runs, {title}',
            inp,
            contenders=(
                rdask_two_steps(
                    ctx,
                    inp,
                    CHAIN_STEPS,
                    2,
                    checks.adopted_as(
                        two_steps_ref,
                        checks.slope_sampled(samples, smooth_radius=2, compress="deflate"),
                    ),
                ),
                rdask_kernel(
                    ctx,
                    "rdask chain",
                    " | ".join(CHAIN_STEPS),
                    inp,
                    checks.matches_reference(two_steps_ref, tolerance=0, compress="deflate"),
                ),
            ),
            references=("rdask two steps",),
            targets=(
                Target(Ref("rdask chain"), Ref("rdask two steps"), 1.0),
                *rdask_limits("rdask chain"),
            ),
            scratch=(two_steps_ref,),
        ),
        *library,
    ]


# -- W8: reprojection ---------------------------------------------------------------


def _preflight(ctx: Context) -> None:
    """Say how to install what W6's contenders need, if it is missing (their rows will fail)."""
    for module, package in (("xrspatial", "xarray-spatial"), ("dask_image", "dask-image")):
        if importlib.util.find_spec(module) is None:
            ctx.log(
                f"  ! {package} is not installed; its row will fail. Install it with: "
                f"{ctx.python} -m pip install -r {HERE / 'requirements.txt'}"
            )
    if shutil.which(GDALDEM) is None:
        ctx.log(f"  ! {GDALDEM} is missing; install GDAL's tools with `make sysdeps` (gdal-bin)")


def rdask_limits(name: str) -> tuple[Target, ...]:
    """W6's targets for every rdask row: within 1.15x of its CPU limit, at most 300 MB."""
    return (
        Target(Ref(name), Ref(name, "cpu_limit"), 1.15),
        Target(Ref(name, "rss"), None, 300),
    )


#: Radius of W6's focal-mean case (an 11x11 window).
FOCAL_RADIUS = 5

#: W6's chain, one step per item, in ``rdask run``'s syntax.
CHAIN_STEPS = ("focal-mean radius=2", "slope")


def dem_samples(side: int, nodata_fraction: float, size: int = 256) -> list[checks.Sample]:
    """Windows of W6's DEM where kernels go wrong first.

    The nodata corner (also two raster edges), the edge of the nodata
    region, the other three corners, the centre (where chunks of a power of
    two meet) and the middle of the left edge.
    """
    size = min(size, side)
    far = side - size
    mid = side // 2 - size // 2
    edge = round(side * nodata_fraction / 2**0.5) - size // 2  # on the nodata quarter circle
    spots = {
        "nodata corner": (0, 0),
        "nodata boundary": (edge, edge),
        "top-right corner": (0, far),
        "bottom-left corner": (far, 0),
        "bottom-right corner": (far, far),
        "centre (chunk seams)": (mid, mid),
        "left edge": (mid, 0),
    }
    return [
        (label, Window(min(max(c, 0), far), min(max(r, 0), far), size, size))
        for label, (r, c) in spots.items()
    ]

