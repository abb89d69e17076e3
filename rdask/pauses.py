"""Pause points: where a job can be held at a known phase, so that a test
(or a person debugging a race) acts at exactly that moment instead of
guessing it with a sleep.

A job passes named points: ``chunk:Y:X`` in the task of the chunk whose
window starts at row ``Y``, column ``X`` (on whichever thread or worker
computes it, before it computes), ``commit`` once every chunk is recorded,
``publish`` just before the point of no return and ``publishing`` just
after it (see :mod:`rdask.interrupts`), and ``abort`` when a job starts
to abort (before it waits for the tasks still writing). With
``RDASK_PAUSE_DIR`` set to a directory, a job reaching a point for which
``<dir>/<point>.hold`` exists creates ``<dir>/<point>.reached`` and waits
until ``<dir>/<point>.go`` exists (at most :data:`PAUSE_LIMIT` seconds).
Unset, a point costs one dictionary lookup. The variable is read when a
point is reached, never at import, and reaches cluster workers through
their environment like any other setting; which points hold is decided
per job, by the files.
"""

from __future__ import annotations

import os
import time

#: Seconds a paused job waits for its go before it fails.
PAUSE_LIMIT = 300.0


def pause(point: str) -> None:
    """Hold here if ``<RDASK_PAUSE_DIR>/<point>.hold`` exists (see the module docstring)."""
    where = os.environ.get("RDASK_PAUSE_DIR")
    if not where or not os.path.exists(os.path.join(where, f"{point}.hold")):
        return
    with open(os.path.join(where, f"{point}.reached"), "w"):
        pass
    go = os.path.join(where, f"{point}.go")
    deadline = time.monotonic() + PAUSE_LIMIT
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise RuntimeError(f"paused at {point} for {PAUSE_LIMIT:.0f} s and no go came")
        time.sleep(0.005)
