"""A fixed set of rdask jobs and canonical digests of their outputs.

Recorded (``tests/data/checksums.json``) and re-run by
``tests/test_checksums.py``: what rdask decides (decoded pixels of every
IFD, the tile layout, the metadata) is compared always; the bytes that
also depend on the codecs and libraries (compressed tiles, whole COG files)
only when every library version the record names is the one installed.

Every job uses only the public API (``rdask.process``, ``rdask.open_raster``
+ ``rdask.apply`` + ``rdask.to_raster``, the ``.rdask`` accessor, the
``rdask run`` command) on small deterministic inputs: rasters generated here
by seeded, integer-only numpy code (exact on any machine) written with plain
rasterio and a fixed profile, plus the real files in ``tests/data``.

Digests of one output:

``pixels``
    per IFD (main image, overviews, masks), sha256 of its decoded pixels
    (dtype, shape and values): rdask's result, whatever the codec's
    version. IFDs whose pixels GDAL's overview builder computes (COGs with
    another resampling than ``nearest``) are compared with GDAL's own
    overviews of the output's main image instead, made by the installed GDAL.
``tiles``
    sha256 over the image structure of every IFD (main image, overviews,
    masks: size, samples, bits, sample format, compression, predictor, tile
    or strip size, planar config, photometric, extra samples, subfile type)
    and every tile's compressed bytes in tile-index order. With threads the
    tile sink appends tiles in completion order, so the file's bytes are not
    deterministic for a GeoTIFF, but this is. ``tile_data`` (the tile bytes
    alone), ``ifd_data`` (the same per IFD) and ``structure`` (the per-IFD
    fields) are kept beside it to say which part changed.
``file``
    sha256 of the whole file, for COG outputs only (their layout is
    rewritten in a fixed order, and recording checks that two runs agree).
``meta``
    What rasterio reads: CRS (compared as a CRS, not as PROJ's spelling of
    it), transform, nodata, tags of every domain but those GDAL generates,
    per-band descriptions, scales, offsets, units, colour interpretation,
    tags, mask flags, colormaps, GCPs, RPCs, overviews, dtypes and size.

Regenerate the record (runs every job twice and refuses to record anything
that differs between the two runs)::

    PYTHONPATH=. .venv/bin/python tests/checksum_jobs.py --record

``--check`` runs the jobs once and compares with the record, without pytest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
RECORD = DATA / "checksums.json"
WORKERS = 2  # explicit everywhere: the default (CPU count) would make chunk plans machine-dependent

CRS = "EPSG:32618"
TRANSFORM = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)
REAL_FILES = ("RGB.byte.tif", "float_nan.tif", "shade.tif", "RGBA.uint16.tif")


# -- deterministic inputs ------------------------------------------------------


def _smooth(rng: np.random.Generator, h: int, w: int, cell: int, hi: int) -> np.ndarray:
    """Bilinear upsampling of a coarse random grid in exact int64 arithmetic;
    values in ``[0, hi * cell**2)``."""
    g = rng.integers(0, hi, size=(h // cell + 2, w // cell + 2), dtype=np.int64)
    y, x = np.arange(h), np.arange(w)
    y0, fy = (y // cell)[:, None], (y % cell)[:, None]
    x0, fx = (x // cell)[None, :], (x % cell)[None, :]
    return (g[y0, x0] * (cell - fy) * (cell - fx) + g[y0, x0 + 1] * (cell - fy) * fx
            + g[y0 + 1, x0] * fy * (cell - fx) + g[y0 + 1, x0 + 1] * fy * fx)


def _sprinkle(rng: np.random.Generator, shape: tuple[int, ...], one_in: int) -> np.ndarray:
    return rng.integers(0, one_in, size=shape) == 0


def _write(path: Path, data: np.ndarray, *, block: tuple[int, int] | None, nodata=None,
           mask: np.ndarray | None = None, after: Callable | None = None, **extra) -> str:
    """Write ``data`` with a fixed profile; ``block=None`` makes it striped."""
    bands, h, w = data.shape
    profile = dict(driver="GTiff", height=h, width=w, count=bands, dtype=data.dtype, crs=CRS,
                   transform=TRANSFORM, nodata=nodata, compress="deflate", interleave="pixel",
                   **extra)
    if block is None:
        profile.update(tiled=False, blockysize=8)
    else:
        profile.update(tiled=True, blockysize=block[0], blockxsize=block[1])
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if mask is not None:
            dst.write_mask(mask)
        if after is not None:
            after(dst)
    return str(path)


def _gen_dem():
    """777 x 1000 float32 DEM, nodata -9999 in a corner and sprinkled."""
    rng = np.random.default_rng(101)
    h, w = 777, 1000
    z = _smooth(rng, h, w, 32, 4096) + rng.integers(0, 64, size=(h, w))
    dem = (z / 256.0).astype(np.float32)  # < 2**24 / 256: exact
    dem[:60, :90] = -9999
    dem[_sprinkle(rng, (h, w), 2000)] = -9999
    return dem[None], {"block": (256, 256), "nodata": -9999.0}


def _gen_multi():
    """4 bands of uint16, 613 x 1001, nodata 0 sprinkled, 128 px tiles."""
    rng = np.random.default_rng(102)
    h, w = 613, 1001
    data = np.stack([_smooth(rng, h, w, 16, 234) + rng.integers(0, 3, size=(h, w)) + 1
                     for _ in range(4)]).astype(np.uint16)
    data[_sprinkle(rng, data.shape, 500)] = 0
    return data, {"block": (128, 128), "nodata": 0}


def _gen_band(seed: int, block):
    rng = np.random.default_rng(seed)
    h, w = 517, 389
    data = (_smooth(rng, h, w, 8, 900) + rng.integers(0, 5, size=(h, w)) + 1).astype(np.uint16)
    data[_sprinkle(rng, data.shape, 300)] = 0
    return data[None], {"block": block, "nodata": 0}


def _gen_masked():
    """3 bands of uint8 with an internal per-dataset mask, tags and descriptions."""
    rng = np.random.default_rng(104)
    data = rng.integers(0, 256, size=(3, 300, 280), dtype=np.uint8)
    mask = np.full((300, 280), 255, np.uint8)
    mask[40:120, 10:200] = 0
    mask[_sprinkle(rng, mask.shape, 50)] = 0

    def after(dst):
        dst.update_tags(MISSION="checksums", LEVEL="1")
        for i, d in enumerate(("red", "green", "blue"), 1):
            dst.set_band_description(i, d)

    return data, {"block": (32, 32), "mask": mask, "after": after, "photometric": "RGB"}


def _gen_scaled():
    """int16 elevation with scale, offset, units, description and band tags."""
    rng = np.random.default_rng(105)
    data = (_smooth(rng, 401, 299, 16, 24) + rng.integers(0, 16, size=(401, 299)))
    data = data.astype(np.int16)[None]
    data[0, 300:, 200:] = -32768

    def after(dst):
        dst.scales = (0.01,)
        dst.offsets = (-5.0,)
        dst.units = ("m",)
        dst.set_band_description(1, "elevation")
        dst.update_tags(1, SENSOR="synthetic", STATISTICS_VALID_PERCENT="97")
        dst.update_tags(SOURCE="checksum_jobs")

    return data, {"block": (64, 64), "nodata": -32768, "after": after}


def _gen_palette():
    """A one-band uint8 raster with a colormap, striped."""
    rng = np.random.default_rng(106)
    data = rng.integers(0, 8, size=(1, 203, 317), dtype=np.uint8)

    def after(dst):
        dst.write_colormap(1, {i: (32 * i, 255 - 32 * i, (64 * i) % 256, 255) for i in range(8)})

    return data, {"block": None, "after": after}


GENERATED = {
    "dem": _gen_dem,
    "multi": _gen_multi,
    "red": lambda: _gen_band(103, (64, 64)),
    "nir": lambda: _gen_band(113, None),
    "masked": _gen_masked,
    "scaled": _gen_scaled,
    "palette": _gen_palette,
}


def make_inputs(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Write the generated inputs into ``directory``.

    Returns ``(paths, fingerprints)``: paths of generated and real inputs by
    name, and a sha256 of each input's pixels (generated) or bytes (real).
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths, prints = {}, {}
    for name, gen in GENERATED.items():
        data, kw = gen()
        h = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
        h.update(np.ascontiguousarray(data).tobytes())
        if kw.get("mask") is not None:
            h.update(kw["mask"].tobytes())
        paths[name] = _write(directory / f"{name}.tif", data, **kw)
        prints[name] = h.hexdigest()
    for fname in REAL_FILES:
        paths[fname] = str(DATA / fname)
        prints[fname] = hashlib.sha256((DATA / fname).read_bytes()).hexdigest()
    return paths, prints


# -- digests -------------------------------------------------------------------

#: Tag domains GDAL writes itself (not rdask's metadata): not compared.
GDAL_DOMAINS = {"IMAGE_STRUCTURE", "DERIVED_SUBDATASETS"}


def library_versions() -> dict[str, str]:
    """The versions of everything the output bytes depend on (GDAL and PROJ
    for headers, GDAL-written tiles and WKT; imagecodecs' codecs for the
    tiles rdask encodes; tifffile for reading them back; numba and numpy
    for kernel arithmetic)."""
    import imagecodecs
    import llvmlite
    import numba
    import tifffile

    codecs = imagecodecs.version(dict)
    return {
        "gdal": rasterio.__gdal_version__, "proj": rasterio.__proj_version__,
        "rasterio": rasterio.__version__, "numpy": np.__version__, "numba": numba.__version__,
        "llvmlite": llvmlite.__version__, "tifffile": tifffile.__version__,
        "imagecodecs": imagecodecs.__version__,
        **{k: str(codecs[k]) for k in ("libdeflate", "zstd", "zlib") if k in codecs},
    }


_IFD_FIELDS = ("imagewidth", "imagelength", "samplesperpixel", "bitspersample", "sampleformat",
               "compression", "predictor", "tilewidth", "tilelength", "rowsperstrip",
               "planarconfig", "photometric", "extrasamples", "subfiletype")


def _plain(value):
    """A JSON-able, comparable form (enums as names, tuples as lists, NaN as a string)."""
    if hasattr(value, "name") and hasattr(value, "value"):  # enum
        return value.name
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    return value


def tile_digest(path: str | os.PathLike) -> dict:
    """``{"tiles", "tile_data", "structure"}`` of a TIFF (see the module doc)."""
    import tifffile

    structure, ifd_data, pixels = [], [], []
    whole = hashlib.sha256()
    data = hashlib.sha256()
    with tifffile.TiffFile(path) as tif:
        fh = tif.filehandle
        for page in tif.pages:
            pixels.append(pixel_digest(page.asarray()))
            ifd = {f: _plain(getattr(page, f)) for f in _IFD_FIELDS}
            ifd["dtype"] = str(page.dtype)
            ifd["tiles"] = len(page.dataoffsets)
            structure.append(ifd)
            whole.update(json.dumps(ifd, sort_keys=True).encode())
            this = hashlib.sha256()
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
                fh.seek(offset)
                chunk = fh.read(count) if count else b""
                for h in (whole, data, this):
                    h.update(len(chunk).to_bytes(8, "little"))
                    h.update(chunk)
            ifd_data.append(this.hexdigest())
    return {"tiles": whole.hexdigest(), "tile_data": data.hexdigest(), "structure": structure,
            "ifd_data": ifd_data, "pixels": pixels}


def pixel_digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and values (NaN payloads as one NaN)."""
    a = np.ascontiguousarray(array)
    if a.dtype.kind == "f":
        a = np.where(np.isnan(a), np.nan, a).astype(a.dtype)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def overview_digests(path: str | os.PathLike) -> list[str]:
    """Pixel digests of every overview level of ``path``, as rasterio reads them."""
    with rasterio.open(path) as src:
        levels = len(src.overviews(1))
    out = []
    for level in range(levels):
        with rasterio.open(path, overview_level=level) as ovr:
            out.append(pixel_digest(ovr.read()))
    return out


