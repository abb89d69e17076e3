"""GDAL's warper and transformers through its C API (the libgdal rasterio loaded).

rasterio offers no way to hand GDAL's warper a transformer of one's own, and
always wraps the transformer it makes in GDAL's approximate one. The C API
does both: :func:`warp_region` runs ``GDALWarpRegion`` on warp
options deserialised from the same XML a warped VRT holds, with any C
transformer function (here a numba ``cfunc``, see :mod:`rdask.io.warp_lattice`),
and :class:`ExactTransformer` is GDAL's own exact ``GenImgProjTransformer``
deserialised from the VRT's ``<Transformer>`` XML, so its coordinates are
those ``gdalwarp -et 0`` computes, bit for bit.

ctypes releases the GIL around each call, so threads warp in parallel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import sys
import threading
from collections import OrderedDict
from functools import cache
from typing import Any

import numpy as np

from rdask.errors import RasterOpenError

_P = ctypes.c_void_p
_I = ctypes.c_int

#: GDAL's names of the dtypes a warp handles.
_GDAL_TYPE_NAMES = {
    "uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
    "int32": "Int32", "uint64": "UInt64", "int64": "Int64", "float32": "Float32", "float64": "Float64",
}


class WarpOptions(ctypes.Structure):
    """The leading fields of ``GDALWarpOptions`` (alg/gdalwarper.h), as far
    as the transformer: their layout has not changed since GDAL 1.x."""

    _fields_ = [
        ("papszWarpOptions", _P), ("dfWarpMemoryLimit", ctypes.c_double),
        ("eResampleAlg", _I), ("eWorkingDataType", _I), ("hSrcDS", _P), ("hDstDS", _P),
        ("nBandCount", _I), ("panSrcBands", _P), ("panDstBands", _P), ("nSrcAlphaBand", _I),
        ("nDstAlphaBand", _I), ("padfSrcNoDataReal", _P), ("padfSrcNoDataImag", _P),
        ("padfDstNoDataReal", _P), ("padfDstNoDataImag", _P), ("pfnProgress", _P),
        ("pProgressArg", _P), ("pfnTransformer", _P), ("pTransformerArg", _P),
    ]


def _libgdal_path() -> str:
    """The libgdal rasterio's extension modules are linked with."""
    import rasterio  # noqa: F401 - loads libgdal into the process

    if sys.platform.startswith("linux"):
        with open("/proc/self/maps") as f:
            found = sorted(set(re.findall(r"(/\S*libgdal[^/\s]*\.so[^/\s]*)", f.read())))
        if found:
            return found[0]
    here = os.path.dirname(os.path.dirname(rasterio.__file__))
    for pattern in ("rasterio.libs/libgdal*", "rasterio/.dylibs/libgdal*", "rasterio.libs/gdal*.dll"):
        found = sorted(glob.glob(os.path.join(here, pattern)))
        if found:
            return found[0]
    name = ctypes.util.find_library("gdal")
    if name is None:
        raise RasterOpenError("the fast warp needs GDAL's C library, and the one rasterio uses was not found")
    return name


