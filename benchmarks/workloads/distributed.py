"""W4, distributed: W2 on a 2-process LocalCluster vs threads."""

from __future__ import annotations

from context import Context, w2_input
from model import Case, Ref, Target
from registry import workload
from rows import rdask


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



