"""gdaldem's colour files, read and resolved as GDAL 3.6 does.

A line is ``VALUE R G B [A]`` or ``VALUE NAME [A]``, fields separated by
spaces, tabs, commas or colons; ``VALUE`` is an elevation, a percentage
(``50%``, of the range between ``min`` and ``max``) or ``nv`` (the input's
nodata; ignored when the input has none); ``NAME`` is one of
:data:`NAMED`; lines starting with ``#`` or ``/`` are comments.  GMT
``.cpt`` palettes are not read.

:func:`read` parses a file once, before any work (a missing file or a bad
line is one line naming it); :func:`resolve` then gives the sorted table for
an input nodata, with GDAL's adjustments: entries sorted (NaN first, ties
in file order), an entry just below and above the nodata value so that
interpolation never reaches it, and equal elevations spread by a few
``DBL_EPSILON`` so each keeps its colour.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: GDAL's named colours (fractions of 255, truncated as GDAL does).
NAMED = {
    "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0), "cyan": (0.0, 1.0, 1.0), "aqua": (0.0, 0.75, 0.75),
    "grey": (0.75, 0.75, 0.75), "gray": (0.75, 0.75, 0.75), "orange": (1.0, 0.5, 0.0),
    "brown": (0.75, 0.5, 0.25), "purple": (0.5, 0.0, 1.0), "violet": (0.5, 0.0, 1.0),
    "indigo": (0.0, 0.5, 1.0),
}  # fmt: skip

_SPLIT = re.compile(r"[ ,\t:]+")
_EPS = sys.float_info.epsilon


@dataclass(frozen=True)
class ColorFile:
    """A parsed colour file: ``(kind, value, r, g, b, a)`` per entry, where
    kind is ``"abs"``, ``"pct"`` (value a fraction) or ``"nv"``."""

    path: str
    entries: tuple[tuple[str, float, int, int, int, int], ...]

    @property
    def has_percent(self) -> bool:
        return any(e[0] == "pct" for e in self.entries)


def _int(token: str, where: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ValueError(f"{where}: {token!r} is not an integer colour component") from None


def _entry(fields: list[str], where: str) -> tuple[str, float, int, int, int, int]:
    head = fields[0]
    if head.lower() == "nv":
        kind, value = "nv", math.nan
    elif len(head) > 1 and head.endswith("%"):
        try:
            value = float(head[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"{where}: {head!r} is not a percentage") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}: wrong value for a percentage: {head}")
        kind = "pct"
    else:
        try:
            kind, value = "abs", float(head)
        except ValueError:
            raise ValueError(f"{where}: {head!r} is not an elevation, a percentage or nv") from None
    if len(fields) >= 4:
        rgb = [_int(t, where) for t in fields[1:4]]
        alpha = _int(fields[4], where) if len(fields) >= 5 else 255
    else:
        name = fields[1].lower()
        if name not in NAMED:
            raise ValueError(f"{where}: unknown color {fields[1]!r}")
        rgb = [int(255.0 * np.float32(f)) for f in NAMED[name]]
        alpha = _int(fields[2], where) if len(fields) >= 3 else 255
    return (kind, value, rgb[0], rgb[1], rgb[2], alpha)


def read(path: str) -> ColorFile:
    """Parse the colour file at ``path`` (ValueError or OSError naming it)."""
    try:
        text = Path(path).expanduser().read_text(errors="replace")
    except OSError as exc:
        raise OSError(f"cannot read colour file {path}: {exc.strerror or exc}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#") and "COLOR_MODEL" in line:
            raise ValueError(f"colour file {path}: GMT .cpt palettes are not supported")
        fields = [f for f in _SPLIT.split(line.strip()) if f]
        if not fields or fields[0][0] in "#/" or len(fields) < 2:
            continue
        entries.append(_entry(fields, f"colour file {path} line {number}"))
    if not entries:
        raise ValueError(f"no color association found in {path}")
    return ColorFile(str(path), tuple(entries))


def resolve(table: ColorFile, nodata: float | None, vmin: float, vmax: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(values, rgba)`` for an input with ``nodata`` (None: none)
    and the range ``vmin .. vmax`` that percentages refer to."""
    rows = []
    for kind, value, r, g, b, a in table.entries:
        if kind == "nv":
            if nodata is None:
                continue  # gdaldem ignores it, with a warning
            value = nodata
        elif kind == "pct":
            value = vmin + value * (vmax - vmin)
        rows.append([value, r, g, b, a])
    if not rows:
        raise ValueError(f"no color association found in {table.path}")
    rows = _process(rows, nodata)
    vals = np.array([r[0] for r in rows], dtype=np.float64)
    rgba = np.array([r[1:] for r in rows], dtype=np.int64)
    return vals, rgba


def _sort(rows: list[list[float]]) -> list[list[float]]:
    # NaN first, then ascending; stable.
    return sorted(rows, key=lambda r: (not math.isnan(r[0]), 0.0 if math.isnan(r[0]) else r[0]))


def _process(rows: list[list[float]], nodata: float | None) -> list[list[float]]:
    """GDAL's ``GDALColorReliefProcessColors``."""
    rows = [list(r) for r in _sort(rows)]
    has_nd = nodata is not None
    added = []
    prev = rows[0]
    repeated = 0
    for i in range(1, len(rows)):
        cur = rows[i]
        if has_nd and cur[0] == nodata:
            new = cur[0] - abs(cur[0]) * _EPS
            if new > prev[0]:
                added.append([new, *prev[1:]])
        elif has_nd and prev[0] == nodata:
            new = prev[0] + abs(prev[0]) * _EPS
            if new < cur[0]:
                added.append([new, *cur[1:]])
        elif repeated == 0 and cur[0] == prev[0]:
            repeated = i
        elif repeated != 0 and cur[0] != prev[0]:
            if repeated >= 2:
                lower = rows[repeated - 2]
                total, left = cur[0] - lower[0], prev[0] - lower[0]
            else:
                total, left = cur[0] - prev[0], 0.0
            count = i - repeated + 1
            if total > abs(prev[0]) * count * _EPS:
                mult = 0.5 - count * left / total
                step = abs(prev[0])
                for j in range(repeated - 1, i):
                    rows[j][0] += (step * mult) * _EPS
                    mult += 1.0
            repeated = 0
        prev = cur
    return _sort(rows + added) if added else rows
