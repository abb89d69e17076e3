"""A ``rasterio.Env`` that leaves GDAL's configuration as it found it.

rasterio's outermost ``Env`` remembers the value each of its options had
on entry and sets it again on exit. It asks with ``CPLGetConfigOption``,
which also answers from environment variables: an option that was only an
environment variable (``AWS_S3_ENDPOINT``, ``GDAL_HTTP_MAX_RETRY``...)
comes out of the ``Env`` as a GDAL configuration option, which then wins
over the environment for the rest of the process. A notebook that points
``AWS_S3_ENDPOINT`` elsewhere after a job would still reach the old
endpoint. :func:`gdal_env` undoes exactly that: an option that was not set
in GDAL's configuration (global, or this thread's) before the ``Env`` is
unset after it.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def gdal_env(**options: Any) -> Iterator[Any]:
    """``rasterio.Env(**options)``, then GDAL's configuration as before for
    the options' names (``session=`` is passed through)."""
    import rasterio

    names = [k for k in options if k != "session"]
    before = {k: _configured(k) for k in names}
    try:
        with rasterio.Env(**options) as env:
            yield env
    finally:
        for name, was in before.items():
            if was is None and _configured(name) is not None:
                _unset(name)


def _configured(name: str) -> bytes | None:
    """``name`` in GDAL's configuration where rasterio sets it (global in
    the main thread, this thread's elsewhere), not the environment."""
    get = libgdal().CPLGetGlobalConfigOption if _main() else libgdal().CPLGetThreadLocalConfigOption
    return get(name.encode(), None)


def _unset(name: str) -> None:
    unset = libgdal().CPLSetConfigOption if _main() else libgdal().CPLSetThreadLocalConfigOption
    unset(name.encode(), None)


def _main() -> bool:
    return threading.current_thread() is threading.main_thread()


@functools.cache
def libgdal() -> Any:
    """The libgdal rasterio loaded, typed for the few functions rdask calls
    that rasterio does not wrap (configuration, the curl cache); ctypes
    releases the GIL around each call."""
    import rasterio._base

    lib = ctypes.CDLL(rasterio._base.__file__)
    for getter in (lib.CPLGetGlobalConfigOption, lib.CPLGetThreadLocalConfigOption):
        getter.argtypes, getter.restype = [ctypes.c_char_p, ctypes.c_char_p], ctypes.c_char_p
    for setter in (lib.CPLSetConfigOption, lib.CPLSetThreadLocalConfigOption):
        setter.argtypes, setter.restype = [ctypes.c_char_p, ctypes.c_char_p], None
    lib.VSICurlPartialClearCache.argtypes, lib.VSICurlPartialClearCache.restype = [ctypes.c_char_p], None
    return lib
