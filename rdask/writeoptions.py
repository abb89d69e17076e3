"""How an output is written: one frozen, validated :class:`WriteOptions`.

The API (``to_raster``, ``process``), the CLI and every output kind take
this one object, so each option is named, checked, defaulted and
documented once: each field's metadata holds its help text and what the
command line needs (flag, type, choices), and ``rdask run``'s write flags
and this class's parameter documentation are generated from it. Adding an
option is adding a field here (and reading it where it is used).

The module imports neither numpy nor GDAL, so ``rdask --help`` stays fast.
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

from rdask.config import OVERVIEW_RESAMPLINGS
from rdask.errors import UnknownWriteOptionError, WriteOptionError

#: Output formats rdask writes, by their canonical (GDAL) name: the one list
#: of drivers (the CLI's ``--driver`` choices come from here).
DRIVERS = ("GTiff", "COG", "Zarr")

#: Compressions an output may ask for (GDAL's GTiff names, lower case);
#: rdask encodes deflate and zstd itself, GDAL the others, a Zarr store
#: takes deflate (gzip), zstd or none.
COMPRESSIONS = ("deflate", "zstd", "lzw", "none", "lerc", "lerc_deflate", "lerc_zstd", "lzma",
                "packbits", "jpeg", "webp", "jxl", "ccittrle", "ccittfax3", "ccittfax4")

#: Seconds between checkpoints of a partial output; a resume redoes at most this much.
CHECKPOINT_SECONDS = 10.0


@dataclass(frozen=True)
class CodecLevel:
    """A codec's compression level: GDAL's option for it, rdask's default and the range."""

    option: str
    default: int
    lowest: int
    highest: int


#: One default level per codec, used by every output (GeoTIFF tiles, GDAL's
#: writer, COG, mosaic tiles, Zarr's gzip and zstd). Chosen by measurement
#: (``benchmarks/levels.py``; the table and the reasons are in
#: docs/outputs-compression.md): with a predictor, level 1 of deflate and of
#: zstd compresses about as well as higher levels at a fraction of the CPU,
#: and compression is most of the CPU an I/O-bound job spends. LZMA keeps
#: GDAL's 6: no lower preset was both smaller and cheaper.
CODEC_LEVELS: dict[str, CodecLevel] = {
    "deflate": CodecLevel("ZLEVEL", 1, 1, 12),
    "zstd": CodecLevel("ZSTD_LEVEL", 1, 1, 22),
    "lerc_deflate": CodecLevel("ZLEVEL", 1, 1, 12),
    "lerc_zstd": CodecLevel("ZSTD_LEVEL", 1, 1, 22),
    "lzma": CodecLevel("LZMA_PRESET", 6, 0, 9),
}

#: Creation options that spell a level (GTiff's per codec, the COG driver's
#: ``LEVEL``): mapped onto :attr:`WriteOptions.level` once, here.
LEVEL_SPELLINGS = ("ZLEVEL", "ZSTD_LEVEL", "LZMA_PRESET", "LEVEL")

#: Creation options a Zarr output takes (besides the level spellings).
ZARR_CREATION_OPTIONS = ("V2_METADATA", "SHARD")


def _levels_text() -> str:
    return ", ".join(f"{name} {c.default}" for name, c in CODEC_LEVELS.items())


def option(default: Any, help: str, *, type: Any = None, choices: tuple[str, ...] | None = None,
           flag: str | None = None, metavar: str | None = None, default_text: str | None = None) -> Any:
    """A :class:`WriteOptions` field with what documents it and what the CLI needs.

    Parameters
    ----------
    default
        The field's default (shown by ``--help`` unless ``default_text``).
    help
        One or two sentences for both the API documentation and ``--help``.
    type
        ``int``, ``float``, ``str``, ``bool`` (a flag) or ``dict`` (a
        repeatable ``NAME=VALUE`` flag).
    choices
        The accepted values (case-insensitive; the canonical spelling is kept).
    flag, metavar, default_text
        The CLI's flag (default ``--`` + the name with dashes), its
        metavar, and what ``--help`` says for a ``None`` default.
    """
    meta = {"help": help, "type": type or builtin_type(default), "choices": choices, "flag": flag,
            "metavar": metavar, "default_text": default_text}
    return field(default=default, metadata=meta)


