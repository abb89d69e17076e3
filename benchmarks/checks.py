"""Correctness checks of a contender's output against its input.

A check is any callable ``(input, output) -> list[str]`` returning the
problems found (empty when the output is right).  Items that are
:class:`Note` instances are findings, not problems: they are reported under
the table and do not make the output wrong.  The factories here build the
checks the workloads use; they compare the rasters strip by strip (one row
of blocks at a time) or on a few sampled windows, so memory stays bounded
whatever the raster size.

Some checks compare with another program's output (gdaldem's slope, rdask's
two-step result): a :class:`Reference` makes it once per input and run, or
adopts the output of the contender that produces it when that contender's
own check passes.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from baseline import interpreter
from datagen import TileRecipe
from grids import Grid
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.warp import transform
from rasterio.windows import Window

#: ``(input, output) -> problems``; an empty list means correct.
Check = Callable[[Path, Path], list[str]]


class Note(str):
    """A finding that is not a problem (e.g. how a loosely checked output differs)."""


class Measure(Note):
    """A finding shown as a column of the case's table (``column``: ``value``)."""

    column: str
    value: str

    def __new__(cls, column: str, value: str) -> Measure:
        made = super().__new__(cls, f"{column}: {value}")
        made.column, made.value = column, value
        return made

    def __getnewargs__(self) -> tuple[str, str]:
        return (self.column, self.value)


#: A labelled window of the raster, e.g. ``("nodata corner", Window(...))``.
Sample = tuple[str, Window]

#: Pass as ``compress`` to accept any compression.
ANY = "any"

#: Rows read per strip are rounded to the input block height, capped here.
_STRIP_BYTES = 64 * 2**20


def band_order(order: str, *, block: int | None = 512, compress: str | None = ANY) -> Check:
    """Check that the output holds the input's bands in a given order.

    Parameters
    ----------
    order
        ``"reversed"`` (output band ``i`` is input band ``n-1-i``) or
        ``"same"`` (a copy).
    block
        Required tile size of the output (square, tiled), or ``None`` for
        any layout.
    compress
        Required compression (case-insensitive), ``None`` for uncompressed
        or :data:`ANY`.

    Returns
    -------
    Check
    """
    if order not in ("reversed", "same"):
        raise ValueError(f"unknown band order {order!r}")

    def check(inp: Path, out: Path) -> list[str]:
        if not out.exists():
            return [f"no output at {out}"]
        with rasterio.open(inp) as src, rasterio.open(out) as dst:
            problems = layout_problems(dst, block, compress) + grid_problems(src, dst)
            if problems:
                return problems
            bands = list(range(src.count))
            return pixel_problems(src, dst, bands[::-1] if order == "reversed" else bands)

    check.__doc__ = f"bands {order}, tiled {block}, compress {compress}"
    return check


def layout_problems(dst: DatasetReader, block: int | None, compress: str | None) -> list[str]:
    """Differences between ``dst``'s tiling and compression and the required ones."""
    problems = []
    if block is not None:
        shapes = set(dst.block_shapes)
        if not dst.profile.get("tiled") or shapes != {(block, block)}:
            problems.append(f"output not tiled {block}x{block} (blocks {sorted(shapes)})")
    if compress != ANY:
        got = dst.profile.get("compress")
        got = got.lower() if isinstance(got, str) else got
        want = compress.lower() if isinstance(compress, str) else None
        if got != want:
            problems.append(f"output compression {got!r}, expected {want!r}")
    return problems


def grid_problems(src: DatasetReader, dst: DatasetReader, dtype: str | None = None) -> list[str]:
    """Differences in size, band count, dtype, CRS and transform.

    ``dtype`` is the required output dtype: ``None`` for the input's, or
    :data:`ANY`.
    """
    problems = []
    for what in ("width", "height", "count"):
        if getattr(src, what) != getattr(dst, what):
            problems.append(f"{what} {getattr(dst, what)}, expected {getattr(src, what)}")
    want = set(src.dtypes) if dtype is None else {dtype}
    if dtype != ANY and set(dst.dtypes) != want:
        problems.append(f"dtypes {dst.dtypes}, expected {sorted(want)}")
    if dst.crs != src.crs:
        problems.append(f"CRS {dst.crs}, expected {src.crs}")
    if not dst.transform.almost_equals(src.transform):
        problems.append(f"transform {tuple(dst.transform)}, expected {tuple(src.transform)}")
    return problems


def pixel_problems(src: DatasetReader, dst: DatasetReader, order: Sequence[int]) -> list[str]:
    """First pixel where output band ``i`` differs from input band ``order[i]``.

    Reads both rasters in strips of whole input blocks rows, never whole.
    """
    for window in strips(src):
        got = dst.read(window=window)
        want = src.read(window=window)[list(order)]
        if not np.array_equal(got, want):
            b, y, x = (int(v) for v in np.argwhere(got != want)[0])
            return [
                f"band {b + 1} pixel (row {window.row_off + y}, col {x}): "
                f"got {got[b, y, x]}, expected {want[b, y, x]} "
                f"(input band {order[b] + 1})"
            ]
    return []


