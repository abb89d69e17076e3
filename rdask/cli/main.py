"""The click group, logging flags and the one place errors become exit codes.

Messages reach the terminal only as single ``rdask: ...`` lines: Python
warnings and the log records of the libraries rdask drives (rasterio
relays GDAL's own warnings) become one INFO line of the ``rdask`` logger,
shown with ``-v`` and hidden otherwise, never the two-line form with a
source path that Python prints by default.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
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
        except click.UsageError as exc:
            # One line, as every other error: what is wrong and where to look.
            where = exc.ctx.command_path if exc.ctx else "rdask"
            click.echo(f"rdask: error: {_squash(exc.format_message())} "
                       f"(see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
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
    """Out-of-core raster processing: read rasters (local, HTTP or S3), apply numba
    kernels, reproject, and write GeoTIFF, COG, Zarr or a mosaic of COG tiles,
    locally or to S3."""
    route_warnings()


#: Loggers of libraries whose records are relayed as rdask INFO lines.
RELAYED_LOGGERS = ("rasterio", "rioxarray")


class _Relay(logging.Handler):
    """Re-emit a library's log records as one INFO line of the rdask logger."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger("rdask").info("%s", _squash(record.getMessage()))


def route_warnings() -> None:
    """Turn warnings and library log records into one-line rdask INFO logs.

    Without a handler of their own, a library's WARNING records would reach
    stderr bare through :data:`logging.lastResort`; a relay handler stops
    that and keeps them for ``-v``. Worker processes a local cluster spawns
    start from this process's environment, not its hooks, and their stderr
    is this terminal, so they are told to ignore warnings altogether (their
    log records are not shown here either).
    """
    warnings.showwarning = _show_warning
    for name in RELAYED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _Relay) for h in logger.handlers):
            logger.addHandler(_Relay())
    os.environ["PYTHONWARNINGS"] = "ignore"


#: Warnings already shown: the same warning from each thread's own open of
#: a file (rdask opens it once per reading thread) is said once.
_SHOWN: set[tuple[str, str]] = set()


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    # Same signature as warnings.showwarning; the source location is
    # rdask's or a library's internals, never something the user can act on.
    key = (category.__name__, _squash(str(message)))
    if key not in _SHOWN:
        _SHOWN.add(key)
        logging.getLogger("rdask").info("%s: %s", *key)


def _squash(text: str) -> str:
    return " ".join(text.split())


def entry() -> None:
    """The ``rdask`` console script: :func:`main`, then a fast exit.

    By the time a command returns, its output file is committed and closed
    and its messages are written; what remains is interpreter teardown, in
    which numba disposes of its LLVM state: ~0.15 s of one core after every
    job that ran a kernel. So flush the standard streams and logging, then
    leave with ``os._exit``. (``rio rdask`` goes through :func:`main` and
    rio's own exit.)
    """
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
