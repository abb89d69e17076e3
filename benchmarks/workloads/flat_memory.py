"""W9, flat memory: one repeated tile at two sizes >= 30x apart (one > RAM), -j2."""

from __future__ import annotations

from dataclasses import replace

import checks
import psutil
from context import Context
from model import Case, Ref, Target
from registry import workload
from rows import rdask

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



