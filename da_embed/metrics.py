"""Language-model metrics of online runs: prequential perplexity and paired changes.

Shapes: T chunks, B bootstrap resamples.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["perplexity", "PairedChange", "paired_change", "default_block_length"]


def perplexity(nll, tokens=None) -> float:
    """``exp`` of the token-weighted mean NLL.

    Parameters
    ----------
    nll : array_like (T,)
        Mean NLL of each chunk (nats).
    tokens : array_like (T,), optional
        Tokens per chunk (weights); equal weights by default.

    Returns
    -------
    float
        ``exp(sum(tokens * nll) / sum(tokens))``; NaN for no chunks.

    Examples
    --------
    >>> round(perplexity([1.0, 3.0]), 4), round(perplexity([1.0, 3.0], [3, 1]), 4)
    (7.3891, 4.4817)
    """
    x = np.asarray(nll, dtype=float)
    if x.size == 0:
        return float("nan")
    w = np.ones_like(x) if tokens is None else np.asarray(tokens, dtype=float)
    return float(np.exp(np.sum(w * x) / np.sum(w)))  # inf (not OverflowError) if diverged


def default_block_length(T: int) -> int:
    """Block length of the bootstrap: ``round(T ** (1/3))``, at least 1 (Hall et al. 1995).

    Parameters
    ----------
    T : int
        Number of chunks.

    Returns
    -------
    int
        The block length in chunks.

    Examples
    --------
    >>> default_block_length(625), default_block_length(1)
    (9, 1)
    """
    return max(1, int(round(T ** (1.0 / 3.0))))


class PairedChange(NamedTuple):
    """Change of perplexity of a method against a baseline, in percent.

    Parameters
    ----------
    change : float
        ``100 (exp(mean d) - 1)`` with ``d`` the paired per-chunk NLL differences.
    low, high : float
        Bounds of the bootstrap interval (NaN with fewer than 2 chunks).
    level : float
        Confidence level (0.95).
    block : int
        Block length in chunks.

    Examples
    --------
    >>> pc = paired_change([0.9, 1.0, 0.8, 0.9, 1.0], [1.0, 1.1, 0.9, 1.0, 1.1])
    >>> round(pc.change, 2), pc.level, pc.block
    (-9.52, 0.95, 2)
    """

    change: float
    low: float
    high: float
    level: float
    block: int


def paired_change(nll, nll_base, *, level: float = 0.95, block: int | None = None,
                  n_boot: int = 2000, seed: int = 0) -> PairedChange:
    """Perplexity change against a baseline with a circular block-bootstrap interval.

    The per-chunk differences ``d_t = nll_t - nll_base_t`` (same chunks, same
    tokens) are resampled in circular blocks of ``block`` consecutive chunks
    (Politis & Romano 1992), which keeps the serial correlation of an online
    run; the interval is the percentile interval of ``100 (exp(mean d*) - 1)``.

    Parameters
    ----------
    nll, nll_base : array_like (T,)
        Mean NLL per chunk of the method and of the baseline.
    level : float, default 0.95
    block : int, optional
        Default :func:`default_block_length`.
    n_boot : int, default 2000
    seed : int, default 0

    Returns
    -------
    PairedChange

    Examples
    --------
    >>> pc = paired_change([1.0, 1.1, 0.9, 1.0], [1.1, 1.2, 1.0, 1.1])
    >>> round(pc.change, 2), pc.low < pc.change < pc.high or pc.low == pc.high
    (-9.52, True)
    """
    a = np.asarray(nll, dtype=float)
    b = np.asarray(nll_base, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"nll and nll_base must be 1-D of the same length, got {a.shape} and "
                         f"{b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    T = a.size
    if T == 0:
        nan = float("nan")
        return PairedChange(nan, nan, nan, level, 0)
    d = a - b
    with np.errstate(over="ignore"):  # a diverged run's change is +inf, not an OverflowError
        change = 100.0 * float(np.expm1(d.mean()))
    blk = default_block_length(T) if block is None else int(block)
    if blk < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if T < 2:
        return PairedChange(change, float("nan"), float("nan"), level, blk)
    rng = np.random.default_rng(seed)
    n_blocks = -(-T // blk)
    starts = rng.integers(0, T, size=(n_boot, n_blocks))  # (B, blocks)
    idx = (starts[:, :, None] + np.arange(blk)) % T  # (B, blocks, blk), circular
    means = d[idx.reshape(n_boot, -1)[:, :T]].mean(axis=1)  # (B,)
    with np.errstate(over="ignore"):
        boot = 100.0 * np.expm1(means)
    # Interpolating between infinite resamples gives NaN: take order statistics then.
    method = "linear" if np.isfinite(boot).all() else "nearest"
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], method=method)
    return PairedChange(change, float(lo), float(hi), level, blk)
