"""The workload registry: inputs, contenders, checks and targets.

A workload is a function decorated with :func:`workload` that takes the
run's :class:`Context` and returns one or more :class:`Case` objects; each
case is one input and one results table.  A case lists its contenders (name
-> argv, with ``{out}`` where the output path goes, plus the check of their
output), the contenders whose wall time the others are divided by
(``references``), and its targets as ``numerator / denominator <= limit``
tuples (:class:`Target`).

To add a workload, write one more decorated function below; ``run.py``
picks it up from :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import checks
import datagen
import grids
import psutil
import rasterio
import rasterio.warp
from baseline import Baseline
from grids import Grid
from machine import GDALDEM
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONTENDERS = HERE / "contenders"
RGB_BYTE = REPO / "tests" / "data" / "RGB.byte.tif"


#: Placeholder for the output path in a contender's argv.
OUT = "{out}"

#: Metrics a :class:`Ref` can name: median wall, median user+sys, peak RSS of
#: the largest process, sampled peak RSS of the process tree (MB), the CPU
#: limit (median user+sys divided by the number of cores: the wall time of a
#: perfectly parallel run), the median share (%) of the machine's CPU
#: that other processes used during the runs, and nanoseconds of wall time
#: per pixel (``ns_px``: the fastest run's wall, less the fastest wall of the
#: case's ``startup`` row if it has one, divided by the contender's ``pixels``).
METRICS = ("wall", "cpu", "rss", "tree_rss", "cpu_limit", "others", "ns_px")


@dataclass(frozen=True)
class Ref:
    """A measured value: ``metric`` of ``contender`` in ``case`` (default: this case).

    ``contender`` may be a tuple of names: the value is then the smallest
    ``metric`` among those of them that were timed (the fastest, for
    ``wall``), e.g. the best of several ways to do the same job.
    """

    contender: str | tuple[str, ...]
    metric: str = "wall"
    case: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose from {METRICS}")

    @property
    def names(self) -> tuple[str, ...]:
        """The contender names this refers to (one, or the group)."""
        return (self.contender,) if isinstance(self.contender, str) else self.contender

    def label(self) -> str:
        """E.g. ``rdask -j2 wall``, ``W2:rdask -j2 rss`` or ``best of (a | b) wall``."""
        where = f"{self.case}:" if self.case else ""
        if isinstance(self.contender, str):
            return f"{where}{self.contender} {self.metric}"
        return f"{where}best of ({' | '.join(self.contender)}) {self.metric}"


@dataclass(frozen=True)
class Target:
    """``num / den`` (or ``num`` alone when ``den`` is None) compared with ``limit``."""

    num: Ref
    den: Ref | None
    limit: float
    op: str = "<="

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ValueError(f"unknown comparison {self.op!r}")

    def label(self) -> str:
        """E.g. ``rdask -j2 wall / docs -j2 wall <= 1.05``."""
        ratio = self.num.label() + (f" / {self.den.label()}" if self.den else "")
        return f"{ratio} {self.op} {self.limit:g}"

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value <= self.limit if self.op == "<=" else value >= self.limit


@dataclass(frozen=True)
class Contender:
    """One program under test: a display name, its argv and its output check.

    ``notes`` are printed under the table (what the row means, what the
    program does its own way).  ``log_note`` is a text to look for in the
    log of the check run: the last line holding it is printed as a note
    instead of ``notes`` (e.g. ``"halo path"`` in rdask's ``-v`` log).
    ``env`` is added to the run's environment (e.g. ``PYTHONPATH`` of a
    baseline rdask).  ``pixels`` (of the contender's own input) enables the
    ``ns_px`` metric.  ``runs_per_round`` runs a cheap contender several
    times per timed round, so its median is steadier.
    """

    name: str
    argv: tuple[str, ...]
    check: checks.Check
    notes: tuple[str, ...] = ()
    log_note: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    pixels: int | None = None
    runs_per_round: int = 1

    def command(self, out: Path) -> list[str]:
        """The argv with the output path filled in."""
        return [str(out) if arg == OUT else arg for arg in self.argv]


@dataclass(frozen=True)
class Case:
    """One input, the contenders run on it, and the targets they must meet."""

    id: str
    title: str
    input: Path
    contenders: tuple[Contender, ...]
    references: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()
    scratch: tuple[checks.Reference, ...] = ()
    """Reference outputs the checks make; deleted after the check runs
    unless ``--keep-outputs``."""
    startup: str | None = None
    """A contender whose fastest wall time is the fixed cost (interpreter,
    imports, opening files) that ``ns_px`` subtracts before dividing."""


@dataclass
class Context:
    """Run-wide settings the workload functions build their cases from."""

    workdir: Path
    quick: bool = False
    scale: float = 1.0
    python: str = sys.executable
    # The rdask installed beside this Python (benchmarks/.venv from `make
    # bench`: rdask and the contenders, none of the test tools).
    rdask: str = str(Path(sys.executable).parent / "rdask")
    log: Callable[[str], None] = print
    inputs: dict[str, dict] = field(default_factory=dict)
    """What each synthetic input cost to generate (for the JSON report)."""
    baseline: Baseline | None = None
    """An earlier rdask (``--baseline REV``): W2 and W5 time it beside rdask."""
    test_python: str | None = None
    """W7's Python: the test venv's (boto3, moto, obstore); None: ``w7.test_python()``."""

    def side(self, full: int, quick: int, block: int = 512) -> int:
        """Raster side for this run: ``quick`` or ``full``, scaled, whole blocks."""
        base = (quick if self.quick else full) * self.scale
        return max(block, round(base / block) * block)

    def synthetic(self, name: str, side: int) -> Path:
        """Path of the cached synthetic raster ``name`` (generated if needed)."""
        path = self.workdir / "inputs" / f"{name}-{side}.tif"
        if path.name in self.inputs:  # already ensured in this run
            return path
        self.log(f"  input {path.name}: {side}x{side}x3 uint8, tiled 512, deflate")
        made = datagen.ensure_raster(path, datagen.Recipe(side=side))
        how = "cached" if made.seconds is None else f"generated in {made.seconds:.1f} s"
        self.log(f"  input {path.name}: {how}, {made.size_bytes / 2**20:.0f} MB")
        self.inputs[path.name] = {
            "side": side,
            "size_bytes": made.size_bytes,
            "generation_seconds": made.seconds,
        }
        return path

    def dem(
        self, name: str, side: int, kind: type[datagen.DemRecipe] = datagen.DemRecipe
    ) -> tuple[Path, datagen.DemRecipe]:
        """Path and recipe of the cached synthetic DEM ``name`` (generated if needed).

        ``kind`` is the recipe class: W6's :class:`datagen.DemRecipe` (10 m
        pixels) or W8's :class:`datagen.UtmDemRecipe` (30 m, centred on its
        UTM zone).
        """
        recipe = kind(side=side)
        path = self.workdir / "inputs" / f"{name}-{side}.tif"
        if path.name in self.inputs:
            return path, recipe
        pixel = recipe.transform().a
        self.log(
            f"  input {path.name}: {side}x{side} float32 DEM, {pixel:g} m pixels, tiled 512, "
            f"deflate + predictor 3, nodata {recipe.nodata:g} in the top-left corner"
        )
        made = datagen.ensure_raster(path, recipe)
        how = "cached" if made.seconds is None else f"generated in {made.seconds:.1f} s"
        self.log(f"  input {path.name}: {how}, {made.size_bytes / 2**20:.0f} MB")
        self.inputs[path.name] = {
            "side": side,
            "size_bytes": made.size_bytes,
            "generation_seconds": made.seconds,
        }
        return path, recipe

    def repeated_tile(self, name: str, side: int) -> tuple[Path, datagen.TileRecipe]:
        """Path and recipe of W9's one-repeated-tile raster ``name`` (made if needed)."""
        recipe = datagen.TileRecipe(side=side)
        path = self.workdir / "inputs" / f"{name}-{side}.tif"
        if path.name in self.inputs:
            return path, recipe
        made = datagen.ensure_raster(path, recipe)
        how = "cached" if made.seconds is None else f"made in {made.seconds:.2f} s"
        self.log(
            f"  input {path.name}: {side}x{side} uint8 ({side * side / 1e9:.2f} GB of pixels), "
            f"one {recipe.block}px DEFLATE tile repeated, BigTIFF; {how}, "
            f"{made.size_bytes / 2**20:.1f} MB on disk"
        )
        self.inputs[path.name] = {
            "side": side,
            "size_bytes": made.size_bytes,
            "generation_seconds": made.seconds,
        }
        return path, recipe


