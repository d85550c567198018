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
from .states import DiagonalGaussianState, GaussianState

__all__ = ["KalmanFilter", "EKF", "DiagonalEKF", "kalman_analysis", "kalman_predict",
           "diagonal_kalman_analysis", "diagonal_kalman_predict", "rts_smoother",
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

    Examples
    --------
    >>> F = np.array([[1.0, 1.0], [0.0, 1.0]])  # constant velocity
    >>> m, P = kalman_predict(np.array([1.0, 0.0]), np.eye(2), F, 0.1 * np.eye(2))
    >>> m.tolist(), P.round(6).tolist()
    ([1.0, 0.0], [[2.1, 1.0], [1.0, 1.1]])
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

    Examples
    --------
    >>> # a scalar random walk, two analysis times
    >>> ms, Ps = rts_smoother(np.array([[0.0], [1.0]]), np.array([[[1.0]], [[0.5]]]),
    ...                       np.array([[0.0], [0.0]]), np.array([[[2.0]], [[2.0]]]),
    ...                       np.array([[[1.0]]]))
    >>> ms.ravel().tolist(), Ps.ravel().tolist()
    ([0.5, 1.0], [0.625, 0.5])
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


def _check_linearisation_options(flt) -> None:
    """The options EKF and DiagonalEKF share: infl_rate, fd_eps, jacobian."""
    check_positive(flt.infl_rate, "infl_rate")
    check_positive(flt.fd_eps, "fd_eps")
    if flt.jacobian is not None and not callable(flt.jacobian):
        raise ValueError(f"jacobian must be callable (x, t, dt) -> (n, n), got "
                         f"{type(flt.jacobian).__name__}")


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
        _check_linearisation_options(self)

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


# ----------------------------------------------------------------------------
# The diagonal-covariance EKF (large states)
# ----------------------------------------------------------------------------
#: Floor of a posterior variance, relative to its prior variance (guards round-off).
_DIAG_VAR_FLOOR = 1e-12


def diagonal_kalman_predict(variances: np.ndarray, F: np.ndarray, Q: np.ndarray | None = None):
    """The diagonal of ``F diag(p) F^T + diag(q)``: the forecast variances.

    Parameters
    ----------
    variances : ndarray (n,)
        p, the diagonal of the current covariance (assumed diagonal).
    F : ndarray (n,) or (n, n)
        The model's Jacobian: its diagonal when the model acts component by
        component (then the result is exact), or the full matrix.
    Q : ndarray (n,), optional
        q, the process-noise variances of this step.

    Returns
    -------
    ndarray (n,)
        ``F**2 * p + q`` for a diagonal ``F``, ``(F * F) @ p + q`` for a full
        one: the exact diagonal of the full forecast covariance ``F P F^T + Q``
        from a diagonal ``P`` (its off-diagonal part is dropped).

    Examples
    --------
    >>> diagonal_kalman_predict(np.array([1.0, 2.0]), np.array([[1.0, 1.0], [0.0, 1.0]]),
    ...                         np.array([0.1, 0.1])).tolist()
    [3.1, 2.1]
    """
    p = np.asarray(variances, dtype=float)
    F = np.asarray(F, dtype=float)
    out = F * F * p if F.ndim == 1 else (F * F) @ p
    return out if Q is None else out + Q


def diagonal_kalman_analysis(mean: np.ndarray, variances: np.ndarray, innovation: np.ndarray,
                             H: np.ndarray, R: Covariance):
    """Kalman analysis from a diagonal prior covariance, keeping the posterior's diagonal.

    With ``P = diag(p)`` the gain ``K = P H^T (H P H^T + R)^{-1}`` costs
    O(n m^2) and O(n m) memory (no n x n matrix is formed); the posterior
    covariance ``P - K H P`` is reduced to its diagonal,
    ``p_i - sum_j K_ij (P H^T)_ij``.

    Parameters
    ----------
    mean : ndarray (n,)
    variances : ndarray (n,)
        p, the prior variances (> 0).
    innovation : ndarray (m,)
        ``y - h(mean)``.
    H : ndarray (m, n)
        Observation operator (or its Jacobian at the mean).
    R : Covariance
        Observation-error covariance (m, m), diagonal or full.

    Returns
    -------
    mean, variances : ndarray (n,), ndarray (n,)
        ``m + K d`` (the full Kalman filter's analysis mean for this prior) and
        ``diag(P - K H P)`` (floored at 1e-12 times the prior variance
        against round-off).

    Notes
    -----
    From a diagonal prior both outputs are exact: the mean is the full
    Kalman analysis mean and the variances are the diagonal of the full
    posterior covariance.  What is lost is the posterior's off-diagonal part,
    which the next cycle assumes zero.  For revealed-token observations with
    ``H`` the per-token gradients this is the diagonal-Fisher form of online
    natural gradient (Ollivier 2018, "Online natural gradient as a Kalman
    filter"): the precision ``P^{-1}`` accumulates ``H^T R^{-1} H`` but only
    its diagonal survives each cycle.

    Examples
    --------
    >>> from filters.covariance import as_covariance
    >>> m, v = diagonal_kalman_analysis(np.zeros(2), np.array([1.0, 3.0]), np.array([1.0]),
    ...                                 np.array([[1.0, 0.0]]), as_covariance(1.0, 1))
    >>> m.round(12).tolist(), v.round(12).tolist()  # the observed component halves its variance
    ([0.5, 0.0], [0.5, 3.0])
    """
    p = np.asarray(variances, dtype=float)
    PHt = H.T * p[:, None]  # (n, m)
    S = symmetrize(H @ PHt + R.dense)  # (m, m), O(n m^2)
    cho = sla.cho_factor(S, lower=True, check_finite=False)
    K = sla.cho_solve(cho, PHt.T, check_finite=False).T  # (n, m)
    new_mean = mean + K @ innovation
    reduction = np.einsum("ij,ij->i", K, PHt)  # diag(K H P), (n,)
    return new_mean, np.maximum(p - reduction, _DIAG_VAR_FLOOR * p)


def _inflate_diagonal(inflation, forecast: DiagonalGaussianState,
                      analysis: DiagonalGaussianState) -> DiagonalGaussianState:
    """Apply an inflation object to a diagonal Gaussian state (no n x n matrix)."""
    from .inflation import RTPS, AdditiveInflation, MultiplicativeInflation

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


class DiagonalEKF(Filter):
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

    def __init__(self, *, jacobian=None, infl_rate: float = 1.0, fd_eps: float = 1e-6,
                 inflation=None):
        super().__init__(inflation=inflation)
        self.jacobian = jacobian
        self.infl_rate = infl_rate
        self.fd_eps = fd_eps

    def validate(self):
        """Check hyperparameters; raises ValueError naming the bad one."""
        super().validate()
        _check_linearisation_options(self)
        from .inflation import RTPS, AdditiveInflation, MultiplicativeInflation

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
                F = (self.jacobian or model.jacobian)(m, tk, dt)
                if F is None:
                    F = finite_difference_jacobian(lambda X: model.step(X, tk, dt), m,
                                                   self.fd_eps)
            p = diagonal_kalman_predict(grow * p if grow != 1.0 else p, F, q)
            m = model.step(m, tk, dt)
        return DiagonalGaussianState(np.asarray(m, dtype=float), p)

    def analysis(self, state, y, obs, R, rng):
        """Diagonal-prior Kalman analysis with the observation Jacobian at the mean."""
        mask, y_obs, R_obs = observed_subset(y, R)
        if y_obs.size == 0:
            return state
        H = obs.jacobian(state.mean)
        d = y - obs(state.mean)
        if mask is not None:
            H, d = H[mask], d[mask]
        m, v = diagonal_kalman_analysis(state.mean, state.variances, d, H, R_obs)
        return self._post_analysis(state, DiagonalGaussianState(m, v), rng)

    def _post_analysis(self, forecast, analysis, rng):
        for inf in self._inflations:
            analysis = _inflate_diagonal(inf, forecast, analysis)
        return analysis
