"""The analysis step of a cycle: the pseudo-observation and the verification rule.

Shapes: M members (or sigma points), K candidates per member, n state size.
"""

from __future__ import annotations

import math

import numpy as np

from filters.models import ObservationOperator

__all__ = ["pseudo_target", "verification_update"]


def pseudo_target(HE: np.ndarray, predicted: np.ndarray, target="best", R="auto"):
    """Pseudo-observation ``y`` (K,) and observation variance ``r`` of one cycle.

    Parameters
    ----------
    HE : numpy.ndarray (M, K)
        Scores of member j's candidate k (NaN: the verifier failed).
    predicted : numpy.ndarray (K,)
        The filter's predicted score per column (ensemble mean or weighted
        sigma-point mean).
    target : "best" or float
        ``"best"``: ``y_k = max_j HE[j, k]``; a number c:
        ``y_k = predicted_k + c sqrt(r)``.
    R : "auto" or float
        ``"auto"``: r = the variance of all usable scores; a number: r.

    Returns
    -------
    y : numpy.ndarray (K,)
        NaN for a column with a failed candidate (not assimilated).
    r : float
        0 when the scores carry no information (all equal, or none usable).

    Examples
    --------
    >>> HE = np.array([[1.0, 2.0], [3.0, np.nan]])
    >>> y, r = pseudo_target(HE, HE.mean(axis=0))
    >>> y.tolist(), r
    ([3.0, nan], 1.0)
    """
    usable = np.all(np.isfinite(HE), axis=0)  # (K,)
    y = np.full(HE.shape[1], np.nan)
    if not usable.any():
        return y, 0.0
    vals = HE[:, usable]
    r = float(np.var(vals)) if isinstance(R, str) else float(R)
    if target == "best":
        y[usable] = vals.max(axis=0)
    else:
        y[usable] = predicted[usable] + float(target) * math.sqrt(max(r, 0.0))
    return y, r


def verification_update(x: np.ndarray, directions: np.ndarray, scores: np.ndarray,
                        eta: float) -> np.ndarray:
    """The seeds' rule ``x + eta * mean_j(z_j h_j)`` with standardised scores.

    Parameters
    ----------
    x : numpy.ndarray (n,)
    directions : numpy.ndarray (M, n)
        ``h_j``, the perturbation directions of the candidates.
    scores : numpy.ndarray (M,)
        Member scores (NaN: skipped).
    eta : float
        Step size.

    Returns
    -------
    numpy.ndarray (n,)
        ``x`` unchanged when fewer than two scores are usable or they are all
        equal.

    Examples
    --------
    >>> H = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> verification_update(np.zeros(2), H, np.array([2.0, 0.0]), eta=0.5).tolist()
    [0.5, 0.0]
    """
    ok = np.isfinite(scores)
    if ok.sum() < 2:
        return x.copy()
    s = scores[ok]
    sd = s.std()
    if not sd > 0:
        return x.copy()
    z = (s - s.mean()) / sd  # (M_ok,)
    return x + eta * (z[:, None] * directions[ok]).mean(axis=0)


class _ScoreObservation(ObservationOperator):
    """The cycle's score matrix as an observation operator of the points it was made at."""

    def __init__(self, X: np.ndarray, HE: np.ndarray) -> None:
        self.X, self.HE = X, HE
        self.ndim, self.nobs = X.shape[1], HE.shape[1]

    def __call__(self, X):
        X = np.asarray(X)
        if X.shape != self.X.shape or not np.array_equal(X, self.X):
            raise RuntimeError("the filter asked for scores at states other than the ones the "
                               "candidates were generated at")
        return self.HE.copy()
