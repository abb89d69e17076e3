"""Run a case: check every contender's output, then time them interleaved.

Each contender first runs once untimed (this also warms the page cache and
any compiled-kernel cache) and its output is checked; a contender that fails
or writes a wrong output is reported and left out of the timed rounds.  The
timed rounds then run the remaining contenders in turn, A B C A B C ..., so
that load from other users of the machine spreads over all of them.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from checks import Note
from measure import RunResult, run_measured
from model import Case, Contender, Ref, Target

OK, FAILED, WRONG = "ok", "FAILED", "WRONG"


@dataclass
class ContenderResult:
    """Outcome of one contender in one case."""

    name: str
    argv: list[str]
    status: str = OK
    detail: str = ""
    """Why the contender failed, or the problems with its output."""
    notes: list[str] = field(default_factory=list)
    """The contender's notes and its check's findings (:class:`checks.Note`)."""
    check_run: RunResult | None = None
    runs: list[RunResult] = field(default_factory=list)
    output_bytes: int | None = None
    """Size of the output file of the check run (``None`` if it made none)."""
    env: dict[str, str] = field(default_factory=dict)
    """What the runs added to the environment (e.g. a baseline's ``PYTHONPATH``)."""
    pixels: int | None = None
    """Pixels of the contender's input, for ``ns_px``."""
    startup: str | None = None
    """Name of the case's start-up row, whose fastest wall ``ns_px`` subtracts."""
    startup_wall: float | None = None
    """That fastest wall, once the timed rounds are over (``None`` if it failed)."""

    @property
    def timed(self) -> bool:
        """Whether there are timed runs to summarise."""
        return self.status == OK and bool(self.runs)

    def metric(self, name: str, cores: int) -> float | None:
        """Summary ``name`` (see :data:`model.METRICS`) over the timed runs.

        Times are medians; memory is the maximum over the runs.  ``ns_px``
        takes the fastest run (and the start-up row's fastest): other users
        of the machine only ever add time, and a per-pixel ratio of 10 %
        drowns in the noise of medians.  ``None`` when there is no value:
        no timed run, or ``ns_px`` without ``pixels`` or without the
        start-up row's wall.
        """
        if not self.timed:
            return None
        if name == "ns_px":
            if not self.pixels or (self.startup and self.startup_wall is None):
                return None
            fastest = min(r.wall for r in self.runs)
            return (fastest - (self.startup_wall or 0.0)) / self.pixels * 1e9
        if name == "wall":
            return statistics.median(r.wall for r in self.runs)
        if name == "cpu":
            return statistics.median(r.cpu for r in self.runs)
        if name == "cpu_limit":
            return statistics.median(r.cpu for r in self.runs) / cores
        if name == "rss":
            return max(r.max_rss_mb for r in self.runs)
        if name == "tree_rss":
            return max(r.tree_rss_mb for r in self.runs)
        if name == "others":
            return statistics.median(
                100 * r.others_cpu / (max(r.wall, 0.01) * cores) for r in self.runs
            )
        raise ValueError(f"unknown metric {name!r}")


@dataclass
class Verdict:
    """A target evaluated on the results."""

    case: str
    target: Target
    value: float | None
    reason: str = ""
    """Why ``value`` is missing."""
    detail: str = ""
    """What the value was computed from, when a :class:`Ref` names a group
    (e.g. ``best: rioxarray + GDAL COG``)."""

    @property
    def passed(self) -> bool | None:
        """True/False, or None when the target could not be evaluated."""
        return None if self.value is None else self.target.holds(self.value)


#: Results of every case run so far, by case id then contender name.
Results = Mapping[str, Mapping[str, ContenderResult]]

#: Progress callback: one line of text.
Log = Callable[[str], None]


def run_case(
    case: Case,
    workdir: Path,
    *,
    repeat: int,
    timeout: float,
    keep_outputs: bool,
    log: Log,
) -> dict[str, ContenderResult]:
    """Check, then time, every contender of ``case``.

    Parameters
    ----------
    case
        What to run.
    workdir
        Outputs go to ``workdir/out/<case>/``, logs to ``workdir/logs/<case>/``.
    repeat
        Timed runs per contender.
    timeout
        Seconds allowed per run.
    keep_outputs
        Keep each contender's last output instead of deleting it.
    log
        Receives one progress line per run.

    Returns
    -------
    dict
        Contender name -> result, in the case's order.
    """
    paths = _Paths(workdir, case.id)
    results = {
        c.name: ContenderResult(
            c.name,
            c.command(paths.output(c)),
            env=dict(c.env),
            pixels=c.pixels,
            startup=case.startup if c.pixels else None,
        )
        for c in case.contenders
    }
    for contender in case.contenders:
        _check_run(case, contender, results[contender.name], paths, timeout, log)
    if not keep_outputs:
        for reference in case.scratch:
            reference.clear()
    for round_no in range(1, repeat + 1):
        for contender in case.contenders:
            result = results[contender.name]
            for k in range(contender.runs_per_round):
                if result.status != OK:
                    break
                tag = f"run{round_no}" + (f".{k + 1}" if contender.runs_per_round > 1 else "")
                run = _run_once(contender, paths, tag, timeout, keep_outputs)
                log(f"  [{round_no}/{repeat}] {_describe(contender.name, run)}")
                if run.ok:
                    result.runs.append(run)
                else:
                    result.status, result.detail = FAILED, run.error
    startup = results.get(case.startup) if case.startup else None
    for result in results.values():
        if result.startup and startup is not None and startup.timed:
            result.startup_wall = min(r.wall for r in startup.runs)
    return results


def _check_run(
    case: Case,
    contender: Contender,
    result: ContenderResult,
    paths: _Paths,
    timeout: float,
    log: Log,
) -> None:
    """Run ``contender`` once untimed and check its output; record any failure."""
    run = _run_once(contender, paths, "check", timeout, keep_output=True)
    result.check_run = run
    result.notes = list(contender.notes)
    if paths.output(contender).exists():
        result.output_bytes = paths.output(contender).stat().st_size
    if not run.ok:
        result.status, result.detail = FAILED, run.error
    else:
        if contender.log_note and (line := _log_line(run.log, contender.log_note)):
            result.notes = [line]
        found = contender.check(case.input, paths.output(contender))
        problems = [f for f in found if not isinstance(f, Note)]
        result.notes += [f for f in found if isinstance(f, Note)]
        if problems:
            result.status, result.detail = WRONG, "; ".join(problems)
    paths.output(contender).unlink(missing_ok=True)
    verdict = {OK: " -> output correct", WRONG: f" -> WRONG: {result.detail}"}
    log(f"  [check] {_describe(contender.name, run)}{verdict.get(result.status, '')}")


def _log_line(log: str, text: str) -> str:
    """The last line of the file ``log`` that contains ``text`` (stripped), or ''.

    The last, because a kernel chain logs one line per step and the last
    describes the whole chain.
    """
    try:
        with open(log, errors="replace") as fh:
            found = [line.strip() for line in fh if text in line]
    except OSError:
        return ""
    return found[-1] if found else ""


def _run_once(
    contender: Contender,
    paths: _Paths,
    tag: str,
    timeout: float,
    keep_output: bool,
) -> RunResult:
    """One measured run from a clean slate (no output file beforehand)."""
    out = paths.output(contender)
    out.unlink(missing_ok=True)
    run = run_measured(
        contender.command(out), paths.log(contender, tag), timeout=timeout, env=dict(contender.env)
    )
    if not keep_output:
        out.unlink(missing_ok=True)
    return run


def _describe(name: str, run: RunResult) -> str:
    """One progress line: name, wall, CPU and peak RSS, or the failure."""
    if not run.ok:
        return f"{name:<16} FAILED ({run.error})"
    return (
        f"{name:<16} wall {run.wall:7.2f} s  user+sys {run.cpu:7.2f} s  "
        f"RSS {run.max_rss_mb:6.0f} MB  others {run.others_cpu:6.2f} s"
    )


@dataclass(frozen=True)
class _Paths:
    """Where a case's outputs and logs go."""

    workdir: Path
    case: str

    def output(self, contender: Contender) -> Path:
        """Output file of ``contender`` in this case."""
        path = self.workdir / "out" / self.case / f"{_slug(contender.name)}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, contender: Contender, tag: str) -> Path:
        """Log file of one run of ``contender``."""
        return self.workdir / "logs" / self.case / f"{_slug(contender.name)}.{tag}.log"


def _slug(name: str) -> str:
    """File-name-safe form of a contender name."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def evaluate(case: Case, results: Results, cores: int) -> list[Verdict]:
    """Evaluate ``case``'s targets against ``results`` (which may hold other cases)."""
    return [_verdict(case.id, target, results, cores) for target in case.targets]


def _verdict(case_id: str, target: Target, results: Results, cores: int) -> Verdict:
    """One target: the ratio (or value), or the reason it is unavailable."""
    num, why = _value(target.num, case_id, results, cores)
    if num is None:
        return Verdict(case_id, target, None, why)
    if target.den is None:
        return Verdict(case_id, target, num, detail=why)
    den, how = _value(target.den, case_id, results, cores)
    if den is None:
        return Verdict(case_id, target, None, how)
    detail = "; ".join(d for d in (why, how) if d)
    if not den:
        return Verdict(case_id, target, None, "zero denominator")
    return Verdict(case_id, target, num / den, detail=detail)


def _value(ref: Ref, case_id: str, results: Results, cores: int) -> tuple[float | None, str]:
    """The value ``ref`` names and, for a group, which member gave it; or ``None`` and why not.

    A group's value is the smallest among its timed members; members that
    failed are named in the detail.
    """
    case = ref.case or case_id
    if case not in results:
        return None, f"{case} not run"
    values, missing = {}, []
    for name in ref.names:
        result = results[case].get(name)
        if result is None:
            return None, f"no contender {name!r} in {case}"
        value = result.metric(ref.metric, cores) if result.timed else None
        if value is not None:
            values[name] = value
        elif result.timed and result.startup and result.startup_wall is None:
            missing.append(f"{name} has no {ref.metric}: {result.startup} not timed")
        elif result.timed:
            missing.append(f"{name} has no {ref.metric}")
        else:
            missing.append(f"{name} {result.status}")
    if not values:
        return None, ", ".join(missing)
    if isinstance(ref.contender, str):
        return values[ref.contender], ""
    best = min(values, key=values.__getitem__)
    detail = f"best: {best}" + (f"; left out: {', '.join(missing)}" if missing else "")
    return values[best], detail
