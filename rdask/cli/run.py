"""``rdask run KERNEL INPUT... OUTPUT``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from rdask.cli.options import (
    chunk_mb_option,
    flags,
    parse_chain,
    parse_pairs,
    scheduler_option,
    verbosity_options,
    workers_option,
    write_options,
)
from rdask.config import WARP_ERROR_THRESHOLD, WARP_RESAMPLINGS
from rdask.interrupts import JobSignals, job_signals
from rdask.malloc import tune_malloc


@click.command(context_settings={"show_default": True})
@verbosity_options
@click.argument("kernel")
@click.argument("files", nargs=-1, required=True, metavar="INPUT... OUTPUT")
@workers_option
@scheduler_option
@click.option("-a", "--kernel-arg", "kernel_args", multiple=True, metavar="NAME=VALUE",
              help="Kernel argument (repeatable).")
@chunk_mb_option()
@write_options
@click.option("--grid", default=None, metavar="first|like=PATH",
              help="Several INPUTs on different grids: warp each onto the first one's grid, "
                   "or onto PATH's (its CRS, transform and size).")
@click.option("--resampling", default="nearest", type=click.Choice(WARP_RESAMPLINGS),
              help="Resampling for --grid.")
@click.option("--grid-et", type=click.FloatRange(min=0), default=WARP_ERROR_THRESHOLD,
              show_default=True, help="Error threshold for --grid in source pixels (0: exact).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: on when stderr is a terminal).")
@click.pass_context
def run(ctx, kernel, files, workers, scheduler, kernel_args, chunk_mb, grid, resampling, grid_et, progress,
        **write):
    """Apply KERNEL to INPUT (several inputs are stacked as bands) and write OUTPUT.

    KERNEL is a built-in name (see `rdask kernels`), `package.module:function`,
    `path/to/file.py:function`, or a chain such as "focal-mean radius=2 | slope".
    """
    if len(files) < 2:
        raise click.UsageError("need at least one INPUT and an OUTPUT")
    *inputs, output = files
    chain = parse_chain(kernel)
    extra = parse_pairs(kernel_args, "--kernel-arg")
    if extra:
        if len(chain) > 1:
            raise click.UsageError("--kernel-arg is for a single kernel; put arguments in the chain")
        chain[0][1].update(extra)
    quiet = flags(ctx).get("quiet", False)
    show = sys.stderr.isatty() and not quiet if progress is None else progress

    # Imported here, not at the top: `rdask --help` must not pay for GDAL,
    # numba and dask (~0.4 s measured).
    from rdask.pipeline import process
    from rdask.progress import TerminalProgress

    bar = TerminalProgress() if show else None
    tune_malloc()
    # From here until the output is published, SIGINT and SIGTERM (batch
    # systems stop jobs with it) abort the job and exit 130.
    with job_signals() as signals:
        result = _run(signals, bar, process,
            inputs if len(inputs) > 1 else inputs[0],
            output,
            chain,
            scheduler=scheduler,
            workers=workers,
            chunk_mb=chunk_mb,
            grid=_grid(grid),
            resampling=resampling,
            grid_et=grid_et,
            progress=bar if bar is not None else False,
            **write,
        )
    if not quiet:
        click.echo(result.summary(), err=True)


def _grid(value: str | None) -> str | None:
    """``--grid first`` or ``--grid like=PATH`` as ``process(grid=...)`` takes it."""
    if value is None or value == "first":
        return value
    name, sep, path = value.partition("=")
    if sep and name == "like" and path:
        return path
    raise click.BadParameter(f"{value!r}: use first or like=PATH", param_hint="--grid")


def _run(signals: JobSignals, bar: Any, process: Callable, *args: Any, **kwargs: Any) -> Any:
    """``process(*args, **kwargs)``; any error after a signal is the
    interruption it caused (whatever a library made of the
    ``KeyboardInterrupt`` on its way up)."""
    try:
        return process(*args, **kwargs)
    except Exception as exc:
        if signals.received is None:
            raise
        interrupted = KeyboardInterrupt()
        for note in getattr(exc, "__notes__", []):
            interrupted.add_note(note)
        raise interrupted from None
    finally:
        if bar is not None:
            bar.close()
