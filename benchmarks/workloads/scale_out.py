"""W7, scale-out: W2 on a 2-worker cluster without shared files, per output mode (root, .venv)."""

from __future__ import annotations

from context import Context, w2_input
from model import Case
from registry import workload


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



