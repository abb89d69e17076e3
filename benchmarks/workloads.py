"""The workload registry: inputs, contenders, checks and targets.

A workload is a function decorated with :func:`workload` that takes the
run's :class:`Context` and returns one or more :class:`Case` objects; each
case is one input and one results table.  A case lists its contenders (name
-> argv, with ``{out}`` where the output path goes, plus the check of their
output), the contenders whose wall time the others are divided by
(``references``), and its targets as ``numerator / denominator <= limit``
tuples (:class:`Target`).

To add a workload (say W5, COG output), write one more decorated function
below; ``run.py`` picks it up from :data:`REGISTRY`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import checks
import datagen

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONTENDERS = HERE / "contenders"
RGB_BYTE = REPO / "tests" / "data" / "RGB.byte.tif"

#: Placeholder for the output path in a contender's argv.
OUT = "{out}"

#: Metrics a :class:`Ref` can name: median wall, median user+sys, peak RSS of
#: the largest process, sampled peak RSS of the process tree (MB), the CPU
#: limit (median user+sys divided by the number of cores: the wall time of a
#: perfectly parallel run), and the median share (%) of the machine's CPU
#: that other processes used during the runs.
METRICS = ("wall", "cpu", "rss", "tree_rss", "cpu_limit", "others")


@dataclass(frozen=True)
class Ref:
    """A measured value: ``metric`` of ``contender`` in ``case`` (default: this case)."""

    contender: str
    metric: str = "wall"
    case: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose from {METRICS}")

    def label(self) -> str:
        """E.g. ``rdask -j2 wall`` or ``W2:rdask -j2 rss``."""
        where = f"{self.case}:" if self.case else ""
        return f"{where}{self.contender} {self.metric}"


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
    """One program under test: a display name, its argv and its output check."""

    name: str
    argv: tuple[str, ...]
    check: checks.Check

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


@dataclass
class Context:
    """Run-wide settings the workload functions build their cases from."""

    workdir: Path
    quick: bool = False
    scale: float = 1.0
    python: str = sys.executable
    rdask: str = str(REPO / ".venv" / "bin" / "rdask")
    log: Callable[[str], None] = print
    inputs: dict[str, dict] = field(default_factory=dict)
    """What each synthetic input cost to generate (for the JSON report)."""

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


# -- contenders ---------------------------------------------------------------


def docs_program(
    ctx: Context,
    inp: Path,
    jobs: int,
    iterations: int,
    *,
    blocksize: int = 512,
    compress: str | None = "deflate",
) -> Contender:
    """The docs' ``thread_pool_executor.py``; ``compress=None`` keeps the input's."""
    extra = ("--compress", compress) if compress else ()
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
    return Contender(f"docs -j{jobs}", argv, expect)


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
) -> Contender:
    """The rdask CLI as users run it (default output: DEFLATE, tiled 512).

    ``jobs=None`` leaves ``-j`` out (the scheduler decides); ``scheduler``
    adds ``--scheduler``, e.g. ``local:2``.
    """
    argv = [ctx.rdask, "run", "reverse-bands", str(inp), OUT]
    argv += ["-j", str(jobs)] if jobs is not None else []
    argv += ["--kernel-arg", f"iterations={iterations}", "--overwrite", "--no-progress"]
    argv += ["--scheduler", scheduler] if scheduler else []
    name = f"rdask {scheduler}" if scheduler else f"rdask -j{jobs}"
    expect = checks.band_order("reversed", block=512, compress="deflate")
    return Contender(name, tuple(argv), expect)


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


@dataclass(frozen=True)
class Workload:
    """A registered workload."""

    id: str
    summary: str
    build: WorkloadFn


#: Workloads by id, in the order they run.
REGISTRY: dict[str, Workload] = {}


def workload(wid: str, summary: str) -> Callable[[WorkloadFn], WorkloadFn]:
    """Register the decorated function as workload ``wid``."""

    def register(fn: WorkloadFn) -> WorkloadFn:
        REGISTRY[wid] = Workload(wid, summary, fn)
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
    """A W1 case: docs program and rdask at -j1 and -j2 on ``inp``."""
    docs = (
        docs_program(ctx, inp, j, 2000, blocksize=docs_blocksize, compress=docs_compress)
        for j in (1, 2)
    )
    return Case(
        cid,
        f"compute-bound, {title}",
        inp,
        contenders=(*docs, *(rdask(ctx, inp, j, 2000) for j in (1, 2))),
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
    return [
        Case(
            "W2",
            f"I/O-bound, synthetic {side}x{side}x3 deflate",
            inp,
            contenders=(
                docs_program(ctx, inp, 2, 0),
                rioxarray_plain(ctx, inp, 2, 0),
                rdask(ctx, inp, 2, 0),
                gdal_copy(ctx, inp),
            ),
            references=("docs -j2", "rioxarray -j2", "gdal copy"),
            targets=(
                Target(Ref("rdask -j2"), Ref("docs -j2"), 0.62),
                Target(Ref("rdask -j2"), Ref("rioxarray -j2"), 0.60),
                Target(Ref("rdask -j2"), Ref("rdask -j2", "cpu_limit"), 1.10),
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
