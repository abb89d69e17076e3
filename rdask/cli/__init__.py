"""The ``rdask`` command line (also ``rio rdask`` through rasterio's plugins).

Commands parse their input and call the library; no logic lives here. Heavy
modules are imported inside commands so ``rdask --help`` answers at once.
"""

from rdask.cli.main import main

__all__ = ["main"]
