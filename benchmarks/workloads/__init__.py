"""One module per workload, each registering itself with
:func:`registry.workload`; importing this package fills
:data:`registry.REGISTRY`; :data:`REGISTRY` is it in run order.

To add a workload, write a module here with one decorated function and
import it below; ``run.py`` picks it up from the registry.
"""

from registry import REGISTRY as _REGISTERED
from registry import Workload

from workloads import (  # noqa: F401 - imported to register
    cog,
    compute,
    distributed,
    flat_memory,
    io_bound,
    neighbourhood,
    out_of_core,
    reprojection,
    scale_out,
)

#: Workloads by id, in the order they run (W1 first).
REGISTRY = dict(sorted(_REGISTERED.items(), key=lambda item: int(item[0][1:])))

__all__ = ["REGISTRY", "Workload"]
