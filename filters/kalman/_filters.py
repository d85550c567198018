"""The Kalman filter, its RTS smoother, the extended and the diagonal Kalman filters.

The classes hold the cycling; each step is a function of ``._equations``.

References
----------
Kalman (1960); Rauch, Tung & Striebel (1965); Jazwinski (1970) for the EKF.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg as sla

from .._validation import check_positive
from ..base import Filter, observed_subset, symmetrize
from ..covariance import as_covariance
from ..inflation import RTPS, AdditiveInflation, MultiplicativeInflation
from ..models.base import finite_difference_jacobian
from ..states import DiagonalGaussianState, GaussianState
from ._equations import (diagonal_kalman_analysis, diagonal_kalman_predict, kalman_analysis,
                         kalman_predict, rts_smoother)

__all__ = ["KalmanFilter", "EKF", "DiagonalEKF", "SmootherResult"]


class SmootherResult(NamedTuple):
    """Filtered and smoothed moments at every observation time.

    Parameters
    ----------
    filtered_mean, filtered_cov : (T, n), (T, n, n)
        The analysis moments.
    predicted_mean, predicted_cov : (T, n), (T, n, n)
        The forecast moments before each analysis.
    smoothed_mean, smoothed_cov : (T, n), (T, n, n)
        The RTS-smoothed moments.
    initial_mean, initial_cov : (n,), (n, n)
        Smoothed moments of the state at time 0 (before the first forecast).

    Examples
    --------
    >>> from filters.settings import linear_gaussian
    >>> s = linear_gaussian(n=2, n_obs=20)
    >>> res = KalmanFilter().smooth(s.prior, s.model, s.obs, s.R, s.simulate(0).observations, Q=s.Q)
    >>> res.smoothed_mean.shape, res.smoothed_cov.shape
    ((20, 2), (20, 2, 2))
    >>> bool(np.allclose(res.smoothed_mean[-1], res.filtered_mean[-1]))  # same at the last time
    True
    """

    filtered_mean: np.ndarray
    filtered_cov: np.ndarray
    predicted_mean: np.ndarray
    predicted_cov: np.ndarray
    smoothed_mean: np.ndarray
    smoothed_cov: np.ndarray
    initial_mean: np.ndarray
    initial_cov: np.ndarray


class KalmanFilter(Filter):
    """The exact Kalman filter for a linear model and a linear observation operator.

    The model must provide :meth:`~filters.models.Model.jacobian` (its matrix),
    the observation operator must be ``linear``.

    Parameters
    ----------
    inflation : float, Inflation or sequence, optional
        Applied after each analysis (none by default: exact filter).

    Examples
    --------
    >>> from filters import assimilate
    >>> from filters.settings import linear_gaussian
    >>> ds = assimilate(KalmanFilter(), linear_gaussian(n_obs=50), seed=1)
    >>> bool(ds.rmse_analysis.mean() < ds.rmse_forecast.mean())
    True
    """

    name = "KF"

    def initialize(self, prior, rng):
        return GaussianState(prior.mean.copy(), prior.cov.copy())

    def forecast(self, state, model, t, dt, nsteps, Q, rng):
        if not getattr(model, "linear", False):
            raise ValueError(f"model {type(model).__name__} is not linear (model.linear is False); "
                             "the Kalman filter needs a linear model (use EKF or UKF)")
        m, P = state.mean, state.cov
        Qk = None if Q is None else Q.dense * dt
        for k in range(nsteps):
            F = model.jacobian(m, t + k * dt, dt)
            if F is None:
                raise ValueError(f"model {type(model).__name__} has no jacobian; the Kalman filter "
                                 "needs a linear model (use EKF for nonlinear ones)")
            m, P = kalman_predict(m, P, F, Qk)
        return GaussianState(m, P)

    def analysis(self, state, y, obs, R, rng):
        if not obs.linear:
            raise ValueError("obs must be a linear observation operator for the Kalman filter "
                             "(use EKF or UKF for nonlinear ones)")
        return _linearised_analysis(self, state, y, obs, R, rng, _gaussian_update)

    def smooth(self, prior: GaussianState, model, obs, R, observations, *, Q=None, dt=1.0,
               nsteps=1, t0=0.0) -> SmootherResult:
        """Filter then RTS-smooth a whole observation sequence.

        Parameters
        ----------
        prior : GaussianState
            Belief about the state at time ``t0``.
        model : Model
            Linear model (one step).
        obs : ObservationOperator
            Linear observation operator.
        R : Covariance or array_like
            Observation-error covariance.
        observations : ndarray (T, m)
            One observation vector per analysis time, ``nsteps`` model steps apart.
        Q : Covariance or array_like, optional
            Process-noise covariance per unit time.
        dt : float
            Model time step.
        nsteps : int
            Model steps between observations.
        t0 : float
            Start time.

        Returns
        -------
        SmootherResult
        """
        R = as_covariance(R, obs.nobs, "R")
        Q = None if Q is None else as_covariance(Q, model.ndim, "Q")
        ys = np.asarray(observations, dtype=float)
        T, n = ys.shape[0], model.ndim
        out = {k: np.empty((T, n)) for k in ("mf", "ma")}
        covs = {k: np.empty((T, n, n)) for k in ("Pf", "Pa")}
        Fs = np.empty((T, n, n))
        state = self.initialize(prior, None)
        t = t0
        for k in range(T):
            F = np.eye(n)
            for j in range(nsteps):
                F = model.jacobian(state.mean, t + j * dt, dt) @ F
            Fs[k] = F
            state = self.forecast(state, model, t, dt, nsteps, Q, None)
            out["mf"][k], covs["Pf"][k] = state.mean, state.cov
            state = self.analysis(state, ys[k], obs, R, None)
            out["ma"][k], covs["Pa"][k] = state.mean, state.cov
            t += nsteps * dt
        ms, Ps = rts_smoother(out["ma"], covs["Pa"], out["mf"], covs["Pf"], Fs[1:])
        # One more backward step to the initial time.
        G = sla.solve(covs["Pf"][0], Fs[0] @ prior.cov, assume_a="pos").T
        m0 = prior.mean + G @ (ms[0] - out["mf"][0])
        P0 = symmetrize(prior.cov + G @ (Ps[0] - covs["Pf"][0]) @ G.T)
        return SmootherResult(out["ma"], covs["Pa"], out["mf"], covs["Pf"], ms, Ps, m0, P0)


class _LinearisedFilter(Filter):
    """What EKF and DiagonalEKF share: the options of the linearisation, and the step Jacobian."""

    def __init__(self, *, jacobian=None, infl_rate: float = 1.0, fd_eps: float = 1e-6,
                 inflation=None):
        super().__init__(inflation=inflation)
        self.jacobian = jacobian
        self.infl_rate = infl_rate
        self.fd_eps = fd_eps

    def validate(self):
        """Check hyperparameters; raises ValueError naming the bad one."""
        super().validate()
        check_positive(self.infl_rate, "infl_rate")
        check_positive(self.fd_eps, "fd_eps")
        if self.jacobian is not None and not callable(self.jacobian):
            raise ValueError(f"jacobian must be callable (x, t, dt) -> (n, n), got "
                             f"{type(self.jacobian).__name__}")

    def _step_jacobian(self, model, m, t, dt):
        """The Jacobian of one model step at ``m``: the user's, else the model's, else
        central finite differences of the step."""
        F = (self.jacobian or model.jacobian)(m, t, dt)
        if F is None:
            F = finite_difference_jacobian(lambda X: model.step(X, t, dt), m, self.fd_eps)
        return F


def _linearised_analysis(flt: Filter, state, y, obs, R, rng, update):
    """The analysis of the present observations, linearised at the state's mean.

    ``update(state, d, H, R)`` is the analysis of the innovation ``d`` with the
    observation Jacobian ``H``; the filter's inflation follows.  With every
    observation missing the state is returned unchanged.
    """
    mask, y_obs, R_obs = observed_subset(y, R)
    if y_obs.size == 0:
        return state
    H = obs.jacobian(state.mean)
    d = y - obs(state.mean)
    if mask is not None:
        H, d = H[mask], d[mask]
    return flt._post_analysis(state, update(state, d, H, R_obs), rng)


def _gaussian_update(state, d, H, R):
    return GaussianState(*kalman_analysis(state.mean, state.cov, d, H, R))


def _diagonal_update(state, d, H, R):
    return DiagonalGaussianState(*diagonal_kalman_analysis(state.mean, state.variances, d, H, R))


class EKF(_LinearisedFilter):
    """The extended Kalman filter.

    Parameters
    ----------
    jacobian : callable, optional
        ``jacobian(x, t, dt) -> (n, n)``, the Jacobian of one model step at
        ``x``.  Without it the model's own :meth:`~filters.models.Model.jacobian`
        is used, and failing that central finite differences of the step.
    infl_rate : float, optional
        Covariance growth per unit model time in the forecast:
        ``P <- infl_rate**dt F P F^T + dt Q`` at every model step.  This is
        DAPPER's ``ExtKF(infl=...)`` convention; 1 (the default) means none.
    fd_eps : float
        Relative step of the central finite differences used when the model
        has no :meth:`~filters.models.Model.jacobian`.
    inflation : float, Inflation or sequence, optional
        Applied after each analysis.

    Notes
    -----
    The model Jacobian is evaluated at the mean before each step (the exact
    tangent-linear model of the step); the observation Jacobian at the
    forecast mean.

    Examples
    --------
    >>> from filters import assimilate
    >>> from filters.settings import sakov2012
    >>> ds = assimilate(EKF(infl_rate=180.0), sakov2012(n_obs=200), seed=3)
    >>> float(ds.attrs["rmse_analysis_mean"]) < 2.0
    True
    """

    name = "EKF"

    def initialize(self, prior, rng):
        return GaussianState(prior.mean.copy(), prior.cov.copy())

    def forecast(self, state, model, t, dt, nsteps, Q, rng):
        m, P = state.mean, state.cov
        grow = self.infl_rate ** dt
        if Q is None and self.jacobian is None:
            # Without process noise the steps compose: P <- grow^k M P M^T with
            # M the product of the step Jacobians (one compiled call for Lorenz).
            x, M = model.integrate_tlm(m, t, dt, nsteps)
            if M is not None:
                return GaussianState(x, symmetrize((grow ** nsteps) * (M @ P @ M.T)))
        Qk = None if Q is None else Q.dense * dt
        for k in range(nsteps):
            tk = t + k * dt
            F = self._step_jacobian(model, m, tk, dt)
            m, P = kalman_predict(m, grow * P if grow != 1.0 else P, F, Qk,
                                  new_mean=model.step(m, tk, dt))
        return GaussianState(m, P)

    def analysis(self, state, y, obs, R, rng):
        return _linearised_analysis(self, state, y, obs, R, rng, _gaussian_update)



# ----------------------------------------------------------------------------
# The diagonal-covariance EKF (large states)
# ----------------------------------------------------------------------------
def _inflate_diagonal(inflation, forecast: DiagonalGaussianState,
                      analysis: DiagonalGaussianState) -> DiagonalGaussianState:
    """Apply an inflation object to a diagonal Gaussian state (no n x n matrix)."""
    v = analysis.variances
    if isinstance(inflation, MultiplicativeInflation):
        v = v * inflation.factor ** 2
    elif isinstance(inflation, AdditiveInflation):
        v = v + inflation.variance
    elif isinstance(inflation, RTPS):  # the same factors as RTPS on a full covariance
        sf, sa = forecast.spread, analysis.spread
        with np.errstate(divide="ignore", invalid="ignore"):
            fac = np.where(sa > 0, 1.0 + inflation.alpha * (sf - sa) / sa, 1.0)
        v = v * fac ** 2
    else:
        raise ValueError(f"inflation {type(inflation).__name__} is not available for the "
                         "diagonal EKF; use MultiplicativeInflation, AdditiveInflation or RTPS")
    return DiagonalGaussianState(analysis.mean, v)


class DiagonalEKF(_LinearisedFilter):
    """The extended Kalman filter with a diagonal covariance, for large states.

    The state is :class:`~filters.states.DiagonalGaussianState` (mean and
    variances, O(n) memory).  The analysis
    (:func:`diagonal_kalman_analysis`) uses the exact gain of the diagonal
    prior, ``K = P H^T (H P H^T + R)^{-1}``, in O(n m^2) for m observations,
    and keeps the diagonal of ``P - K H P``; the forecast
    (:func:`diagonal_kalman_predict`) keeps the diagonal of
    ``infl_rate**dt F P F^T + dt Q``.  The off-diagonal parts are dropped
    after every step.

    Parameters
    ----------
    jacobian : callable, optional
        ``jacobian(x, t, dt) -> (n, n)``, the Jacobian of one model step.
        Without it: the model's ``jacobian_diagonal(x, t, dt) -> (n,)`` if it
        has one (models acting component by component, e.g. the random walk:
        O(n)), else the model's :meth:`~filters.models.Model.jacobian`, else
        central finite differences of the step (both O(n^2)).
    infl_rate : float, default 1.0
        Covariance growth per unit model time in the forecast, as in
        :class:`EKF`.
    fd_eps : float
        Relative step of the finite differences.
    inflation : float, Inflation or sequence, optional
        Applied after each analysis, to the variances
        (:class:`~filters.MultiplicativeInflation`,
        :class:`~filters.AdditiveInflation` or :class:`~filters.RTPS`).

    Notes
    -----
    When the problem stays diagonal (a model whose Jacobian is diagonal, a
    diagonal ``Q``, a diagonal ``R`` and an ``H`` with one nonzero per row,
    on distinct components) this is exactly the full :class:`EKF`.  In
    general one analysis from a diagonal prior gives exactly the full EKF's
    mean and the diagonal of its covariance; the approximation enters in
    the next cycle, which starts from the diagonal only.  A full (n, n)
    ``Q`` contributes its diagonal.

    On revealed-token observations (the per-token gradients as ``H``) this
    is the diagonal-Fisher version of online natural gradient (Ollivier
    2018, "Online natural gradient as a Kalman filter").

    Examples
    --------
    >>> from filters import assimilate
    >>> from filters.settings import linear_gaussian
    >>> s = linear_gaussian(n=10, m=5, n_obs=200)  # a rotating system, half observed
    >>> kf = assimilate(KalmanFilter(), s, seed=1).attrs["rmse_analysis_mean"]
    >>> dk = assimilate(DiagonalEKF(), s, seed=1).attrs["rmse_analysis_mean"]
    >>> bool(dk < 1.02 * kf)  # within 2% of the exact Kalman filter
    True
    """

    name = "diagonal EKF"

    def validate(self):
        """Check hyperparameters; raises ValueError naming the bad one."""
        super().validate()
        for inf in self._inflations:
            if not isinstance(inf, (MultiplicativeInflation, AdditiveInflation, RTPS)):
                raise ValueError(f"inflation {type(inf).__name__} is not available for the "
                                 "diagonal EKF; use MultiplicativeInflation, AdditiveInflation "
                                 "or RTPS")

    def initialize(self, prior, rng):
        """The prior's mean and variances (a full prior covariance gives its diagonal)."""
        v = getattr(prior, "variances", None)
        v = np.diag(prior.cov) if v is None else np.broadcast_to(v, prior.mean.shape)
        return DiagonalGaussianState(np.array(prior.mean, dtype=float), np.array(v, dtype=float))

    def forecast(self, state, model, t, dt, nsteps, Q, rng):
        """Move the mean with the model and the variances with its Jacobian (see the class)."""
        m, p = state.mean, state.variances
        grow = self.infl_rate ** dt
        q = None if Q is None else Q.variances * dt
        diagonal = None if self.jacobian is not None else getattr(model, "jacobian_diagonal",
                                                                   None)
        if Q is None and self.jacobian is None and diagonal is None:
            # Without process noise the steps compose, as in the EKF: the diagonal
            # of grow^k M P M^T with M the product of the step Jacobians.
            x, M = model.integrate_tlm(m, t, dt, nsteps)
            if M is not None:
                return DiagonalGaussianState(np.asarray(x, dtype=float),
                                             diagonal_kalman_predict((grow ** nsteps) * p, M))
        for k in range(nsteps):
            tk = t + k * dt
            if diagonal is not None:
                F = diagonal(m, tk, dt)  # (n,)
            else:
                F = self._step_jacobian(model, m, tk, dt)
            p = diagonal_kalman_predict(grow * p if grow != 1.0 else p, F, q)
            m = model.step(m, tk, dt)
        return DiagonalGaussianState(np.asarray(m, dtype=float), p)

    def analysis(self, state, y, obs, R, rng):
        """Diagonal-prior Kalman analysis with the observation Jacobian at the mean."""
        return _linearised_analysis(self, state, y, obs, R, rng, _diagonal_update)

    def _post_analysis(self, forecast, analysis, rng):
        for inf in self._inflations:
            analysis = _inflate_diagonal(inf, forecast, analysis)
        return analysis