# -- contenders ---------------------------------------------------------------


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
#: libdeflate level 1; ``default_compression_options`` in ``rdask/outputs/options.py``)
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

#: A workload function: the run's context in, its cases out.
WorkloadFn = Callable[[Context], list[Case]]


#: A workload with its own runner (W7): the run's context, timed runs and
#: seconds per run in; its JSON record (printed as it goes) out.
RunnerFn = Callable[[Context, int, float], dict]


@dataclass(frozen=True)
class Workload:
    """A registered workload: ``build`` makes harness cases, or ``runner``
    (when set) runs the whole workload itself."""

    id: str
    summary: str
    build: WorkloadFn
    runner: RunnerFn | None = None


#: Workloads by id, in the order they run.
REGISTRY: dict[str, Workload] = {}


def workload(
    wid: str, summary: str, runner: RunnerFn | None = None
) -> Callable[[WorkloadFn], WorkloadFn]:
    """Register the decorated function as workload ``wid`` (see :class:`Workload`)."""

    def register(fn: WorkloadFn) -> WorkloadFn:
        REGISTRY[wid] = Workload(wid, summary, fn, runner)
        return fn

    return register


def w2_input(ctx: Context) -> Path:
    """The W2 raster (shared by W2 and W4)."""
    return ctx.synthetic("w2", ctx.side(16384, quick=4096))


