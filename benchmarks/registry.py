"""The workload registry: a workload is a function decorated with
:func:`workload` that takes the run's :class:`~context.Context` and returns
its cases (or runs itself, W7). ``workloads/`` holds one module per
workload; ``run.py`` reads :data:`REGISTRY`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from context import Context
from model import Case

#: A workload function: the run's context in, its cases out.
WorkloadFn = Callable[[Context], list[Case]]


#: A workload with its own runner (W7): the run's context, timed runs and
#: seconds per run in; its JSON record (printed as it goes) out.
RunnerFn = Callable[[Context, int, float], dict]


@dataclass(frozen=True)
class Workload:
    """A registered workload: ``build`` makes harness cases, or ``runner``
    (when set) runs the whole workload itself."""

    id: str
    summary: str
    build: WorkloadFn
    runner: RunnerFn | None = None


#: Workloads by id, in the order they run.
REGISTRY: dict[str, Workload] = {}


def workload(
    wid: str, summary: str, runner: RunnerFn | None = None
) -> Callable[[WorkloadFn], WorkloadFn]:
    """Register the decorated function as workload ``wid`` (see :class:`Workload`)."""

    def register(fn: WorkloadFn) -> WorkloadFn:
        REGISTRY[wid] = Workload(wid, summary, fn, runner)
        return fn

    return register

