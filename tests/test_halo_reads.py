"""Halo reads decode each input block about once (``rdask.io.blocks``).

Every job here runs a halo kernel over a tiled file through rdask's own
runner (threads, sync, or a ``local:2`` cluster) into an in-memory sink.
What is counted is the blocks the process-wide cache decoded (one count
per GDAL block of the file read by GDAL), against the file's block count;
the pixels are compared with the same chunks read without the cache, each
grown window straight from rasterio, as rdask read them before.
"""

from __future__ import annotations

import itertools
import threading

import numba
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from rasters import synthetic, write

from rdask import pipeline
from rdask.io import tiffblocks
from rdask.io.blocks import BlockCache, Chunking, Piece, block_cache
from rdask.io.paths import file_stamp
from rdask.kernels import kernel
from rdask.outputs.options import WriteOptions
from rdask.pipeline import JobInputs
from rdask.recipe import ChunkReader, chunk_regions, extend, open_recipe
from rdask.schedule import open_runner

TILE = 128
GEO = dict(crs="EPSG:32618", transform=Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0))


def keep(block: np.ndarray, region: tuple) -> np.ndarray:
    """The writer of :class:`Sink`: the chunk itself (picklable, for workers)."""
    return block


class Sink:
    """An output that keeps the chunks in memory."""

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.out = np.zeros(shape, dtype)
        self.writer = keep

    def is_done(self, region: tuple) -> bool:
        return False

    def record(self, region: tuple, result: np.ndarray) -> None:
        self.out[region] = result


