"""Write options: one typed, validated object; one default level per codec,
used by every output; the CLI's write flags generated from it.

The level checks read the outputs back without rdask: tifffile gives each
tile's stored bytes, which must be exactly what the codec makes at the
level asked for (``--co PREDICTOR=1`` so a tile's bytes are the codec's
output for its raw pixels); Zarr stores are read as JSON and chunk files.
Where GDAL encodes (its fallback, mosaic tiles) the bytes come from GDAL's
own codec build, so the check is relative: the default level's bytes equal
those of the table's level given explicitly, and differ from another
level's.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import rasterio
from numcodecs import GZip, Zstd
from rasters import synthetic, write
from tiffbytes import stored_tiles

import rdask
from rdask.cli.options import write_flag, write_options_table
from rdask.cli.run import run as run_command
from rdask.errors import SchedulerError, UnknownWriteOptionError, WriteOptionError
from rdask.outputs import kind_for
from rdask.writeoptions import CODEC_LEVELS, DRIVERS, LEVEL_SPELLINGS, WriteOptions

DOCS = Path(__file__).resolve().parent.parent / "docs"
ENCODE = {"deflate": imagecodecs.deflate_encode, "zstd": imagecodecs.zstd_encode}
DECODE = {"deflate": imagecodecs.deflate_decode, "zstd": imagecodecs.zstd_decode}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> str:
    data = synthetic((3, 96, 80), "uint8", seed=3)
    return write(tmp_path_factory.mktemp("opts") / "in.tif", data, block=(32, 32))


def assert_tiles_at_level(path, codec: str, level: int) -> None:
    """Every tile is the codec's output at ``level`` for the raw pixels it holds,
    and the tiles tell that level from another one."""
    page, tiles = stored_tiles(path)
    assert page.compression.name.lower() == ("adobe_deflate" if codec == "deflate" else codec)
    assert page.predictor == 1
    others = 0
    for t in tiles:
        raw = DECODE[codec](t)
        assert ENCODE[codec](raw, level=level) == t
        others += ENCODE[codec](raw, level=level + 5) != t
    assert others, "the test data does not tell the levels apart"


def nothing_written(directory, *keep) -> None:
    assert sorted(os.listdir(directory)) == sorted(keep)


# -- one default level per codec, in every output -------------------------------------


@pytest.mark.parametrize("codec", ["deflate", "zstd"])
@pytest.mark.parametrize("driver", ["GTiff", "COG"])
def test_geotiff_tiles_are_encoded_at_the_table_level(tmp_path, src, codec, driver):
    out = tmp_path / "out.tif"
    rdask.process(src, out, "reverse-bands", compress=codec, driver=driver, blocksize=64,
                  creation_options={"PREDICTOR": 1})
    assert_tiles_at_level(out, codec, CODEC_LEVELS[codec].default)
    with rasterio.open(out) as ds, rasterio.open(src) as ref:
        assert np.array_equal(ds.read(), ref.read()[::-1])


@pytest.mark.parametrize("codec,spelled", [("deflate", {"level": 7}), ("deflate", {"ZLEVEL": 7}),
                                           ("zstd", {"level": 7}), ("zstd", {"ZSTD_LEVEL": 7}),
                                           ("zstd", {"LEVEL": 7})])
def test_a_level_given_either_way_reaches_the_tiles(tmp_path, src, codec, spelled):
    out = tmp_path / "out.tif"
    level = spelled.pop("level", None)
    rdask.process(src, out, "reverse-bands", compress=codec, level=level, blocksize=32,
                  creation_options={"PREDICTOR": 1, **spelled})
    assert_tiles_at_level(out, codec, 7)


@pytest.mark.parametrize("codec", ["deflate", "zstd"])
def test_gdal_fallback_and_mosaic_tiles_use_the_level(tmp_path, src, codec):
    """Band interleave is GDAL's writer's; mosaic tiles are GDAL's COG driver's."""
    cases = {"band-interleaved": dict(creation_options={"INTERLEAVE": "BAND", "PREDICTOR": 1}),
             "mosaic": dict(tile_size=64, creation_options={"PREDICTOR": 1})}
    default = CODEC_LEVELS[codec].default
    for name, how in cases.items():
        tiles = {}
        for level in (None, default, default + 8):
            out = tmp_path / f"{name}-{level}.tif"
            rdask.process(src, out, "reverse-bands", compress=codec, level=level, blocksize=32, **how)
            first = min(out.rglob("*.tif")) if "tile_size" in how else out
            tiles[level] = stored_tiles(first)[1]
        assert tiles[None] == tiles[default], name
        assert tiles[default + 8] != tiles[default], f"{name}: the level did not reach GDAL"


@pytest.mark.parametrize("codec,zarr_name", [("deflate", "gzip"), ("zstd", "zstd")])
def test_zarr_chunks_use_the_same_default_level(tmp_path, src, codec, zarr_name):
    out = tmp_path / "out.zarr"
    rdask.process(src, out, "reverse-bands", compress=codec)
    level = CODEC_LEVELS[codec].default
    v3 = json.loads((out / "band_data" / "zarr.json").read_text())
    assert {"name": zarr_name, "configuration": {"level": level}} in [
        {"name": c["name"], "configuration": {"level": c.get("configuration", {}).get("level")}}
        for c in v3["codecs"]]
    assert json.loads((out / "band_data" / ".zarray").read_text())["compressor"]["level"] == level
    # The chunk bytes are that level's (numcodecs is what zarr encodes with).
    numcodec = GZip(level) if codec == "deflate" else Zstd(level=level, checksum=False)
    chunk = out / "band_data" / "0" / "0" / "0"
    stored = chunk.read_bytes()
    again = bytes(numcodec.encode(numcodec.decode(stored)))
    if codec == "deflate":  # a gzip header holds the time it was written (bytes 4-7)
        again, stored = again[:4] + again[8:], stored[:4] + stored[8:]
    assert again == stored


def test_zarr_takes_the_level_and_gdal_spellings(tmp_path, src):
    for name, opts in {"a": dict(level=4), "b": dict(creation_options={"ZSTD_LEVEL": 4})}.items():
        out = tmp_path / f"{name}.zarr"
        rdask.process(src, out, "reverse-bands", compress="zstd", **opts)
        codecs = json.loads((out / "band_data" / "zarr.json").read_text())["codecs"]
        assert [c["configuration"]["level"] for c in codecs if c["name"] == "zstd"] == [4]


def test_every_codec_default_is_in_range_and_names_its_gdal_option():
    for name, codec in CODEC_LEVELS.items():
        assert codec.lowest <= codec.default <= codec.highest, name
        assert codec.option in LEVEL_SPELLINGS
        opts = WriteOptions(compress=name).gtiff_creation_options("uint8")
        assert opts[codec.option] == codec.default and opts["COMPRESS"] == name.upper()


# -- the GDAL spellings map onto the typed level once ----------------------------------


def test_gdal_level_spellings_are_the_typed_level():
    assert WriteOptions(creation_options={"ZLEVEL": "6"}) == WriteOptions(level=6)
    assert WriteOptions(compress="zstd", creation_options={"zstd_level": 3}) == \
        WriteOptions(compress="zstd", level=3)
    assert WriteOptions(creation_options={"LEVEL": 2, "ZLEVEL": 2}).level == 2
    assert WriteOptions(level=6, creation_options={"ZLEVEL": 6}).creation_options == ()
    assert WriteOptions(creation_options={"COMPRESS": "ZSTD"}).compress == "zstd"
    assert WriteOptions(compress="none").codec_level is None


@pytest.mark.parametrize("kwargs,needles", [
    (dict(level=3, creation_options={"ZLEVEL": 4}), ["level=3", "ZLEVEL=4", "disagree"]),
    (dict(creation_options={"ZSTD_LEVEL": 3}), ["ZSTD_LEVEL=3", "'deflate'", "ZLEVEL"]),
    (dict(creation_options={"ZLEVEL": "abc"}), ["ZLEVEL='abc'", "whole number"]),
    (dict(level=13), ["level=13", "deflate", "1 to 12"]),
    (dict(level=0, compress="zstd"), ["level=0", "zstd", "1 to 22"]),
    (dict(level=2.5), ["level=2.5"]),
    (dict(creation_options={"ZLEVEL": 15}), ["ZLEVEL=15", "1 to 12"]),
    (dict(level=5, compress="lzw"), ["level=5", "'lzw' has no level"]),
    (dict(level=5, compress="none"), ["level=5", "'none' has no level"]),
    (dict(driver="Zarr", level=10), ["Zarr", "1-9"]),
    (dict(compress="zstd", creation_options={"COMPRESS": "LZW"}), ["compress='zstd'", "COMPRESS=LZW"]),
    (dict(compress="zst"), ["compress", "'zst'", "zstd"]),
    (dict(driver="GeoTIFF"), ["driver", "'GeoTIFF'", "GTiff, COG or Zarr"]),
    (dict(driver="Zarr", creation_options={"PREDICTOR": 2}), ["PREDICTOR", "Zarr"]),
    (dict(blocksize=100), ["blocksize", "100"]),
    (dict(overview_levels=-1), ["overview_levels", "-1"]),
])
def test_bad_values_are_one_clear_error(kwargs, needles):
    with pytest.raises(WriteOptionError) as info:
        WriteOptions(**kwargs)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "\n" not in message
    for n in needles:
        assert n in message, (n, message)


@pytest.mark.parametrize("kwargs,needles", [
    (dict(compres="zstd"), ["'compres'", "did you mean 'compress'"]),
    (dict(level=99), ["level=99"]),
    (dict(creation_options={"ZLEVEL": "x"}), ["ZLEVEL='x'"]),
    (dict(creation_options={"NOSUCH": 1}), ["NOSUCH"]),
    (dict(creation_options={"BIGTIFF": "maybe"}), ["BIGTIFF", "'maybe'"]),
    (dict(driver="COG", creation_options={"NOSUCH": 1}), ["NOSUCH"]),
    (dict(workers=0), ["workers", "0"]),
    (dict(workers=-2), ["workers", "-2"]),
    (dict(scheduler="local:0"), ["local:0"]),
])
def test_mistyped_options_through_the_api_write_nothing(tmp_path, src, kwargs, needles):
    out = tmp_path / "out.tif"
    with pytest.raises((WriteOptionError, SchedulerError)) as info:
        rdask.process(src, out, "reverse-bands", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for n in needles:
        assert n in message, (n, message)
    nothing_written(tmp_path)
    if "compres" in kwargs:
        assert isinstance(info.value, (UnknownWriteOptionError, TypeError))


# -- the CLI's write flags are WriteOptions' fields ------------------------------------


def test_every_field_has_a_flag_with_its_default_help_and_choices():
    params = {p.name: p for p in run_command.params}
    for f in fields(WriteOptions):
        p = params.get(f.name)
        assert p is not None, f"WriteOptions.{f.name} has no flag in `rdask run`"
        assert write_flag(f) in p.opts
        assert p.help.startswith(f.metadata["help"])
        choices = f.metadata["choices"]
        assert tuple(getattr(p.type, "choices", ())) == (tuple(choices) if choices else ())
    # No write flag given: the options are WriteOptions' defaults, exactly.
    ctx = run_command.make_context("run", ["k", "in.tif", "out.tif"])
    assert WriteOptions(**{f.name: ctx.params[f.name] for f in fields(WriteOptions)}) == WriteOptions()


def test_driver_choices_are_the_registry_and_each_has_an_output():
    driver = next(p for p in run_command.params if p.name == "driver")
    assert tuple(driver.type.choices) == DRIVERS
    for name in DRIVERS:
        kind = kind_for("out.tif", WriteOptions(driver=name))
        assert kind.accepts("out.tif", WriteOptions(driver=name))


def test_flags_parse_into_the_options_the_api_takes():
    ctx = run_command.make_context("run", [
        "k", "a.tif", "b.tif", "--driver", "cog", "--compress", "ZSTD", "--level", "3",
        "--co", "PREDICTOR=1", "--co", "NUM_THREADS=2", "--overview-resampling", "average",
        "--overwrite", "--checkpoint-seconds", "2.5", "--blocksize", "256"])
    given = WriteOptions(**{f.name: ctx.params[f.name] for f in fields(WriteOptions)})
    assert given == WriteOptions(driver="COG", compress="zstd", level=3, blocksize=256,
                                 creation_options={"PREDICTOR": "1", "NUM_THREADS": "2"},
                                 overview_resampling="average", overwrite=True,
                                 checkpoint_seconds=2.5)


def test_cli_page_lists_every_write_option():
    page = (DOCS / "cli.md").read_text()
    assert write_options_table() in page, (
        "docs/cli.md's write options table is not WriteOptions': paste "
        "rdask.cli.options.write_options_table() into it")
    for f in fields(WriteOptions):
        assert f"`{write_flag(f)}" in page, f"docs/cli.md does not list {write_flag(f)}"
        assert f"`{f.name}`" in page, f"docs/cli.md does not name the field {f.name}"


def test_compression_page_states_the_table():
    page = (DOCS / "outputs-compression.md").read_text()
    for name, codec in CODEC_LEVELS.items():
        assert f"| {name} | {codec.default} |" in page, name
