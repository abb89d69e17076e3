"""Input checks shared by every kernel: dtype policies and probe blocks.

A kernel either declares the input dtypes it takes (``accepts``) or is
probed: rdask calls it once on a tiny block of the input's dtype and band
count, which compiles it for that dtype, so a numba typing failure turns
into a one-line refusal before any pixel is read.  Numba is never imported
here; its exceptions are recognised through ``sys.modules``, where they are
whenever a numba function has raised one.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Declared input policies (besides an explicit sequence of dtypes).
REAL = "real"
ANY = "any"

#: Rows and columns of a probe block: tiny, so a probe costs the compile only.
PROBE_SIZE = 2

# numba types arrays of these kinds and item sizes only (no float16, no
# longdouble); a numba kernel cannot even be dispatched on anything else.
_NUMBA_ITEMSIZES = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (4, 8), "c": (8, 16)}

# Longest piece of numba's message kept in a refusal.
_MAX_DETAIL = 90


def normalize_accepts(accepts: Any) -> str | tuple[np.dtype, ...] | None:
    """Validate a kernel's ``accepts`` declaration; a sequence becomes dtypes."""
    if accepts is None or accepts in (REAL, ANY):
        return accepts
    if isinstance(accepts, str) or not isinstance(accepts, Sequence):
        raise ValueError(
            f"accepts must be None, {REAL!r}, {ANY!r} or a sequence of dtypes, got {accepts!r}"
        )
    return tuple(np.dtype(d) for d in accepts)


def refusal(dtype: np.dtype, accepts: str | tuple[np.dtype, ...] | None, numba: bool) -> str | None:
    """Why a kernel with this policy cannot take ``dtype``, or None if it may.

    Parameters
    ----------
    dtype
        Input dtype.
    accepts
        The kernel's normalised ``accepts`` declaration.
    numba
        Whether the kernel is a numba function (which limits the dtypes).

    Returns
    -------
    str or None
        The parenthesised reason of the one-line refusal.
    """
    if dtype.kind not in _NUMBA_ITEMSIZES:
        return "it needs numbers"
    if numba and dtype.itemsize not in _NUMBA_ITEMSIZES[dtype.kind]:
        return f"numba has no {dtype} arrays"
    if accepts == REAL and dtype.kind == "c":
        return "it needs real numbers"
    if isinstance(accepts, tuple) and dtype not in accepts:
        return "it takes " + ", ".join(str(d) for d in accepts)
    return None


def probe_block(dtype: np.dtype, bands: int) -> np.ndarray:
    """A tiny ``(bands, 2, 2)`` block of ones.

    Ones, not zeros: a kernel dividing by its input (numba raises
    ZeroDivisionError by default) must not fail on the probe.
    """
    return np.ones((bands, PROBE_SIZE, PROBE_SIZE), dtype=dtype)


def compile_failure(exc: BaseException) -> str | None:
    """A short clause for a numba compile failure, or None for any other error.

    numba raises its own errors only while compiling; a kernel that raises
    at run time raises the user's exception class, which is not a dtype
    problem.
    """
    errors = sys.modules.get("numba.core.errors")
    if errors is None or not isinstance(exc, errors.NumbaError):
        return None
    lines = [ln.strip() for ln in str(exc).splitlines()]
    what, where = _numba_what(lines), _numba_where(lines)
    clause = "numba cannot compile it" + (f": {what}" if what else "")
    return clause + (f" ({where})" if where else "")


def _numba_what(lines: list[str]) -> str:
    """The informative line of a numba error: the failed signature, else the
    first line that is not one of numba's "Failed in ... pipeline" headers."""
    for line in lines:
        if line.startswith(">>> "):
            return "no " + line[4:]
    for line in lines:
        if line and not line.startswith(("Failed in", "- Resolution failure", "During:")):
            # Drop the LLVM instruction numba appends to cast errors.
            text = line.split(": %", 1)[0]
            return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
    return ""


def _numba_where(lines: list[str]) -> str:
    for line in lines:
        found = re.match(r'File "([^"]+)", line (\d+)', line)
        if found:
            return f"{os.path.basename(found.group(1))} line {found.group(2)}"
    return ""
