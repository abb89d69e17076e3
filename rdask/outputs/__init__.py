"""Output kinds behind one write contract (:mod:`rdask.outputs.base`).

Each kind is a module with ``accepts(target, options)`` (checked before
any work), optionally ``takes(spec)`` (whether it can write this very job:
its size, codec, mask), and ``open(spec)``; :func:`open_output` opens the
first kind, in order, that accepts and takes. Adding an output kind means
adding its module and naming it here, nothing else.
"""

from __future__ import annotations

from importlib import import_module

from rdask.outputs.base import Output, OutputSpec
from rdask.outputs.options import WriteOptions

#: Output kinds, most specific first.
KINDS = (
    "rdask.outputs.mosaic",
    "rdask.outputs.zarr.s3",
    "rdask.outputs.zarr.local",
    "rdask.outputs.s3.cog",
    "rdask.outputs.s3.gtiff",
    "rdask.outputs.s3.staged",
    "rdask.outputs.tiff.cog",
    "rdask.outputs.tiff.gtiff",
)


def kind_for(target: str, options: WriteOptions):
    """The output module that writes ``target`` with ``options``.

    Raises
    ------
    ValueError
        No kind writes it.
    """
    for name in KINDS:
        module = import_module(name)
        if module.accepts(target, options):
            return module
    raise ValueError(f"rdask cannot write {target!r} as {options.driver}")


def open_output(spec: OutputSpec) -> Output:
    """Open the output ``spec`` describes, with the first kind that writes it."""
    for name in KINDS:
        module = import_module(name)
        if module.accepts(spec.target, spec.options) and getattr(module, "takes", _any)(spec):
            return module.open(spec)
    raise ValueError(f"rdask cannot write {spec.target!r} as {spec.options.driver}")


def _any(spec: OutputSpec) -> bool:
    return True


__all__ = ["KINDS", "Output", "OutputSpec", "WriteOptions", "kind_for", "open_output"]