def blocks_in(path: str) -> int:
    with rasterio.open(path) as ds:
        bh, bw = ds.block_shapes[0]
        return -(-ds.height // bh) * -(-ds.width // bw)


def reference(recipe) -> np.ndarray:
    """The job computed chunk by chunk without the cache: each grown window
    read by rasterio (the source's plain ``read``), the steps, the trim."""
    plain = ChunkReader(recipe.source, recipe.steps, recipe.halo, chunking=None)
    out = np.zeros(recipe.shape, recipe.dtype)
    for region in chunk_regions(recipe.chunks):
        out[region] = plain(region)
    return out


def run(recipe, scheduler: str, workers: int) -> tuple[np.ndarray, int]:
    """Run ``recipe``'s job; its pixels and the blocks decoded doing it
    (summed over the workers of a cluster, each a process of its own)."""
    sink = Sink(recipe.shape, recipe.dtype)
    before = _decoded()
    with open_runner(scheduler, workers) as runner:
        runner.run(recipe.job(), sink)
        if runner.client is not None:
            return sink.out, sum(runner.client.run(_decoded).values())
    return sink.out, _decoded() - before


def _decoded() -> float:
    """Blocks decoded whole, plus the first rows of blocks below a chunk
    row decoded for its halo (in blocks' worth of pixels)."""
    stats = block_cache().stats()
    return stats.decoded + stats.partial


@pytest.fixture(scope="module")
def dem(tmp_path_factory) -> str:
    """A float32 DEM of 24 x 13 tiles of 128² (partial ones at the right
    and bottom edges), DEFLATE, nodata sprinkled in."""
    data = synthetic((1, 24 * TILE - 40, 13 * TILE - 50), "float32", seed=3, nodata=-9999.0)
    return write(tmp_path_factory.mktemp("halo") / "dem.tif", data, block=(TILE, TILE),
                 nodata=-9999.0)


@pytest.mark.parametrize("chunks", [(TILE, TILE), (2 * TILE, 3 * TILE), (4 * TILE, 4 * TILE),
                                    (8 * TILE, 13 * TILE)])
@pytest.mark.parametrize("scheduler,workers", [("sync", 1), ("threads", 1), ("threads", 2),
                                               ("threads", 4)])
def test_slope_decodes_each_block_once(dem, chunks, scheduler, workers):
    recipe = extend(open_recipe(dem, chunks=chunks, tile=None), "slope")
    got, decoded = run(recipe, scheduler, workers)
    assert decoded <= 1.1 * blocks_in(dem)
    np.testing.assert_array_equal(got, reference(recipe))


@pytest.mark.parametrize("kernel,args", [("focal", {"stat": "median", "radius": 2}),
                                         ("focal-mean", {"radius": 150})])
def test_wide_halos_decode_each_block_once(dem, kernel, args):
    """A halo of 2, and one wider than a tile (each block is read by up to
    5 x 7 chunks)."""
    recipe = extend(open_recipe(dem, chunks=(TILE, 2 * TILE), tile=None), kernel, **args)
    got, decoded = run(recipe, "threads", 2)
    assert decoded <= 1.1 * blocks_in(dem)
    np.testing.assert_array_equal(got, reference(recipe))


def test_stack_of_two_files(tmp_path):
    """Each file of a stack has its blocks (different tile sizes here)."""
    a = write(tmp_path / "a.tif", synthetic((1, 1000, 900), "int16", seed=1), block=(128, 128))
    b = write(tmp_path / "b.tif", synthetic((2, 1000, 900), "int16", seed=2), block=(256, 256))
    recipe = extend(open_recipe([a, b], chunks=(256, 256), tile=None), "focal-mean", radius=3)
    got, decoded = run(recipe, "threads", 2)
    assert decoded <= 1.1 * (blocks_in(a) + blocks_in(b))
    np.testing.assert_array_equal(got, reference(recipe))


def test_local_cluster(dem):
    """``local:2``: each worker process has its own cache; the runner gives
    each worker a band of consecutive chunks, so only the rows of blocks
    beside a band's edge are decoded by both workers."""
    recipe = extend(open_recipe(dem, chunks=(TILE, 2 * TILE), tile=None), "slope")
    got, decoded = run(recipe, "local:2", 2)
    assert decoded <= 1.1 * blocks_in(dem)  # 24 x 13 blocks, and twice 13 beside the band edge
    np.testing.assert_array_equal(got, reference(recipe))


def test_cache_stays_within_its_limit(tmp_path, monkeypatch):
    """On a raster whose row of blocks is larger than the limit, the cache
    never holds more than the limit; blocks it could not keep are decoded
    again, and the pixels are the same. Once the job is done it holds nothing."""
    data = synthetic((1, 2048, 4096), "float32", seed=5)
    # ZSTD: the row of blocks below each chunk row is decoded whole, early.
    path = write(tmp_path / "wide.tif", data, block=(TILE, TILE), compress="zstd")
    block_bytes = TILE * TILE * 4
    recipe = extend(open_recipe(path, chunks=(2 * TILE, 2 * TILE), tile=None), "slope")
    cache = BlockCache(limit=12 * block_bytes)  # less than a row of 32 blocks
    monkeypatch.setattr("rdask.io.files.block_cache", lambda: cache)
    got, _ = run(recipe, "threads", 2)
    np.testing.assert_array_equal(got, reference(recipe))
    stats = cache.stats()
    assert 0 < stats.peak <= cache.limit
    assert stats.held == 0
    assert stats.decoded > blocks_in(path)  # the price of the small limit


@pytest.mark.parametrize("compress", ["deflate", "zstd"])
def test_what_the_cache_holds_does_not_grow_with_the_raster(tmp_path, monkeypatch, compress):
    """With room enough, what waits at once is the strips the next chunk
    row reads and the blocks beside the chunks in flight; where the first
    rows of a block cannot be decoded alone (ZSTD), also the row of blocks
    below the chunk row, decoded early for its halo. Never the raster."""
    data = synthetic((1, 1536, 8192), "float32", seed=6)
    path = write(tmp_path / "wide.tif", data, block=(TILE, TILE), compress=compress)
    block_bytes = TILE * TILE * 4
    recipe = extend(open_recipe(path, chunks=(2 * TILE, 2 * TILE), tile=None), "slope")
    cache = BlockCache(limit=1 << 40)
    monkeypatch.setattr("rdask.io.files.block_cache", lambda: cache)
    got, _ = run(recipe, "threads", 4)
    np.testing.assert_array_equal(got, reference(recipe))
    stats = cache.stats()
    across = 8192 // TILE
    in_flight = 8 * 4  # 2 chunks per thread, each 2 x 2 blocks and the 2 x 2 beside
    row = across if compress == "zstd" else 0
    assert stats.peak <= (row + in_flight) * block_bytes
    assert stats.held == 0
    assert stats.decoded + stats.partial <= 1.1 * blocks_in(path)


def test_a_failed_decode_is_not_kept(tmp_path):
    """A decoding error reaches the reader, and the next reader decodes again."""
    cache = BlockCache()
    chunking = Chunking.of((10, 10), (10,), 1)
    calls = []

    def bad():
        calls.append("bad")
        raise OSError("truncated tile")

    def good():
        calls.append("good")
        return np.ones((1, 10, 10)), 1

    with cache.reading("job", 0), pytest.raises(OSError, match="truncated tile"):
        cache.take("k", "job", chunking, 0, (0, 10, 0, 10), bad)
    with cache.reading("job", 1):
        piece = cache.take("k", "job", chunking, 1, (0, 10, 0, 10), good)
    assert calls == ["bad", "good"]
    assert isinstance(piece, Piece) and piece.data.shape == (1, 10, 10)


def test_threads_wait_for_the_one_decoding(tmp_path):
    """Two chunks needing one block at once: one decodes, the other waits
    for it (or asks again later, without waiting) and gets the same pixels."""
    cache = BlockCache()
    chunking = Chunking.of((10, 10), (10,), 1)
    started, release = threading.Event(), threading.Event()
    decodes = []

    def slow():
        decodes.append(1)
        started.set()
        release.wait()
        return np.arange(100.0).reshape(1, 10, 10), 1

    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        0, cache.take("k", "job", chunking, 0, (0, 10, 0, 10), slow)))
    with cache.reading("job", 0), cache.reading("job", 1):
        t.start()
        started.wait()
        assert cache.take("k", "job", chunking, 1, (0, 10, 0, 10), slow, wait=False) is None
        release.set()
        piece = cache.take("k", "job", chunking, 1, (0, 10, 0, 10), slow)
        t.join()
    assert len(decodes) == 1
    # Chunk 1's grown window (rows 9:21) takes row 9 of the unit.
    assert piece.y <= 9 < piece.y + piece.data.shape[1]
    np.testing.assert_array_equal(piece.data[0, 9 - piece.y], np.arange(90.0, 100.0))
    np.testing.assert_array_equal(result[0].data[0, 9], np.arange(90.0, 100.0))


