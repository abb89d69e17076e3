"""W1, compute-bound: reverse-bands with 2000 iterations/value, -j1 vs -j2."""

from __future__ import annotations

from pathlib import Path

from context import RGB_BYTE, Context
from model import Case, Ref, Target
from registry import workload
from rows import docs_program, rdask


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