@workload("W1", "compute-bound: reverse-bands with 2000 iterations/value, -j1 vs -j2")
def compute_bound(ctx: Context) -> list[Case]:
    """Synthetic raster and RGB.byte.tif; docs program vs rdask at -j1 and -j2.

    On RGB.byte.tif the docs program runs exactly as documented (128 px
    tiles, the input's compression, i.e. none), for comparison with the
    docs' own timings.
    """
    side = ctx.side(2048, quick=1024)
    synthetic = ctx.synthetic("w1", side)
    return [
        _compute_case(ctx, "W1", f"synthetic {side}x{side}x3", synthetic, 512, "deflate"),
        _compute_case(ctx, "W1-rgb", "RGB.byte.tif 791x718x3 (the docs' input)", RGB_BYTE, 128),
    ]


def _compute_case(
    ctx: Context,
    cid: str,
    title: str,
    inp: Path,
    docs_blocksize: int,
    docs_compress: str | None = None,
) -> Case:
    """A W1 case: docs program and rdask at -j1 and -j2 on ``inp``.

    The docs program runs rdask's own kernel function, so the targets
    compare the pipelines; a ``docs -j2 (Cython kernel)`` row runs the docs'
    own ``compute``, for the docs' numbers.  rdask writes tiles of the docs'
    size (``--blocksize``).
    """
    docs = tuple(
        docs_program(ctx, inp, j, 2000, blocksize=docs_blocksize, compress=docs_compress)
        for j in (1, 2)
    )
    cython = docs_program(
        ctx, inp, 2, 2000, blocksize=docs_blocksize, compress=docs_compress, kernel="cython"
    )
    rdasks = tuple(
        rdask(ctx, inp, j, 2000, blocksize=None if docs_blocksize == 512 else docs_blocksize)
        for j in (1, 2)
    )
    return Case(
        cid,
        f"compute-bound, {title}",
        inp,
        contenders=(*docs, cython, *rdasks),
        references=("docs -j1", "docs -j2"),
        targets=(
            Target(Ref("rdask -j2"), Ref("docs -j2"), 1.05),
            Target(Ref("rdask -j1"), Ref("rdask -j2"), 1.9, ">="),
        ),
    )


