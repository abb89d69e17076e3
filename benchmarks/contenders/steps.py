"""Commands run one after the other through an intermediate file: a job done in steps.

What a user does when one tool cannot do the whole job: ``gdalwarp IN
tmp.tif`` and then ``gdaldem slope tmp.tif OUT``, or two ``rdask run``
commands.  Each command is given in full after ``--``, the next one after
``--then``; ``{tmp}`` in any of them is replaced by ``OUT.step1.tif``
(beside OUT), removed at the end whatever happens.  Each command is its
own process, started when the previous one has finished; ``time -v`` adds
up their CPU time and reports the larger peak RSS.  A failing command's
status is returned, with its last line of stderr repeated last.

Usage: ``steps.py OUT -- CMD1 ARG... {tmp} --then CMD2 {tmp} ARG...``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: The placeholder of the intermediate file in the commands.
TMP = "{tmp}"

#: Separates one command from the next.
THEN = "--then"


def split_commands(args: list[str]) -> list[list[str]]:
    """The commands of ``args`` (after ``--``), split at :data:`THEN`."""
    commands: list[list[str]] = [[]]
    for arg in args:
        if arg == THEN:
            commands.append([])
        else:
            commands[-1].append(arg)
    if any(not cmd for cmd in commands):
        raise ValueError(f"empty command in {args}")
    return commands


def run(outfile: str, commands: list[list[str]]) -> int:
    """Run ``commands`` in turn with :data:`TMP` filled in; the first failure's status, else 0."""
    out = Path(outfile)
    temp = out.with_name(f"{out.name}.step1.tif")
    try:
        for step, cmd in enumerate(commands, 1):
            argv = [str(temp) if arg == TMP else arg for arg in cmd]
            proc = subprocess.run(argv, check=False, stderr=subprocess.PIPE, text=True)
            sys.stderr.write(proc.stderr)
            if proc.returncode:
                lines = [line for line in proc.stderr.splitlines() if line.strip()]
                why = f": {lines[-1].strip()}" if lines else ""
                print(
                    f"step {step} ({Path(argv[0]).name}) failed with status {proc.returncode}{why}",
                    file=sys.stderr,
                )
                return proc.returncode
        return 0
    finally:
        temp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``OUT -- CMD1 ... --then CMD2 ...``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    return run(args[0], split_commands(args[2:]))


if __name__ == "__main__":
    sys.exit(main())
