"""Guards against tuning on the text that is scored: shared n-gram windows of two token streams.

A tuning text (``--tune-corpus``) or an expert corpus that contains the
evaluation text leaks it into the result: a Fisher subspace, a learning rate
or an expert state fitted to the very tokens that are then scored.  Two token
streams are compared by their windows of :data:`NGRAM` consecutive tokens
(hashed, so the check costs one pass over each stream): the *shared fraction*
is the share of the evaluation text's windows that also occur in the other
text.  Independent texts share almost none (a 16-token window repeats only in
quoted or boilerplate passages), so above :data:`MAX_SHARED` the
comparison refuses to run unless the caller allows the overlap, which the
results then record.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NGRAM", "MAX_SHARED", "window_set", "shared_fraction", "check_disjoint"]

#: Tokens per window.
NGRAM = 16
#: Largest shared fraction of the evaluation text's windows that is accepted (1%).
MAX_SHARED = 0.01

# Odd 64-bit multiplier of the polynomial window hash (arithmetic wraps modulo 2**64).
_BASE = np.uint64(0x9E3779B97F4A7C15)


def _window_hashes(ids, n: int) -> np.ndarray:
    """Hashes of every window of ``n`` consecutive tokens (empty for a shorter stream)."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if ids.size < n:
        return np.zeros(0, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(ids.astype(np.uint64), n)
    powers = np.cumprod(np.full(n, _BASE, dtype=np.uint64), dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (windows * powers).sum(axis=1, dtype=np.uint64)


def window_set(streams, n: int = NGRAM) -> np.ndarray:
    """The distinct window hashes of a token stream, or of a list of documents.

    Windows never span two documents.  Small enough to keep with what a
    text trained (8 bytes per distinct window), so that a later run can be
    checked against it without the text.

    Parameters
    ----------
    streams : array_like of int, or list of them
        One stream (T,), or documents.
    n : int, default :data:`NGRAM`

    Returns
    -------
    ndarray of uint64
        Sorted, unique.

    Examples
    --------
    >>> import numpy as np
    >>> window_set(np.arange(20)).size, window_set([np.arange(20), np.arange(20)]).size
    (5, 5)
    """
    if isinstance(streams, (list, tuple)) and streams and np.ndim(streams[0]) == 1:
        parts = [_window_hashes(s, n) for s in streams]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
    return np.unique(_window_hashes(streams, n))


def shared_fraction(eval_ids, other_ids, n: int = NGRAM, *, windows: bool = False) -> float:
    """Share of the evaluation stream's ``n``-token windows that also occur in another stream.

    Parameters
    ----------
    eval_ids : array_like of int
        The evaluation (scored) token stream.
    other_ids : array_like of int, list of them, or :func:`window_set`
        A tuning or training token stream, its documents, or the window set
        of one (``windows=True``).
    n : int, default :data:`NGRAM`
        Tokens per window.
    windows : bool, default False
        ``other_ids`` is a :func:`window_set` (made with the same ``n``).

    Returns
    -------
    float
        In [0, 1]; 0 when the evaluation stream is shorter than ``n``.

    Examples
    --------
    >>> import numpy as np
    >>> text = np.arange(100)
    >>> shared_fraction(text, np.arange(1000, 1100))  # no window in common
    0.0
    >>> round(shared_fraction(text, text[50:]), 3)  # 35 of the 85 windows
    0.412
    """
    ev = _window_hashes(eval_ids, n)
    if ev.size == 0:
        return 0.0
    other = np.asarray(other_ids, dtype=np.uint64) if windows else window_set(other_ids, n)
    return float(np.isin(ev, other).mean())


def check_disjoint(eval_ids, other_ids, *, what: str, allow: bool = False,
                   option: str = "allow_overlap=True", n: int = NGRAM,
                   threshold: float = MAX_SHARED, windows: bool = False) -> float:
    """The shared fraction of two streams; a ValueError above ``threshold`` unless allowed.

    Parameters
    ----------
    eval_ids, other_ids : array_like of int
        As in :func:`shared_fraction`.
    what : str
        What ``other_ids`` is, for the message (``"the tuning text"``).
    allow : bool, default False
        Return the fraction instead of raising.
    option : str, default "allow_overlap=True"
        How to allow it, for the message (the CLI passes ``--allow-overlap``).
    n : int, default :data:`NGRAM`
    threshold : float, default :data:`MAX_SHARED`
    windows : bool, default False
        ``other_ids`` is a :func:`window_set`.

    Returns
    -------
    float
        The shared fraction.

    Raises
    ------
    ValueError
        If the fraction exceeds ``threshold`` and ``allow`` is False.

    Examples
    --------
    >>> import numpy as np
    >>> check_disjoint(np.arange(100), np.arange(200, 300), what="the tuning text")
    0.0
    >>> check_disjoint(np.arange(100), np.arange(100), what="the tuning text")
    Traceback (most recent call last):
    ...
    ValueError: the tuning text shares 100.0% of the evaluation text's 16-token windows ...
    """
    frac = shared_fraction(eval_ids, other_ids, n, windows=windows)
    if frac > threshold and not allow:
        raise ValueError(f"{what} shares {100 * frac:.1f}% of the evaluation text's {n}-token "
                         f"windows (more than {100 * threshold:g}%): choices fitted to the "
                         f"scored text leak it into the result; give a disjoint text, or pass "
                         f"{option} to run anyway (the results record it)")
    return frac