def gdal_overview_digests(path: str | os.PathLike, resampling: str) -> list[str]:
    """:func:`overview_digests` of the overviews the installed GDAL itself
    builds from ``path``'s main image (its size, dtype and nodata): the
    reference of the levels an rdask COG has GDAL compute."""
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        factors = src.overviews(1)
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=src.count,
                       dtype=src.dtypes[0], nodata=src.nodata)
        data = src.read()
    with tempfile.TemporaryDirectory() as tmp:
        ref = os.path.join(tmp, "ref.tif")
        with rasterio.open(ref, "w", **profile) as dst:
            dst.write(data)
            dst.build_overviews(factors, Resampling[resampling])
        return overview_digests(ref)


def file_digest(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _tags(ds, bidx: int, path: str) -> dict:
    out = {}
    for ns in [""] + sorted(ds.tag_namespaces(bidx) or []):
        if ns.startswith("xml:") or ns in GDAL_DOMAINS:
            continue  # not a key=value domain, or GDAL's own
        tags = ds.tags(bidx, ns=ns) if ns else ds.tags(bidx)
        # DERIVED_SUBDATASETS names the file: make it independent of where it is.
        out[ns or "default"] = {k: v.replace(path, "<output>") for k, v in sorted(tags.items())}
    return out


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata rasterio reads from ``path``, as a JSON-able dict."""
    path = str(path)
    with rasterio.open(path) as ds:
        bands = list(ds.indexes)
        colormaps = []
        for i in bands:
            try:
                cmap = ds.colormap(i)
            except ValueError:
                cmap = None
            colormaps.append(None if cmap is None else
                             hashlib.sha256(json.dumps(sorted(cmap.items())).encode()).hexdigest())
        gcps, gcp_crs = ds.gcps
        return {
            "driver": ds.driver,
            "width": ds.width,
            "height": ds.height,
            "count": ds.count,
            "dtypes": list(ds.dtypes),
            "crs": ds.crs.to_wkt() if ds.crs else None,
            "transform": _plain(list(ds.transform)[:6]),
            "nodata": _plain(ds.nodata),
            "nodatavals": _plain(ds.nodatavals),
            "tags": _tags(ds, 0, path),
            "descriptions": list(ds.descriptions),
            "scales": _plain(ds.scales),
            "offsets": _plain(ds.offsets),
            "units": list(ds.units),
            "colorinterp": [c.name for c in ds.colorinterp],
            "band_tags": [_tags(ds, i, path) for i in bands],
            "mask_flags": [[f.name for f in flags] for flags in ds.mask_flag_enums],
            "colormaps": colormaps,
            "gcps": [[g.row, g.col, g.x, g.y, g.z] for g in gcps],
            "gcp_crs": gcp_crs.to_wkt() if gcp_crs else None,
            "rpcs": ds.rpcs.to_dict() if ds.rpcs else None,
            "overviews": [ds.overviews(i) for i in bands],
            "block_shapes": _plain(ds.block_shapes),
            "compression": ds.compression.name if ds.compression else None,
            "interleave": ds.interleaving.name if ds.interleaving else None,
        }


def digest(path: str | os.PathLike, *, cog: bool) -> dict:
    out = tile_digest(path)
    if cog:
        out["file"] = file_digest(path)
        out["overviews"] = overview_digests(path)
    out["meta"] = read_meta(path)
    return out


# -- running jobs ----------------------------------------------------------------


def run_cli(*args) -> None:
    """``rdask ARGS...`` as a child process of this interpreter's venv, loading
    the rdask of this checkout."""
    exe = os.path.join(os.path.dirname(sys.executable), "rdask")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"rdask {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                           f"{proc.stderr}")


class _Flaky:
    """State of the flaky kernel: raises once ``calls`` exceeds ``fail_after``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.fail_after: int | None = None
        self.kernel = None


_FLAKY = _Flaky()


def _flaky_reverse_bands(block):
    with _FLAKY.lock:
        _FLAKY.calls += 1
        fail = _FLAKY.fail_after is not None and _FLAKY.calls > _FLAKY.fail_after
    if fail:
        raise RuntimeError("checksum_jobs: injected failure")
    return block[::-1].copy()


def _flaky_kernel():
    import rdask

    if _FLAKY.kernel is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "holds the GIL": intended
            _FLAKY.kernel = rdask.kernel(_flaky_reverse_bands, name="flaky-reverse-bands",
                                         keeps_bands=False, allow_gil=True)
    return _FLAKY.kernel


def _resumed(src: str, out: Path, **kw) -> None:
    """Run a job that fails after 5 chunks with ``resume=True``, check that it
    left its partial output, then resume it and check that the resumed run
    computed only the missing chunks."""
    import rdask

    k = _flaky_kernel()
    with _FLAKY.lock:
        _FLAKY.calls, _FLAKY.fail_after = 0, 5
    try:
        rdask.process(src, out, k, resume=True, **kw)
    except rdask.RdaskError as e:
        assert "injected failure" in str(e), e
    else:
        raise AssertionError("the flaky job did not fail")
    assert not out.exists()
    left = sorted(os.listdir(out.parent))
    assert left == [f".{out.name}.rdask-journal", f".{out.name}.rdask-partial"], left
    with _FLAKY.lock:
        _FLAKY.calls, _FLAKY.fail_after = 0, None
    result = rdask.process(src, out, k, resume=True, **kw)
    assert 0 < _FLAKY.calls < result.chunks, (_FLAKY.calls, result.chunks)


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[dict[str, str], Path], None]  # (inputs, output path)
    cog: bool = False
    cluster: bool = False
    #: The resampling of overviews GDAL's builder computes (not rdask): they
    #: are compared with the installed GDAL's, not with the record.
    gdal_levels: str | None = None