def builtin_type(default: Any) -> Any:
    return bool if isinstance(default, bool) else type(default)


@dataclass(frozen=True, kw_only=True)
class WriteOptions:
    """Everything about how an output is written (frozen, validated).

    Build it with keywords, or with :meth:`of`; ``process`` and
    ``to_raster`` take the same names as keyword arguments.
    """

    driver: str = option("GTiff", "Output format: GTiff (a tiled GeoTIFF), COG (a Cloud Optimized "
                         "GeoTIFF with overviews) or Zarr (a Zarr store; also chosen by a target "
                         "ending in .zarr).", choices=DRIVERS)
    compress: str | None = option("deflate", "Compression, by GDAL's name (a Zarr store takes "
                                  "deflate, zstd or none).", type=str, choices=COMPRESSIONS)
    level: int | None = option(None, "Compression level of deflate, zstd, lerc_deflate, lerc_zstd "
                               "or lzma; GDAL's spellings (ZLEVEL, ZSTD_LEVEL, LZMA_PRESET, LEVEL) "
                               "as creation options mean the same.", type=int,
                               default_text=f"the codec's: {_levels_text()}")
    blocksize: int = option(512, "Output tile size in pixels: a multiple of 16 (for a COG a power "
                            "of two from 64 to 4096).")
    tile_size: int | None = option(None, "Write a mosaic instead of one file: the target is a "
                                   "directory of N x N pixel COG tiles (N a multiple of the block "
                                   "size) with index.vrt.", type=int, metavar="N")
    creation_options: tuple[tuple[str, str], ...] = option(
        (), "GDAL GTiff creation options, e.g. PREDICTOR=2; they win over rdask's defaults (a "
            "Zarr store takes V2_METADATA=NO and SHARD=YES).", type=dict, flag="--co", metavar="NAME=VALUE")
    overview_levels: int | None = option(None, "Number of overview levels (COG: default down to "
                                         "one tile; Zarr: default none).", type=int,
                                         default_text="COG: down to one tile; Zarr: none")
    overview_resampling: str = option("nearest", "Overview resampling (a Zarr store takes nearest "
                                      "or average).", choices=OVERVIEW_RESAMPLINGS)
    overwrite: bool = option(False, "Replace an existing output (only once the new one is complete).")
    resume: bool = option(False, "Continue the partial output of an interrupted identical job; if "
                          "this job is interrupted, keep its partial output for the next resume.")
    checkpoint_seconds: float = option(CHECKPOINT_SECONDS, "Seconds between checkpoints of the "
                                       "partial output (what a resume may redo).")

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for f in fields(self):
            if f.metadata["choices"] and getattr(self, f.name) is not None:
                set_(self, f.name, _choose(f, getattr(self, f.name)))
        co = _pairs(self.creation_options)
        set_(self, "compress", _compress(self.compress, co))
        set_(self, "level", _level(self.compress, self.level, co))
        set_(self, "creation_options", tuple(sorted(co.items())))
        set_(self, "checkpoint_seconds", float(self.checkpoint_seconds))
        self._check_sizes()
        if self.driver == "COG":
            self._check_cog()
        if self.driver == "Zarr":
            self._check_zarr()

    @property
    def codec_level(self) -> int | None:
        """The level the output compresses at: :attr:`level`, or the codec's
        default from :data:`CODEC_LEVELS`; ``None`` for a codec without levels."""
        codec = CODEC_LEVELS.get(self.compress or "")
        if codec is None:
            return None
        return codec.default if self.level is None else self.level

    def _check_sizes(self) -> None:
        if not _whole(self.blocksize) or self.blocksize < 16 or self.blocksize % 16:
            raise WriteOptionError(f"blocksize must be a multiple of 16, got {self.blocksize!r}")
        if self.checkpoint_seconds < 0:
            raise WriteOptionError(f"checkpoint_seconds must be >= 0, got {self.checkpoint_seconds}")
        if self.tile_size is not None and (not _whole(self.tile_size) or self.tile_size < 1
                                           or self.tile_size % self.blocksize):
            raise WriteOptionError(f"tile_size must be a multiple of the blocksize "
                                   f"({self.blocksize}), got {self.tile_size!r}")
        if self.overview_levels is not None and (not _whole(self.overview_levels)
                                                 or self.overview_levels < 0):
            raise WriteOptionError(f"overview_levels must be >= 0, got {self.overview_levels!r}")
        for name in ("blocksize", "tile_size", "overview_levels"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))

    def _check_zarr(self) -> None:
        if self.compress not in (None, "deflate", "zstd"):
            raise WriteOptionError(f"a Zarr output compresses with deflate (gzip), zstd or none, "
                                   f"not {self.compress!r}")
        if self.compress == "deflate" and self.codec_level > 9:
            raise WriteOptionError(f"a Zarr output's deflate (gzip) takes levels 1-9, got {self.level}")
        if self.overview_resampling not in ("nearest", "average"):
            raise WriteOptionError(f"a Zarr output makes nearest or average overviews, "
                                   f"not {self.overview_resampling!r}")
        unknown = sorted(set(dict(self.creation_options)) - set(ZARR_CREATION_OPTIONS))
        if unknown:
            raise WriteOptionError(f"unknown Zarr creation option {unknown[0]!r}; a Zarr output "
                                   f"takes {', '.join(ZARR_CREATION_OPTIONS + LEVEL_SPELLINGS)}")

    def _check_cog(self) -> None:
        b = self.blocksize
        if b < 64 or b > 4096 or b & (b - 1):
            # GDAL's overview tiles (GDAL_TIFF_OVR_BLOCKSIZE) must be such a size.
            raise WriteOptionError(f"a COG needs a blocksize that is a power of 2 from 64 to 4096, got {b}")

    @classmethod
    def of(cls, options: WriteOptions | None = None, **changes: Any) -> WriteOptions:
        """``options`` (or the defaults) with ``changes``.

        Raises
        ------
        UnknownWriteOptionError
            A name that is no option (a ``TypeError`` too), naming it and
            the closest option.
        """
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
            raise UnknownWriteOptionError(f"unknown write option {unknown[0]!r}; {hint}")
        base = {f.name: getattr(options, f.name) for f in fields(cls)} if options else {}
        return cls(**{**base, **changes})

    def compression_options(self, dtype: Any) -> dict[str, Any]:
        """GDAL's GTiff options for the compression: ``COMPRESS``, rdask's
        predictor for ``dtype`` and the level under its GDAL name (before
        the user's creation options, which win)."""
        if not self.compress:
            return {"COMPRESS": "NONE"}
        out: dict[str, Any] = {"COMPRESS": self.compress.upper()}
        out.update(default_compression_options(self.compress, dtype))
        if self.codec_level is not None:
            out[CODEC_LEVELS[self.compress].option] = self.codec_level
        return out

    def gtiff_creation_options(self, dtype: Any, threads: int = 1) -> dict[str, Any]:
        """The GTiff creation options rdask writes with: tiled, BigTIFF when
        needed, the compression with rdask's defaults, then the user's."""
        opts: dict[str, Any] = {
            "TILED": "YES",
            "BLOCKXSIZE": self.blocksize,
            "BLOCKYSIZE": self.blocksize,
            "BIGTIFF": "IF_SAFER",
            "NUM_THREADS": max(1, int(threads)),
        }
        if self.compress:
            opts.update(self.compression_options(dtype))
        opts.update(dict(self.creation_options))
        return opts


