"""A text progress bar: done/total, percent, throughput, ETA.

Used by ``rdask run`` on a terminal, and by ``progress=True`` on a
distributed scheduler, where rdask's client-side writer is the one place that
sees every chunk land (dask's own displays would need every chunk submitted
at once, which would unbound memory). Jupyter renders the carriage returns
as one updating line.
"""

from __future__ import annotations

import sys
import threading
import time


class TerminalProgress:
    """Callable ``(pixels_done, pixels_total)``; redraws at most 10 times a second."""

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._lock = threading.Lock()
        self._drawn = False
        self.base = 0  # pixels an earlier, resumed run wrote: not part of the rate

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < 0.1:
            return
        with self._lock:
            self._last = now
            elapsed = max(now - self.t0, 1e-9)
            frac = done / total if total else 1.0
            now_done = done - self.base
            rate = now_done / elapsed / 1e6
            eta = (total - done) / (now_done / elapsed) if now_done > 0 else float("inf")
            filled = int(self.width * frac)
            bar = "#" * filled + "-" * (self.width - filled)
            eta_s = f"{eta:5.0f}s" if eta != float("inf") else "    ?"
            self.stream.write(
                f"\r[{bar}] {frac:6.1%}  {done / 1e6:8.1f}/{total / 1e6:.1f} Mpx  "
                f"{rate:6.1f} Mpx/s  ETA {eta_s}"
            )
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