def _process(src_key, kernel, **kw):
    def run(inp, out):
        import rdask

        src = [inp[k] for k in src_key] if isinstance(src_key, tuple) else inp[src_key]
        kw.setdefault("workers", WORKERS)
        rdask.process(src, out, kernel, **kw)
    return run


def _cli(template: list):
    def run(inp, out):
        run_cli(*[out if a == "{out}" else inp.get(a, a) if isinstance(a, str) else a
                  for a in template])
    return run


def _xr_mul(inp, out):
    import rdask

    da = rdask.open_raster(inp["RGB.byte.tif"], chunk_mb=0.5, tile=256)
    rdask.to_raster(da * 1, out, workers=WORKERS, blocksize=256)


def _xr_astype_focal(inp, out):
    import rdask

    da = rdask.open_raster(inp["dem"], chunk_mb=1).astype("float64")
    rdask.to_raster(rdask.apply(da, "focal-mean", radius=1), out, scheduler="sync", blocksize=128)


def _api_slope(inp, out):
    import rdask

    da = rdask.open_raster(inp["dem"], chunk_mb=0.5, tile=256)
    rdask.to_raster(rdask.apply(da, "slope"), out, workers=WORKERS, blocksize=256)


def _accessor_cog(inp, out):
    import rdask

    da = rdask.open_raster(inp["multi"], chunk_mb=0.5, tile=128)
    (da.rdask.apply("normalized-difference", a=4, b=1).rdask.apply("focal-mean", radius=1)
       .rdask.to_raster(out, workers=WORKERS, blocksize=128, driver="COG",
                        overview_resampling="cubic"))