@cache
def lib() -> ctypes.CDLL:
    """libgdal, with the signatures of the functions rdask calls."""
    g = ctypes.CDLL(_libgdal_path())
    sigs: dict[str, tuple[Any, list[Any]]] = {
        "CPLParseXMLString": (_P, [ctypes.c_char_p]),
        "CPLDestroyXMLNode": (None, [_P]),
        "CPLGetLastErrorMsg": (ctypes.c_char_p, []),
        "CPLErrorReset": (None, []),
        "GDALDeserializeTransformer": (_I, [_P, ctypes.POINTER(_P), ctypes.POINTER(_P)]),
        "GDALDestroyTransformer": (None, [_P]),
        "GDALGenImgProjTransform": (_I, [_P, _I, _I, _P, _P, _P, _P]),
        "GDALDeserializeWarpOptions": (_P, [_P]),
        "GDALDestroyWarpOptions": (None, [_P]),
        "GDALCreateWarpOperation": (_P, [_P]),
        "GDALDestroyWarpOperation": (None, [_P]),
        "GDALWarpRegion": (_I, [_P, _I, _I, _I, _I, _I, _I, _I, _I]),
        "GDALClose": (None, [_P]),
        "GDALReleaseDataset": (_I, [_P]),
        "GDALDereferenceDataset": (_I, [_P]),
        "GDALVersionInfo": (ctypes.c_char_p, [ctypes.c_char_p]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(g, name)
        fn.restype, fn.argtypes = restype, argtypes
    return g


def _last_error(default: str) -> str:
    msg = lib().CPLGetLastErrorMsg()
    return msg.decode(errors="replace").strip() if msg else default


def _parse(xml: str) -> int:
    node = lib().CPLParseXMLString(xml.encode())
    if not node:
        raise RasterOpenError(f"GDAL cannot parse the warp description: {_last_error('bad XML')}")
    return node


# --------------------------------------------------------------------------
# GDAL's exact transformer
# --------------------------------------------------------------------------


def exact_function() -> int:
    """The address of ``GDALGenImgProjTransform``."""
    return int(ctypes.cast(lib().GDALGenImgProjTransform, _P).value)


class ExactTransformer:
    """GDAL's exact ``GenImgProjTransformer`` (destination pixel to source
    pixel), made from the ``<Transformer>`` XML of a warped VRT.

    One instance must not be used by two threads at once (PROJ objects are
    not thread-safe): take one per thread from :func:`exact_transformer`.
    """

    def __init__(self, xml: str) -> None:
        g = lib()
        node = _parse(xml)
        fn, arg = _P(), _P()
        try:
            err = g.GDALDeserializeTransformer(node, ctypes.byref(fn), ctypes.byref(arg))
        finally:
            g.CPLDestroyXMLNode(node)
        if err != 0 or not arg.value:
            raise RasterOpenError(f"GDAL cannot set up the reprojection: {_last_error('unknown error')}")
        if fn.value != ctypes.cast(g.GDALGenImgProjTransform, _P).value:
            g.GDALDestroyTransformer(arg)
            raise RasterOpenError("the warp's transformer is not GDAL's GenImgProjTransformer")
        self.arg: int = arg.value

    def transform(self, x: np.ndarray, y: np.ndarray, *, dst_to_src: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Transformed copies of ``x``, ``y`` (NaN where the transformation fails)."""
        xs = np.array(x, dtype=np.float64, order="C", copy=True).ravel()
        ys = np.array(y, dtype=np.float64, order="C", copy=True).ravel()
        zs = np.zeros_like(xs)
        ok = np.zeros(xs.shape, dtype=np.intc)
        if xs.size:
            lib().GDALGenImgProjTransform(self.arg, int(dst_to_src), xs.size, xs.ctypes.data,
                                          ys.ctypes.data, zs.ctypes.data, ok.ctypes.data)
        bad = (ok == 0) | ~np.isfinite(xs) | ~np.isfinite(ys)
        xs[bad] = np.nan
        ys[bad] = np.nan
        return xs.reshape(np.shape(x)), ys.reshape(np.shape(y))

    def close(self) -> None:
        if self.arg:
            lib().GDALDestroyTransformer(self.arg)
            self.arg = 0


#: Exact transformers kept per thread (creating one looks PROJ's database up).
TRANSFORMERS_PER_THREAD = 8

_local = threading.local()


def exact_transformer(xml: str) -> ExactTransformer:
    """This thread's :class:`ExactTransformer` for ``xml`` (made once, kept
    for the next windows; the least recently used are destroyed)."""
    cache_: OrderedDict[str, ExactTransformer] | None = getattr(_local, "transformers", None)
    if cache_ is None:
        cache_ = _local.transformers = OrderedDict()
    found = cache_.get(xml)
    if found is not None:
        cache_.move_to_end(xml)
        return found
    made = cache_[xml] = ExactTransformer(xml)
    while len(cache_) > TRANSFORMERS_PER_THREAD:
        cache_.popitem(last=False)[1].close()
    return made


# --------------------------------------------------------------------------
# the warper
# --------------------------------------------------------------------------


def warp_region(options_xml: str, transformer: int, transformer_arg: int,
                src: tuple[int, int, int, int], out: np.ndarray) -> None:
    """``GDALWarpRegion`` of one destination window, into ``out``.

    Parameters
    ----------
    options_xml : str
        A ``<GDALWarpOptions>`` element without ``<Transformer>`` and
        without ``<DestinationDataset>`` (its ``<SourceDataset>`` is opened
        by GDAL).
    transformer, transformer_arg : int
        The C transformer function and its argument. It is called with the
        window's own pixel coordinates (pixel centres ``i + 0.5``).
    src : (x0, y0, width, height)
        The source window GDAL reads and the kernel may use.
    out : ndarray
        C-contiguous ``(bands, height, width)``, pre-filled where GDAL writes
        nothing; GDAL writes the warped bands (and a destination alpha band)
        straight into it, through a MEM dataset over its memory.
    """
    g = lib()
    nb, h, w = out.shape
    dst = (f"MEM:::DATAPOINTER={out.ctypes.data},PIXELS={w},LINES={h},BANDS={nb},"
           f"DATATYPE={_GDAL_TYPE_NAMES[str(out.dtype)]}")
    xml = options_xml.replace(
        "</GDALWarpOptions>", f'<DestinationDataset relativeToVRT="0">{dst}</DestinationDataset></GDALWarpOptions>')
    node = _parse(xml)
    try:
        opts = g.GDALDeserializeWarpOptions(node)
    finally:
        g.CPLDestroyXMLNode(node)
    if not opts:
        raise RasterOpenError(f"GDAL cannot set up the warp: {_last_error('unknown error')}")
    fields = WarpOptions.from_address(opts)
    datasets = (fields.hSrcDS, fields.hDstDS)
    op = None
    try:
        if not fields.hDstDS:
            raise RasterOpenError(f"GDAL cannot set up the warp: {_last_error('no destination')}")
        fields.pfnTransformer, fields.pTransformerArg = transformer, transformer_arg
        op = g.GDALCreateWarpOperation(opts)
        if not op:
            raise RasterOpenError(f"GDAL cannot set up the warp: {_last_error('unknown error')}")
        if g.GDALWarpRegion(op, 0, 0, w, h, *src) != 0:
            raise RasterOpenError(_last_error("GDAL's warper failed"))
    finally:
        if op:
            g.GDALDestroyWarpOperation(op)
        # The options own neither the transformer (ours) nor the datasets
        # GDAL opened for them.
        fields.pfnTransformer = fields.pTransformerArg = None
        fields.hSrcDS = fields.hDstDS = None
        g.GDALDestroyWarpOptions(opts)
        for ds in datasets:
            if ds:
                g.GDALReleaseDataset(ds)
