"""Benchmark rdask against the rasterio docs program, plain rioxarray and GDAL.

Usage::

    benchmarks/.venv/bin/python benchmarks/run.py [--quick] [--size-scale F] [--repeat N]
        [--workloads W1,W2,...] [--workdir DIR] [--json out.json] [--baseline REV]

Generates (and caches) the inputs, checks every contender's output, times
the contenders interleaved, each as its own subprocess under
``/usr/bin/time -v``, and prints one table per case with the targets' pass
or fail.  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import baseline
import machine
import report
from context import HERE, REPO, Context
from harness import evaluate, run_case
from measure import run_measured
from registry import Workload
from workloads import REGISTRY

#: Runs of ``rdask --help`` whose median is reported.
HELP_RUNS = 5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small inputs (W1 1024^2, W2 4096^2, W3 8192^2, W6 and W8 4096^2, W9 61440^2 vs "
        "10752^2) and --repeat 1",
    )
    parser.add_argument(
        "--size-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply every synthetic raster's side by F",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        metavar="N",
        help="timed runs per contender (default 3, or 1 with --quick)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(REGISTRY),
        metavar="W1,W2,...",
        help=f"workloads to run (default all: {','.join(REGISTRY)})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=HERE / ".work",
        metavar="DIR",
        help="inputs, outputs and logs (default benchmarks/.work)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write every run and verdict to FILE",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds allowed per run (default 3600)",
    )
    parser.add_argument(
        "--rdask",
        default=Context.rdask,
        metavar="PATH",
        help="the rdask executable (default: the one beside this Python)",
    )
    parser.add_argument(
        "--keep-outputs",
        action="store_true",
        help="keep each contender's last output under DIR/out",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="also time rdask at git commit REV in W2 and W5 (row 'rdask REV': the same "
        "command, PYTHONPATH=DIR/baseline-REV); default none",
    )
    parser.add_argument(
        "--w7-python",
        default=None,
        metavar="PATH",
        help="W7's Python, with rdask[test] installed (default $RDASK_W7_PYTHON, else .venv)",
    )
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1 or args.size_scale <= 0:
        parser.error("--repeat must be >= 1 and --size-scale > 0")
    try:
        args.selected = select_workloads(args.workloads)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    return args


def select_workloads(spec: str) -> list[Workload]:
    """Registered workloads named in the comma-separated ``spec``, in registry order."""
    wanted = {w.strip().upper() for w in spec.split(",") if w.strip()}
    unknown = wanted - set(REGISTRY)
    if unknown:
        raise KeyError(f"unknown workload(s) {sorted(unknown)}; known: {list(REGISTRY)}")
    return [w for wid, w in REGISTRY.items() if wid in wanted]


def time_help(rdask: str, workdir: Path) -> dict:
    """Median wall time of ``rdask --help`` over :data:`HELP_RUNS` runs."""
    runs = []
    for i in range(HELP_RUNS):
        run = run_measured([rdask, "--help"], workdir / "logs" / "help" / f"help{i}.log")
        if not run.ok:
            return {"ok": False, "error": run.error, "walls": []}
        runs.append(run.wall)
    return {"ok": True, "median": statistics.median(runs), "walls": runs}


def help_line(result: dict) -> str:
    """One line reporting :func:`time_help`."""
    if not result["ok"]:
        return f"rdask --help: FAILED ({result['error']})"
    walls = result["walls"]
    return (
        f"rdask --help: median {result['median']:.2f} s over {len(walls)} runs "
        f"(min {min(walls):.2f}, max {max(walls):.2f})"
    )


def say(line: str = "") -> None:
    """Print a line now (progress is interleaved with long subprocess runs)."""
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the selected workloads; print the tables; optionally write JSON."""
    args = parse_args(argv)
    if args.list:
        for wl in REGISTRY.values():
            say(f"{wl.id}  {wl.summary}")
        return 0
    started = time.perf_counter()
    info = machine.describe()
    cores = info["cores"]
    say(report.machine_header(info))
    say(
        f"settings: quick={args.quick} size-scale={args.size_scale:g} repeat={args.repeat} "
        f"workdir={args.workdir}"
    )
    ctx = Context(
        args.workdir,
        quick=args.quick,
        scale=args.size_scale,
        rdask=args.rdask,
        log=say,
        test_python=args.w7_python,
    )
    if args.baseline:
        try:
            ctx.baseline = baseline.materialise(args.baseline, args.workdir, REPO, args.rdask)
        except (OSError, RuntimeError) as exc:
            say(f"error: {exc}")
            return 2
        say(ctx.baseline.describe())
    help_result = time_help(args.rdask, args.workdir)
    say(help_line(help_result))

    results, records, verdicts = {}, [], []
    for wl in args.selected:
        say(f"\n=== {wl.id}: {wl.summary}")
        if wl.runner is not None:
            # Its own runner prints its table; no targets (W7 records costs).
            records.append(wl.runner(ctx, args.repeat, args.timeout))
            continue
        for case in wl.build(ctx):
            say(f"\n--- {case.id}: {case.title}\n  input {case.input}")
            results[case.id] = run_case(
                case,
                args.workdir,
                repeat=args.repeat,
                timeout=args.timeout,
                keep_outputs=args.keep_outputs,
                log=say,
            )
            case_verdicts = evaluate(case, results, cores)
            say()
            say(report.case_table(case, results[case.id], cores))
            for verdict in case_verdicts:
                say(report.verdict_line(verdict))
            records.append(report.case_record(case, results[case.id], case_verdicts, cores))
            verdicts += case_verdicts

    say("\n=== targets")
    for verdict in verdicts:
        say(report.verdict_line(verdict))
    elapsed = time.perf_counter() - started
    end_load = machine.describe()["load_average"]
    say(f"\ntotal {elapsed:.0f} s; load average at end: {' '.join(f'{v:.2f}' for v in end_load)}")
    if args.json:
        record = {
            "machine": info,
            "load_average_end": end_load,
            "elapsed_seconds": elapsed,
            "settings": {
                "quick": args.quick,
                "size_scale": args.size_scale,
                "repeat": args.repeat,
                "workloads": [w.id for w in args.selected],
                "baseline": (
                    {
                        "rev": ctx.baseline.rev,
                        "commit": ctx.baseline.commit,
                        "path": str(ctx.baseline.path),
                        "entry_point": ctx.baseline.entry_point,
                        "script": str(ctx.baseline.script) if ctx.baseline.script else None,
                    }
                    if ctx.baseline
                    else None
                ),
            },
            "rdask_help": help_result,
            "inputs": ctx.inputs,
            "cases": records,
            "targets": [report.verdict_record(v) for v in verdicts],
        }
        args.json.write_text(json.dumps(record, indent=1, default=str))
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