def test_waiting_readers_are_released_when_keeping_a_block_fails(monkeypatch):
    """If keeping a decoded block fails (a bug, memory), the reader that
    decoded it gets the error and the one waiting for it decodes it itself,
    instead of waiting for ever."""
    cache = BlockCache()
    chunking = Chunking.of((10, 10), (10,), 1)
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait()
        return np.arange(100.0).reshape(1, 10, 10), 1

    keep = cache._keep

    def broken_once(*args):
        monkeypatch.setattr(cache, "_keep", keep)
        raise MemoryError("made up by the test")

    monkeypatch.setattr(cache, "_keep", broken_once)
    got = {}

    def read(chunk):
        try:
            got[chunk] = cache.take("k", "job", chunking, chunk, (0, 10, 0, 10), slow)
        except MemoryError as exc:
            got[chunk] = exc

    first = threading.Thread(target=read, args=(0,))
    waiter = threading.Thread(target=read, args=(1,))
    with cache.reading("job", 0), cache.reading("job", 1):
        first.start()
        started.wait()
        waiter.start()
        release.set()
        first.join(10)
        waiter.join(10)
    assert not first.is_alive() and not waiter.is_alive()
    assert isinstance(got[0], MemoryError)
    np.testing.assert_array_equal(got[1].data, np.arange(100.0).reshape(1, 10, 10))


