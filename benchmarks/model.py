"""What a benchmark is made of: cases, contenders, measured values and targets.

A workload (``workloads/``) returns :class:`Case` objects; each case is one
input and one results table: its contenders (name -> argv, with ``{out}``
where the output path goes, plus the check of their output), the contenders
whose wall time the others are divided by (``references``), and its targets
as ``numerator / denominator <= limit`` tuples (:class:`Target`). The
harness runs cases and the report prints them; both import this module and
nothing of the workloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import checks

#: Placeholder for the output path in a contender's argv.
OUT = "{out}"

#: Metrics a :class:`Ref` can name: median wall, median user+sys, peak RSS of
#: the largest process, sampled peak RSS of the process tree (MB), the CPU
#: limit (median user+sys divided by the number of cores: the wall time of a
#: perfectly parallel run), the median share (%) of the machine's CPU
#: that other processes used during the runs, and nanoseconds of wall time
#: per pixel (``ns_px``: the fastest run's wall, less the fastest wall of the
#: case's ``startup`` row if it has one, divided by the contender's ``pixels``).
METRICS = ("wall", "cpu", "rss", "tree_rss", "cpu_limit", "others", "ns_px")


@dataclass(frozen=True)
class Ref:
    """A measured value: ``metric`` of ``contender`` in ``case`` (default: this case).

    ``contender`` may be a tuple of names: the value is then the smallest
    ``metric`` among those of them that were timed (the fastest, for
    ``wall``), e.g. the best of several ways to do the same job.
    """

    contender: str | tuple[str, ...]
    metric: str = "wall"
    case: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose from {METRICS}")

    @property
    def names(self) -> tuple[str, ...]:
        """The contender names this refers to (one, or the group)."""
        return (self.contender,) if isinstance(self.contender, str) else self.contender

    def label(self) -> str:
        """E.g. ``rdask -j2 wall``, ``W2:rdask -j2 rss`` or ``best of (a | b) wall``."""
        where = f"{self.case}:" if self.case else ""
        if isinstance(self.contender, str):
            return f"{where}{self.contender} {self.metric}"
        return f"{where}best of ({' | '.join(self.contender)}) {self.metric}"


@dataclass(frozen=True)
class Target:
    """``num / den`` (or ``num`` alone when ``den`` is None) compared with ``limit``."""

    num: Ref
    den: Ref | None
    limit: float
    op: str = "<="

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ValueError(f"unknown comparison {self.op!r}")

    def label(self) -> str:
        """E.g. ``rdask -j2 wall / docs -j2 wall <= 1.05``."""
        ratio = self.num.label() + (f" / {self.den.label()}" if self.den else "")
        return f"{ratio} {self.op} {self.limit:g}"

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value <= self.limit if self.op == "<=" else value >= self.limit


@dataclass(frozen=True)
class Contender:
    """One program under test: a display name, its argv and its output check.

    ``notes`` are printed under the table (what the row means, what the
    program does its own way).  ``log_note`` is a text to look for in the
    log of the check run: the last line holding it is printed as a note
    instead of ``notes`` (e.g. ``"halo path"`` in rdask's ``-v`` log).
    ``env`` is added to the run's environment (e.g. ``PYTHONPATH`` of a
    baseline rdask).  ``pixels`` (of the contender's own input) enables the
    ``ns_px`` metric.  ``runs_per_round`` runs a cheap contender several
    times per timed round, so its median is steadier.
    """

    name: str
    argv: tuple[str, ...]
    check: checks.Check
    notes: tuple[str, ...] = ()
    log_note: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    pixels: int | None = None
    runs_per_round: int = 1

    def command(self, out: Path) -> list[str]:
        """The argv with the output path filled in."""
        return [str(out) if arg == OUT else arg for arg in self.argv]


@dataclass(frozen=True)
class Case:
    """One input, the contenders run on it, and the targets they must meet."""

    id: str
    title: str
    input: Path
    contenders: tuple[Contender, ...]
    references: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()
    scratch: tuple[checks.Reference, ...] = ()
    """Reference outputs the checks make; deleted after the check runs
    unless ``--keep-outputs``."""
    startup: str | None = None
    """A contender whose fastest wall time is the fixed cost (interpreter,
    imports, opening files) that ``ns_px`` subtracts before dividing."""


