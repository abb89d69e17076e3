"""Plain-text tables and the JSON record of a benchmark run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict

from checks import Measure
from harness import OK, ContenderResult, Verdict
from model import METRICS, Case

#: Share of the machine used by other processes above which a table warns.
NOISY_PERCENT = 15.0


def machine_header(info: Mapping) -> str:
    """The lines printed at the top: machine, load and software versions."""
    vers = info["versions"]
    soft = ", ".join(f"{k} {v}" for k, v in vers.items())
    load = " ".join(f"{v:.2f}" for v in info["load_average"])
    return "\n".join(
        [
            f"machine: {info['cores']} cores ({info['cpu_model']}), {info['ram_gb']} GB RAM, "
            f"{info['platform']}",
            f"load average at start: {load} (the machine is shared: compare within a table)",
            f"software: {soft}",
        ]
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align ``rows`` under ``headers``: first column left, the others right."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(c) for c in cells)
        parts = [first.ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def case_table(case: Case, results: Mapping[str, ContenderResult], cores: int) -> str:
    """The results table of one case, wall-time ratios first.

    A ratio column ``vs X`` divides each contender's median wall time by
    X's: below 1 is faster than X.  Cases whose contenders know their
    pixels (W9) get an ``ns/px`` column (see ``model.METRICS``).
    """
    refs = [r for r in case.references if results.get(r) and results[r].timed]
    per_pixel = any(res.pixels for res in results.values())
    # Checks' measures (checks.Measure) become columns after the status.
    measures = {res.name: {n.column: n.value for n in res.notes if isinstance(n, Measure)}
                for res in results.values()}
    columns = list(dict.fromkeys(c for found in measures.values() for c in found))
    headers = [
        "contender",
        *(f"vs {r}" for r in refs),
        *(["ns/px"] if per_pixel else []),
        "wall s",
        "min-max s",
        "user+sys s",
        "CPU/wall",
        "peak RSS MB",
        "tree RSS MB",
        "output MB",
        "others %",
        "runs",
        "status",
        *columns,
    ]
    rows = [_row(res, [results[r] for r in refs], cores, per_pixel)
            + [measures[res.name].get(c, "-") for c in columns] for res in results.values()]
    failures = [
        f"  ! {res.name}: {res.status}: {res.detail}"
        for res in results.values()
        if res.status != OK
    ]
    notes = [f"  * {res.name}: {note}" for res in results.values() for note in res.notes
             if not isinstance(note, Measure)]
    return "\n".join([table(headers, rows), *failures, *notes, *_noise_note(results, cores)])


def _noise_note(results: Mapping[str, ContenderResult], cores: int) -> list[str]:
    """A warning when other processes took a noticeable share of the machine."""
    noisy = {
        res.name: share
        for res in results.values()
        if res.timed and (share := res.metric("others", cores)) > NOISY_PERCENT
    }
    if not noisy:
        return []
    worst = ", ".join(f"{name} {share:.0f}%" for name, share in noisy.items())
    return [f"  ~ noisy: other processes used the machine during {worst}; use more --repeat"]


def _row(
    res: ContenderResult, refs: Sequence[ContenderResult], cores: int, per_pixel: bool = False
) -> list[str]:
    """One table row; dashes where a failed contender has no numbers."""
    n_refs = len(refs) + per_pixel
    size = "-" if res.output_bytes is None else f"{res.output_bytes / 2**20:.1f}"
    if not res.timed:
        return [res.name, *["-"] * (n_refs + 6), size, "-", "-", res.status]
    wall = res.metric("wall", cores)
    walls = [r.wall for r in res.runs]
    cpu = res.metric("cpu", cores)
    ratios = [f"{wall / ref.metric('wall', cores):.2f}x" for ref in refs]
    ns_px = res.metric("ns_px", cores)
    per_px = ([f"{ns_px:.3f}" if ns_px is not None else "-"]) if per_pixel else []
    return [
        res.name,
        *ratios,
        *per_px,
        f"{wall:.2f}",
        f"{min(walls):.2f}-{max(walls):.2f}",
        f"{cpu:.2f}",
        f"{cpu / wall:.2f}",
        f"{res.metric('rss', cores):.0f}",
        f"{res.metric('tree_rss', cores):.0f}",
        size,
        f"{res.metric('others', cores):.0f}",
        str(len(res.runs)),
        res.status,
    ]


def verdict_line(verdict: Verdict) -> str:
    """E.g. ``PASS  W2  rdask -j2 wall / docs -j2 wall <= 0.62: 0.55``."""
    if verdict.passed is None:
        status, value = "N/A ", f"n/a ({verdict.reason})"
    else:
        status, value = ("PASS" if verdict.passed else "FAIL"), f"{verdict.value:.3g}"
        if verdict.detail:
            value += f" ({verdict.detail})"
    return f"  {status}  {verdict.case:<8} {verdict.target.label()}: {value}"


def case_record(
    case: Case,
    results: Mapping[str, ContenderResult],
    verdicts: Sequence[Verdict],
    cores: int,
) -> dict:
    """JSON-ready record of one case: inputs, every run, summaries and verdicts."""
    return {
        "id": case.id,
        "title": case.title,
        "input": str(case.input),
        "references": list(case.references),
        "contenders": [
            {
                **asdict(res),
                "summary": {m: res.metric(m, cores) for m in METRICS},
            }
            for res in results.values()
        ],
        "targets": [verdict_record(v) for v in verdicts],
    }


def verdict_record(verdict: Verdict) -> dict:
    """JSON-ready form of a verdict."""
    return {
        "case": verdict.case,
        "target": verdict.target.label(),
        "value": verdict.value,
        "passed": verdict.passed,
        "reason": verdict.reason,
        "detail": verdict.detail,
    }
