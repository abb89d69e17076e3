"""Contender rows shared by the workloads: the docs' program, plain
rioxarray, rdask itself (and an earlier rdask), GDAL's tools, the COG and
neighbourhood contenders, each as a :class:`~model.Contender` or an argv."""

from __future__ import annotations

from pathlib import Path

import checks
from context import CONTENDERS, Context
from machine import GDALDEM
from model import OUT, Contender, Ref, Target


def docs_program(
    ctx: Context,
    inp: Path,
    jobs: int,
    iterations: int,
    *,
    blocksize: int = 512,
    compress: str | None = "deflate",
    kernel: str | None = None,
) -> Contender:
    """The docs' ``thread_pool_executor.py``; ``compress=None`` keeps the input's.

    ``kernel`` forces a kernel backend (``--kernel``, see
    ``contenders/common.py``); the default runs rdask's own kernel function
    (the numpy copy for 0 iterations).  A forced kernel is named in the
    contender's name, e.g. ``docs -j2 (cython kernel)``.
    """
    extra = ("--compress", compress) if compress else ()
    extra += ("--kernel", kernel) if kernel else ()
    argv = (
        ctx.python,
        str(CONTENDERS / "docs_program.py"),
        str(inp),
        OUT,
        "-j",
        str(jobs),
        "--iterations",
        str(iterations),
        "--blocksize",
        str(blocksize),
        *extra,
    )
    expect = checks.band_order("reversed", block=blocksize, compress=compress or checks.ANY)
    label = {None: "", "cython": " (Cython kernel)"}.get(kernel, f" ({kernel} kernel)")
    return Contender(f"docs -j{jobs}{label}", argv, expect)


def rioxarray_plain(ctx: Context, inp: Path, jobs: int, iterations: int) -> Contender:
    """rioxarray + dask threads, chunks of 2048 px, DEFLATE output tiled 512."""
    argv = (
        ctx.python,
        str(CONTENDERS / "rioxarray_plain.py"),
        str(inp),
        OUT,
        "-j",
        str(jobs),
        "--iterations",
        str(iterations),
        "--compress",
        "deflate",
        "--blocksize",
        "512",
    )
    expect = checks.band_order("reversed", block=512, compress="deflate")
    return Contender(f"rioxarray -j{jobs}", argv, expect)


def rdask(
    ctx: Context,
    inp: Path,
    jobs: int | None,
    iterations: int,
    *,
    scheduler: str | None = None,
    blocksize: int | None = None,
    extra: tuple[str, ...] = (),
    name: str | None = None,
    check: checks.Check | None = None,
    notes: tuple[str, ...] = (),
) -> Contender:
    """The rdask CLI as users run it (default output: DEFLATE, tiled 512).

    ``jobs=None`` leaves ``-j`` out (the scheduler decides); ``scheduler``
    adds ``--scheduler``, e.g. ``local:2``; ``blocksize`` adds
    ``--blocksize`` (output tile size); ``extra`` are more options (e.g.
    ``("--driver", "COG")`` or :data:`GDAL_DEFLATE_DEFAULTS`).  ``name``
    replaces the default name (``rdask -jN`` / ``rdask SCHEDULER``) and
    ``check`` the default check (bands reversed, tiled, DEFLATE).
    """
    argv = [ctx.rdask, "run", "reverse-bands", str(inp), OUT]
    argv += ["-j", str(jobs)] if jobs is not None else []
    argv += ["--kernel-arg", f"iterations={iterations}", "--overwrite", "--no-progress"]
    argv += ["--scheduler", scheduler] if scheduler else []
    argv += ["--blocksize", str(blocksize)] if blocksize else []
    argv += list(extra)
    name = name or (f"rdask {scheduler}" if scheduler else f"rdask -j{jobs}")
    expect = check or checks.band_order("reversed", block=blocksize or 512, compress="deflate")
    return Contender(name, tuple(argv), expect, notes=notes)


