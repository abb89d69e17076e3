"""W3, out-of-core: the W2 recipe at 32768^2 (4x the pixels), -j2."""

from __future__ import annotations

from context import Context
from model import Case, Ref, Target
from registry import workload
from rows import docs_program, rdask


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



