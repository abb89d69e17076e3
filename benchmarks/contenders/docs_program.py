"""thread_pool_executor.py from rasterio's "Concurrent processing" docs.

Operate on a raster window by window with a ThreadPoolExecutor: at most one
thread reads and at most one writes at a time, while the kernel (which
releases the GIL) runs in every worker thread at once.

Two deliberate departures from the program as printed, both noted in
``/work/shared/reference/README.md`` or harmless:

* the output is opened with the *updated* profile (tiled, as the text
  intends); the printed program passes ``**src.profile`` so its tiling
  never takes effect;
* the results of ``executor.map`` are consumed, so an exception in a worker
  fails the program instead of being silently dropped.

Usage: ``docs_program.py IN OUT -j N [--iterations K] [--compress deflate]
[--blocksize 512]``.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import rasterio
from common import KernelFunc, build_parser, compress_option, select_kernel
from rasterio.windows import Window


def output_profile(src_profile: dict[str, Any], blocksize: int, compress: str | None) -> dict:
    """The source profile, tiled ``blocksize`` and compressed with ``compress``.

    ``compress=None`` writes an uncompressed output.
    """
    profile = dict(src_profile)
    profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    profile.pop("compress", None)
    if compress is not None:
        profile["compress"] = compress
    return profile


def process_file(
    infile: str,
    outfile: str,
    kernel: KernelFunc,
    *,
    jobs: int,
    blocksize: int,
    compress: str | None,
) -> None:
    """Process ``infile`` block by block into ``outfile``.

    Parameters
    ----------
    infile, outfile
        Paths of the input raster and of the GeoTIFF to create.
    kernel
        Applied to each ``(bands, y, x)`` block window; must release the GIL
        for threads to help.
    jobs
        Worker threads.
    blocksize
        Output tile size; the tiles are the units of work.
    compress
        Output compression, or ``None`` for none.
    """
    with rasterio.open(infile) as src:
        profile = output_profile(src.profile, blocksize, compress)
        with rasterio.open(outfile, "w", **profile) as dst:
            windows = [window for _, window in dst.block_windows()]
            read_lock = threading.Lock()
            write_lock = threading.Lock()

            def process(window: Window) -> None:
                with read_lock:
                    src_array = src.read(window=window)
                result = kernel(src_array)
                with write_lock:
                    dst.write(result, window=window)

            with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as executor:
                for _ in executor.map(process, windows):
                    pass


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)
    with rasterio.open(args.infile) as src:
        dtype, src_compress = src.dtypes[0], src.profile.get("compress")
    process_file(
        args.infile,
        args.outfile,
        select_kernel(args.iterations, dtype, args.kernel),
        jobs=args.jobs,
        blocksize=args.blocksize,
        compress=compress_option(args.compress, src_compress),
    )


if __name__ == "__main__":
    main()
