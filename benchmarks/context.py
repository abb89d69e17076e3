"""The run's context: where inputs and outputs go, which rdask and Python
run, and the synthetic inputs every workload shares (generated once, cached)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datagen
from baseline import Baseline

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONTENDERS = HERE / "contenders"
RGB_BYTE = REPO / "tests" / "data" / "RGB.byte.tif"


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



def w2_input(ctx: Context) -> Path:
    """The W2 raster (shared by W2 and W4)."""
    return ctx.synthetic("w2", ctx.side(16384, quick=4096))