def default_compression_options(compress: str, dtype: Any) -> dict[str, Any]:
    """rdask's predictor under a compression name; creation options override it.

    A predictor (horizontal differencing: 2 for integers, 3 for floats)
    makes rasters markedly smaller, so that a fast level compresses about
    as well as a slow one without it (see :data:`CODEC_LEVELS`).
    """
    import numpy as np  # here, not at the top: `rdask --help` loads this module

    name = compress.upper()
    if name not in ("DEFLATE", "ZSTD", "LZW"):
        return {}
    dt = np.dtype(dtype)
    if dt.kind in "iuf" and dt.itemsize <= 8:
        return {"PREDICTOR": 3 if dt.kind == "f" else 2}
    return {}


def _document(cls: type) -> type:
    """Append the numpydoc Parameters section, from the fields' help."""
    lines = ["", "Parameters", "----------"]
    for f in fields(cls):
        lines += [f.name, *textwrap.wrap(f.metadata["help"], 72, initial_indent="    ",
                                         subsequent_indent="    ")]
    lines += ["", "Raises", "------", "WriteOptionError",
              "    A value that is not allowed (a ``ValueError`` too), naming the option."]
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + "\n".join(f"    {line}" if line else ""
                                                            for line in lines) + "\n"
    return cls


_document(WriteOptions)