def rdask_baseline(ctx: Context, row: Contender, name: str) -> Contender:
    """``row`` (an rdask contender) run with ``ctx.baseline``'s rdask, as ``name``.

    Same argv, with ``PYTHONPATH`` set to the baseline checkout (and its
    own console script if its entry point differs from the installed one);
    its check also proves where the script imported rdask from.
    """
    base = ctx.baseline
    assert base is not None
    argv = row.argv if base.script is None else (str(base.script), *row.argv[1:])
    return Contender(
        name,
        argv,
        checks.loads_from(row.check, argv, dict(base.env), base.path),
        notes=(f"{row.name}'s command with rdask {base.rev} (commit {base.commit[:12]})",),
        env=base.env,
    )


def with_baseline(
    ctx: Context, contenders: tuple[Contender, ...], row: str, name: str
) -> tuple[tuple[Contender, ...], tuple[str, ...], tuple[Target, ...]]:
    """Contenders, extra references and targets when ``ctx.baseline`` is set.

    Without a baseline, ``contenders`` and nothing else.  With one, a row
    ``name`` runs contender ``row``'s command with the baseline rdask, right
    after it, and is a reference column; the target is ``row`` wall /
    ``name`` wall <= 1.05 (not slower than before).
    """
    if ctx.baseline is None:
        return contenders, (), ()
    at = next(i for i, c in enumerate(contenders) if c.name == row)
    before = rdask_baseline(ctx, contenders[at], name)
    return (
        (*contenders[: at + 1], before, *contenders[at + 1 :]),
        (name,),
        (Target(Ref(row), Ref(name), 1.05),),
    )


#: rdask options that replace its DEFLATE defaults (horizontal predictor,
#: libdeflate level 1; ``default_compression_options`` in ``rdask/writeoptions.py``)
#: with GDAL's (no predictor, level 6): the like-for-like output of the other
#: contenders.
GDAL_DEFLATE_DEFAULTS = ("--co", "PREDICTOR=1", "--co", "ZLEVEL=6")

#: The note of a row run with :data:`GDAL_DEFLATE_DEFAULTS`.
GDAL_DEFLATE_NOTE = (
    "--co PREDICTOR=1 --co ZLEVEL=6: GDAL's DEFLATE defaults (no predictor, level 6), as the "
    "other contenders write, instead of rdask's (predictor, libdeflate level 1)"
)


#: What rdask's halo kernels read, when its ``-v`` log does not say.
HALO_NOTE = "direct halo reads (file-backed)"