@workload("W2", "I/O- and compression-bound: reverse-bands, 0 iterations, -j2")
def io_bound(ctx: Context) -> list[Case]:
    """The 16384^2 raster through every contender, and GDAL's own copy as the floor."""
    inp = w2_input(ctx)
    side = ctx.side(16384, quick=4096)
    contenders, before, not_slower = with_baseline(
        ctx,
        (
            docs_program(ctx, inp, 2, 0),
            rioxarray_plain(ctx, inp, 2, 0),
            rdask(ctx, inp, 2, 0, notes=(RDASK_DEFLATE_NOTE,)),
            rdask(
                ctx,
                inp,
                2,
                0,
                extra=GDAL_DEFLATE_DEFAULTS,
                name="rdask -j2 (GDAL deflate defaults)",
                notes=(GDAL_DEFLATE_NOTE,),
            ),
            gdal_copy(ctx, inp),
        ),
        "rdask -j2",
        f"rdask {ctx.baseline.rev}" if ctx.baseline else "",
    )
    return [
        Case(
            "W2",
            f"I/O-bound, synthetic {side}x{side}x3 deflate",
            inp,
            contenders=contenders,
            references=("docs -j2", "rioxarray -j2", "gdal copy", *before),
            targets=(
                Target(Ref("rdask -j2"), Ref("docs -j2"), 0.62),
                Target(Ref("rdask -j2"), Ref("rioxarray -j2"), 0.60),
                Target(Ref("rdask -j2"), Ref("rdask -j2", "cpu_limit"), 1.10),
                *not_slower,
            ),
        )
    ]


@workload("W3", "out-of-core: the W2 recipe at 32768^2 (4x the pixels), -j2")
def out_of_core(ctx: Context) -> list[Case]:
    """Peak memory must not grow with the raster: compare with W2's peak.

    The docs program runs too, as the memory (and time) reference.
    """
    side = ctx.side(32768, quick=8192)
    inp = ctx.synthetic("w3", side)
    return [
        Case(
            "W3",
            f"out-of-core, synthetic {side}x{side}x3 deflate",
            inp,
            contenders=(docs_program(ctx, inp, 2, 0), rdask(ctx, inp, 2, 0)),
            references=("docs -j2",),
            targets=(
                Target(Ref("rdask -j2", "rss"), None, 300),
                Target(Ref("rdask -j2", "rss"), Ref("rdask -j2", "rss", case="W2"), 1.2),
            ),
        )
    ]


@workload("W4", "distributed: W2 on a 2-process LocalCluster vs threads")
def distributed(ctx: Context) -> list[Case]:
    """Run rdask ``--scheduler local:2`` against rdask's threaded ``-j 2`` on the W2 input."""
    inp = w2_input(ctx)
    return [
        Case(
            "W4",
            "distributed, the W2 input",
            inp,
            contenders=(rdask(ctx, inp, 2, 0), rdask(ctx, inp, None, 0, scheduler="local:2")),
            references=("rdask -j2",),
            targets=(Target(Ref("rdask local:2"), Ref("rdask -j2"), 1.3),),
        )
    ]


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

#: The note of rdask's rows whose DEFLATE output matters (W2, W5).
RDASK_DEFLATE_NOTE = "rdask's DEFLATE defaults: PREDICTOR=2, libdeflate level 1"


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