def test_consumers_are_the_chunks_whose_grown_windows_touch():
    """Against a brute force over every chunk, with halos below, at and
    above the chunk size and uneven chunks."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        ys = tuple(int(v) for v in rng.integers(1, 9, size=rng.integers(1, 6)))
        xs = tuple(int(v) for v in rng.integers(1, 9, size=rng.integers(1, 6)))
        halo = int(rng.integers(0, 12))
        c = Chunking.of(ys, xs, halo)
        h, w = sum(ys), sum(xs)
        r0, c0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        r1, c1 = int(rng.integers(r0 + 1, h + 1)), int(rng.integers(c0 + 1, w + 1))
        want = set()
        for (i, j) in itertools.product(range(len(ys)), range(len(xs))):
            gy0, gy1 = c.ys[i] - halo, c.ys[i + 1] + halo
            gx0, gx1 = c.xs[j] - halo, c.xs[j + 1] + halo
            if gy0 < r1 and gy1 > r0 and gx0 < c1 and gx1 > c0:
                want.add(i * len(xs) + j)
        assert c.consumers(r0, r1, c0, c1) == want
        for (i, j) in itertools.product(range(len(ys)), range(len(xs))):
            assert c.chunk_id(c.ys[i], c.ys[i + 1], c.xs[j], c.xs[j + 1]) == i * len(xs) + j
        assert c.chunk_id(0, h + 1, 0, w) is None


def test_windows_that_are_not_chunks_read_plainly(dem):
    """A window that is not one of the job's chunks (a warp's read of a
    StepsSource) is read as before, without the cache."""
    recipe = open_recipe(dem, chunks=(TILE, TILE), tile=None)
    chunking = Chunking.of(recipe.chunks[1], recipe.chunks[2], 1)
    before = _decoded()
    got, (dy, dx) = recipe.source.read_grown(5, 77, 3, 99, 1, chunking)
    assert _decoded() == before
    with rasterio.open(dem) as ds:
        want = ds.read(window=Window(2, 4, 98, 74))
    assert (dy, dx) == (1, 1)
    np.testing.assert_array_equal(got, want)


# -- the TIFF decoder ---------------------------------------------------------------

#: Layouts rdask decodes itself: (dtype, bands, creation options).
LAYOUTS = {
    "float32 deflate fp-predictor": ("float32", 1, dict(compress="deflate", predictor=3)),
    "float64 zstd fp-predictor": ("float64", 1, dict(compress="zstd", predictor=3)),
    "float32 x2 fp-predictor pixel-interleaved": ("float32", 2, dict(compress="deflate", predictor=3)),
    "int16 x3 lzw predictor 2": ("int16", 3, dict(compress="lzw", predictor=2)),
    "uint16 x2 band-interleaved": ("uint16", 2, dict(compress="deflate", predictor=2,
                                                      interleave="band")),
    "int32 big-endian predictor 2": ("int32", 1, dict(compress="deflate", predictor=2,
                                                      endianness="big")),
    "float32 big-endian fp-predictor": ("float32", 1, dict(compress="deflate", predictor=3,
                                                           endianness="big")),
    "int8 uncompressed": ("int8", 1, dict(compress="none")),
    "uint8 x3 strips": ("uint8", 3, dict(compress="deflate", tiled=False, blockysize=8)),
    "float32 strips fp-predictor": ("float32", 1, dict(compress="deflate", predictor=3,
                                                       tiled=False, blockysize=40)),
}


def write_layout(path, name: str) -> tuple[str, np.ndarray]:
    dtype, bands, options = LAYOUTS[name]
    data = synthetic((bands, 700, 650), dtype, seed=len(name))
    profile = dict(driver="GTiff", height=700, width=650, count=bands, dtype=dtype, tiled=True,
                   blockxsize=TILE, blockysize=TILE, **GEO)
    profile.update(options)
    if not profile["tiled"]:
        profile.pop("blockxsize")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path), data


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_tiff_blocks_decode_as_gdal_reads(tmp_path, name):
    """Every block, and units of several blocks, decoded by rdask equal
    GDAL's read of the same window, for each layout it decodes itself."""
    path, data = write_layout(tmp_path / "x.tif", name)
    with rasterio.open(path) as ds:
        found = tiffblocks.layout(path, file_stamp(path), ds)
        assert found is not None, f"{name} is read by GDAL, not decoded here"
        bh, bw = found.block
        for y0, x0 in itertools.product(range(0, 700, bh), range(0, 650, bw)):
            for uy, ux in ((1, 1), (2, 3)):
                y1, x1 = min(700, y0 + uy * bh), min(650, x0 + ux * bw)
                got = found.read(ds.indexes, y0, y1, x0, x1)
                want = ds.read(window=Window(x0, y0, x1 - x0, y1 - y0))
                assert got is not None and got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)
        got = found.read((ds.count,), 0, min(700, bh), 0, min(650, bw))  # the last band alone
        np.testing.assert_array_equal(got, ds.read([ds.count], window=Window(0, 0, got.shape[2],
                                                                              got.shape[1])))


