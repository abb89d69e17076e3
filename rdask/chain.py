"""Kernel chains written as text: ``"warp crs=EPSG:3857 res=30 | slope"``."""

from __future__ import annotations


def parse_chain(text: str) -> list[tuple[str, dict[str, str]]]:
    """Parse ``"focal-mean radius=2 | slope"`` into ``[(name, args), ...]``.

    The syntax follows GDAL's ``gdal raster pipeline``: steps separated by
    ``|``, each a kernel name followed by ``NAME=VALUE`` arguments (values
    stay strings; each kernel converts its own).

    Raises
    ------
    ValueError
        An empty step, or an argument that is not ``NAME=VALUE``.
    """
    steps = []
    for part in text.split("|"):
        words = part.split()
        if not words:
            raise ValueError(f"empty step in kernel chain {text!r}")
        name, *rest = words
        args: dict[str, str] = {}
        for item in rest:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"arguments of {name}: {item!r} is not NAME=VALUE")
            args[key.strip()] = value.strip()
        steps.append((name, args))
    return steps


def is_chain(text: str) -> bool:
    """Whether ``text`` is a chain or a step with arguments rather than one
    kernel reference (names and ``module:function`` references have no spaces)."""
    return "|" in text or len(text.split()) > 1
