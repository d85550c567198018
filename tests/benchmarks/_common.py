"""Helpers shared by the benchmark scripts (not collected by pytest)."""

from __future__ import annotations

import time

__all__ = ["warm_up", "warm_up_compare"]


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


def warm_up_compare(label: str, model, ids, protocol, kw: dict, report=print):
    """:func:`warm_up` of a :func:`da_embed.compare.compare` on the stream's first two chunks.

    Parameters
    ----------
    label : str
        The methods, for the printed line.
    model : transformers.PreTrainedModel
    ids : numpy.ndarray
        The stream; only its first ``context + 2 chunk + 1`` tokens are read.
    protocol : PrequentialConfig
        The timed run's protocol; the warm-up keeps its chunk and context.
    kw : dict
        The timed run's other keyword arguments (no ``protocol``).
    report : callable, default print
    """
    from da_embed.assimilator import PrequentialConfig
    from da_embed.compare import compare

    short = PrequentialConfig(chunk=protocol.chunk, context=protocol.context)
    return warm_up(label, lambda: compare(model, ids[:protocol.context + 2 * protocol.chunk + 1],
                                          protocol=short, print_fn=None, **kw), report)
