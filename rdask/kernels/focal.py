"""Focal (moving-window) kernels.

``focal-mean`` costs O(1) per pixel whatever the radius, and never subtracts.
A running sum (add the value entering the window, subtract the one leaving)
is O(1) too, but once a large value has passed through the window its
rounding error stays in the sum of the small values that follow.  Instead the
window sums use the van Herk / Gil-Werman decomposition: cut the zero-padded
line into segments of the window length ``w = 2r + 1``; every window then
covers the tail of one segment and the head of the next, so its sum is
``suffix_sum[start] + prefix_sum[end]``.  Each output is a float64 sum of the
window's own values only, as exact as summing them directly.

The 2-D window is done separably.  The vertical pass keeps two segments of
rows (the suffix sums of the segment holding the output rows, the prefix sums
of the next one), so memory is O(w * x), not O(y * x), and its loops run along
rows, where they vectorise.  The horizontal pass then works on a tile of the
``w`` output rows of column sums at once, interleaving the rows so the scans
are not one long dependency chain.  Valid-pixel counts ride along; a band
without nodata skips them and uses the clipped window area instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rdask.kernels.bands import is_nodata, nodata_like
from rdask.kernels.spec import kernel


@njit(nogil=True, cache=True)
def _has_nodata(plane: np.ndarray, ndv: float) -> bool:
    for i in range(plane.shape[0]):
        for j in range(plane.shape[1]):
            if is_nodata(np.float64(plane[i, j]), ndv):
                return True
    return False


@njit(nogil=True, cache=True)
def _load_segment(plane, ndv, radius, p0, vals, cnts, counting):
    """Values (and valid counts) of padded rows ``p0 .. p0 + w - 1``.

    Padded row ``p`` is raster row ``p - radius``; rows outside the raster and
    invalid pixels add 0 to the sum and 0 to the count.
    """
    ny, nx = plane.shape
    for k in range(vals.shape[0]):
        row = p0 + k - radius
        if row < 0 or row >= ny:
            vals[k, :] = 0.0
            if counting:
                cnts[k, :] = 0
        elif counting:
            for j in range(nx):
                v = np.float64(plane[row, j])
                if is_nodata(v, ndv):
                    vals[k, j] = 0.0
                    cnts[k, j] = 0
                else:
                    vals[k, j] = v
                    cnts[k, j] = 1
        else:
            for j in range(nx):
                vals[k, j] = plane[row, j]


@njit(nogil=True, cache=True)
def _scan_rows(vals, cnts, counting, reverse):
    """In place along axis 0: prefix sums, or suffix sums if ``reverse``."""
    n = vals.shape[0]
    for t in range(1, n):
        k = n - 1 - t if reverse else t
        prev = k + 1 if reverse else k - 1
        for j in range(vals.shape[1]):
            vals[k, j] += vals[prev, j]
        if counting:
            for j in range(vals.shape[1]):
                cnts[k, j] += cnts[prev, j]


@njit(nogil=True, cache=True)
def _scan_tile(cs, cc, hs, hc, nk, counting):
    """Horizontal segment scans of the first ``nk`` rows of a column-sum tile.

    Per segment of ``w`` padded columns: suffix sums into ``hs``/``hc``,
    prefix sums in place in ``cs``/``cc``.  The inner loop runs over rows,
    so ``nk`` independent additions overlap.
    """
    w = cs.shape[0]
    npad = cs.shape[1]
    for q0 in range(0, npad, w):
        last = q0 + w - 1
        for k in range(nk):
            hs[k, last] = cs[k, last]
        for q in range(last - 1, q0 - 1, -1):
            for k in range(nk):
                hs[k, q] = cs[k, q] + hs[k, q + 1]
        for q in range(q0 + 1, q0 + w):
            for k in range(nk):
                cs[k, q] += cs[k, q - 1]
        if counting:
            for k in range(nk):
                hc[k, last] = cc[k, last]
            for q in range(last - 1, q0 - 1, -1):
                for k in range(nk):
                    hc[k, q] = cc[k, q] + hc[k, q + 1]
            for q in range(q0 + 1, q0 + w):
                for k in range(nk):
                    cc[k, q] += cc[k, q - 1]


@njit(nogil=True, cache=True, error_model="numpy")
def _focal_mean(block, nodata, radius):
    if radius < 0:
        raise ValueError("radius must be >= 0, got " + str(radius))
    nb, ny, nx = block.shape
    out = np.empty((nb, ny, nx), dtype=np.float32)
    if ny == 0 or nx == 0:
        return out
    ndv = nodata_like(block, nodata)
    w = 2 * radius + 1
    # Padded columns: raster column j is padded column j + radius; the padded
    # length is rounded up to whole segments.
    npad = -(-(nx + 2 * radius) // w) * w
    suf_v = np.empty((w, nx), dtype=np.float64)
    suf_c = np.empty((w, nx), dtype=np.int32)
    pre_v = np.empty((w, nx), dtype=np.float64)
    pre_c = np.empty((w, nx), dtype=np.int32)
    cs = np.zeros((w, npad), dtype=np.float64)
    cc = np.zeros((w, npad), dtype=np.int32)
    hs = np.empty((w, npad), dtype=np.float64)
    hc = np.empty((w, npad), dtype=np.int32)
    # Clipped window width per column, for bands without nodata.
    colspan = np.empty(nx, dtype=np.float64)
    for j in range(nx):
        colspan[j] = min(j + radius, nx - 1) - max(j - radius, 0) + 1
    for b in range(nb):
        plane = block[b]
        counting = _has_nodata(plane, ndv)
        # Output rows s0 .. s0 + w - 1 have padded windows starting in the
        # segment at s0 and ending in the next one.
        for s0 in range(0, ny, w):
            _load_segment(plane, ndv, radius, s0, suf_v, suf_c, counting)
            _scan_rows(suf_v, suf_c, counting, True)
            _load_segment(plane, ndv, radius, s0 + w, pre_v, pre_c, counting)
            _scan_rows(pre_v, pre_c, counting, False)
            nk = min(w, ny - s0)
            for k in range(nk):
                if k == 0:
                    cs[0, radius : radius + nx] = suf_v[0]
                else:
                    for j in range(nx):
                        cs[k, radius + j] = suf_v[k, j] + pre_v[k - 1, j]
                if counting:
                    if k == 0:
                        cc[0, radius : radius + nx] = suf_c[0]
                    else:
                        for j in range(nx):
                            cc[k, radius + j] = suf_c[k, j] + pre_c[k - 1, j]
            _scan_tile(cs, cc, hs, hc, nk, counting)
            for k in range(nk):
                i = s0 + k
                orow = out[b, i]
                rowspan = np.float64(min(i + radius, ny - 1) - max(i - radius, 0) + 1)
                # x / 0 -> NaN (error_model="numpy"): the no-valid-pixel case.
                for j0 in range(0, nx, w):
                    if counting:
                        orow[j0] = hs[k, j0] / np.float64(hc[k, j0])
                    else:
                        orow[j0] = hs[k, j0] / (rowspan * colspan[j0])
                    for j in range(j0 + 1, min(j0 + w, nx)):
                        total = hs[k, j] + cs[k, j + w - 1]
                        if counting:
                            orow[j] = total / np.float64(hc[k, j] + cc[k, j + w - 1])
                        else:
                            orow[j] = total / (rowspan * colspan[j])
            # The prefix scan wrote into the padding; zero it for the next tile.
            for k in range(nk):
                cs[k, :radius] = 0.0
                cs[k, radius + nx :] = 0.0
                cc[k, :radius] = 0
                cc[k, radius + nx :] = 0
    return out


@kernel(
    name="focal-mean", dtype="float32", halo="radius", nodata=float("nan"), accepts="real"
)
@njit(nogil=True, cache=True)
def focal_mean(block: np.ndarray, nodata: float, radius: int = 1) -> np.ndarray:
    """Mean of the valid pixels in a (2r+1) x (2r+1) window, per band, as float32.

    Parameters
    ----------
    block
        ``(bands, y, x)`` array of any real dtype (bool, integer, float;
        complex is refused).
    nodata
        Input nodata (NaN when none); filled in by rdask.
    radius
        Window half-size ``r`` in pixels; also the halo rdask reads around
        each chunk.

    Returns
    -------
    numpy.ndarray
        ``(bands, y, x)`` float32.  Pixels equal to nodata and NaN pixels are
        skipped; the window is clipped at the raster edge (edge pixels
        average fewer values).  A nodata pixel with valid neighbours gets
        their mean.  NaN (the output nodata) where the window holds no valid
        pixel.  Sums are float64 and as exact as a direct sum of the window;
        the cost is O(1) per pixel for any radius.

    Raises
    ------
    ValueError
        If ``radius`` is negative.
    """
    return _focal_mean(block, nodata, radius)