def field_default(name: str) -> Any:
    """The default of the :class:`WriteOptions` field ``name``."""
    return _field(name).default


def _choose(f: Field, value: Any) -> Any:
    """``value`` in its canonical spelling among ``f``'s choices."""
    choices = {c.upper(): c for c in f.metadata["choices"]}
    chosen = choices.get(str(value).upper())
    if chosen is None:
        raise WriteOptionError(f"unknown {f.name} {value!r}: use {_or(f.metadata['choices'])}")
    return chosen


def _compress(compress: str | None, co: dict[str, str]) -> str | None:
    """The compression, ``None`` for none; a ``COMPRESS`` creation option
    (GDAL's spelling) is taken when it agrees or ``compress`` is the default."""
    spelled = co.pop("COMPRESS", None)
    if spelled is not None:
        given = _choose(_field("compress"), spelled)
        if compress not in (given, field_default("compress")):
            raise WriteOptionError(f"compress={compress!r} and creation option COMPRESS={spelled} "
                                   "disagree; give one")
        compress = given
    return None if compress == "none" else compress


def _level(compress: str | None, level: int | None, co: dict[str, str]) -> int | None:
    """``level``, or the one a creation option spells (taken out of ``co``);
    checked against the codec's range."""
    codec = CODEC_LEVELS.get(compress or "")
    given = "level"
    for name in LEVEL_SPELLINGS:
        if name not in co:
            continue
        text = co.pop(name)
        if codec is None or name not in (codec.option, "LEVEL"):
            fix = f"its level is {codec.option} (or the level option)" if codec else "it has no level"
            raise WriteOptionError(f"creation option {name}={text} does not apply to compression "
                                   f"{compress or 'none'!r}: {fix}")
        try:
            spelled = int(text)
        except ValueError:
            raise WriteOptionError(f"creation option {name}={text!r} is not a whole number") from None
        if level is not None and level != spelled:
            raise WriteOptionError(f"level={level} and creation option {name}={text} disagree; give one")
        level, given = spelled, f"creation option {name}"
    if level is None:
        return None
    if codec is None:
        raise WriteOptionError(f"level={level!r} given, but compression {compress or 'none'!r} "
                               f"has no level (levels are for {_or(tuple(CODEC_LEVELS))})")
    if not _whole(level) or not codec.lowest <= level <= codec.highest:
        raise WriteOptionError(f"{given}={level!r}: a {compress} level is a whole number from "
                               f"{codec.lowest} to {codec.highest}")
    return int(level)


def _field(name: str) -> Field:
    return next(f for f in fields(WriteOptions) if f.name == name)


def _whole(value: Any) -> bool:
    """An integer (a float with an integral value too), not a bool."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and float(value).is_integer())


def _or(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def _pairs(options: Mapping[str, Any] | tuple | None) -> dict[str, str]:
    """Creation options as ``{NAME: value}`` strings, names upper case."""
    items = options.items() if isinstance(options, Mapping) else (options or ())
    try:
        return {str(k).upper(): str(v) for k, v in items}
    except (TypeError, ValueError):
        raise WriteOptionError(f"creation_options must be NAME=VALUE pairs, got {options!r}") from None
