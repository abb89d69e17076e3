"""``rdask info INPUT``: size, dtype, bands, blocks and the chunk plan."""

from __future__ import annotations

import click

from rdask.cli.options import chunk_mb_option, verbosity_options
from rdask.writeoptions import field_default


@click.command()
@verbosity_options
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@chunk_mb_option("Target chunk size in MB (default 4, what a threaded run plans).")
@click.option("--blocksize", type=click.IntRange(min=16), default=field_default("blocksize"),
              show_default=True,
              help="Output tile size the chunks align to.")
def info(inputs, chunk_mb, blocksize):
    """Describe INPUT and the chunk plan rdask would use."""
    # Imported here, not at the top: `rdask --help` must not pay for GDAL,
    # numba and dask (~0.4 s measured).
    from rdask.io.paths import redact
    from rdask.plan import DEFAULT_CHUNK_MB
    from rdask.recipe import open_recipe

    recipe = open_recipe(list(inputs) if len(inputs) > 1 else inputs[0],
                         chunk_mb=chunk_mb or DEFAULT_CHUNK_MB, tile=blocksize)
    meta = recipe.meta
    t = meta.transform
    nb, h, w = recipe.shape
    chunks = len(recipe.plan.chunks[1]) * len(recipe.plan.chunks[2])
    rows = [
        ("path", ", ".join(redact(p) for p in inputs)),
        ("size", f"{w} x {h} px, {nb} band{'s' if nb != 1 else ''}"),
        ("dtype", str(recipe.dtype)),
        ("nodata", str(meta.nodata)),
        ("crs", meta.crs.to_string() if meta.crs else "none"),
        ("transform", ", ".join(repr(v) for v in t.to_gdal())),
        ("block shape", f"{recipe.block[0]} x {recipe.block[1]} (y x)"),
        ("mask", "per-dataset" if recipe.source.per_dataset_mask else "none/nodata"),
        ("chunk plan", recipe.plan.describe()),
        ("chunk size", f"{recipe.nbytes / max(1, chunks) / 1e6:.1f} MB average"),
    ]
    if any(b.description for b in meta.bands):
        rows.append(("descriptions", ", ".join(b.description or "-" for b in meta.bands)))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k.ljust(width)}  {v}")
