"""The click group, logging flags and the one place errors become exit codes."""

from __future__ import annotations

import sys
from typing import Any

import click

from rdask import __version__
from rdask.cli.options import verbosity_options

#: Exit code for Ctrl-C, as shells report SIGINT.
EXIT_INTERRUPTED = 130


class RdaskGroup(click.Group):
    """A group that turns expected errors into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except KeyboardInterrupt as exc:
            if _debug(ctx):
                raise
            notes = "; ".join(getattr(exc, "__notes__", []))
            click.echo(f"rdask: interrupted{' (' + notes + ')' if notes else ''}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            if _debug(ctx):
                raise
            click.echo(f"rdask: error: {_one_line(exc)}", err=True)
            sys.exit(1)


def _debug(ctx: click.Context) -> bool:
    obj = ctx.find_root().obj or {}
    return bool(obj.get("debug"))


def _one_line(exc: BaseException) -> str:
    from rdask.errors import RdaskError

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (RdaskError, OSError, ValueError)):
        return text
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"


@click.group(name="rdask", cls=RdaskGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rdask")
@verbosity_options
def main() -> None:
    """Out-of-core raster processing: open -> apply a numba kernel -> write a GeoTIFF."""


def entry() -> None:
    """The ``rdask`` console script: :func:`main`, then a fast exit.

    By the time a command returns, its output file is committed and closed
    and its messages are written; what remains is interpreter teardown, in
    which numba disposes of its LLVM state: ~0.15 s of one core after every
    job that ran a kernel. So flush the standard streams and logging, then
    leave with ``os._exit``. (``rio rdask`` goes through :func:`main` and
    rio's own exit.)
    """
    import logging
    import os

    try:
        main()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            # Output that could not be written (a closed pipe, a full
            # disk) fails the command, as Python's own exit does (120).
            code = code or 120
    os._exit(code or 0)


def _register() -> None:
    from rdask.cli.demo import demo
    from rdask.cli.info import info
    from rdask.cli.kernels import kernels
    from rdask.cli.run import run

    for cmd in (run, info, kernels, demo):
        main.add_command(cmd)


_register()
