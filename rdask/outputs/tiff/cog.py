"""The COG output: the GTiff output's pass, then overviews and a COG layout.

The main pass writes the full-resolution partial GeoTIFF exactly as the
GTiff output does (not fsynced: it is only copied from). On commit the
overview levels are made, for ``nearest`` by rdask's own pass
(:mod:`.overviews`, each level a chunk job of its own), otherwise by GDAL's
builder inside the partial file; :func:`~.coglayout.assemble_cog` then
writes the COG beside it, copying compressed tiles byte for byte, and the
staging piece publishes it.

For ``nearest`` in a fresh job whose tasks can write beside the output,
level 1 comes from the main pass itself: the writer is wrapped in a
:class:`~.overviews.LevelTap` that also stores each chunk's level-1 picks.
"""

from __future__ import annotations

from rdask.errors import OutputError
from rdask.outputs.base import Committed, OutputSpec, Publish, RunChunks
from rdask.outputs.options import WriteOptions
from rdask.outputs.staging import unlink_quietly
from rdask.outputs.tiff import gtiff
from rdask.outputs.tiff.coglayout import assemble_cog, build_overviews, overview_factors
from rdask.outputs.tiff.gtiff import TileOutput
from rdask.outputs.tiff.overviews import LevelPieces, LevelTap, nearest_levels
from rdask.recipe import Region


def accepts(target: str, options: WriteOptions) -> bool:
    """A local Cloud Optimized GeoTIFF."""
    return options.driver == "COG" and "://" not in target


def open(spec: OutputSpec) -> CogOutput:  # noqa: A001
    return CogOutput(spec)


class CogOutput:
    """A COG being written (see the module docstring)."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        self.inner = gtiff.open(spec, durable=False)
        self.partial = self.inner.partial
        self.staging = self.inner.staging
        opts = spec.options
        self.factors = overview_factors(spec.shape[1], spec.shape[2], opts.blocksize, opts.overview_levels)
        # rdask's own nearest levels run as chunk jobs that read the partial
        # file: only where the tasks see it; elsewhere GDAL's builder (same
        # picks) runs here.
        self.own_levels = (opts.overview_resampling == "nearest" and spec.mask is None
                           and spec.shares_files(self.partial))
        try:
            # A scratch file left by a killed job is stale either way.
            LevelPieces.remove_stale(self.partial)
            self.scratch = self._tap()
        except BaseException:
            self.inner.abort(keep_partial=self.staging.resuming)
            raise
        self.writer = self.inner.writer if self.scratch is None else LevelTap(self.inner.writer, self.scratch)

    def _tap(self) -> LevelPieces | None:
        """Level 1 from the main pass: nearest, tile output, fresh job, shared files."""
        inner, spec = self.inner, self.spec
        if not self.own_levels or not isinstance(inner, TileOutput) or self.staging.resuming or not self.factors:
            return None
        return LevelPieces.create(self.partial, spec.shape, spec.chunks, spec.dtype)

    def is_done(self, region: Region) -> bool:
        return self.inner.is_done(region)

    def record(self, region: Region, result) -> None:
        self.inner.record(region, result)

    def commit(self, run: RunChunks) -> Publish:
        """Finish the main pass, make the overviews, lay out the COG; publish it.

        On failure the finished main pass stays as it is: the job's abort
        keeps it for a resume (which then only makes the overviews again)
        or removes it.
        """
        self.inner.close()
        final = self.partial + ".final"
        try:
            if self.own_levels:
                self._nearest(final, run)
            else:
                opts = self.spec.options
                build_overviews(self.partial, self.factors, opts.overview_resampling, opts.blocksize,
                                self.spec.threads)
                assemble_cog(self.partial, final)
        except OSError as exc:
            unlink_quietly(final)
            raise OutputError(f"cannot finish {self.spec.target}: {exc.strerror or exc}") from None
        except BaseException:
            unlink_quietly(final)
            raise
        finally:
            self._discard_scratch()
        return lambda: Committed.of(self.staging.publish(final))

    def _nearest(self, final: str, run: RunChunks) -> None:
        chunk_bytes = self.spec.shape[0] * self.spec.dtype.itemsize * self._chunk_pixels()
        chunk_mb = max(chunk_bytes, 1.0) / 1e6
        files = nearest_levels(self.partial, self.factors, self.spec, run, chunk_mb=chunk_mb,
                               level1=self.scratch)
        self._discard_scratch()
        try:
            assemble_cog(self.partial, final, files)
        finally:
            for f in files:
                unlink_quietly(f)

    def _chunk_pixels(self) -> float:
        """Pixels per main-pass chunk: the levels use chunks of the same size."""
        _, ys, xs = self.spec.chunks
        return self.spec.shape[1] * self.spec.shape[2] / max(1, len(ys) * len(xs))

    def abort(self, *, keep_partial: bool = False) -> bool:
        self._discard_scratch()
        unlink_quietly(self.partial + ".final")
        return self.inner.abort(keep_partial=keep_partial)

    def _discard_scratch(self) -> None:
        if self.scratch is not None:
            unlink_quietly(self.scratch.path)
            self.scratch = None
