"""Sidecar files GDAL leaves beside an output it wrote.

rdask writes an output to a partial file ``.<name>.rdask-partial`` and
renames it into place. When the dataset is closed, GDAL writes beside it:

- ``<partial>.aux.xml`` (PAM) for what the GeoTIFF cannot hold: a CRS
  without a GeoKey encoding (a projected 3D CRS, a derived geographic
  one...), and everything in ``GDAL_METADATA`` (tags, descriptions,
  scales/offsets, units, colour interpretation) or GeoKeys when the caller
  asks for ``PROFILE=GeoTIFF`` / ``PROFILE=BASELINE``;
- ``<partial>.msk`` for a mask with ``GDAL_TIFF_INTERNAL_MASK=NO``,
  ``<partial>.ovr`` for external overviews;
- with ``TFW=YES`` / ``RPB=YES`` / ``RPCTXT=YES`` (or RPCs with a
  non-GDAL profile), files named from the partial's stem ``.<name>``:
  ``.<name>.tfw``, ``.<name>.RPB``, ``.<name>_RPC.TXT``.

:func:`publish_sidecars` moves them beside the target (under the names GDAL
would give them there), just before the main file is renamed into place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

#: Sidecars named by appending to the data file's full name.
APPENDED: tuple[str, ...] = (".aux.xml", ".msk", ".msk.aux.xml", ".ovr", ".ovr.aux.xml")
#: Sidecars named from the data file's name without its extension.
FROM_STEM: tuple[str, ...] = (".tfw", ".wld", ".RPB", ".IMD", "_RPC.TXT")


def _pairs(partial: str, target: str) -> Iterator[tuple[str, str, bool]]:
    """``(sidecar of partial, same sidecar of target, appended?)``."""
    for suffix in APPENDED:
        yield partial + suffix, target + suffix, True
    pstem, tstem = os.path.splitext(partial)[0], os.path.splitext(target)[0]
    for suffix in FROM_STEM:
        yield pstem + suffix, tstem + suffix, False


def sidecars(partial_path: str) -> list[str]:
    """The sidecar files GDAL left beside ``partial_path``.

    Parameters
    ----------
    partial_path : str
        The closed partial output.

    Returns
    -------
    list of str
        The existing sidecar paths (see the module docstring).
    """
    return [src for src, _, _ in _pairs(partial_path, partial_path) if os.path.isfile(src)]


def publish_sidecars(partial: str, target: str) -> list[str]:
    """Move the sidecars of ``partial`` to their names beside ``target``.

    Each is one ``os.replace`` (atomic; same directory). A stale
    ``target.aux.xml`` / ``.msk`` / ``.ovr`` that this output does not have
    is removed: GDAL would read it for the new file (PAM even overrides
    the GeoTIFF's own CRS and transform). Stem-named files (``.tfw``...)
    that this output does not have are left alone: they may belong to
    another file with the same stem. Call after the partial file is
    closed, just before it is renamed to ``target``.

    Parameters
    ----------
    partial : str
        The closed partial output.
    target : str
        Where the output is being published.

    Returns
    -------
    list of str
        The published sidecar paths.
    """
    published = []
    for src, dst, appended in _pairs(partial, target):
        if os.path.isfile(src):
            os.replace(src, dst)
            published.append(dst)
        elif appended and os.path.lexists(dst):
            os.unlink(dst)
    return published
