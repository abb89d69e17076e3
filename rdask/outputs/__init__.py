"""Output kinds behind one write contract (:mod:`rdask.outputs.base`).

Each kind is a module with ``accepts(target, options)`` and
``open(spec)``; :func:`open_output` asks them in order. Adding an output
kind means adding its module and naming it here, nothing else.
"""

from __future__ import annotations

from importlib import import_module

from rdask.outputs.base import Output, OutputSpec
from rdask.outputs.options import WriteOptions

#: Output kinds, most specific first.
KINDS = (
    "rdask.outputs.mosaic",
    "rdask.outputs.zarr",
    "rdask.outputs.s3cog",
    "rdask.outputs.s3parts",
    "rdask.outputs.s3staged",
    "rdask.outputs.cog",
    "rdask.outputs.gtiff",
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
    """Open the output ``spec`` describes, with the kind that writes it."""
    return kind_for(spec.target, spec.options).open(spec)


__all__ = ["KINDS", "Output", "OutputSpec", "WriteOptions", "kind_for", "open_output"]