def strips(src: DatasetReader) -> list[Window]:
    """Full-width windows of whole block rows, each under ``_STRIP_BYTES`` if possible."""
    block_rows = src.block_shapes[0][0]
    row_bytes = src.width * src.count * np.dtype(src.dtypes[0]).itemsize
    rows = max(block_rows, _STRIP_BYTES // row_bytes // block_rows * block_rows)
    return [
        Window(0, row, src.width, min(rows, src.height - row)) for row in range(0, src.height, rows)
    ]


# -- W9: one repeated tile, at any size ---------------------------------------------


def repeated_tile(
    inp: Path, recipe: TileRecipe, *, block: int = 512, compress: str | None = "deflate"
) -> Check:
    """Check a copy of a :class:`datagen.TileRecipe` raster, every tile, cheaply.

    The output must be on ``inp``'s grid (``inp`` is bound here: the cases
    of W9 run one contender per input), tiled ``block``, ``compress``, with
    every tile present (no sparse, zero-length tile).  The compressed bytes
    of every tile are hashed (tifffile gives the offsets; the file is read
    once, ~3 KB per tile); one tile per distinct hash is decoded with
    rasterio and compared with the repeated pattern.  As identical bytes
    decode to identical pixels, every pixel is checked without decoding a
    26.8 GB raster.
    """

    def check(_case_input: Path, out: Path) -> list[str]:
        if not out.exists():
            return [f"no output at {out}"]
        with rasterio.open(inp) as src, rasterio.open(out) as dst:
            problems = layout_problems(dst, block, compress) + grid_problems(src, dst)
            if problems:
                return problems
            width, height, bands = dst.width, dst.height, dst.count
        import tifffile

        with tifffile.TiffFile(out) as tif:
            page = tif.pages[0]
            offsets, counts = page.dataoffsets, page.databytecounts
            kind = "BigTIFF" if tif.is_bigtiff else "classic TIFF"
        across = -(-width // block)
        tiles = across * -(-height // block)
        if len(offsets) != tiles:
            return [f"{len(offsets)} tiles in the first IFD, expected {tiles}"]
        empty = sum(1 for c in counts if c == 0)
        if empty:
            return [f"{empty} of {tiles} tiles missing (zero byte count)"]
        first: dict[bytes, int] = {}
        with open(out, "rb") as fh:
            for index in sorted(range(tiles), key=offsets.__getitem__):
                fh.seek(offsets[index])
                digest = hashlib.blake2b(fh.read(counts[index]), digest_size=16).digest()
                first.setdefault(digest, index)
        with rasterio.open(out) as dst:
            for index in sorted(first.values()):
                row, col = divmod(index, across)
                window = Window(
                    col * block,
                    row * block,
                    min(block, width - col * block),
                    min(block, height - row * block),
                )
                got = dst.read(window=window)
                want = recipe.expected(window)
                for b in range(bands):
                    if not np.array_equal(got[b], want):
                        y, x = (int(v) for v in np.argwhere(got[b] != want)[0])
                        return [
                            f"band {b + 1} pixel (row {window.row_off + y}, col "
                            f"{window.col_off + x}): got {got[b, y, x]}, expected {want[y, x]}"
                        ]
        return [
            Note(
                f"{tiles} tiles, all present ({kind}); {len(first)} distinct compressed, "
                f"each decoded and equal to the input's tile"
            )
        ]

    check.__doc__ = f"repeated tile of {inp.name}, tiled {block}, compress {compress}"
    return check


def loads_from(check: Check, argv: Sequence[str], env: Mapping[str, str], where: Path) -> Check:
    """``check``, then prove that ``argv[0]`` (a console script) imports rdask from ``where``.

    The script's code runs under its own interpreter (its ``#!`` line) and
    ``env`` through :func:`runpy.run_path`, as a module rather than
    ``__main__``: its imports (``from rdask.cli.main import entry``) run,
    its entry point does not (rdask's ends with ``os._exit``).  Then the
    file of the ``rdask`` module it imported is printed: a note when it
    lies under ``where``, a problem otherwise (the row would time the
    installed rdask).
    """
    script = argv[0]

    def check_and_locate(inp: Path, out: Path) -> list[str]:
        found = check(inp, out)
        python = interpreter(script)
        code = (
            "import os, runpy, sys\n"
            "sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[1]))  # as for a script\n"
            "runpy.run_path(sys.argv[1], run_name='rdask_check')\n"
            "print('rdask.__file__ =', sys.modules['rdask'].__file__)\n"
        )
        proc = subprocess.run(
            [python, "-c", code, script],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=False,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("rdask.__file__ = ")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout or "no output").strip().splitlines()[-1:]
            return [*found, f"could not locate the rdask {script} imports: {tail}"]
        loaded = Path(lines[-1].split(" = ", 1)[1])
        if not loaded.resolve().is_relative_to(where.resolve()):
            return [*found, f"{script} imports rdask from {loaded}, not from {where}"]
        return [*found, Note(f"{Path(script).name} imports rdask from {loaded}")]

    check_and_locate.__doc__ = f"{check.__doc__}; rdask imported from {where}"
    return check_and_locate


# -- COG ------------------------------------------------------------------------


def cog(
    order: str,
    *,
    block: int = 512,
    compress: str | None = "deflate",
    overviews_like: Reference | None = None,
) -> Check:
    """Check a Cloud Optimized GeoTIFF: valid, right pixels, overviews reported.

    The output must pass ``rio_cogeo.cogeo.cog_validate`` (its warnings
    become notes), hold the input's bands in ``order`` at full resolution
    (:func:`band_order`: tiled ``block``, ``compress``, pixels strip by
    strip) and have internal overviews when it is larger than one tile.
    The overview count and level sizes are reported as a note, with the
    rounding they follow (``ceil(n / f)`` as GDAL's GeoTIFF overview builder
    and rdask, ``floor`` as GDAL's COG driver).  With ``overviews_like``
    (GDAL's COG driver's output for the same job), the overview pixels of
    every level whose size matches are compared with it, as a note.
    """
    base = band_order(order, block=block, compress=compress)

    def check(inp: Path, out: Path) -> list[str]:
        if not out.exists():
            return [f"no output at {out}"]
        try:
            from rio_cogeo.cogeo import cog_validate
        except ImportError as exc:
            return [f"rio-cogeo is needed to validate COGs ({exc})"]
        valid, errors, warnings = cog_validate(str(out), quiet=True)
        problems = [f"cog_validate: {e}" for e in errors]
        if not valid and not problems:
            problems.append("cog_validate: not a valid COG")
        problems += base(inp, out)
        levels, rounding = overview_levels(out)
        with rasterio.open(out) as dst:
            if not levels and max(dst.width, dst.height) > block:
                problems.append(f"no overviews in a {dst.width}x{dst.height} COG")
        sizes = ", ".join(f"{w}x{h}" for w, h in levels)
        found: list[str] = [*problems, Note(f"{len(levels)} overviews: {sizes} ({rounding})")]
        found += [Note(f"cog_validate warning: {w}") for w in warnings]
        if overviews_like is not None and not problems:
            want, trouble = _reference_path(overviews_like, inp)
            if want is None:
                found += [Note(t) for t in trouble]
            elif want.resolve() != out.resolve():
                found.append(Note(compare_overviews(out, want, overviews_like.name)))
        return found

    check.__doc__ = f"valid COG, {base.__doc__}, overviews reported"
    return check


def overview_levels(path: Path) -> tuple[list[tuple[int, int]], str]:
    """``(width, height)`` of each overview level of ``path``, and their rounding.

    The rounding is ``"ceil(n/f)"`` or ``"floor(n/f)"`` when every level
    follows it and one of them tells the two apart, ``"exact: n/f whole"``
    when no level does, else ``"other"``.
    """
    with rasterio.open(path) as dst:
        width, height, factors = dst.width, dst.height, dst.overviews(1)
    levels = []
    for level in range(len(factors)):
        with rasterio.open(path, overview_level=level) as ovr:
            levels.append((ovr.width, ovr.height))
    as_ceil = as_floor = True
    for w, h in levels:
        # the factor of this level relative to full resolution
        fx, fy = round(width / w), round(height / h)
        ceil_ok = (w, h) == (-(-width // fx), -(-height // fy))
        floor_ok = (w, h) == (width // fx, height // fy)
        as_ceil &= ceil_ok
        as_floor &= floor_ok
    if as_ceil and as_floor:
        rounding = "exact: n/f whole"
    elif as_ceil:
        rounding = "ceil(n/f)"
    elif as_floor:
        rounding = "floor(n/f)"
    else:
        rounding = "other"
    return levels, rounding


def _pick(path: Path, level: int, size: int = 256) -> str:
    """Which pixel of each ``f x f`` block overview ``level`` of ``path`` holds, if one.

    Compares the top-left ``size`` x ``size`` window of the level (smaller
    for large factors: at most 2048 px of full resolution) with
    every ``full[dy::f, dx::f]`` of the matching full-resolution window
    (``f`` the level's factor); ``"pixel (dy, dx) of each fxf block"`` or
    ``"no single pixel of each block"``.
    """
    with rasterio.open(path) as full, rasterio.open(path, overview_level=level) as ovr:
        factor = round(full.width / ovr.width)
        n = min(size, 2048 // factor, ovr.width, ovr.height)
        n = max(1, min(n, full.width // factor, full.height // factor))
        got = ovr.read(window=Window(0, 0, n, n))
        src = full.read(window=Window(0, 0, n * factor, n * factor))
    for dy in range(factor):
        for dx in range(factor):
            if np.array_equal(got, src[:, dy::factor, dx::factor][:, :n, :n]):
                return f"pixel ({dy}, {dx}) of each {factor}x{factor} block"
    return "no single pixel of each block"


def compare_overviews(path: Path, other: Path, name: str) -> str:
    """How the overview pixels of ``path`` compare with ``other``'s, level by level.

    Levels of the same size are compared strip by strip; the others are
    named as not comparable.
    """
    mine, _ = overview_levels(path)
    theirs, _ = overview_levels(other)
    parts = []
    for level, size in enumerate(mine):
        label = f"level {level + 1} {size[0]}x{size[1]}"
        if level >= len(theirs) or theirs[level] != size:
            there = f"{theirs[level][0]}x{theirs[level][1]}" if level < len(theirs) else "none"
            parts.append(f"{label}: size differs ({name}: {there}), not compared")
            continue
        with (
            rasterio.open(path, overview_level=level) as a,
            rasterio.open(other, overview_level=level) as b,
        ):
            differ = total = 0
            for window in strips(a):
                got, want = a.read(window=window), b.read(window=window)
                differ += int((got != want).sum())
                total += got.size
        if differ == 0:
            parts.append(f"{label}: identical")
            continue
        picks = f"{_pick(path, level)} here, {_pick(other, level)} in {name}"
        parts.append(f"{label}: {differ} of {total} values differ ({picks})")
    if len(theirs) > len(mine):
        parts.append(f"{name} has {len(theirs) - len(mine)} more level(s)")
    return f"overviews vs {name}: " + "; ".join(parts)


# -- references -----------------------------------------------------------------


class Reference:
    """Another program's output for an input, made once per run and shared by checks.

    Parameters
    ----------
    name
        Shown in problems, e.g. ``"gdaldem slope"``.
    command
        ``(input, output) -> argv`` of the program that makes the reference.
    directory
        Where reference files go (one per input).
    """

    def __init__(self, name: str, command: Callable[[Path, Path], list[str]], directory: Path):
        self.name = name
        self.command = command
        self.directory = directory
        self._made: dict[Path, Path] = {}

    def _target(self, inp: Path) -> Path:
        slug = "".join(c if c.isalnum() else "-" for c in self.name)
        return self.directory / f"{slug}.{inp.stem}.tif"

    def path(self, inp: Path) -> Path:
        """The reference output for ``inp``, made now unless already made or adopted.

        Raises
        ------
        RuntimeError
            If the command fails.
        """
        if inp in self._made and self._made[inp].exists():
            return self._made[inp]
        target = self._target(inp)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        argv = self.command(inp, target)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not target.exists():
            lines = (proc.stderr or proc.stdout or "no output").strip().splitlines()
            raise RuntimeError(f"{self.name} failed ({proc.returncode}): {lines[-1]}")
        self._made[inp] = target
        return target

    def adopt(self, inp: Path, out: Path) -> None:
        """Use ``out`` (a contender's output, about to be deleted) as the reference for ``inp``."""
        target = self._target(inp)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(out, target)
        except OSError:
            shutil.copyfile(out, target)
        self._made[inp] = target

    def clear(self) -> None:
        """Delete the reference files made so far."""
        for path in self._made.values():
            path.unlink(missing_ok=True)
        self._made.clear()


def _reference_path(ref: Reference, inp: Path) -> tuple[Path | None, list[str]]:
    """``ref``'s output for ``inp``, or ``None`` and the problem."""
    try:
        return ref.path(inp), []
    except (OSError, RuntimeError) as exc:
        return None, [f"reference {ref.name} unavailable: {exc}"]


def invalid(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """Mask of NaN or ``nodata`` (compared in the values' dtype) pixels."""
    bad = np.isnan(values)
    if nodata is not None and not math.isnan(nodata):
        bad |= values == values.dtype.type(nodata)
    return bad


def _first(mask: np.ndarray, row_off: int = 0, col_off: int = 0) -> str:
    """``(row R, col C)`` of the first True pixel of a 2-D ``mask``."""
    y, x = (int(v) for v in np.argwhere(mask)[0])
    return f"(row {row_off + y}, col {col_off + x})"


# -- terrain and focal checks -------------------------------------------------------


def adopted_as(ref: Reference, check: Check) -> Check:
    """``check``, then, if it found no problem, the output becomes ``ref``'s reference."""

    def adopt(inp: Path, out: Path) -> list[str]:
        found = check(inp, out)
        if not [f for f in found if not isinstance(f, Note)]:
            ref.adopt(inp, out)
        return found

    adopt.__doc__ = f"{check.__doc__}; adopted as {ref.name}"
    return adopt


def matches_reference(
    ref: Reference,
    *,
    tolerance: float,
    block: int | None = 512,
    compress: str | None = ANY,
    dtype: str | None = None,
) -> Check:
    """Check that the output equals ``ref``'s within ``tolerance``, with the same nodata mask.

    Both rasters are read strip by strip; invalid means NaN or the file's
    nodata value.  ``tolerance=0`` requires bit-identical values.
    """

    def check(inp: Path, out: Path) -> list[str]:
        if not out.exists():
            return [f"no output at {out}"]
        want_path, problems = _reference_path(ref, inp)
        if want_path is None:
            return problems
        with rasterio.open(inp) as src, rasterio.open(out) as dst, rasterio.open(want_path) as want:
            problems = layout_problems(dst, block, compress) + grid_problems(src, dst, dtype)
            if problems:
                return problems
            worst, compared = 0.0, 0
            for window in strips(src):
                got, exp = dst.read(window=window), want.read(window=window)
                got_bad, exp_bad = invalid(got, dst.nodata), invalid(exp, want.nodata)
                if not np.array_equal(got_bad, exp_bad):
                    diff = (got_bad != exp_bad).any(axis=0)
                    return [
                        f"nodata mask differs from {ref.name} at "
                        f"{_first(diff, window.row_off)} ({int(diff.sum())} px in rows "
                        f"{window.row_off}-{window.row_off + window.height - 1})"
                    ]
                ok = ~got_bad
                if tolerance == 0:
                    if got.dtype != exp.dtype:
                        return [f"dtype {got.dtype}, {ref.name} has {exp.dtype}"]
                    same = got.view(f"u{got.itemsize}") == exp.view(f"u{exp.itemsize}")
                    if not same.all():
                        bad = ~same.all(axis=0)
                        return [
                            f"not bit-identical to {ref.name} at {_first(bad, window.row_off)} "
                            f"({int(bad.sum())} px in rows {window.row_off}-"
                            f"{window.row_off + window.height - 1})"
                        ]
                    continue
                diff = np.abs(got[ok].astype(np.float64) - exp[ok])
                compared += diff.size
                if diff.size and diff.max() > tolerance:
                    far = np.zeros(got.shape, dtype=bool)
                    far[ok] = diff > tolerance
                    b, y, x = (int(v) for v in np.argwhere(far)[0])
                    return [
                        f"differs from {ref.name} by {diff.max():.3g} (> {tolerance:g}) at "
                        f"{int((diff > tolerance).sum())} px; first (row {window.row_off + y}, "
                        f"col {x}): got {got[b, y, x]}, expected {exp[b, y, x]}"
                    ]
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
        if tolerance == 0:
            return [Note(f"bit-identical to {ref.name}")]
        return [Note(f"max |diff| vs {ref.name} {worst:.2g} over {compared} valid px; same mask")]

    what = "bit-identical to" if tolerance == 0 else f"within {tolerance:g} of"
    check.__doc__ = f"{what} {ref.name}, same nodata mask"
    return check


def loosely_matches_reference(
    ref: Reference,
    *,
    tolerance: float,
    share: float = 0.99,
    limit: float = 0.01,
    block: int | None = 512,
    compress: str | None = ANY,
) -> Check:
    """Check an output that handles edges and nodata its own way against ``ref``.

    Only pixels valid (finite, not the file's nodata) in both are compared:
    at least ``share`` of them must be within ``tolerance`` and all within
    ``limit``.  Any output dtype is accepted.  How the masks differ, the
    dtype and the largest difference are reported as notes.
    """

    def check(inp: Path, out: Path) -> list[str]:
        if not out.exists():
            return [f"no output at {out}"]
        want_path, problems = _reference_path(ref, inp)
        if want_path is None:
            return problems
        with rasterio.open(inp) as src, rasterio.open(out) as dst, rasterio.open(want_path) as want:
            problems = layout_problems(dst, block, compress) + grid_problems(src, dst, ANY)
            if problems:
                return problems
            both = over = extra = missing = 0
            worst = 0.0
            dtype, nodata = dst.dtypes[0], dst.nodata
            for window in strips(src):
                got, exp = dst.read(window=window), want.read(window=window)
                got_ok = ~invalid(got, dst.nodata) & np.isfinite(got)
                exp_ok = ~invalid(exp, want.nodata)
                extra += int((got_ok & ~exp_ok).sum())
                missing += int((exp_ok & ~got_ok).sum())
                ok = got_ok & exp_ok
                diff = np.abs(got[ok].astype(np.float64) - exp[ok])
                both += diff.size
                over += int((diff > tolerance).sum())
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
        problems = []
        if both == 0:
            return [f"no pixel valid in both the output and {ref.name}"]
        if over > (1 - share) * both or worst > limit:
            problems.append(
                f"{over} of {both} px differ from {ref.name} by more than {tolerance:g} "
                f"(max {worst:.3g}; allowed: {100 * (1 - share):g} % and max {limit:g})"
            )
        return problems + [
            Note(
                f"{dtype} output (nodata tag {nodata}); vs {ref.name} where both valid: "
                f"max |diff| {worst:.2g}, {over} of {both} px over {tolerance:g}"
            ),
            Note(
                f"valid here but nodata in {ref.name}: {extra} px; "
                f"nodata/NaN here but valid in {ref.name}: {missing} px"
            ),
        ]

    check.__doc__ = f"loosely within {tolerance:g} of {ref.name} where both valid"
    return check


def _grown(window: Window, halo: int, height: int, width: int) -> tuple[Window, int, int]:
    """``window`` grown by ``halo`` and clipped to the raster; offsets of ``window`` in it."""
    r0, c0 = max(0, window.row_off - halo), max(0, window.col_off - halo)
    r1 = min(height, window.row_off + window.height + halo)
    c1 = min(width, window.col_off + window.width + halo)
    return Window(c0, r0, c1 - c0, r1 - r0), window.row_off - r0, window.col_off - c0


def focal_mean_reference(values: np.ndarray, nodata: float | None, radius: int) -> tuple:
    """Clipped focal mean of the valid pixels of a 2-D array, and the valid counts.

    The window is clipped at the array's edges; NaN and ``nodata`` are
    skipped.  Sums are float64 differences of 2-D prefix sums.  Returns
    ``(mean, count)``, ``mean`` NaN where ``count`` is 0.
    """
    ok = ~invalid(values, nodata)
    vals = np.where(ok, values.astype(np.float64), 0.0)
    ny, nx = vals.shape
    sums = np.zeros((ny + 1, nx + 1))
    sums[1:, 1:] = vals.cumsum(0).cumsum(1)
    cnts = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    cnts[1:, 1:] = ok.cumsum(0).cumsum(1)
    lo_y = np.clip(np.arange(ny) - radius, 0, ny)[:, None]
    hi_y = np.clip(np.arange(ny) + radius + 1, 0, ny)[:, None]
    lo_x = np.clip(np.arange(nx) - radius, 0, nx)[None, :]
    hi_x = np.clip(np.arange(nx) + radius + 1, 0, nx)[None, :]

    def box(table: np.ndarray) -> np.ndarray:
        return table[hi_y, hi_x] - table[lo_y, hi_x] - table[hi_y, lo_x] + table[lo_y, lo_x]

    total, count = box(sums), box(cnts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    return mean, count


def horn_slope_reference(
    z: np.ndarray, nodata: float | None, xres: float, yres: float
) -> np.ndarray:
    """gdaldem's slope (degrees, Horn) of a 2-D float32 array; NaN where gdaldem writes nodata.

    The two weighted sums are formed in float32 in gdaldem's order, the rest
    in float64, as ``gdaldem_lib.cpp`` does.  The outer rows and columns and
    every pixel whose 3x3 window holds NaN or ``nodata`` are NaN.
    """
    z = z.astype(np.float32)
    bad = invalid(z, nodata)
    ny, nx = z.shape
    out = np.full((ny, nx), np.nan)
    if ny < 3 or nx < 3:
        return out

    def w(dy: int, dx: int) -> np.ndarray:
        return z[1 + dy : ny - 1 + dy, 1 + dx : nx - 1 + dx]

    sx = (w(-1, -1) + w(0, -1) + w(0, -1) + w(1, -1)) - (w(-1, 1) + w(0, 1) + w(0, 1) + w(1, 1))
    sy = (w(1, -1) + w(1, 0) + w(1, 0) + w(1, 1)) - (w(-1, -1) + w(-1, 0) + w(-1, 0) + w(-1, 1))
    dx = sx.astype(np.float64) / xres
    dy = sy.astype(np.float64) / yres
    inner = np.degrees(np.arctan(np.sqrt(dx * dx + dy * dy) / 8)).astype(np.float32)
    near_bad = np.zeros((ny - 2, nx - 2), dtype=bool)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            near_bad |= bad[1 + oy : ny - 1 + oy, 1 + ox : nx - 1 + ox]
    out[1:-1, 1:-1] = np.where(near_bad, np.nan, inner)
    return out


def slope_sampled(
    samples: Sequence[Sample],
    *,
    smooth_radius: int = 0,
    tolerance: float = 1e-3,
    block: int | None = 512,
    compress: str | None = ANY,
) -> Check:
    """Check a slope output (degrees) on sampled windows against numpy.

    The reference is :func:`horn_slope_reference` of the input, or, with
    ``smooth_radius``, of its :func:`focal_mean_reference` rounded to
    float32 (a ``focal-mean radius=R | slope`` chain).  The output's nodata
    mask (NaN or its nodata value) must equal the reference's and values
    must agree within ``tolerance`` degrees.  The output is float32, one band.
    """

    def check(inp: Path, out: Path) -> list[str]:
        if not out.exists():
            return [f"no output at {out}"]
        with rasterio.open(inp) as src, rasterio.open(out) as dst:
            problems = layout_problems(dst, block, compress) + grid_problems(src, dst, "float32")
            if problems:
                return problems
            xres, yres = src.transform.a, -src.transform.e
            worst = 0.0
            for label, window in samples:
                grown, oy, ox = _grown(window, 1 + smooth_radius, src.height, src.width)
                z = src.read(1, window=grown)
                nodata = src.nodata
                if smooth_radius:
                    z = focal_mean_reference(z, nodata, smooth_radius)[0].astype(np.float32)
                    nodata = None
                # Slopes are valid only where the whole 3x3 window lies in the raster:
                # the grown window's edges are the raster's edges or halo pixels.
                want = horn_slope_reference(z, nodata, xres, yres)
                want = want[oy : oy + window.height, ox : ox + window.width]
                got = dst.read(1, window=window)
                got_bad, want_bad = invalid(got, dst.nodata), np.isnan(want)
                if not np.array_equal(got_bad, want_bad):
                    return [
                        f"{label}: nodata mask differs from numpy's Horn slope at "
                        f"{_first(got_bad != want_bad, window.row_off, window.col_off)}"
                    ]
                diff = np.abs(got[~got_bad].astype(np.float64) - want[~want_bad])
                if diff.size and diff.max() > tolerance:
                    return [f"{label}: differs from numpy's Horn slope by {diff.max():.3g} deg"]
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
        what = (
            f"numpy focal mean r={smooth_radius} + Horn slope"
            if smooth_radius
            else "numpy Horn slope"
        )
        return [Note(f"max |diff| vs {what} on {len(samples)} windows: {worst:.2g} deg")]

    what = f"focal mean r={smooth_radius} then slope" if smooth_radius else "slope"
    check.__doc__ = f"{what} as numpy's Horn slope on sampled windows"
    return check


def focal_mean_sampled(
    samples: Sequence[Sample],
    radius: int,
    *,
    full_windows_only: bool = False,
    rtol: float = 1e-6,
    block: int | None = 512,
    compress: str | None = ANY,
) -> Check:
    """Check a focal mean on sampled windows against :func:`focal_mean_reference`.

    Exact semantics (rdask's): mean of the valid pixels of the window clipped
    at the raster edge, NaN or the output's nodata where there is none; the
    masks must agree.  With ``full_windows_only`` (for tools that ignore
    nodata or reflect at the edges) only pixels whose whole window lies in
    the raster and holds no nodata are compared, and how far the others are
    from the exact mean is reported as a note.
    """

    def check(inp: Path, out: Path) -> list[str]:
        if not out.exists():
            return [f"no output at {out}"]
        with rasterio.open(inp) as src, rasterio.open(out) as dst:
            problems = layout_problems(dst, block, compress) + grid_problems(src, dst, "float32")
            if problems:
                return problems
            full = (2 * radius + 1) ** 2
            worst = worst_partial = 0.0
            compared = 0
            for label, window in samples:
                grown, oy, ox = _grown(window, radius, src.height, src.width)
                for band in range(1, src.count + 1):
                    mean, count = focal_mean_reference(
                        src.read(band, window=grown), src.nodata, radius
                    )
                    mean = mean[oy : oy + window.height, ox : ox + window.width]
                    count = count[oy : oy + window.height, ox : ox + window.width]
                    got = dst.read(band, window=window).astype(np.float64)
                    got_bad = invalid(got, dst.nodata)
                    if full_windows_only:
                        use = count == full
                        partial = (count < full) & (count > 0) & ~got_bad
                        if partial.any():
                            far = np.abs(got[partial] - mean[partial]).max()
                            worst_partial = max(worst_partial, float(far))
                    else:
                        use = count > 0
                        if not np.array_equal(got_bad, count == 0):
                            where = _first(got_bad != (count == 0), window.row_off, window.col_off)
                            return [f"{label}: nodata mask differs from the reference at {where}"]
                    if not use.any():
                        continue
                    close = np.isclose(got[use], mean[use], rtol=rtol, atol=rtol)
                    if not close.all():
                        far = np.zeros(use.shape, dtype=bool)
                        far[use] = ~close
                        y, x = (int(v) for v in np.argwhere(far)[0])
                        return [
                            f"{label}: band {band} (row {window.row_off + y}, "
                            f"col {window.col_off + x}): got {got[y, x]}, expected {mean[y, x]}"
                        ]
                    compared += int(use.sum())
                    worst = max(worst, float(np.abs(got[use] - mean[use]).max()))
        notes = [Note(f"{compared} px on {len(samples)} windows, max |diff| {worst:.2g}")]
        if full_windows_only:
            notes.append(
                Note(
                    "windows touching nodata or the raster edge not checked; there it is up "
                    f"to {worst_partial:.3g} from the mean of the valid pixels"
                )
            )
        return notes

    what = "full windows" if full_windows_only else "clipped windows, nodata skipped"
    check.__doc__ = f"focal mean r={radius} on sampled windows ({what})"
    return check


# -- W8: reprojection ---------------------------------------------------------------

#: A source position this close (in source pixels) to a pixel edge may land on
#: either side in another program's arithmetic: its validity is not compared.
_EDGE_EPS = 1e-6


def target_grid_problems(dst: DatasetReader, grid: Grid, dtype: str = "float32") -> list[str]:
    """Differences between ``dst`` and the W8 target ``grid`` (one band of ``dtype``).

    Origin and pixel size must agree within a millionth of a pixel.
    """
    problems = []
    if (dst.width, dst.height) != (grid.width, grid.height):
        problems.append(f"size {dst.width}x{dst.height}, expected {grid.width}x{grid.height}")
    if dst.count != 1:
        problems.append(f"{dst.count} bands, expected 1")
    if dtype != ANY and dst.dtypes[0] != dtype:
        problems.append(f"dtype {dst.dtypes[0]}, expected {dtype}")
    if dst.crs != CRS.from_user_input(grid.crs):
        problems.append(f"CRS {dst.crs}, expected {grid.crs}")
    got, want = dst.transform, grid.transform
    if any(abs(a - b) > 1e-6 * grid.res for a, b in zip(got[:6], want[:6], strict=True)):
        problems.append(f"transform {tuple(got)[:6]}, expected {tuple(want)[:6]}")
    return problems


def bilinear_reference(
    src: DatasetReader, grid: Grid, window: Window
) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's bilinear warp of band 1 of ``src`` onto ``window`` of ``grid``, exactly transformed.

    GDAL's rule (``gdalwarp -r bilinear`` when no axis is reduced by more
    than 5 %, its "4 samples" formula): each destination pixel centre is
    transformed exactly (``rasterio.warp.transform``) to source pixel
    coordinates ``(u, v)``; the pixel is nodata unless ``(u, v)`` lies in
    the source raster and the source pixel containing it is valid; its
    value is the bilinear interpolation at ``(u - 0.5, v - 0.5)`` over the
    valid source pixels among the four around it (inside the raster, not
    nodata), the weights divided by their sum.

    Returns
    -------
    tuple
        ``(values, unsure)``: float64 values with NaN where GDAL writes
        nodata, and where ``(u, v)`` lies within :data:`_EDGE_EPS` of a
        source pixel edge (validity could go either way).
    """
    rows = np.arange(window.row_off, window.row_off + window.height) + 0.5
    cols = np.arange(window.col_off, window.col_off + window.width) + 0.5
    t = grid.transform
    xs = np.broadcast_to(t.c + cols[None, :] * t.a, (rows.size, cols.size))
    ys = np.broadcast_to(t.f + rows[:, None] * t.e, (rows.size, cols.size))
    sx, sy = transform(grid.crs, src.crs, xs.ravel(), ys.ravel())
    st = src.transform
    u = ((np.asarray(sx) - st.c) / st.a).reshape(xs.shape)
    v = ((np.asarray(sy) - st.f) / st.e).reshape(xs.shape)
    unsure = (np.abs(u - np.round(u)) < _EDGE_EPS) | (np.abs(v - np.round(v)) < _EDGE_EPS)
    inside = (u >= 0) & (u < src.width) & (v >= 0) & (v < src.height)
    i0 = np.floor(u - 0.5).astype(np.int64)
    j0 = np.floor(v - 0.5).astype(np.int64)
    ax, ay = u - 0.5 - i0, v - 0.5 - j0
    c0, r0 = max(int(i0.min()), 0), max(int(j0.min()), 0)
    c1, r1 = min(int(i0.max()) + 2, src.width), min(int(j0.max()) + 2, src.height)
    if c1 <= c0 or r1 <= r0:  # the window lies outside the source
        return np.full(xs.shape, np.nan), unsure
    z = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0)).astype(np.float64)
    ok = ~invalid(z, src.nodata)

    def at(ii: np.ndarray, jj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values and validity of source pixels ``(ii, jj)`` (invalid outside)."""
        there = (ii >= c0) & (ii < c1) & (jj >= r0) & (jj < r1)
        ic, jc = np.clip(ii - c0, 0, z.shape[1] - 1), np.clip(jj - r0, 0, z.shape[0] - 1)
        return z[jc, ic], there & ok[jc, ic]

    total, weight = np.zeros(xs.shape), np.zeros(xs.shape)
    for dj, wy in ((0, 1 - ay), (1, ay)):
        for di, wx in ((0, 1 - ax), (1, ax)):
            val, good = at(i0 + di, j0 + dj)
            w = np.where(good, wx * wy, 0.0)
            total += w * np.where(good, val, 0.0)
            weight += w
    _, centre_ok = at(np.floor(u).astype(np.int64), np.floor(v).astype(np.int64))
    valid = inside & centre_ok & (weight > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(valid, total / weight, np.nan)
    return values, unsure


def warp_sampled(
    grid: Grid,
    samples: Sequence[Sample],
    *,
    slope: bool = False,
    tolerance: float = 1e-3,
    block: int | None = 512,
    compress: str | None = ANY,
) -> Check:
    """Check a bilinear warp onto ``grid`` (or its slope) on sampled windows against numpy.

    The reference is :func:`bilinear_reference` (GDAL's rule, exact
    transformation); with ``slope``, :func:`horn_slope_reference` of it
    (rounded to float32, as a float32 intermediate file holds it; the
    window grown by a pixel for the 3x3 neighbourhoods).  The nodata mask
    must be the reference's except where a source position falls within
    :data:`_EDGE_EPS` of a pixel edge (none on these rasters, in practice);
    values within ``tolerance`` (metres, or degrees with ``slope``).
    """

    def check(inp: Path, out: Path) -> list[str]:
        if not out.exists():
            return [f"no output at {out}"]
        with rasterio.open(inp) as src, rasterio.open(out) as dst:
            problems = layout_problems(dst, block, compress) + target_grid_problems(dst, grid)
            if problems:
                return problems
            worst, compared, masked = 0.0, 0, 0
            for label, window in samples:
                if slope:
                    grown, oy, ox = _grown(window, 1, grid.height, grid.width)
                    dem, unsure = bilinear_reference(src, grid, grown)
                    want = horn_slope_reference(dem.astype(np.float32), None, grid.res, grid.res)
                    near = _dilate(unsure, 1)
                    want = want[oy : oy + window.height, ox : ox + window.width]
                    unsure = near[oy : oy + window.height, ox : ox + window.width]
                else:
                    want, unsure = bilinear_reference(src, grid, window)
                got = dst.read(1, window=window).astype(np.float64)
                got_bad, want_bad = invalid(got, dst.nodata), np.isnan(want)
                differ = (got_bad != want_bad) & ~unsure
                if differ.any():
                    return [
                        f"{label}: nodata mask differs from numpy's bilinear warp at "
                        f"{_first(differ, window.row_off, window.col_off)} "
                        f"({int(differ.sum())} px)"
                    ]
                both = ~got_bad & ~want_bad
                diff = np.abs(got[both] - want[both])
                if diff.size and diff.max() > tolerance:
                    return [
                        f"{label}: differs from numpy's bilinear warp{' + slope' if slope else ''}"
                        f" by {diff.max():.3g} (> {tolerance:g})"
                    ]
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
                compared += int(diff.size)
                masked += int(want_bad.sum())
        what = "bilinear warp + Horn slope" if slope else "bilinear warp (GDAL's rule)"
        return [
            Note(
                f"vs numpy's {what} on {len(samples)} windows: same nodata mask ({masked} px), "
                f"max |diff| {worst:.2g} over {compared} px"
            )
        ]

    check.__doc__ = f"{'slope of a ' if slope else ''}bilinear warp on sampled windows"
    return check


def warp_matches(
    ref: Reference,
    grid: Grid,
    *,
    tolerance: float,
    boundary: int = 1,
    edge_limit: float | None = None,
    block: int | None = 512,
    compress: str | None = ANY,
    dtype: str = "float32",
) -> Check:
    """Check a warp onto ``grid`` against ``ref``'s output, strip by strip, whole raster.

    The nodata masks may differ only on the reference's nodata boundary:
    pixels with both a valid and a nodata reference pixel within
    ``boundary`` pixels (e.g. 1 for a warp, 2 for the slope of a warp).
    Values valid in both must agree within ``tolerance`` away from that
    boundary and within ``edge_limit`` (default ``tolerance``) on it,
    where programs that keep different source pixels may differ more.
    The mask differences and both maxima are reported as notes.
    """
    limit = tolerance if edge_limit is None else edge_limit

    def check(inp: Path, out: Path) -> list[str]:
        if not out.exists():
            return [f"no output at {out}"]
        want_path, problems = _reference_path(ref, inp)
        if want_path is None:
            return problems
        with rasterio.open(out) as dst, rasterio.open(want_path) as want:
            problems = layout_problems(dst, block, compress)
            problems += target_grid_problems(dst, grid, dtype)
            if problems:
                return problems
            worst = worst_edge = 0.0
            compared = on_edge = differ = edge_px = 0
            for window in strips(dst):
                grown, oy, _ = _grown(window, boundary, dst.height, dst.width)
                exp_all = want.read(1, window=grown)
                exp_bad_all = invalid(exp_all, want.nodata)
                edge_all = _dilate(exp_bad_all, boundary) & _dilate(~exp_bad_all, boundary)
                rows = slice(oy, oy + window.height)
                exp, exp_bad, edge = exp_all[rows], exp_bad_all[rows], edge_all[rows]
                got = dst.read(1, window=window)
                got_bad = invalid(got, dst.nodata)
                mismatch = got_bad != exp_bad
                if (mismatch & ~edge).any():
                    far = mismatch & ~edge
                    return [
                        f"nodata mask differs from {ref.name} away from its nodata boundary at "
                        f"{_first(far, window.row_off)} ({int(far.sum())} px in rows "
                        f"{window.row_off}-{window.row_off + window.height - 1})"
                    ]
                differ += int(mismatch.sum())
                edge_px += int(edge.sum())
                both = ~got_bad & ~exp_bad
                diff = np.abs(got.astype(np.float64) - exp)
                inner, rim = diff[both & ~edge], diff[both & edge]
                for values, bound, where in ((inner, tolerance, ""), (rim, limit, " on")):
                    if values.size and values.max() > bound:
                        far = np.zeros(got.shape, dtype=bool)
                        far[both & (edge if where else ~edge)] = values > bound
                        return [
                            f"differs from {ref.name}{where or ' away from'} its nodata "
                            f"boundary by {values.max():.3g} (> {bound:g}) at "
                            f"{int((values > bound).sum())} px; first "
                            f"{_first(far, window.row_off)}"
                        ]
                worst = max(worst, float(inner.max()) if inner.size else 0.0)
                worst_edge = max(worst_edge, float(rim.max()) if rim.size else 0.0)
                compared += int(inner.size)
                on_edge += int(rim.size)
        return [
            Note(
                f"vs {ref.name}: max |diff| {worst:.2g} over {compared} px, {worst_edge:.2g} "
                f"over {on_edge} px on the nodata boundary; nodata mask differs at {differ} "
                f"px, all on the boundary ({edge_px} px within {boundary} px of it)"
            )
        ]

    check.__doc__ = (
        f"within {tolerance:g} of {ref.name} (on its nodata boundary {limit:g}), "
        f"masks equal but on that boundary"
    )
    return check


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels (a square neighbourhood), same shape."""
    if radius <= 0:
        return mask.copy()
    ny, nx = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy : dy + ny, dx : dx + nx]
    return out