@pytest.mark.parametrize("options", [dict(compress="jpeg", photometric="ycbcr"),
                                     dict(compress="lerc"), dict(compress="packbits")])
def test_other_codecs_are_left_to_gdal(tmp_path, options):
    bands = 3 if options.get("photometric") == "ycbcr" else 1
    data = synthetic((bands, 300, 300), "uint8", seed=1)
    path = tmp_path / "x.tif"
    with rasterio.open(path, "w", driver="GTiff", height=300, width=300, count=bands,
                       dtype="uint8", tiled=True, blockxsize=TILE, blockysize=TILE, **GEO,
                       **options) as dst:
        dst.write(data)
    with rasterio.open(path) as ds:
        assert tiffblocks.layout(str(path), file_stamp(str(path)), ds) is None
    recipe = extend(open_recipe(str(path), chunks=(TILE, TILE), tile=None), "focal-mean", radius=1)
    got, _ = run(recipe, "threads", 2)
    np.testing.assert_array_equal(got, reference(recipe))


@pytest.mark.parametrize("name", ["int16 x3 lzw predictor 2", "uint16 x2 band-interleaved",
                                  "uint8 x3 strips"])
def test_grown_windows_equal_gdal_reads(tmp_path, monkeypatch, name):
    """Each chunk's grown window, put together from shared blocks, equals
    rasterio's read of it: every band, every edge, halos of 1 and 9."""
    cache = BlockCache()  # its own: what earlier tests left is not this one's
    monkeypatch.setattr("rdask.io.files.block_cache", lambda: cache)
    path, _ = write_layout(tmp_path / "x.tif", name)
    recipe = open_recipe(path, chunks=(TILE, 2 * TILE), tile=None)
    with rasterio.open(path) as ds:
        for halo in (1, 9):
            chunking = Chunking.of(recipe.chunks[1], recipe.chunks[2], halo)
            for _, ys, xs in chunk_regions(recipe.chunks):
                got, (dy, dx) = recipe.source.read_grown(ys.start, ys.stop, xs.start, xs.stop,
                                                         halo, chunking)
                gy0, gx0 = ys.start - dy, xs.start - dx
                want = ds.read(window=Window(gx0, gy0, got.shape[2], got.shape[1]))
                np.testing.assert_array_equal(got, want)
            assert cache.stats().held == 0


def test_sparse_blocks_read_as_gdal_fills_them(tmp_path):
    """A tile never written (offset and size 0) is GDAL's to fill (with
    the nodata value); its neighbours are decoded here."""
    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", driver="GTiff", height=512, width=512, count=1, dtype="float32",
                       tiled=True, blockxsize=TILE, blockysize=TILE, compress="deflate",
                       nodata=-5.0, sparse_ok=True, **GEO) as dst:
        dst.write(np.full((1, 256, 512), 7.0, "float32"), window=Window(0, 0, 512, 256))
    recipe = extend(open_recipe(str(path), chunks=(TILE, TILE), tile=None), "focal-mean", radius=2)
    got, _ = run(recipe, "threads", 2)
    np.testing.assert_array_equal(got, reference(recipe))
    with rasterio.open(path) as ds:
        assert ds.read(1)[300, 300] == -5.0


def test_a_file_rewritten_since_it_was_opened_is_left_to_gdal(tmp_path):
    """The offsets rdask read belong to one version of the file: another
    (other mtime or size) is read through GDAL's handle instead."""
    path, _ = write_layout(tmp_path / "x.tif", "float32 deflate fp-predictor")
    stamp = file_stamp(path)
    with rasterio.open(path) as ds:
        assert tiffblocks.layout(path, stamp, ds).read((1,), 0, TILE, 0, TILE) is not None
        older = (stamp[0] - 10.0, stamp[1])
        assert tiffblocks.layout(path, older, ds).read((1,), 0, TILE, 0, TILE) is None


