"""Square-window medians by a selection network, many pixels at once.

For a window of ``n = (2r+1)²`` pixels (r <= 3) the median is the middle
output of a sorting network.  :func:`median_network` builds Batcher's
odd-even merge sort for the next power of two, removes the padding wires
(known to hold +inf, so their comparators are no-ops or moves), and keeps
only the comparators the middle output depends on: about 150 compare-and-swap
steps for 5x5 instead of a sort.  :func:`row_medians` applies them to a
row segment of pixels at a time, each step one branch-free min/max over the
segment, which the compiler vectorises.  Windows that hold nodata, NaN or
cross the raster edge are left to the caller.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

#: Pixels of a row handled together (the slots stay in the L1 cache).
SEGMENT = 256


def _batcher(n: int) -> list[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort on ``n`` (a power of two) wires."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.cache
def median_network(n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(lo, hi, slot)``: compare-and-swap slot pairs (min to ``lo``, max to
    ``hi``) that leave the median of ``n`` (odd) values in ``slot``."""
    size = 1
    while size < n:
        size *= 2
    inf = -1
    wire = list(range(n)) + [inf] * (size - n)  # which slot each wire holds
    steps = []
    for a, b in _batcher(size):
        if wire[b] == inf:
            continue  # min(x, inf) stays where it is
        if wire[a] == inf:
            wire[a], wire[b] = wire[b], inf  # the value moves down, inf up
            continue
        steps.append((wire[a], wire[b]))
    target = wire[n // 2]
    needed, kept = {target}, []
    for lo, hi in reversed(steps):
        if lo in needed or hi in needed:
            kept.append((lo, hi))
            needed.update((lo, hi))
    kept.reverse()
    lo = np.array([s[0] for s in kept], dtype=np.int64)
    hi = np.array([s[1] for s in kept], dtype=np.int64)
    return lo, hi, target


@njit(nogil=True, cache=True)
def row_medians(plane, i, j0, count, r, ndv, lo, hi, target, slots, ok, out_row):
    """Medians of the windows of pixels ``(i, j0 .. j0 + count - 1)``.

    Every window must lie inside ``plane``.  ``ok[t]`` tells whether pixel
    ``j0 + t``'s window was all valid; only those get ``out_row[j0 + t]``.
    """
    w = 2 * r + 1
    for t in range(count):
        ok[t] = True
    k = 0
    for dy in range(-r, r + 1):
        row = plane[i + dy]
        for dx in range(-r, r + 1):
            base = j0 + dx
            for t in range(count):
                v = row[base + t]
                if v != v or v == ndv:
                    ok[t] = False
                slots[k, t] = v
            k += 1
    for m in range(lo.shape[0]):
        a = slots[lo[m]]
        b = slots[hi[m]]
        for t in range(count):
            x = a[t]
            y = b[t]
            less = x < y
            a[t] = x if less else y
            b[t] = y if less else x
    res = slots[target]
    for t in range(count):
        if ok[t]:
            out_row[j0 + t] = res[t]
    return w
