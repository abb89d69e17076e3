"""Options shared between commands, and their parsers."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import Field, fields

import click

from rdask import chain
from rdask.writeoptions import WriteOptions


def _set_flag(ctx: click.Context, param: click.Parameter, value) -> None:
    """Record -v/-q/--debug on the root context (they work before or after
    the command name) and configure logging at once."""
    root = ctx.find_root()
    root.ensure_object(dict)
    obj = root.obj
    if param.name == "verbose":
        obj["verbose"] = max(obj.get("verbose", 0), value or 0)
    elif value:
        obj[param.name] = True
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(obj.get("verbose", 0), 2)]
    if obj.get("quiet"):
        level = logging.ERROR
    if obj.get("debug"):
        level = logging.DEBUG
    logger = logging.getLogger("rdask")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rdask: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def verbosity_options(f):
    """-v/--verbose, -q/--quiet and --debug, accepted by the group and every command."""
    f = click.option("--debug", is_flag=True, expose_value=False, is_eager=True,
                     callback=_set_flag, help="Show tracebacks.")(f)
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True,
                     callback=_set_flag, help="Only errors.")(f)
    f = click.option("-v", "--verbose", count=True, expose_value=False, is_eager=True,
                     callback=_set_flag, help="More logging (-vv for debug).")(f)
    return f


def flags(ctx: click.Context) -> dict:
    """The -v/-q/--debug values recorded on the root context."""
    return ctx.find_root().obj or {}


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
    """:func:`rdask.chain.parse_chain`, its errors as click's."""
    try:
        return chain.parse_chain(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KERNEL") from None


workers_option = click.option(
    "-j", "--workers", type=click.IntRange(min=1), default=None,
    help="Threads (or local worker processes). Default: CPU count.",
)
scheduler_option = click.option(
    "--scheduler", default="threads", show_default=True,
    help="threads | sync | local[:N] | tcp://HOST:PORT",
)
def chunk_mb_option(help: str = "Target chunk size in MB (default 4; 16 when running on a cluster; "
                                 "less for small rasters).") -> Callable:
    """``--chunk-mb``, with the help text of the command that takes it."""
    return click.option("--chunk-mb", type=click.FloatRange(min=0.01), default=None, help=help)


def write_options(f: Callable) -> Callable:
    """One flag per :class:`~rdask.writeoptions.WriteOptions` field, in field
    order: its flag, type, choices, default and help come from the field,
    so an option added there appears here with nothing else to edit."""
    for field in reversed(fields(WriteOptions)):
        f = write_option(field)(f)
    return f


def write_flag(field: Field) -> str:
    """The command line's name of a write option (``--co`` or ``--tile-size``)."""
    return field.metadata["flag"] or "--" + field.name.replace("_", "-")


def write_option(field: Field) -> Callable:
    """The click option of one write option."""
    meta, flag = field.metadata, write_flag(field)
    kind, default = meta["type"], field.default
    if kind is bool:
        return click.option(flag, field.name, is_flag=True, default=default, show_default=False,
                            help=meta["help"])
    if kind is dict:
        return click.option(flag, field.name, multiple=True, metavar=meta["metavar"],
                            callback=lambda ctx, param, value: parse_pairs(value, flag),
                            help=meta["help"] + " Repeatable.")
    choices = meta["choices"]
    shown = meta["default_text"] if default is None else True
    # click shows case-insensitive choices lower-cased; show them as spelled.
    metavar = meta["metavar"] or (f"[{'|'.join(choices)}]" if choices else None)
    return click.option(flag, field.name, default=default, metavar=metavar,
                        type=click.Choice(choices, case_sensitive=False) if choices else kind,
                        show_default=shown or False, help=meta["help"])


def write_options_table() -> str:
    """The write options as a Markdown table (flag, field, default, meaning):
    what docs/cli.md shows, checked against this by the tests."""
    rows = ["| flag | `WriteOptions` field | default | meaning |", "| --- | --- | --- | --- |"]
    for field in fields(WriteOptions):
        meta, default = field.metadata, field.default
        if meta["type"] is bool:
            shown = "off"
        elif default is None or default == ():
            shown = meta["default_text"] or "none"
        else:
            shown = f"`{default}`"
        values = f" One of: {', '.join(meta['choices'])}." if meta["choices"] else ""
        rows.append(f"| `{write_flag(field)}` | `{field.name}` | {shown} | {meta['help']}{values} |")
    return "\n".join(rows) + "\n"