@pytest.mark.parametrize("grid", [(1, 9), (5, 4), (24, 7)])
def test_cluster_bands_are_even_runs_of_consecutive_chunks(dem, grid):
    """Each worker's band is a run of consecutive chunks (row-major), the
    bands differ in size by at most one chunk, even for one chunk row, and
    the tasks come out band by band in turn while none has more in flight."""
    from rdask.schedule import Bands

    rows, cols = grid
    recipe = extend(open_recipe(dem, chunks=(-(-3032 // rows), -(-1614 // cols)), tile=None),
                    "slope")
    job = recipe.job()
    bands = Bands(job, ["tcp://a:1", "tcp://b:2", "tcp://c:3"])
    regions = list(chunk_regions(job.chunks))
    owners = [bands.band(r) for r in regions]
    assert owners == sorted(owners)
    sizes = [owners.count(k) for k in range(3)]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) > 0
    order = [bands.band(t.region) for t in itertools.islice(bands.tasks(job, lambda r: False), 6)]
    assert order == [0, 1, 2, 0, 1, 2]


def test_sources_and_readers_pickle_and_tokens_do_not_move(dem, monkeypatch):
    """The cache lives in the process, not in the source: a source's token
    is the same before and after halo reads, and a chunk reader (what a
    task carries to a worker) pickles with its chunking."""
    import pickle

    from dask.base import tokenize

    cache = BlockCache()
    monkeypatch.setattr("rdask.io.files.block_cache", lambda: cache)
    recipe = extend(open_recipe(dem, chunks=(TILE, TILE), tile=None), "slope")
    token = tokenize(recipe.source)
    reader = ChunkReader.of(recipe)
    first = next(iter(chunk_regions(recipe.chunks)))
    want = reader(first)
    assert tokenize(recipe.source) == token
    again = pickle.loads(pickle.dumps(reader))
    assert again.chunking == reader.chunking and tokenize(again.source) == token
    np.testing.assert_array_equal(again(first), want)



@kernel(halo=1)
@numba.njit(nogil=True)
def fails_on_a_marked_pixel(block):
    """Copies the block; raises where a pixel holds 12345."""
    for b in range(block.shape[0]):
        for i in range(block.shape[1]):
            for j in range(block.shape[2]):
                if block[b, i, j] == 12345:
                    raise ValueError("marked pixel")
    return block.copy()


def test_a_failed_job_leaves_no_block_held(tmp_path, monkeypatch):
    """A halo job that fails half way leaves none of its decoded blocks held
    in the process once it has ended (they would wait for readers that
    never come, until another job's reads made room)."""
    data = synthetic((1, 8 * TILE, 6 * TILE), "float32", seed=5)
    data[0, 5 * TILE + 7, 3 * TILE + 9] = 12345
    src = write(tmp_path / "dem.tif", data, block=(TILE, TILE))
    cache = BlockCache()
    monkeypatch.setattr("rdask.io.files.block_cache", lambda: cache)
    monkeypatch.setattr("rdask.pipeline.block_cache", lambda: cache)
    recipe = extend(open_recipe(src, chunks=(TILE, 2 * TILE), tile=None), fails_on_a_marked_pixel)
    with pytest.raises(Exception, match="marked pixel"):
        pipeline.write(recipe.job(), recipe.meta, tmp_path / "out.tif", WriteOptions.of(),
                       JobInputs.of(recipe), workers=2)
    assert cache.stats().decoded > 0
    assert cache.stats().held == 0


def test_a_job_after_a_failed_one_on_the_same_file(tmp_path, monkeypatch):
    """What a failed job noted of the blocks it dropped for room (which of
    its chunks had still to read them) is its own: a later job on the same
    file, with other chunks, gets its pixels right."""
    data = synthetic((1, 2048, 4096), "float32", seed=5)
    data[0, 1500, 3000] = 12345  # in the fourth of eight chunk rows
    path = write(tmp_path / "wide.tif", data, block=(TILE, TILE), compress="zstd")
    cache = BlockCache(limit=12 * TILE * TILE * 4)  # less than a row of 32 blocks
    monkeypatch.setattr("rdask.io.files.block_cache", lambda: cache)
    failing = extend(open_recipe(path, chunks=(2 * TILE, 2 * TILE), tile=None),
                     fails_on_a_marked_pixel)
    with pytest.raises(Exception, match="marked pixel"):
        run(failing, "threads", 2)
    for chunks in [(4 * TILE, 4 * TILE), (2 * TILE, 2 * TILE)]:
        recipe = extend(open_recipe(path, chunks=chunks, tile=None), "slope")
        got, _ = run(recipe, "threads", 2)
        np.testing.assert_array_equal(got, reference(recipe))
