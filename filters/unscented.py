"""The unscented Kalman filter with Merwe scaled or Julier sigma points.

References
----------
Julier & Uhlmann (1997, 2004); van der Merwe (2004), "Sigma-point Kalman
filters for probabilistic inference in dynamic state-space models", ch. 3.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg as sla

from ._validation import check_choice, check_positive
from .base import Filter, observed_subset, safe_cholesky, symmetrize
from .covariance import Covariance
from .states import GaussianState

__all__ = ["UKF", "SigmaPoints", "merwe_sigma_points", "julier_sigma_points",
           "unscented_transform"]


class SigmaPoints(NamedTuple):
    """Sigma points and their weights.

    Parameters
    ----------
    points : ndarray (2n + 1, n)
        The points, one per row (the mean first).
    wm : ndarray (2n + 1,)
        Weights of the mean.
    wc : ndarray (2n + 1,)
        Weights of the covariance.

    Examples
    --------
    >>> sp = julier_sigma_points(np.zeros(2), np.eye(2), kappa=1.0)
    >>> sp.points.shape, sp.wm.round(3).tolist()
    ((5, 2), [0.333, 0.167, 0.167, 0.167, 0.167])
    """

    points: np.ndarray
    wm: np.ndarray
    wc: np.ndarray


def _symmetric_points(mean, cov, lam):
    n = mean.shape[0]
    L = safe_cholesky((n + lam) * cov, "sigma-point covariance")
    return np.vstack([mean, mean + L.T, mean - L.T])  # rows: mean, mean +- columns of L


def merwe_sigma_points(mean, cov, alpha: float = 1.0, beta: float = 2.0,
                       kappa: float = 0.0) -> SigmaPoints:
    """Scaled sigma points of van der Merwe (2004).

    ``lambda = alpha^2 (n + kappa) - n``; points ``m`` and ``m +- columns of
    chol((n + lambda) P)``; ``wm_0 = lambda / (n + lambda)``,
    ``wc_0 = wm_0 + 1 - alpha^2 + beta``, others ``1 / (2 (n + lambda))``.

    Parameters
    ----------
    mean : ndarray (n,)
        Mean of the distribution.
    cov : ndarray (n, n)
        Its covariance.
    alpha : float, default 1.0
        Spread of the points around the mean.
    beta : float, default 2.0
        Prior knowledge of the distribution (2 is optimal for a Gaussian).
    kappa : float, default 0.0
        Secondary scaling parameter.

    Returns
    -------
    SigmaPoints
        ``2n + 1`` points with their mean and covariance weights.

    Examples
    --------
    >>> sp = merwe_sigma_points(np.zeros(2), np.eye(2))
    >>> sp.points.shape, float(sp.wm.sum())
    ((5, 2), 1.0)
    """
    n = mean.shape[0]
    lam = alpha**2 * (n + kappa) - n
    X = _symmetric_points(mean, cov, lam)
    wm = np.full(2 * n + 1, 0.5 / (n + lam))
    wc = wm.copy()
    wm[0] = lam / (n + lam)
    wc[0] = wm[0] + 1.0 - alpha**2 + beta
    return SigmaPoints(X, wm, wc)


def julier_sigma_points(mean, cov, kappa: float = 0.0) -> SigmaPoints:
    """Sigma points of Julier & Uhlmann (1997): weight ``kappa / (n + kappa)`` at the mean.

    Parameters
    ----------
    mean, cov : ndarray (n,), ndarray (n, n)
        The distribution, as in :func:`merwe_sigma_points`.
    kappa : float, default 0.0
        Weight parameter (``n + kappa = 3`` matches the Gaussian's fourth moment).

    Returns
    -------
    SigmaPoints
        ``2n + 1`` points; mean and covariance weights are equal.

    Examples
    --------
    >>> sp = julier_sigma_points(np.zeros(3), np.eye(3), kappa=1.0)
    >>> round(float(sp.wm[0]), 4)
    0.25
    """
    n = mean.shape[0]
    X = _symmetric_points(mean, cov, kappa)
    w = np.full(2 * n + 1, 0.5 / (n + kappa))
    w[0] = kappa / (n + kappa)
    return SigmaPoints(X, w, w.copy())


def unscented_transform(Y: np.ndarray, wm: np.ndarray, wc: np.ndarray,
                        X: np.ndarray | None = None, x_mean: np.ndarray | None = None):
    """Weighted mean and covariance of transformed sigma points.

    Parameters
    ----------
    Y : ndarray (2n + 1, p)
        Transformed points.
    wm, wc : ndarray (2n + 1,)
        Weights.
    X, x_mean : ndarray (2n + 1, n), ndarray (n,), optional
        Original points and their mean, to also return the cross-covariance.

    Returns
    -------
    mean : ndarray (p,)
    cov : ndarray (p, p)
    cross : ndarray (n, p), only when ``X`` is given

    Examples
    --------
    >>> sp = merwe_sigma_points(np.array([1.0, 2.0]), np.diag([1.0, 4.0]))
    >>> mean, cov = unscented_transform(2.0 * sp.points, sp.wm, sp.wc)  # a linear map is exact
    >>> mean.round(6).tolist(), np.diag(cov).round(6).tolist()
    ([2.0, 4.0], [4.0, 16.0])
    """
    mean = wm @ Y
    dY = Y - mean
    cov = symmetrize((dY * wc[:, None]).T @ dY)
    if X is None:
        return mean, cov
    cross = ((X - x_mean) * wc[:, None]).T @ dY
    return mean, cov, cross


class UKF(Filter):
    """Unscented Kalman filter.

    Parameters
    ----------
    points : {"merwe", "julier"}
        Sigma-point scheme.
    alpha, beta, kappa : float
        Scheme parameters (``alpha`` and ``beta`` only for "merwe").  The
        defaults (1, 2, 0) put the points at ``+- sqrt(n)`` standard
        deviations with positive weights, which is robust on chaotic models.
    inflation : float, Inflation or sequence, optional

    Notes
    -----
    The forecast propagates the sigma points of the current state through the
    model; with process noise they are redrawn at every model step so that a
    linear model gives exactly the Kalman forecast.  The analysis redraws them
    from the forecast moments.

    Examples
    --------
    >>> from filters import assimilate
    >>> from filters.settings import sakov2012
    >>> ds = assimilate(UKF(), sakov2012(n_obs=200), seed=0)
    >>> float(ds.attrs["rmse_analysis_mean"]) < 2.0
    True
    """

    name = "UKF"

    def __init__(self, *, points: str = "merwe", alpha: float = 1.0, beta: float = 2.0,
                 kappa: float = 0.0, inflation=None):
        super().__init__(inflation=inflation)
        self.points = points
        self.alpha, self.beta, self.kappa = alpha, beta, kappa

    def validate(self):
        super().validate()
        check_choice(self.points, "points", {"merwe", "julier"})
        check_positive(self.alpha, "alpha")
        check_positive(self.beta, "beta", strict=False)

    def sigma_points(self, mean, cov) -> SigmaPoints:
        """Sigma points of N(mean, cov) under this filter's scheme."""
        if self.points == "merwe":
            return merwe_sigma_points(mean, cov, self.alpha, self.beta, self.kappa)
        if mean.shape[0] + self.kappa <= 0:
            raise ValueError(f"kappa must be > -n = {-mean.shape[0]} for Julier points")
        return julier_sigma_points(mean, cov, self.kappa)

    def initialize(self, prior, rng):
        return GaussianState(prior.mean.copy(), prior.cov.copy())

    def forecast(self, state, model, t, dt, nsteps, Q, rng):
        m, P = state.mean, state.cov
        # Without process noise the points go through all steps at once.
        chunks = [(t, nsteps)] if Q is None else [(t + k * dt, 1) for k in range(nsteps)]
        for tk, ns in chunks:
            sp = self.sigma_points(m, P)
            Y = model.integrate(sp.points, tk, dt, ns)
            m, P = unscented_transform(Y, sp.wm, sp.wc)
            if Q is not None:
                P = P + dt * Q.dense
        return GaussianState(m, P)

    def analysis(self, state, y, obs, R: Covariance, rng):
        mask, y_obs, R_obs = observed_subset(y, R)
        if y_obs.size == 0:
            return state
        sp = self.sigma_points(state.mean, state.cov)
        Z = obs(sp.points)  # (2n+1, m)
        if mask is not None:
            Z = Z[:, mask]
        zm, S, Pxz = unscented_transform(Z, sp.wm, sp.wc, sp.points, state.mean)
        S = symmetrize(S + R_obs.dense)
        cho = sla.cho_factor(S, lower=True, check_finite=False)
        K = sla.cho_solve(cho, Pxz.T, check_finite=False).T  # (n, m)
        mean = state.mean + K @ (y_obs - zm)
        cov = symmetrize(state.cov - K @ S @ K.T)
        return self._post_analysis(state, GaussianState(mean, cov), rng)