def _resume_gtiff(inp, out):
    _resumed(inp["multi"], out, workers=WORKERS, chunk_mb=0.05, blocksize=128)


def _resume_cog(inp, out):
    # On "sync": with a per-dataset mask, rdask 0.1 compresses the tiles of the
    # chunks written by the resumed run differently (zlib level 6, pixels equal)
    # from those of the first run (level 1), so the tile bytes depend on which
    # chunks the first run finished: only deterministic without threads.
    _resumed(inp["masked"], out, scheduler="sync", chunk_mb=0.01, blocksize=64, driver="COG")


JOBS = [
    # -- every built-in kernel, threads, GeoTIFF
    Job("reverse-bands_rgb", _process("RGB.byte.tif", "reverse-bands")),
    Job("reverse-bands_rgba_b128", _process("RGBA.uint16.tif", "reverse-bands", blocksize=128)),
    Job("reverse-bands_masked_b64", _process("masked", "reverse-bands", blocksize=64,
                                             chunk_mb=0.05)),
    Job("reverse-bands_palette", _process("palette", "reverse-bands", blocksize=64)),
    Job("reverse-bands_iterations_sync", _process("multi", "reverse-bands", scheduler="sync",
                                                  kernel_args={"iterations": 3}, blocksize=256)),
    Job("focal-mean_scaled_r2", _process("scaled", "focal-mean", kernel_args={"radius": 2},
                                         blocksize=64, chunk_mb=0.05)),
    Job("focal-mean_float_nan", _process("float_nan.tif", "focal-mean")),
    Job("focal-mean_multi_r3_lzw", _process("multi", "focal-mean", kernel_args={"radius": 3},
                                            blocksize=256, compress="lzw")),
    Job("slope_dem_b256", _process("dem", "slope", blocksize=256)),
    Job("slope_dem_zstd", _process("dem", "slope", blocksize=128, compress="zstd")),
    Job("reverse-bands_scaled_uncompressed", _process("scaled", "reverse-bands", blocksize=64,
                                                      compress="none")),
    Job("slope_dem_edges_scale_sync", _process("dem", "slope", scheduler="sync", blocksize=256,
                                               kernel_args={"compute_edges": True, "scale": 2})),
    Job("hillshade_dem", _process("dem", "hillshade", blocksize=128, chunk_mb=0.2, kernel_args={
        "azimuth": 300, "altitude": 40, "z": 2})),
    Job("hillshade_shade_edges", _process("shade.tif", "hillshade",
                                          kernel_args={"compute_edges": True})),
    Job("normalized-difference_multi", _process("multi", "normalized-difference",
                                                kernel_args={"a": 4, "b": 3}, blocksize=128,
                                                creation_options={"ZLEVEL": 6})),
    Job("ndvi_stack", _process(("red", "nir"), "ndvi", blocksize=64)),
    Job("chain_api_focal_slope", _process("dem", [("focal-mean", {"radius": 2}), ("slope", {})],
                                          blocksize=256)),
    Job("chain_cli_focal_slope", _cli(["run", "focal-mean radius=2 | slope", "dem", "{out}",
                                       "-j", WORKERS, "--blocksize", 256, "-q", "--no-progress"])),
    # -- COG
    Job("cog_reverse-bands_multi", _process("multi", "reverse-bands", blocksize=128,
                                            driver="COG"), cog=True),
    Job("cog_reverse-bands_masked", _process("masked", "reverse-bands", blocksize=64,
                                             chunk_mb=0.05, driver="COG"), cog=True),
    Job("cog_hillshade_mode_levels1", _process("dem", "hillshade", blocksize=128, driver="COG",
                                               overview_levels=1, overview_resampling="mode"),
        cog=True, gdal_levels="mode"),
    Job("cog_cli_ndvi_stack_average", _cli(["run", "ndvi", "red", "nir", "{out}", "-j", WORKERS,
                                            "--driver", "COG", "--blocksize", 64,
                                            "--overview-resampling", "average", "-q",
                                            "--no-progress"]), cog=True, gdal_levels="average"),
    Job("cog_accessor_nd_focal_cubic", _accessor_cog, cog=True, gdal_levels="cubic"),
    # -- DataArray path
    Job("xarray_mul_rgb", _xr_mul),
    Job("xarray_astype_focal_sync", _xr_astype_focal),
    Job("api_open_apply_slope", _api_slope),
    # -- resumed jobs
    Job("resume_gtiff_multi", _resume_gtiff),
    Job("resume_cog_masked", _resume_cog, cog=True),
    # -- a local cluster (each job starts one: seconds)
    Job("local2_reverse-bands_multi", _process("multi", "reverse-bands", scheduler="local:2",
                                               blocksize=128, chunk_mb=0.5), cluster=True),
    Job("local2_cog_slope_dem", _process("dem", "slope", scheduler="local:2", blocksize=128,
                                         chunk_mb=0.5, driver="COG"), cog=True, cluster=True),
]
JOBS_BY_NAME = {j.name: j for j in JOBS}
assert len(JOBS_BY_NAME) == len(JOBS)


