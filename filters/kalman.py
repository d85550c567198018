"""The Kalman filter, its RTS smoother, and the extended Kalman filter.

References
----------
Kalman (1960); Rauch, Tung & Striebel (1965); Jazwinski (1970) for the EKF;
Bucy & Joseph (1968) for the Joseph-form covariance update.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg as sla

from ._validation import check_positive
from .base import Filter, observed_subset, symmetrize
from .covariance import Covariance
from .models.base import finite_difference_jacobian
from .states import GaussianState

__all__ = ["KalmanFilter", "EKF", "kalman_analysis", "kalman_predict", "rts_smoother",
           "SmootherResult"]


# ----------------------------------------------------------------------------
# Equations (pure functions)
# ----------------------------------------------------------------------------
def kalman_predict(mean: np.ndarray, cov: np.ndarray, F: np.ndarray, Q: np.ndarray | None,
                   new_mean: np.ndarray | None = None):
    """One prediction step: ``(F m, F P F^T + Q)``.

    Parameters
    ----------
    mean : ndarray (n,)
    cov : ndarray (n, n)
    F : ndarray (n, n)
        Transition matrix (or the model's Jacobian, for the EKF).
    Q : ndarray (n, n) or None
        Process-noise covariance of this step.
    new_mean : ndarray (n,), optional
        The propagated mean when the model is nonlinear (EKF); ``F m`` otherwise.

    Returns
    -------
    mean, cov : ndarray (n,), ndarray (n, n)
    """
    m = F @ mean if new_mean is None else new_mean
    P = F @ cov @ F.T
    if Q is not None:
        P = P + Q
    return m, symmetrize(P)


def kalman_analysis(mean: np.ndarray, cov: np.ndarray, innovation: np.ndarray, H: np.ndarray,
                    R: Covariance):
    """Kalman analysis in Joseph form.

    Parameters
    ----------
    mean : ndarray (n,)
    cov : ndarray (n, n)
    innovation : ndarray (m,)
        ``y - h(mean)``.
    H : ndarray (m, n)
        Observation operator (or its Jacobian at the mean).
    R : Covariance
        Observation-error covariance (m, m).

    Returns
    -------
    mean, cov : ndarray (n,), ndarray (n, n)
        ``m + K d`` and ``(I - K H) P (I - K H)^T + K R K^T`` with
        ``K = P H^T (H P H^T + R)^{-1}``.

    Examples
    --------
    >>> from filters.covariance import as_covariance
    >>> m, P = kalman_analysis(np.zeros(1), np.eye(1), np.array([1.0]), np.eye(1),
    ...                        as_covariance(1.0, 1))
    >>> m.round(12).tolist(), P.round(12).tolist()
    ([0.5], [[0.5]])
    """
    PHt = cov @ H.T  # (n, m)
    S = symmetrize(H @ PHt + R.dense)  # (m, m)
    cho = sla.cho_factor(S, lower=True, check_finite=False)
    K = sla.cho_solve(cho, PHt.T, check_finite=False).T  # (n, m)
    new_mean = mean + K @ innovation
    IKH = np.eye(cov.shape[0]) - K @ H
    KR = K * R.diag if R.is_diagonal else K @ R.matrix
    P = IKH @ cov @ IKH.T + KR @ K.T
    return new_mean, symmetrize(P)


class SmootherResult(NamedTuple):
    """Filtered and smoothed moments at every observation time.

    Attributes
    ----------
    filtered_mean, filtered_cov : (T, n), (T, n, n)
    predicted_mean, predicted_cov : (T, n), (T, n, n)
        The forecast moments before each analysis.
    smoothed_mean, smoothed_cov : (T, n), (T, n, n)
    initial_mean, initial_cov : (n,), (n, n)
        Smoothed moments of the state at time 0 (before the first forecast).
    """

    filtered_mean: np.ndarray
    filtered_cov: np.ndarray
    predicted_mean: np.ndarray
    predicted_cov: np.ndarray
    smoothed_mean: np.ndarray
    smoothed_cov: np.ndarray
    initial_mean: np.ndarray
    initial_cov: np.ndarray


def rts_smoother(filtered_mean, filtered_cov, predicted_mean, predicted_cov, transitions):
    """Rauch-Tung-Striebel backward pass.

    Parameters
    ----------
    filtered_mean, filtered_cov : (T, n), (T, n, n)
        Analysis moments at times 1..T.
    predicted_mean, predicted_cov : (T, n), (T, n, n)
        Forecast moments at times 1..T.
    transitions : (T - 1, n, n)
        ``F_k`` with ``x_{k+1} = F_k x_k + noise`` between analysis times.

    Returns
    -------
    mean, cov : (T, n), (T, n, n)
        Smoothed moments.
    """
    T = filtered_mean.shape[0]
    ms = filtered_mean.copy()
    Ps = filtered_cov.copy()
    for k in range(T - 2, -1, -1):
        F = transitions[k]
        G = sla.solve(predicted_cov[k + 1], F @ filtered_cov[k], assume_a="pos").T  # P F^T Pp^-1
        ms[k] = filtered_mean[k] + G @ (ms[k + 1] - predicted_mean[k + 1])
        Ps[k] = symmetrize(filtered_cov[k] + G @ (Ps[k + 1] - predicted_cov[k + 1]) @ G.T)
    return ms, Ps


# ----------------------------------------------------------------------------
# Filters (classes hold the loop)
# ----------------------------------------------------------------------------
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
        return _gaussian_analysis(self, state, y, obs, R, rng)

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
        from .covariance import as_covariance

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


class EKF(Filter):
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

    def __init__(self, *, jacobian=None, infl_rate: float = 1.0, fd_eps: float = 1e-6,
                 inflation=None):
        super().__init__(inflation=inflation)
        self.jacobian = jacobian
        self.infl_rate = infl_rate
        self.fd_eps = fd_eps

    def validate(self):
        super().validate()
        check_positive(self.infl_rate, "infl_rate")
        check_positive(self.fd_eps, "fd_eps")
        if self.jacobian is not None and not callable(self.jacobian):
            raise ValueError(f"jacobian must be callable (x, t, dt) -> (n, n), got "
                             f"{type(self.jacobian).__name__}")

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
            F = (self.jacobian or model.jacobian)(m, tk, dt)
            if F is None:
                F = finite_difference_jacobian(lambda X: model.step(X, tk, dt), m, self.fd_eps)
            m, P = kalman_predict(m, grow * P if grow != 1.0 else P, F, Qk,
                                  new_mean=model.step(m, tk, dt))
        return GaussianState(m, P)

    def analysis(self, state, y, obs, R, rng):
        return _gaussian_analysis(self, state, y, obs, R, rng)


def _gaussian_analysis(flt: Filter, state, y, obs, R, rng):
    mask, y_obs, R_obs = observed_subset(y, R)
    if y_obs.size == 0:
        return state
    H = obs.jacobian(state.mean)
    d = y - obs(state.mean)
    if mask is not None:
        H, d = H[mask], d[mask]
    m, P = kalman_analysis(state.mean, state.cov, d, H, R_obs)
    return flt._post_analysis(state, GaussianState(m, P), rng)
