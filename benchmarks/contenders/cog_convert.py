"""Convert a GeoTIFF to a COG with GDAL's COG driver or with rio-cogeo.

The two ways a user turns an existing GeoTIFF into a Cloud Optimized
GeoTIFF (tiled, internal overviews, IFDs first), both with nearest
overviews and DEFLATE tiles of ``--blocksize``:

* ``--tool gdal``: ``rasterio.shutil.copy(IN, OUT, driver="COG",
  NUM_THREADS="ALL_CPUS", RESAMPLING="NEAREST", COMPRESS="DEFLATE",
  BLOCKSIZE=512)`` (GDAL's ``CreateCopy``; overviews until the smallest
  fits in a tile, level sizes ``floor(n / factor)``);
* ``--tool rio-cogeo``: ``rio_cogeo.cogeo.cog_translate(IN, OUT,
  cog_profiles.get("deflate"), overview_resampling="nearest",
  config={"GDAL_NUM_THREADS": "ALL_CPUS"}, quiet=True)`` (overviews built by
  GDAL's GeoTIFF overview builder in a temporary file, then copied with
  ``COPY_SRC_OVERVIEWS``).

Both keep GDAL's DEFLATE defaults (level 6, no predictor).

Usage: ``cog_convert.py IN OUT --tool gdal|rio-cogeo [--compress deflate]
[--blocksize 512]``.
"""

from __future__ import annotations

from common import build_parser, compress_option, require

#: The conversion tools this script knows.
TOOLS = ("gdal", "rio-cogeo")


def convert(infile: str, outfile: str, *, tool: str, blocksize: int, compress: str | None) -> None:
    """Write ``infile`` as a COG ``outfile`` with nearest overviews.

    Parameters
    ----------
    infile, outfile
        The GeoTIFF to convert and the COG to create (overwritten).
    tool
        ``"gdal"`` (GDAL's COG driver) or ``"rio-cogeo"``.
    blocksize
        Tile size of every level.
    compress
        Compression (e.g. ``"deflate"``), or ``None`` for none.
    """
    if tool == "gdal":
        import rasterio.shutil

        rasterio.shutil.copy(
            infile,
            outfile,
            driver="COG",
            NUM_THREADS="ALL_CPUS",
            RESAMPLING="NEAREST",
            COMPRESS=(compress or "none").upper(),
            BLOCKSIZE=blocksize,
        )
    elif tool == "rio-cogeo":
        cogeo = require("rio_cogeo.cogeo", "rio-cogeo")
        profiles = require("rio_cogeo.profiles", "rio-cogeo")
        profile = profiles.cog_profiles.get((compress or "raw").lower())
        profile.update(blockxsize=blocksize, blockysize=blocksize)
        cogeo.cog_translate(
            infile,
            outfile,
            profile,
            overview_resampling="nearest",
            config={"GDAL_NUM_THREADS": "ALL_CPUS"},
            quiet=True,
        )
    else:
        raise ValueError(f"unknown tool {tool!r}; choose from {TOOLS}")


def add_tool_option(parser) -> None:
    """``--tool gdal|rio-cogeo`` (required)."""
    parser.add_argument("--tool", choices=TOOLS, required=True, help="COG conversion tool")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = build_parser(__doc__.splitlines()[0], kernel=False)
    add_tool_option(parser)
    args = parser.parse_args(argv)
    convert(
        args.infile,
        args.outfile,
        tool=args.tool,
        blocksize=args.blocksize,
        compress=compress_option(args.compress, "deflate"),
    )


if __name__ == "__main__":
    main()
