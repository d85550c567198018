"""Helpers shared by the benchmark scripts (not collected by pytest)."""

from __future__ import annotations

import time

__all__ = ["warm_up"]


def warm_up(label: str, fn, report=print):
    """Run ``fn()`` once, untimed, and say so; returns what it returns.

    Every timed benchmark calls this once per method before its timed runs,
    so that the first timed run does not carry the cold start (first calls
    of torch kernels, Numba compilation, allocator growth, page cache).

    Parameters
    ----------
    label : str
        The method, for the printed line.
    fn : callable
        The method's run on a little input; its result is not used in any
        number that is reported.
    report : callable, default print
        Receives the line.
    """
    t0 = time.perf_counter()
    out = fn()
    report(f"  warm-up {label}: {time.perf_counter() - t0:.2f} s (untimed, discarded)")
    return out
