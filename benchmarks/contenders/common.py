"""What the benchmark contenders share: the kernel, the command line, the writer.

Every reverse-bands contender reverses the band order of a ``(bands, y, x)``
block, with the synthetic per-value work of the example kernel in rasterio's
"Concurrent processing" documentation: ``iterations`` additions of ``1.0``
to each value, then one subtraction of ``iterations``.  By default that is
rdask's own ``reverse-bands`` kernel function, the one the rdask CLI runs,
so the contenders differ only in how they read, schedule and write.

The neighbourhood contenders (``xrspatial_slope.py``, ``dask_image_focal.py``)
share :func:`open_dask`, :func:`write_threaded` and :func:`require`; the
reprojection contenders (``odc_reproject.py``, ``rioxarray_reproject.py``)
also :func:`add_grid_options`, :func:`target_grid` and
:func:`creation_options`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: A kernel maps a ``(bands, y, x)`` block to its band-reversed copy.
KernelFunc = Callable[[np.ndarray], np.ndarray]

#: Iteration count hard-wired into ``rasterio._example.compute``.
DOCS_ITERATIONS = 2000

#: Kernel backends; ``auto`` picks rdask's own kernel (see :func:`select_kernel`).
BACKENDS = ("auto", "rdask", "cython", "numba", "numpy")

#: What ``benchmarks/requirements.txt`` installs, for the hint of :func:`require`.
REQUIREMENTS_HINT = ".venv/bin/pip install -r benchmarks/requirements.txt"


def select_kernel(iterations: int, dtype: np.dtype, backend: str = "auto") -> KernelFunc:
    """Return the band-reversing kernel for ``iterations`` units of work.

    Parameters
    ----------
    iterations
        Additions per value (the docs' kernel does 2000; 0 is a plain copy).
    dtype
        Dtype of the blocks the kernel will see.
    backend
        ``"rdask"`` is rdask's built-in ``reverse-bands`` kernel function
        (``rdask.kernels.get_kernel("reverse-bands").func``, numba
        ``nogil``, 8 values interleaved), the kernel the rdask CLI runs;
        ``"cython"`` is rasterio's own ``_example.compute`` (uint8 and 2000
        iterations only; one dependent chain of additions per value, about
        3-4x slower than rdask's); ``"numba"`` is the Cython loop compiled
        with ``njit(nogil=True)``; ``"numpy"`` reverses without the
        synthetic work (``iterations`` must be 0); ``"auto"`` picks numpy
        for 0 iterations (a copy, without importing numba) and rdask
        otherwise, so that a comparison with rdask measures the pipelines,
        not the kernels.

    Returns
    -------
    KernelFunc
        A function that releases the GIL for the duration of its work
        (numpy's copy does too).

    Raises
    ------
    ValueError
        If ``backend`` cannot do the requested work.
    """
    dtype = np.dtype(dtype)
    cython_ok = iterations == DOCS_ITERATIONS and dtype == np.uint8
    if backend == "auto":
        backend = "numpy" if iterations == 0 else "rdask"
    if backend == "rdask":
        return _rdask_kernel(iterations)
    if backend == "cython":
        if not cython_ok:
            raise ValueError("the cython kernel only does 2000 iterations on uint8")
        from rasterio._example import compute

        return compute
    if backend == "numpy":
        if iterations != 0:
            raise ValueError("the numpy kernel only does iterations=0")
        return _reverse_numpy
    if backend == "numba":
        return _numba_kernel(iterations)
    raise ValueError(f"unknown kernel backend {backend!r}; choose from {BACKENDS}")


def _rdask_kernel(iterations: int) -> KernelFunc:
    """Bind ``iterations`` to rdask's ``reverse-bands`` kernel function."""
    from rdask.kernels import get_kernel

    func = get_kernel("reverse-bands").func

    def kernel(block: np.ndarray) -> np.ndarray:
        return func(block, iterations=iterations)

    return kernel


def _reverse_numpy(block: np.ndarray) -> np.ndarray:
    """Band-reversed, C-contiguous copy of ``block``."""
    return np.ascontiguousarray(block[::-1])


def _numba_kernel(iterations: int) -> KernelFunc:
    """Bind ``iterations`` to the compiled loop (compiled once, then cached)."""
    loop = _compiled_loop()

    def kernel(block: np.ndarray) -> np.ndarray:
        return loop(block, iterations)

    return kernel


def _compiled_loop() -> Callable[[np.ndarray, int], np.ndarray]:
    """Compile :func:`reverse_bands_loop` lazily, so numba is imported only if used."""
    import numba

    return numba.njit(nogil=True, cache=True)(reverse_bands_loop)


def reverse_bands_loop(block: np.ndarray, iterations: int) -> np.ndarray:
    """The loop of ``rasterio._example.compute``, for any iteration count.

    Plain Python; :func:`_compiled_loop` compiles it with numba.
    """
    nb, ny, nx = block.shape
    out = np.empty_like(block)
    for i in range(nb):
        for j in range(ny):
            for k in range(nx):
                val = float(block[i, j, k])
                for _ in range(iterations):
                    val += 1.0
                val -= iterations
                out[nb - 1 - i, j, k] = val
    return out


def build_parser(
    description: str, *, kernel: bool = True, jobs: bool | None = None, chunk: int | None = None
) -> argparse.ArgumentParser:
    """Command line shared by the contenders.

    Parameters
    ----------
    description
        Shown by ``--help``.
    kernel
        Add the kernel options (``--iterations``, ``--kernel``); a plain
        copy needs none of them.
    jobs
        Add ``-j`` (default: with the kernel options).
    chunk
        Add ``--chunk`` (dask chunk side) with this default.

    Returns
    -------
    argparse.ArgumentParser
        With ``infile``, ``outfile``, ``--compress`` and ``--blocksize``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("infile", help="input raster")
    parser.add_argument("outfile", help="output GeoTIFF (overwritten)")
    parser.add_argument(
        "--compress",
        default=None,
        help="output compression, e.g. deflate, or 'none' (default: the contender's own)",
    )
    parser.add_argument("--blocksize", type=int, default=512, help="output tile size")
    if kernel if jobs is None else jobs:
        parser.add_argument("-j", "--jobs", type=int, default=2, help="worker threads")
    if chunk is not None:
        parser.add_argument("--chunk", type=int, default=chunk, help="dask chunk side (pixels)")
    if kernel:
        parser.add_argument(
            "--iterations", type=int, default=DOCS_ITERATIONS, help="additions per value"
        )
        parser.add_argument(
            "--kernel", choices=BACKENDS, default="auto", help="kernel implementation"
        )
    return parser


def compress_option(value: str | None, default: str | None) -> str | None:
    """Normalise a ``--compress`` value: ``None`` means ``default``, 'none' means none."""
    if value is None:
        return default
    return None if value.lower() == "none" else value.lower()


# -- neighbourhood contenders ---------------------------------------------------


def require(module: str, package: str) -> Any:
    """Import ``module``, or exit with status 2 and how to install ``package``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"{package} is not installed ({exc}); install it with: {REQUIREMENTS_HINT}"
        print(hint, file=sys.stderr)
        sys.exit(2)


def open_dask(infile: str, chunk: int) -> Any:
    """``rioxarray.open_rasterio`` with square dask chunks of ``chunk`` px, all bands in one.

    ``lock=False``: every read opens its own handle, so reads run in
    parallel.  No masking: nodata stays in the array as its value, as a
    plain ``open_rasterio`` gives it.
    """
    import rioxarray

    return rioxarray.open_rasterio(infile, chunks={"band": -1, "y": chunk, "x": chunk}, lock=False)


def reversed_bands(infile: str, chunk: int, iterations: int, backend: str) -> Any:
    """:func:`open_dask` of ``infile`` with the shared kernel mapped over its blocks."""
    data = open_dask(infile, chunk)
    kernel = select_kernel(iterations, data.dtype, backend)
    return data.copy(data=data.data.map_blocks(kernel, dtype=data.dtype))


def write_threaded(
    result: Any,
    outfile: str,
    *,
    jobs: int,
    blocksize: int,
    compress: str | None,
    options: dict[str, str] | None = None,
) -> None:
    """``result.rio.to_raster`` as a tiled GeoTIFF on dask's threaded scheduler.

    Writes go through one ``threading.Lock`` (GDAL datasets are not
    thread-safe); ``jobs`` threads compute.  The output dtype is the dask
    array's declared dtype.  ``options`` are more GDAL creation options
    (e.g. ``{"PREDICTOR": "3"}``).
    """
    import dask

    options = {**({"compress": compress} if compress else {}), **(options or {})}
    with dask.config.set(scheduler="threads", num_workers=jobs):
        result.rio.to_raster(
            outfile,
            tiled=True,
            blockxsize=blocksize,
            blockysize=blocksize,
            lock=threading.Lock(),
            **options,
        )


# -- reprojection contenders ------------------------------------------------------


@dataclass(frozen=True)
class TargetGrid:
    """An output pixel grid: CRS, square pixels of ``res``, bounds, size."""

    crs: str
    left: float
    bottom: float
    right: float
    top: float
    res: float

    @property
    def width(self) -> int:
        """Columns: ``(right - left) / res``, a whole number by construction."""
        return round((self.right - self.left) / self.res)

    @property
    def height(self) -> int:
        """Rows: ``(top - bottom) / res``."""
        return round((self.top - self.bottom) / self.res)

    @property
    def transform(self) -> Any:
        """The grid's affine transform (north up, top-left origin)."""
        from affine import Affine

        return Affine(self.res, 0.0, self.left, 0.0, -self.res, self.top)


def add_grid_options(parser: argparse.ArgumentParser) -> None:
    """``--crs``, ``--bounds l,b,r,t``, ``--res``: the grid every W8 contender writes."""
    parser.add_argument("--crs", required=True, help="target CRS, e.g. EPSG:4326")
    parser.add_argument(
        "--bounds", required=True, help="target bounds left,bottom,right,top (CRS units)"
    )
    parser.add_argument("--res", type=float, required=True, help="target pixel size (square)")
    parser.add_argument(
        "--co",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="GDAL creation option of the output (repeatable)",
    )
    parser.add_argument(
        "--slope", action="store_true", help="then xarray-spatial's slope (degrees) of the result"
    )


def target_grid(args: argparse.Namespace) -> TargetGrid:
    """The :class:`TargetGrid` of the parsed :func:`add_grid_options`."""
    left, bottom, right, top = (float(v) for v in args.bounds.split(","))
    return TargetGrid(args.crs, left, bottom, right, top, args.res)


def creation_options(args: argparse.Namespace) -> dict[str, str]:
    """The ``--co NAME=VALUE`` options as a dict."""
    return dict(item.split("=", 1) for item in args.co)


def masked_slope(dem: Any) -> Any:
    """xarray-spatial's slope (degrees) of a 2-D DEM whose nodata value becomes NaN first.

    xarray-spatial takes any number as an elevation; NaN propagates to
    every slope whose 3x3 window holds it (what gdaldem writes as nodata).
    Its outer rows and columns are NaN.  The result is cast to the DEM's
    dtype: on a dask array xarray-spatial computes float32 chunks but
    declares the array float64, which would write a float64 file.
    """
    xrspatial = require("xrspatial", "xarray-spatial")
    nodata = dem.rio.nodata
    if nodata is not None and not np.isnan(nodata):
        dem = dem.where(dem != nodata)
    result = xrspatial.slope(dem).astype(dem.dtype)
    return result.rio.write_nodata(np.nan, encoded=False)
