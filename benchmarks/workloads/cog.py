"""W5, COG output: the W2 job written as a DEFLATE COG with nearest overviews, -j2."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import checks
from context import Context, w2_input
from model import Case, Contender, Ref, Target
from registry import workload
from rows import (
    RDASK_DEFLATE_NOTE,
    cog_convert,
    odc_cog,
    rdask,
    rioxarray_cog,
    rioxarray_plain,
    with_baseline,
)


@workload("W5", "COG output: the W2 job written as a DEFLATE COG with nearest overviews, -j2")
def cog_output(ctx: Context) -> list[Case]:
    """The W2 input and kernel to a COG, every contender timed as a whole job.

    Whole jobs: the rioxarray contender's GeoTIFF then GDAL's COG driver or
    rio-cogeo (one process), odc-geo's ``save_cog_with_dask`` on the
    rioxarray array, ``rdask --driver COG``; rdask's GeoTIFF run of the same
    job is the reference of the COG overhead.  The conversions alone run on
    the rioxarray contender's GeoTIFF, made once, untimed.  Checks: every
    COG passes ``cog_validate``, full-resolution pixels are the reversed
    bands, overview count and sizes are reported and the overview pixels
    compared with GDAL's COG driver's where the sizes agree (notes).
    """
    inp = w2_input(ctx)
    side = ctx.side(16384, quick=4096)
    gtiff = rioxarray_geotiff(ctx, inp)
    gdal_cog = checks.Reference(
        "GDAL COG driver",
        lambda _inp, out: cog_convert(ctx, gtiff, "gdal", out),
        ctx.workdir / "ref",
    )
    valid_cog = checks.cog("reversed", overviews_like=gdal_cog)
    converted = (
        f"input: the rioxarray contender's GeoTIFF of this input ({gtiff.name}), made untimed"
    )
    contenders, before, not_slower = with_baseline(
        ctx,
        (
            Contender(
                "rioxarray + GDAL COG",
                rioxarray_cog(ctx, inp, "gdal"),
                checks.adopted_as(gdal_cog, checks.cog("reversed")),
                notes=(
                    "the rioxarray -j2 contender to a GeoTIFF, then rasterio.shutil.copy("
                    "driver='COG', NUM_THREADS='ALL_CPUS', RESAMPLING='NEAREST', "
                    "COMPRESS='DEFLATE', BLOCKSIZE=512); one process; GDAL's DEFLATE "
                    "defaults (level 6, no predictor)",
                ),
            ),
            Contender(
                "rioxarray + rio-cogeo",
                rioxarray_cog(ctx, inp, "rio-cogeo"),
                valid_cog,
                notes=(
                    "the rioxarray -j2 contender to a GeoTIFF, then cog_translate(profile "
                    "'deflate', overview_resampling='nearest', config={'GDAL_NUM_THREADS': "
                    "'ALL_CPUS'}); one process",
                ),
            ),
            Contender(
                "odc-geo",
                odc_cog(ctx, inp),
                valid_cog,
                notes=(
                    "odc.geo.cog.save_cog_with_dask(compression='deflate', blocksize=512, "
                    "overview_resampling='nearest') on the rioxarray array (chunks 512), "
                    "threads -j2; its defaults kept: predictor 2, libdeflate level 6, "
                    "planar (band-interleaved) layout, BigTIFF, band statistics",
                ),
            ),
            rdask(
                ctx,
                inp,
                2,
                0,
                extra=("--driver", "COG"),
                name="rdask -j2 COG",
                check=valid_cog,
                notes=(RDASK_DEFLATE_NOTE,),
            ),
            rdask(
                ctx,
                inp,
                2,
                0,
                name="rdask -j2 GeoTIFF",
                notes=("the same job to a tiled GeoTIFF (--driver GTiff), no overviews",),
            ),
            Contender(
                "GDAL COG driver (conversion only)",
                tuple(cog_convert(ctx, gtiff, "gdal")),
                valid_cog,
                notes=(converted,),
            ),
            Contender(
                "rio-cogeo (conversion only)",
                tuple(cog_convert(ctx, gtiff, "rio-cogeo")),
                valid_cog,
                notes=(converted,),
            ),
        ),
        "rdask -j2 COG",
        f"rdask {ctx.baseline.rev} COG" if ctx.baseline else "",
    )
    return [
        Case(
            "W5",
            f"COG output, synthetic {side}x{side}x3 deflate (the W2 input)",
            inp,
            contenders=contenders,
            references=("rioxarray + GDAL COG", "odc-geo", "rdask -j2 GeoTIFF", *before),
            targets=(
                Target(Ref("rdask -j2 COG"), Ref(COG_WHOLE_JOBS), 0.45),
                Target(Ref("rdask -j2 COG"), Ref("rdask -j2 GeoTIFF"), 1.4),
                Target(Ref("rdask -j2 COG", "rss"), None, 400),
                *not_slower,
            ),
            scratch=(gdal_cog,),
        )
    ]


#: W5's whole-job COG contenders other than rdask: its first target divides
#: by the fastest of them.
COG_WHOLE_JOBS = ("rioxarray + GDAL COG", "rioxarray + rio-cogeo", "odc-geo")




def rioxarray_geotiff(ctx: Context, inp: Path) -> Path:
    """The rioxarray -j2 contender's GeoTIFF of ``inp``, made once (untimed) and cached.

    W5's conversion-only rows read it.  A manifest (``<file>.json``) records
    the command and the input's size and mtime; a mismatch remakes it.  If
    the command fails the path is returned anyway (the rows reading it then
    fail with the reason in their log).
    """
    out = ctx.workdir / "inputs" / f"{inp.stem}-rioxarray.tif"
    argv = rioxarray_plain(ctx, inp, 2, 0).command(out)
    stat = inp.stat()
    stamp = {"argv": argv[1:], "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns}
    manifest = out.with_name(out.name + ".json")
    try:
        cached = json.loads(manifest.read_text())
    except (OSError, ValueError):
        cached = None
    if out.exists() and cached == {**stamp, "size_bytes": out.stat().st_size}:
        ctx.log(f"  input {out.name}: cached, {out.stat().st_size / 2**20:.0f} MB")
        ctx.inputs[out.name] = {
            "from": inp.name,
            "size_bytes": out.stat().st_size,
            "generation_seconds": None,
        }
        return out
    ctx.log(f"  input {out.name}: the rioxarray -j2 GeoTIFF of {inp.name} (untimed)")
    manifest.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        lines = (proc.stderr or proc.stdout or "no output").strip().splitlines()
        ctx.log(f"  ! could not make {out.name} ({proc.returncode}): {lines[-1]}")
        return out
    manifest.write_text(json.dumps({**stamp, "size_bytes": out.stat().st_size}, indent=1))
    ctx.log(f"  input {out.name}: made in {seconds:.1f} s, {out.stat().st_size / 2**20:.0f} MB")
    ctx.inputs[out.name] = {
        "from": inp.name,
        "size_bytes": out.stat().st_size,
        "generation_seconds": seconds,
    }
    return out



