"""The click group, logging flags and the one place errors become exit codes."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from rdask import __version__

#: Exit code for Ctrl-C, as shells report SIGINT.
EXIT_INTERRUPTED = 130


class RdaskGroup(click.Group):
    """A group that turns expected errors into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            click.echo("rdask: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            if _debug(ctx):
                raise
            click.echo(f"rdask: error: {_one_line(exc)}", err=True)
            sys.exit(1)


def _debug(ctx: click.Context) -> bool:
    obj = ctx.obj or {}
    return bool(obj.get("debug"))


def _one_line(exc: BaseException) -> str:
    from rdask.errors import RdaskError

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (RdaskError, OSError, ValueError)):
        return text
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"


@click.group(cls=RdaskGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rdask")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """Out-of-core raster processing: open -> apply a numba kernel -> write a GeoTIFF."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["quiet"] = quiet
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    if debug:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="rdask: %(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("rdask").setLevel(level)


def _register() -> None:
    from rdask.cli.demo import demo
    from rdask.cli.info import info
    from rdask.cli.kernels import kernels
    from rdask.cli.run import run

    for cmd in (run, info, kernels, demo):
        main.add_command(cmd)


_register()