@workload("W6", "neighbourhood kernels on a float32 DEM: slope, focal-mean r=5, a chain; -j2")
def neighbourhood(ctx: Context) -> list[Case]:
    """Halo kernels against gdaldem, xarray-spatial and dask-image, and a chain vs two runs.

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
    ]


# -- W8: reprojection ---------------------------------------------------------------

#: GDAL's warper, from Debian's gdal-bin (GDAL 3.6; rasterio's wheels carry 3.10).
GDALWARP = "/usr/bin/gdalwarp"

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


def _scale_out(ctx: Context, repeat: int, timeout: float) -> dict:
    """W7's runner: ``w7.run_w7`` on the W2 input (see ``benchmarks/w7.py``)."""
    import w7

    return w7.run_w7(w2_input(ctx), ctx.workdir, repeat=repeat, timeout=timeout,
                     python=ctx.test_python, log=ctx.log)


@workload(
    "W7",
    "scale-out: W2 on a 2-worker cluster without shared files, per output mode (root, .venv)",
    runner=_scale_out,
)
def scale_out(ctx: Context) -> list[Case]:
    """No harness cases: W7 runs its modes on one rig itself (``w7.py``'s
    docstring says why); :func:`_scale_out` is its runner."""
    return []


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
    warp = Case(
        "W8-warp",
        f"warp to EPSG:4326 (bilinear), {title}",
        inp,
        contenders=(
            Contender(
                "gdalwarp -et 0",
                tuple(gdalwarp(inp, OUT, geo, 0)),
                checks.adopted_as(
                    exact, checks.warp_sampled(geo, w8_samples(inp, geo), compress="deflate")
                ),
                notes=(f"gdalwarp 3.6 (apt), {exact_note}; {W8_CODEC_NOTE}",),
            ),
            Contender(
                "gdalwarp -et 0.125",
                tuple(gdalwarp(inp, OUT, geo, None)),
                checks.warp_matches(exact, geo, **approx),
                notes=(f"gdalwarp without -et: GDAL's default, {approx_note}",),
            ),
            Contender(
                "odc-geo",
                xr_reproject(ctx, "odc_reproject.py", inp, geo),
                checks.warp_matches(exact, geo, **approx),
                notes=(
                    "xr_reproject(bilinear) on rioxarray chunks of 2048, to_raster; rasterio's "
                    f"reproject per chunk: {approx_note}",
                ),
            ),
            Contender(
                "rioxarray",
                xr_reproject(ctx, "rioxarray_reproject.py", inp, geo),
                checks.warp_matches(exact, geo, **approx),
                notes=(
                    "open_rasterio, .rio.reproject(bilinear, num_threads=2), to_raster: the whole "
                    f"raster in memory; {approx_note}",
                ),
            ),
            Contender(
                "rdask warp",
                tuple(rdask_run(ctx, warp_step(geo), inp, OUT)),
                checks.warp_matches(exact, geo, **same),
            ),
            Contender(
                "rdask warp et=0.125",
                tuple(rdask_run(ctx, warp_step(geo, et=0.125), inp, OUT)),
                checks.warp_matches(exact, geo, **approx),
                notes=(f"et=0.125: {approx_note}, like gdalwarp's default",),
            ),
        ),
        references=("gdalwarp -et 0", "gdalwarp -et 0.125", "odc-geo"),
        targets=(
            Target(Ref("rdask warp"), Ref("gdalwarp -et 0"), 0.7),
            Target(Ref("rdask warp"), Ref("odc-geo"), 0.5),
            Target(Ref("rdask warp", "rss"), None, 400),
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
        if not Path(tool).exists():
            ctx.log(f"  ! {tool} is missing; install GDAL's tools with `make sysdeps` (gdal-bin)")


#: W9's sides (full, quick): the large raster has more pixels than this
#: machine's 24 GiB of RAM, the small one at least :data:`W9_MIN_RATIO`
#: times fewer (320 and 56 tiles across: 32.7x the pixels); the quick
#: sizes are 3/8 of them (120 and 21 tiles across, the same ratio; ~25 s
#: in all on a quiet machine).
W9_LARGE = (163840, 61440)
W9_SMALL = (28672, 10752)

#: Side of W9's start-up run: 2x2 tiles (rdask writes a one-tile raster
#: untiled, which the output check rejects), ~1 ms of work.
W9_STARTUP = 1024

#: W9's smallest allowed ratio of pixels, large / small.
W9_MIN_RATIO = 30


@workload("W9", "flat memory: one repeated tile at two sizes >= 30x apart (one > RAM), -j2")
def flat_memory(ctx: Context) -> list[Case]:
    """The same job on a small and a larger-than-RAM raster: same RSS, same time per pixel.

    ``rdask run reverse-bands IN OUT -j 2`` (0 iterations; one band, so a
    copy) on one band of uint8 in which every 512 px tile is the same
    repetitive tile (``datagen.TileRecipe``): decoding and encoding are
    cheap, so what grows with the number of tiles and chunks shows.  A run
    on a 2x2-tile raster of the same kind measures the fixed cost
    (interpreter, imports, opening); ``ns/px`` is each size's fastest wall
    less the start-up's fastest, per pixel (the fastest: noise only adds).  Targets: large / small peak RSS <= 1.10 and
    large / small ns per pixel <= 1.10.  Outputs (~3 KB per tile: ~290 MB
    at 163840^2) are deleted after every run; the check hashes every
    output tile and decodes each distinct one (``checks.repeated_tile``).
    """
    large = ctx.side(*W9_LARGE)
    small = ctx.side(*W9_SMALL)
    while small > 512 and (large / small) ** 2 < W9_MIN_RATIO:
        small -= 512  # --size-scale rounding must not bring the sizes closer than 30x
    rows, inputs = [], []
    ram = psutil.virtual_memory().total
    sizes = (("start-up", W9_STARTUP, 3), ("small", small, 3), ("large", large, 1))
    for label, side, runs in sizes:
        inp, recipe = ctx.repeated_tile("w9", side)
        inputs.append(inp)
        name = f"rdask {label} {side}^2"
        row = rdask(ctx, inp, 2, 0, name=name, check=checks.repeated_tile(inp, recipe))
        pixels = side * side
        if label == "start-up":
            notes = (
                "2x2 tiles: the fixed cost of a run; its fastest wall is subtracted from the "
                "others' fastest before dividing by their pixels (ns/px)",
            )
            pixels = None
        else:
            notes = (
                f"{pixels / 1e9:.2f} GB of pixels ({pixels / ram:.2f}x this machine's RAM, "
                f"{ram / 2**30:.1f} GiB); input {inp.stat().st_size / 2**20:.1f} MB on disk, "
                "every tile offset pointing at one compressed tile",
            )
        rows.append(replace(row, notes=notes, pixels=pixels, runs_per_round=runs))
    start, lo, hi = (r.name for r in rows)
    ratio = (large / small) ** 2
    return [
        Case(
            "W9",
            f"flat memory, one band of one repeated uint8 tile: {large}^2 "
            f"({large * large / 1e9:.1f} GB of pixels) vs {small}^2 ({ratio:.1f}x fewer pixels)",
            inputs[-1],
            contenders=tuple(rows),
            targets=(
                Target(Ref(hi, "rss"), Ref(lo, "rss"), 1.10),
                Target(Ref(hi, "ns_px"), Ref(lo, "ns_px"), 1.10),
            ),
            startup=start,
        )
    ]


def _preflight(ctx: Context) -> None:
    """Say how to install what W6's contenders need, if it is missing (their rows will fail)."""
    for module, package in (("xrspatial", "xarray-spatial"), ("dask_image", "dask-image")):
        if importlib.util.find_spec(module) is None:
            ctx.log(
                f"  ! {package} is not installed; its row will fail. Install it with: "
                f"{ctx.python} -m pip install -r {HERE / 'requirements.txt'}"
            )
    if not Path(GDALDEM).exists():
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
