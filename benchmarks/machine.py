"""Describe the machine and software a benchmark ran on."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

import psutil
import rasterio

#: Distributions whose versions are reported (rasterio's GDAL and the
#: system's gdaldem are added).
PACKAGES = (
    "rasterio",
    "numpy",
    "dask",
    "distributed",
    "numba",
    "xarray",
    "rioxarray",
    "rdask",
    "xarray-spatial",
    "dask-image",
    "odc-geo",
)

#: GDAL's command-line tool W6 runs (apt's gdal-bin, not rasterio's GDAL).
GDALDEM = shutil.which("gdaldem") or "gdaldem"


def cores() -> int:
    """CPUs this process may run on (what a perfectly parallel run could use)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo``, else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    """Python, GDAL and package versions (``-`` when not installed)."""
    found = {"python": platform.python_version(), "GDAL": rasterio.__gdal_version__}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    found["gdaldem"] = gdaldem_version()
    return found


def gdaldem_version() -> str:
    """The GDAL version of :data:`GDALDEM` (``-`` when missing)."""
    try:
        out = subprocess.run(
            [GDALDEM, "--version"], capture_output=True, text=True, check=False, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "-"
    # "GDAL 3.6.2, released 2023/01/02"
    words = out.replace(",", " ").split()
    return words[1] if len(words) > 1 and words[0] == "GDAL" else "-"


def describe() -> dict:
    """Machine facts for the report header and the JSON output."""
    return {
        "cores": cores(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "versions": versions(),
    }
