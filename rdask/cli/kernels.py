"""``rdask kernels``: the built-in kernels and their arguments."""

from __future__ import annotations

import click

from rdask.cli.options import verbosity_options


@click.command()
@verbosity_options
def kernels():
    """List the built-in kernels with their halo and arguments.

    An argument with a fixed set of values shows them all, the default first.
    """
    from rdask.kernels import builtin_kernels

    for name, k in sorted(builtin_kernels().items()):
        choices = dict(k.choices)
        args = "  ".join(
            f"{p}={'|'.join(choices[p])}" if p in choices else f"{p}={v!r}" for p, v in k.defaults
        )
        summary = (k.doc.splitlines() or [""])[0]
        click.echo(f"{name} (halo {k.halo}): {summary}")
        click.echo(f"    {args or 'no arguments'}")
