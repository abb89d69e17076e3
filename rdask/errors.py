"""Exceptions. Each subclasses :class:`RdaskError` and the builtin it refines,
so ``except OSError`` and ``except ValueError`` keep working for callers."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The most specific one-line message in ``exc``'s chain (GDAL's errors
    often say only "see previous exception" at the top)."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).strip().splitlines()
        if text and "previous exception" not in text[0]:
            return text[0]
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class RdaskError(Exception):
    """Root of every error rdask raises on purpose."""


class RasterOpenError(RdaskError, OSError):
    """An input is missing, not a raster, corrupt or unreachable."""


class RasterMismatchError(RdaskError, ValueError):
    """Inputs of a band stack differ in CRS, transform or size."""


class OutputError(RdaskError, OSError):
    """The output cannot be written (exists, unwritable directory, disk full)."""


class KernelError(RdaskError, ValueError):
    """A kernel is unknown, badly declared, given bad arguments, or raised."""


class KernelOutputError(KernelError):
    """A kernel returned the wrong shape or dtype."""


class ResumeError(RdaskError, ValueError):
    """A resume does not match the interrupted job."""


class SchedulerError(RdaskError, ValueError):
    """An unknown scheduler, or a cluster that cannot be reached."""


class ForkSafetyError(RdaskError, RuntimeError):
    """GDAL would be used in a process forked after GDAL was loaded."""


class WriteOptionError(RdaskError, ValueError):
    """A write option's value is not one rdask can write with (the message names the option)."""


class UnknownWriteOptionError(WriteOptionError, TypeError):
    """A write option that does not exist (also a ``TypeError``, as an unknown keyword is)."""
