"""``rdask kernels``: the built-in kernels and their arguments."""

from __future__ import annotations

import click

from rdask.cli.options import verbosity_options


@click.command()
@verbosity_options
def kernels():
    """List the built-in kernels with their arguments and halo."""
    from rdask.kernels import builtin_kernels

    rows = []
    for name, k in sorted(builtin_kernels().items()):
        args = ", ".join(f"{p}={v!r}" for p, v in k.defaults) or "-"
        halo = str(k.halo)
        summary = (k.doc.splitlines() or [""])[0]
        rows.append((name, args, halo, summary))
    widths = [max(len(r[i]) for r in rows + [("KERNEL", "ARGUMENTS", "HALO", "")]) for i in range(3)]
    header = ("KERNEL", "ARGUMENTS", "HALO", "WHAT IT DOES")
    for r in [header, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
