"""Peak memory of a block of code, for the per-method memory column of comparisons."""

from __future__ import annotations

import os
import threading

__all__ = ["PeakRSS"]


class PeakRSS:
    """Peak resident memory above the value at entry, in bytes (a sampling thread).

    A context manager: ``peak_extra`` holds the peak of ``/proc/self/statm``'s
    resident set above its value at entry once the block exits (NaN where
    ``/proc`` is not readable).  Used to report each method's memory.

    Parameters
    ----------
    interval : float, default 0.005
        Seconds between samples.

    Examples
    --------
    >>> import numpy as np
    >>> with PeakRSS() as mem:
    ...     block = np.ones(4_000_000)  # 32 MB
    >>> bool(mem.peak_extra >= 0) or bool(np.isnan(mem.peak_extra))
    True
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_extra = 0

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _loop(self):
        while not self._stop.wait(self.interval):
            r = self._rss()
            if r is not None:
                self._peak = max(self._peak, r)

    def __enter__(self):
        self._base = self._rss()
        self._peak = self._base or 0
        self._stop = threading.Event()
        if self._base is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._base is None:
            self.peak_extra = float("nan")
            return
        self._stop.set()
        self._thread.join()
        r = self._rss()
        self._peak = max(self._peak, r or 0)
        self.peak_extra = max(0, self._peak - self._base)
