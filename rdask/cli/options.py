"""Options shared between commands, and their parsers."""

from __future__ import annotations

import click


def parse_pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    """``("A=1", "B=x")`` -> ``{"A": "1", "B": "x"}``, with a clear error."""
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=what)
        out[name.strip()] = value.strip()
    return out


def parse_chain(text: str) -> list[tuple[str, dict[str, str]]]:
    """Parse ``"focal-mean radius=2 | slope"`` into ``[(name, args), ...]``.

    The syntax follows GDAL's ``gdal raster pipeline``: steps separated by
    ``|``, each a kernel name followed by ``NAME=VALUE`` arguments.
    """
    steps = []
    for part in text.split("|"):
        words = part.split()
        if not words:
            raise click.BadParameter(f"empty step in kernel chain {text!r}", param_hint="KERNEL")
        name, *rest = words
        steps.append((name, parse_pairs(tuple(rest), f"arguments of {name}")))
    return steps


workers_option = click.option(
    "-j", "--workers", type=click.IntRange(min=1), default=None,
    help="Threads (or local worker processes). Default: CPU count.",
)
scheduler_option = click.option(
    "--scheduler", default="threads", show_default=True,
    help="threads | sync | local[:N] | tcp://HOST:PORT",
)
chunk_mb_option = click.option(
    "--chunk-mb", type=click.FloatRange(min=0.01), default=None,
    help="Target chunk size in MB (default 16).",
)