def rdask_kernel(
    ctx: Context,
    name: str,
    kernel: str,
    inp: Path,
    check: checks.Check,
    *,
    jobs: int = 2,
    kernel_args: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> Contender:
    """``rdask -v run KERNEL IN OUT -j N [--kernel-arg A=V ...] --overwrite --no-progress``.

    ``kernel`` may be a chain (``"focal-mean radius=2 | slope"``).  ``-v``
    only adds INFO lines to the log; the line naming the halo path, when
    rdask logs one, becomes the row's note (else :data:`HALO_NOTE`).
    ``extra`` are more options, e.g. :data:`GDAL_DEFLATE_DEFAULTS` (then
    :data:`GDAL_DEFLATE_NOTE` is the row's note instead of the halo path).
    """
    argv = [ctx.rdask, "-v", "run", kernel, str(inp), OUT, "-j", str(jobs)]
    argv += [arg for pair in kernel_args for arg in ("--kernel-arg", pair)]
    argv += ["--overwrite", "--no-progress", *extra]
    if extra == GDAL_DEFLATE_DEFAULTS:
        return Contender(name, tuple(argv), check, notes=(GDAL_DEFLATE_NOTE,))
    return Contender(name, tuple(argv), check, notes=(HALO_NOTE,), log_note="halo path")


def gdaldem_slope(inp: Path, out: Path | str = OUT, *, blocksize: int = 512) -> list[str]:
    """argv of ``gdaldem slope`` to a tiled DEFLATE GeoTIFF, compressing on all cores."""
    return [
        GDALDEM,
        "slope",
        str(inp),
        str(out),
        "-of",
        "GTiff",
        "-co",
        "TILED=YES",
        "-co",
        f"BLOCKXSIZE={blocksize}",
        "-co",
        f"BLOCKYSIZE={blocksize}",
        "-co",
        "COMPRESS=DEFLATE",
        "-co",
        "NUM_THREADS=ALL_CPUS",
    ]


def xrspatial_slope(ctx: Context, inp: Path, jobs: int, check: checks.Check) -> Contender:
    """xarray-spatial's ``slope`` on rioxarray + dask threads (chunks of 2048 px)."""
    argv = (ctx.python, str(CONTENDERS / "xrspatial_slope.py"), str(inp), OUT, "-j", str(jobs))
    argv += ("--chunk", "2048", "--compress", "deflate", "--blocksize", "512")
    notes = (
        "xarray-spatial's own float64 output kept (its chunks are float32, the dask array is "
        "declared float64); nodata not masked (open_rasterio without masked=True)",
    )
    return Contender("xarray-spatial", argv, check, notes=notes)


def dask_image_focal(
    ctx: Context, inp: Path, jobs: int, radius: int, check: checks.Check
) -> Contender:
    """dask-image's ``uniform_filter`` on rioxarray + dask threads (chunks of 2048 px)."""
    argv = (ctx.python, str(CONTENDERS / "dask_image_focal.py"), str(inp), OUT, "-j", str(jobs))
    argv += ("--radius", str(radius), "--chunk", "2048", "--compress", "deflate")
    argv += ("--blocksize", "512")
    notes = ("averages nodata in as a value and reflects at the raster edge (scipy's default)",)
    return Contender("dask-image", argv, check, notes=notes)


def rdask_two_steps(
    ctx: Context, inp: Path, steps: tuple[str, ...], jobs: int, check: checks.Check
) -> Contender:
    """The steps of a chain as separate ``rdask run`` commands through intermediate files."""
    argv = (ctx.python, str(CONTENDERS / "rdask_two_steps.py"), str(inp), OUT)
    argv += ("--rdask", ctx.rdask, "-j", str(jobs))
    argv += tuple(arg for step in steps for arg in ("--step", step))
    notes = (
        f"{len(steps)} rdask processes one after the other, intermediate DEFLATE GeoTIFF; "
        "peak RSS is the larger one's",
    )
    return Contender("rdask two steps", argv, check, notes=notes)


def rioxarray_cog(ctx: Context, inp: Path, tool: str) -> tuple[str, ...]:
    """argv: the rioxarray contender's GeoTIFF, then ``tool`` (gdal, rio-cogeo) to a COG."""
    return (
        ctx.python,
        str(CONTENDERS / "rioxarray_cog.py"),
        str(inp),
        OUT,
        "-j",
        "2",
        "--iterations",
        "0",
        "--compress",
        "deflate",
        "--blocksize",
        "512",
        "--tool",
        tool,
    )


def cog_convert(ctx: Context, inp: Path, tool: str, out: Path | str = OUT) -> list[str]:
    """argv: ``inp`` converted to a DEFLATE COG (tiles 512, nearest overviews) by ``tool``."""
    return [
        ctx.python,
        str(CONTENDERS / "cog_convert.py"),
        str(inp),
        str(out),
        "--tool",
        tool,
        "--compress",
        "deflate",
        "--blocksize",
        "512",
    ]


def odc_cog(ctx: Context, inp: Path) -> tuple[str, ...]:
    """argv: odc-geo's ``save_cog_with_dask`` of the reversed bands, -j2, chunks 512."""
    return (
        ctx.python,
        str(CONTENDERS / "odc_cog.py"),
        str(inp),
        OUT,
        "-j",
        "2",
        "--iterations",
        "0",
        "--compress",
        "deflate",
        "--blocksize",
        "512",
        "--chunk",
        "512",
    )


def gdal_copy(ctx: Context, inp: Path) -> Contender:
    """GDAL CreateCopy to DEFLATE tiled 512 on all cores: the I/O floor (no reversal)."""
    argv = (
        ctx.python,
        str(CONTENDERS / "gdal_copy.py"),
        str(inp),
        OUT,
        "--compress",
        "deflate",
        "--blocksize",
        "512",
        "--threads",
        "ALL_CPUS",
    )
    expect = checks.band_order("same", block=512, compress="deflate")
    return Contender("gdal copy", argv, expect)


# -- registry -----------------------------------------------------------------


#: The note of rdask's rows whose DEFLATE output matters (W2, W5).
RDASK_DEFLATE_NOTE = "rdask's DEFLATE defaults: PREDICTOR=2, libdeflate level 1"
