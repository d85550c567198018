"""Peak memory of a block of code, for the per-method memory column of comparisons.

Two measures, both sampled by a thread: :class:`PeakHeap` counts the bytes
that malloc has handed out and not taken back (numpy arrays and torch CPU
tensors live there), :class:`PeakRSS` the resident set of the process.  The
resident set never shrinks when a block frees memory into malloc's pools, so
a block that reuses memory freed by an earlier one looks free under RSS; the
heap in use does not depend on what ran before, which makes it the measure
to compare methods run one after another in one process.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading

__all__ = ["PeakRSS", "PeakHeap", "heap_in_use"]


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2():
    try:
        fn = ctypes.CDLL(None).mallinfo2  # glibc >= 2.33
    except (AttributeError, OSError):
        return None
    fn.restype = _MallInfo2
    return fn


_MALLINFO2 = _mallinfo2()


def heap_in_use() -> int | None:
    """Bytes malloc has allocated and not freed (glibc's ``mallinfo2``), or None.

    Returns
    -------
    int or None
        ``uordblks + hblkhd`` (in-use bytes of the arenas plus the large blocks
        malloc maps directly); None where the C library has no ``mallinfo2``.

    Examples
    --------
    >>> import numpy as np
    >>> before = heap_in_use()
    >>> block = np.ones(1_000_000)  # 8 MB
    >>> before is None or heap_in_use() - before >= 8_000_000
    True
    """
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


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

    #: What :attr:`peak_extra` counts (for table headers and summaries).
    measure = "peak RSS above the block's start"

    @staticmethod
    def _read() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _loop(self):
        while not self._stop.wait(self.interval):
            r = self._read()
            if r is not None:
                self._peak = max(self._peak, r)

    def __enter__(self):
        self._base = self._read()
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
        r = self._read()
        self._peak = max(self._peak, r or 0)
        self.peak_extra = max(0, self._peak - self._base)


class PeakHeap(PeakRSS):
    """Peak heap in use above the value at entry, in bytes (a sampling thread).

    As :class:`PeakRSS`, but sampling :func:`heap_in_use`: memory that an
    earlier block freed and this block reuses is counted, so the figure of a
    block does not depend on what ran before it in the process.  Where the C
    library has no ``mallinfo2`` it falls back to the resident set
    (:attr:`measure` says which).

    Parameters
    ----------
    interval : float, default 0.005
        As in :class:`PeakRSS`.

    Examples
    --------
    >>> import numpy as np
    >>> with PeakHeap(interval=0.01) as mem:  # a 32 MB array, alive when the block exits
    ...     block = np.full(4_000_000, 2.0)
    >>> mem.measure != "peak heap in use above the block's start" or mem.peak_extra > 30e6
    True
    """

    measure = ("peak heap in use above the block's start" if _MALLINFO2 is not None
               else PeakRSS.measure)

    def __enter__(self):
        # Garbage left by earlier code and freed during the block would lower the net figure.
        gc.collect()
        return super().__enter__()

    @staticmethod
    def _read() -> int | None:
        used = heap_in_use()
        return PeakRSS._read() if used is None else used
