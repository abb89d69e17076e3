"""Kernel chains written as text: ``"warp crs=EPSG:3857 res=30 | slope"``."""

from __future__ import annotations

import shlex


def parse_chain(text: str) -> list[tuple[str, dict[str, str]]]:
    """Parse ``"focal-mean radius=2 | slope"`` into ``[(name, args), ...]``.

    The syntax follows GDAL's ``gdal raster pipeline``: steps separated by
    ``|``, each a kernel name followed by ``NAME=VALUE`` arguments (values
    stay strings; each kernel converts its own).  A value may be quoted,
    ``expr='(b2 - b1) / (b2 + b1)'`` or ``expr="b1 | b2"``: a ``|`` or a
    space inside quotes does not split.

    Raises
    ------
    ValueError
        An empty step, an argument that is not ``NAME=VALUE``, or an
        unclosed quote.
    """
    steps = []
    for words in _steps(text):
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


def _steps(text: str) -> list[list[str]]:
    """Words per step.  A ``|`` splits only outside quotes: the text is cut at
    unquoted bars first, then each piece split into words like a shell."""
    pieces, current, quote = [], [], ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "|":
            pieces.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quote:
        raise ValueError(f"kernel chain {text!r}: no closing quotation")
    pieces.append("".join(current))
    out = []
    for piece in pieces:
        lexer = shlex.shlex(piece, posix=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        try:
            out.append(list(lexer))
        except ValueError as exc:  # pragma: no cover - quotes are balanced here
            raise ValueError(f"kernel chain {text!r}: {exc}") from None
    return out


def is_chain(text: str) -> bool:
    """Whether ``text`` is a chain or a step with arguments rather than one
    kernel reference (names and ``module:function`` references have no spaces)."""
    return "|" in text or len(text.split()) > 1
