"""The plain rioxarray pipeline to a GeoTIFF, then a COG conversion: a COG the usual way.

Step 1 is ``rioxarray_plain.process_file`` (the W2 rioxarray contender:
chunks of 2048 px, ``map_blocks`` of the kernel, ``.rio.to_raster`` tiled
512, DEFLATE) to ``OUT.gtiff.tif`` beside OUT; step 2 converts that file
with ``cog_convert.convert`` (GDAL's COG driver or rio-cogeo, nearest
overviews, DEFLATE, tiles of ``--blocksize``); the intermediate file is
removed at the end.  One process, as one script would do it.

Usage: ``rioxarray_cog.py IN OUT -j N --tool gdal|rio-cogeo [--iterations K]
[--compress deflate] [--blocksize 512] [--chunk 2048]``.
"""

from __future__ import annotations

from pathlib import Path

from cog_convert import add_tool_option, convert
from common import build_parser, compress_option
from rioxarray_plain import process_file


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = build_parser(__doc__.splitlines()[0], chunk=2048)
    add_tool_option(parser)
    args = parser.parse_args(argv)
    compress = compress_option(args.compress, "deflate")
    out = Path(args.outfile)
    temp = out.with_name(out.name + ".gtiff.tif")
    try:
        process_file(
            args.infile,
            str(temp),
            jobs=args.jobs,
            iterations=args.iterations,
            backend=args.kernel,
            chunk=args.chunk,
            blocksize=args.blocksize,
            compress=compress,
        )
        convert(
            str(temp), args.outfile, tool=args.tool, blocksize=args.blocksize, compress=compress
        )
    finally:
        temp.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
