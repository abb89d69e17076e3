"""A ``rdask run`` held at pause points (``rdask.pauses``), for tests that
act at exactly one phase of a job: the job creates ``<point>.reached`` and
waits for ``<point>.go``; the test waits for the first, acts, creates the
second."""

from __future__ import annotations

import os
from pathlib import Path

import cli
from faultutil import wait_until


class Held:
    """A ``rdask run`` held at pause points of a directory of its own."""

    def __init__(self, tmp: Path, points: tuple[str, ...]) -> None:
        self.dir = tmp / "pauses"
        self.dir.mkdir(exist_ok=True)
        for p in points:
            (self.dir / f"{p}.hold").touch()
        self.env = dict(os.environ, RDASK_PAUSE_DIR=str(self.dir))
        self.proc = None

    def start(self, *args, sigint_ignored: bool = False) -> Held:
        self.proc = cli.start(*args, env=self.env, sigint_ignored=sigint_ignored)
        return self

    def reached(self, point: str) -> None:
        wait_until((self.dir / f"{point}.reached").exists, f"the job at {point}", proc=self.proc)

    def go(self, point: str) -> None:
        (self.dir / f"{point}.go").touch()

    def finish(self) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=300)
        return self.proc.returncode, err
