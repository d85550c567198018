"""Verification metrics: RMSE, spread, CRPS, rank histogram, honest time averages."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["rmse", "root_mean_variance", "crps_ensemble", "rank_histogram",
           "TimeAverage", "time_average"]


def rmse(estimate, truth, axis: int = -1) -> np.ndarray:
    """Root-mean-square error over ``axis``.

    Parameters
    ----------
    estimate, truth : array_like
        Arrays of broadcastable shapes.
    axis : int, default -1
        The axis averaged over (the state components).

    Returns
    -------
    ndarray
        ``sqrt(mean((estimate - truth)**2, axis))``, with ``axis`` removed.

    Examples
    --------
    >>> float(rmse([1.0, 3.0], [0.0, 0.0]))
    2.23606797749979
    >>> rmse([[3.0, 4.0], [0.0, 0.0]], [0.0, 0.0]).round(4).tolist()
    [3.5355, 0.0]
    """
    d = np.asarray(estimate, dtype=float) - np.asarray(truth, dtype=float)
    return np.sqrt(np.mean(d * d, axis=axis))


def root_mean_variance(spread, axis: int = -1) -> np.ndarray:
    """``sqrt(mean(spread**2))``: the spread that should match the RMSE (DAPPER's ``rmv``).

    Parameters
    ----------
    spread : array_like
        Standard deviations per component.
    axis : int, default -1
        The axis averaged over.

    Returns
    -------
    ndarray
        The root mean variance, with ``axis`` removed.

    Examples
    --------
    >>> float(root_mean_variance([1.0, 1.0]))
    1.0
    """
    s = np.asarray(spread, dtype=float)
    return np.sqrt(np.mean(s * s, axis=axis))


def crps_ensemble(members, truth) -> np.ndarray:
    """Continuous ranked probability score of an ensemble, per component.

    Uses the sorted-ensemble form of ``E|X - y| - E|X - X'| / 2`` with the
    empirical distribution (Hersbach 2000; Gneiting & Raftery 2007).

    Parameters
    ----------
    members : array_like (N, n)
    truth : array_like (n,)

    Returns
    -------
    ndarray (n,)

    Examples
    --------
    >>> crps_ensemble([[0.0], [0.0]], [1.0]).tolist()
    [1.0]
    """
    X = np.sort(np.asarray(members, dtype=float), axis=0)  # (N, n)
    y = np.asarray(truth, dtype=float)
    N = X.shape[0]
    term1 = np.mean(np.abs(X - y), axis=0)
    w = (2.0 * np.arange(1, N + 1) - N - 1.0)[:, None]
    term2 = np.sum(w * X, axis=0) / N**2  # = E|X - X'| / 2
    return term1 - term2


def rank_histogram(ranks, n_members: int) -> np.ndarray:
    """Counts of the truth's rank among the members (Talagrand diagram).

    Parameters
    ----------
    ranks : array_like of int
        Number of members below the truth, any shape.
    n_members : int
        Ensemble size N; ranks lie in 0..N.

    Returns
    -------
    ndarray (N + 1,)

    Examples
    --------
    >>> rank_histogram([0, 1, 1, 2], 2).tolist()
    [1, 2, 1]
    """
    r = np.asarray(ranks).ravel()
    return np.bincount(r.astype(np.int64), minlength=n_members + 1)


class TimeAverage(NamedTuple):
    """A time mean with its standard error, corrected for autocorrelation.

    Parameters
    ----------
    mean : float
        The time mean.
    stderr : float
        Its standard error (NaN when the series is too short to estimate it).

    Examples
    --------
    >>> print(TimeAverage(1.5, 0.25))
    1.5 ± 0.25
    """

    mean: float
    stderr: float

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.stderr:.2g}"


def time_average(series) -> TimeAverage:
    """Mean of a time series and its autocorrelation-corrected standard error.

    The error variance ``var / T`` is multiplied by ``1 + 2/T sum_k (T-k) a^k``
    with ``a`` the lag-1 autocorrelation of an AR(1) fit, as DAPPER's
    ``mean_with_conf`` does, so that two filters' time-averaged RMSEs can be
    compared honestly.  Non-finite entries are dropped.

    Parameters
    ----------
    series : array_like of shape (T,)
        The time series (e.g. RMSE per cycle after spin-up).

    Returns
    -------
    TimeAverage
        Mean and standard error; the error is NaN for T <= 5 (too short to
        estimate the autocorrelation), both are NaN for an empty series.

    Examples
    --------
    >>> ta = time_average(np.ones(10))
    >>> ta.mean, ta.stderr
    (1.0, 0.0)
    """
    x = np.asarray(series, dtype=float)
    x = x[np.isfinite(x)]
    T = x.size
    if T == 0:
        return TimeAverage(float("nan"), float("nan"))
    mu = float(x.mean())
    if T <= 5:
        return TimeAverage(mu, float("nan"))
    d = x - mu
    var = float(d @ d) / T
    if var == 0.0:
        return TimeAverage(mu, 0.0)
    a = float(d[1:] @ d[:-1]) / T / var  # lag-1 autocorrelation
    a = min(max(a, 0.0), 0.999)  # negative correlation would shrink the error: don't claim it
    c = ((T - 1) * a - T * a**2 + a ** (T + 1)) / (1 - a) ** 2
    return TimeAverage(mu, float(np.sqrt(var / T * (1.0 + 2.0 / T * c))))