def run_job(job: Job, inputs: dict[str, str], directory: Path) -> dict:
    """Run ``job`` writing into the empty ``directory``; return its digest."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{job.name}.tif"
    job.run(inputs, out)
    assert sorted(os.listdir(directory)) == [out.name], os.listdir(directory)
    out_digest = digest(out, cog=job.cog)
    if job.gdal_levels:
        out_digest["gdal_overviews"] = gdal_overview_digests(out, job.gdal_levels)
    return out_digest


# -- comparing ---------------------------------------------------------------------


def differences(recorded: dict, actual: dict, allowed: set[str] = frozenset(), *,
                gdal_levels: bool = False, same_libraries: bool = True) -> list[str]:
    """Lines naming every field of ``actual`` that differs from ``recorded``.

    Always compared (rdask's decisions): the structure of every IFD (tile
    layout, compression, predictor...), the decoded pixels of every IFD
    (for ``gdal_levels`` jobs the main image only, their overviews against
    GDAL's own), a COG's overview pixels, and the metadata (CRS as a CRS).
    The bytes (``tiles``, ``tile_data``, ``file``) only with
    ``same_libraries``: they also depend on the codecs' and GDAL's versions.
    ``allowed`` names meta and IFD structure fields that may change; when
    not empty, ``tiles`` (which covers the structure) and ``file`` are not
    compared, but ``tile_data`` is.
    """
    out = _structure_differences(recorded, actual, allowed)
    out += _pixel_differences(recorded, actual, gdal_levels)
    out += _meta_differences(recorded["meta"], actual["meta"], allowed)
    if same_libraries:
        out += _byte_differences(recorded, actual, allowed)
    return out


def _structure_differences(recorded: dict, actual: dict, allowed: set[str]) -> list[str]:
    out = []
    rs, as_ = recorded["structure"], actual["structure"]
    if len(rs) != len(as_):
        out.append(f"structure: {len(rs)} IFDs -> {len(as_)}")
    for n, (r, a) in enumerate(zip(rs, as_, strict=False)):
        for f in sorted(set(r) | set(a)):
            if f not in allowed and r.get(f) != a.get(f):
                out.append(f"structure[IFD {n}].{f}: {r.get(f)!r} -> {a.get(f)!r}")
    return out


def _pixel_differences(recorded: dict, actual: dict, gdal_levels: bool) -> list[str]:
    out = []
    mine = range(1) if gdal_levels else range(max(len(recorded["pixels"]), len(actual["pixels"])))
    for n in mine:
        r, a = (d["pixels"][n] if n < len(d["pixels"]) else None for d in (recorded, actual))
        if r != a:
            out.append(f"pixels[IFD {n}]: the decoded pixels differ")
    if gdal_levels:
        if actual["overviews"] != actual["gdal_overviews"]:
            out.append("overviews: the levels differ from GDAL's own overviews of the main image")
    elif recorded.get("overviews") != actual.get("overviews"):
        out.append("overviews: the decoded overview pixels differ")
    return out


def _same_crs(a: str | None, b: str | None) -> bool:
    from rasterio.crs import CRS

    if a is None or b is None:
        return a == b
    return CRS.from_wkt(a) == CRS.from_wkt(b)


def _meta_differences(rm: dict, am: dict, allowed: set[str]) -> list[str]:
    out = []
    for f in sorted(set(rm) | set(am)):
        r, a = rm.get(f, "<absent>"), am.get(f, "<absent>")
        same = _same_crs(r, a) if f in ("crs", "gcp_crs") and "<absent>" not in (r, a) else r == a
        if f not in allowed and not same:
            out.append(f"meta.{f}: {r!r} -> {a!r}")
    return out


def _byte_differences(recorded: dict, actual: dict, allowed: set[str]) -> list[str]:
    out = []
    if not allowed:
        if actual["tiles"] != recorded["tiles"]:
            out.append(f"tiles: {recorded['tiles']} -> {actual['tiles']}")
        if "file" in recorded and actual.get("file") != recorded["file"]:
            out.append(f"file: {recorded['file']} -> {actual.get('file')}")
    if actual["tile_data"] != recorded["tile_data"]:
        ifds = [n for n, (r, a) in enumerate(zip(recorded["ifd_data"], actual["ifd_data"],
                                                 strict=False)) if r != a]
        out.append(f"tile_data: the compressed tile bytes differ (in IFDs {ifds} of "
                   f"{len(recorded['ifd_data'])} -> {len(actual['ifd_data'])})")
    return out


def changed_libraries(record: dict) -> dict[str, tuple[str, str]]:
    """``{library: (recorded, installed)}`` for every version that differs."""
    recorded = record["_about"].get("versions", {})
    installed = library_versions()
    return {k: (recorded.get(k, "?"), v) for k, v in installed.items() if recorded.get(k) != v}


def load_record() -> dict:
    return json.loads(RECORD.read_text())


# -- command line ------------------------------------------------------------------


def _run_all(base: Path, names: list[str]) -> tuple[dict, dict, dict]:
    inputs, prints = make_inputs(base / "inputs")
    digests, seconds = {}, {}
    for name in names:
        t0 = time.perf_counter()
        digests[name] = run_job(JOBS_BY_NAME[name], inputs, base / name)
        seconds[name] = time.perf_counter() - t0
        print(f"  {name}: {seconds[name]:.2f} s", file=sys.stderr)
    return prints, digests, seconds


def _git_head() -> str | None:
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    return proc.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--record", action="store_true",
                   help=f"run every job twice and write {RECORD.relative_to(ROOT)}")
    g.add_argument("--check", action="store_true", help="run every job once and compare")
    p.add_argument("jobs", nargs="*", help="job names (default: all)")
    args = p.parse_args(argv)
    import rdask

    names = args.jobs or [j.name for j in JOBS]
    if args.check:
        record = load_record()
        with tempfile.TemporaryDirectory() as tmp:
            prints, digests, _ = _run_all(Path(tmp), names)
        bad = [f"input {k}" for k in prints if prints[k] != record["_inputs"].get(k)]
        same = not changed_libraries(record)
        for name in names:
            bad += [f"{name}: {d}" for d in differences(
                record[name], digests[name], gdal_levels=bool(JOBS_BY_NAME[name].gdal_levels),
                same_libraries=same)]
        print("\n".join(bad) or "all outputs as recorded")
        return 1 if bad else 0

    runs = []
    for attempt in (1, 2):
        print(f"run {attempt}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(_run_all(Path(tmp), names))
    (p1, d1, s1), (p2, d2, s2) = runs
    problems = [f"input {k} differs between runs" for k in p1 if p1[k] != p2[k]]
    for name in names:
        for field in ("tiles", "meta", "pixels"):
            if d1[name][field] != d2[name][field]:
                problems.append(f"{name}: {field} differs between two runs")
        if JOBS_BY_NAME[name].cog and d1[name]["file"] != d2[name]["file"]:
            # Not deterministic: do not record it.
            print(f"note: {name}: COG whole-file sha256 differs between runs", file=sys.stderr)
            del d1[name]["file"]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    record = load_record() if args.jobs and RECORD.exists() else {}
    seconds = record.get("_about", {}).get("seconds", {})
    seconds.update({n: round(min(s1[n], s2[n]), 2) for n in names})
    record["_about"] = {
        "what": "digests of the outputs of tests/checksum_jobs.py (see its docstring)",
        "regenerate": "PYTHONPATH=. .venv/bin/python tests/checksum_jobs.py --record",
        "rdask": rdask.__version__,
        "commit": _git_head(),
        "versions": library_versions(),
        "seconds": seconds,
        "re-recorded": record.get("_about", {}).get("re-recorded", {}),
    }
    record["_inputs"] = {**record.get("_inputs", {}), **p1}
    record.update(d1)
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD} ({len(names)} jobs)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
