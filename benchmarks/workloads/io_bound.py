"""W2, I/O- and compression-bound: reverse-bands, 0 iterations, -j2."""

from __future__ import annotations

from context import Context, w2_input
from model import Case, Ref, Target
from registry import workload
from rows import (
    GDAL_DEFLATE_DEFAULTS,
    GDAL_DEFLATE_NOTE,
    RDASK_DEFLATE_NOTE,
    docs_program,
    gdal_copy,
    rdask,
    rioxarray_plain,
    with_baseline,
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



