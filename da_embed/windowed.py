"""The sliding-window (4D-Var) analysis of the windowed methods of a run.

Windowed methods (``4dvar``, ``w4dvar``: filters with ``windowed = True``)
replace the per-chunk analysis of
:class:`~da_embed.assimilator.OnlineAssimilator` by :class:`WindowedAnalysis`:
at chunk k the window of chunks ``j0 = k - W + 1 .. k`` is solved at once,
so every chunk enters each window's cost once.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from filters.states import GaussianState

__all__ = ["WindowedAnalysis"]


class WindowedAnalysis:
    """Sliding-window (4D-Var) analyses over the last ``W`` chunks of a run.

    Keeps the observation operator and pseudo-observation of the last ``W``
    chunks and the analysis of each chunk.  :meth:`analyse` at chunk k solves
    the window of chunks ``j0 = max(0, k - W + 1) .. k`` with the filter's
    :meth:`~filters.variational.StrongConstraint4DVar.solve` (a sequence of
    per-chunk operators, ``dynamics`` between chunks, one step of ``dt = 1``
    per chunk starting at time ``j0``); its background is the analysis of
    chunk ``j0 - 1`` moved one step with ``dynamics`` (the prior mean when
    ``j0 = 0``) with the filter's static ``B``.  It returns the state at
    chunk k (mean and Gauss-Newton covariance).

    Parameters
    ----------
    flt : StrongConstraint4DVar or WeakConstraint4DVar
        ``flt.window`` is ``W``.
    dynamics : filters.models.Model
    prior_mean : ndarray (n,)
    R : Covariance
        Observation noise of one chunk (L, L).
    Q : Covariance or None
        The run's process noise per chunk; weak constraint uses the filter's
        resolved ``window_Q_`` (its own ``Q``, else this one).

    Examples
    --------
    >>> from filters import StrongConstraint4DVar
    >>> from filters.covariance import as_covariance
    >>> from filters.models import Identity, LinearGaussian
    >>> from filters.states import GaussianState
    >>> flt = StrongConstraint4DVar(window=2, B="eye", xB=1.0, minimizer="gauss-newton")
    >>> dynamics, prior = LinearGaussian(np.eye(1)), GaussianState(np.zeros(1), np.eye(1))
    >>> flt.setup(dynamics, None, prior, 1.0, None)
    >>> window = WindowedAnalysis(flt, dynamics, prior.mean, as_covariance(1.0, 1), None)
    >>> for k in range(3):  # observe 1 at every chunk (a scalar state, B = R = 1)
    ...     state, info = window.analyse(k, Identity(1), np.array([1.0]))
    ...     print(k, info["window_chunks"], state.mean.round(4).tolist())
    0 1 [0.5]
    1 2 [0.6667]
    2 2 [0.8333]
    """

    def __init__(self, flt, dynamics, prior_mean, R, Q) -> None:
        self.flt, self.dynamics, self.R = flt, dynamics, R
        self.Q = getattr(flt, "window_Q_", None) if getattr(flt, "_weak", False) else Q
        self.W = int(flt.window)
        self.prior_mean = np.asarray(prior_mean, dtype=float)
        self.chunks = deque(maxlen=self.W)  # (operator, pseudo-observation)
        self.analyses: dict[int, np.ndarray] = {}

    def analyse(self, k: int, obs, y):
        """Assimilate chunk k (operator ``obs``, pseudo-observation ``y``); (state, info)."""
        flt = self.flt
        self.chunks.append((obs, np.asarray(y, dtype=float)))
        p = len(self.chunks)
        j0 = k - p + 1
        if j0 == 0:
            xb = self.prior_mean
        else:
            xb = np.asarray(self.dynamics.step(self.analyses[j0 - 1], float(j0 - 1), 1.0),
                            dtype=float)
        B = flt._B_static_dense
        ops = [c[0] for c in self.chunks]
        Y = np.stack([c[1] for c in self.chunks])  # (p, L)
        res = flt.solve(GaussianState(xb, B), Y, np.arange(p), p - 1, self.dynamics, ops,
                        self.R, t0=float(j0), dt=1.0, Q=self.Q)
        mean = np.asarray(res.trajectory[-1], dtype=float)
        cov = res.cov(p - 1) if res.has_covariance else B
        self.analyses[k] = mean
        self.analyses.pop(k - self.W, None)  # only chunks k - W + 1 .. k start later windows
        info = {"window_chunks": p, "cost_start": res.cost_start, "cost_end": res.cost_end,
                "iterations": res.iterations, "converged": int(res.converged)}
        return GaussianState(mean, cov), info
