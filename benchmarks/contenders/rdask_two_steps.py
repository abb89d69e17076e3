"""A kernel chain run as separate rdask commands, through intermediate files.

What a user does without chains: ``rdask run focal-mean IN tmp.tif`` and
then ``rdask run slope tmp.tif OUT``, each a full read-compute-write pass
with rdask's default output (tiled 512, DEFLATE), each run as
``rdask run NAME SRC DST -j N --overwrite --no-progress [--kernel-arg ...]``.  The intermediate files go
beside OUT (``OUT.step1.tif``, ...) and are removed at the end.  Each step is
its own process, started one after the other; ``time -v`` adds up their CPU
time and reports the larger peak RSS.

Usage: ``rdask_two_steps.py IN OUT --rdask PATH -j N --step "focal-mean
radius=2" --step slope``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def run_steps(infile: str, outfile: str, rdask: str, steps: list[str], jobs: int) -> int:
    """Run each step of ``steps`` (``"NAME [ARG=VALUE ...]"``) as one ``rdask run``.

    Returns
    -------
    int
        The exit status of the first step that failed, else 0.
    """
    out = Path(outfile)
    temps = [out.with_name(f"{out.name}.step{i}.tif") for i in range(1, len(steps))]
    sources = [infile, *map(str, temps)]
    targets = [*map(str, temps), outfile]
    try:
        for step, src, dst in zip(steps, sources, targets, strict=True):
            name, *args = step.split()
            argv = [rdask, "run", name, src, dst, "-j", str(jobs), "--overwrite", "--no-progress"]
            argv += [arg for pair in args for arg in ("--kernel-arg", pair)]
            status = subprocess.run(argv, check=False).returncode
            if status:
                print(f"step {step!r} failed with status {status}", file=sys.stderr)
                return status
        return 0
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("infile", help="input raster")
    parser.add_argument("outfile", help="output GeoTIFF")
    parser.add_argument("--rdask", required=True, help="the rdask executable")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="threads of each step")
    parser.add_argument(
        "--step", action="append", required=True, help="one kernel with its arguments, in order"
    )
    args = parser.parse_args(argv)
    return run_steps(args.infile, args.outfile, args.rdask, args.step, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
