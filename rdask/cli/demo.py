"""``rdask demo``: the rasterio docs' workload with 1 and N threads."""

from __future__ import annotations

import os
import tempfile

import click

from rdask.cli.options import verbosity_options


@click.command()
@verbosity_options
@click.option("-j", "--workers", type=click.IntRange(min=1), default=None,
              help="Threads for the parallel run. Default: CPU count.")
@click.option("--iterations", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Synthetic work per value (the docs use 2000).")
@click.option("--input", "input_", type=click.Path(), default=None,
              help="Raster to use instead of the generated sample.")
def demo(workers, iterations, input_):
    """Run reverse-bands (iterations=2000) with -j 1 and -j N and print the speedup."""
    from rdask.pipeline import process
    from rdask.sample import make_sample

    n = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="rdask-demo-") as tmp:
        src = input_ or make_sample(os.path.join(tmp, "sample.tif"))
        click.echo(f"input: {src}")
        # Warm up once (numba's cached kernel, GDAL's drivers) so that -j 1
        # is not charged for loading them; then the best of two runs each.
        process(src, os.path.join(tmp, "warm.tif"), "reverse-bands", kernel_args={"iterations": 0})
        times = {}
        for j in (1, n):
            out = os.path.join(tmp, f"out-j{j}.tif")
            runs = [
                process(src, out, "reverse-bands", kernel_args={"iterations": iterations},
                        workers=j, overwrite=True)
                for _ in range(2)
            ]
            r = min(runs, key=lambda res: res.seconds)
            times[j] = r.seconds
            click.echo(f"-j {j}: {r.seconds:6.2f} s  ({r.summary()})")
        if n > 1:
            click.echo(f"speedup -j {n} over -j 1: {times[1] / times[n]:.2f}x on {os.cpu_count()} cores")
