"""The maths of 4D-Var without torch: windows, whitening, Gauss-Newton, covariances.

Notation (fixed letters): ``n`` state, ``m`` observations per time, ``p``
observation times in the window, ``K`` model steps in the window, ``d`` the
size of the control vector (``n`` for strong constraint, ``n (K + 1)`` for
weak constraint).

Control-variable transform (preconditioning): the minimisers work on a
whitened control vector ``w`` (d,) with

* ``x_0 = x_b + B^{1/2} w_0``,
* ``x_{j+1} = M(x_j) + (dt Q)^{1/2} w_{j+1}`` for ``j < K`` (weak constraint only),

so that ``J = 1/2 |w|^2 + 1/2 sum_i |R^{-1/2} (y_i - H(x_{s_i}))|^2``.  This is
the textbook cost of the states (``|x_0 - x_b|^2_{B^{-1}}`` and
``|x_{j+1} - M(x_j)|^2_{(dt Q)^{-1}}``) after a change of variables with unit
Jacobian: every state of the window stays a free control variable, and the
minimiser is the same.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla

from .._validation import as_float_array, check_positive
from ..covariance import Covariance, as_covariance
from ..models.base import Model
from ..states import GaussianState

__all__ = ["VarWindow", "WindowResult", "NonFiniteCostError", "VariationalConvergenceWarning",
           "climatology", "ml_diagonal_Q", "gauss_newton_solve", "per_time_operators"]


class NonFiniteCostError(FloatingPointError):
    """The 4D-Var cost or its gradient became NaN or infinite during a minimisation.

    Examples
    --------
    >>> from filters.models import LinearGaussian, Identity
    >>> win = VarWindow.create([1e200], 1.0, [[1.0]], [1], 1, 1.0)  # the cost overflows
    >>> with np.errstate(over="ignore"):
    ...     try:
    ...         gauss_newton_solve(win, LinearGaussian([[1e200]]), Identity(1))
    ...     except NonFiniteCostError:
    ...         print("not finite")
    not finite
    """


class VariationalConvergenceWarning(UserWarning):
    """Some assimilation windows stopped before their minimiser converged.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", VariationalConvergenceWarning)
    ...     try:
    ...         warnings.warn("2 of 10 windows did not converge", VariationalConvergenceWarning)
    ...     except VariationalConvergenceWarning as warning:
    ...         print(warning)
    2 of 10 windows did not converge
    """


# ----------------------------------------------------------------------------
# One window
# ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class VarWindow:
    """One assimilation window: background, observations, time axis, noise.

    Build it with :meth:`create`, which validates.

    Parameters
    ----------
    xb : ndarray (n,)
        Background of the state at the start of the window.
    B : Covariance
        Background-error covariance (n, n).
    y : ndarray (p, m)
        Observations (NaN: missing).
    obs_steps : ndarray (p,) of int
        Model step (0 to ``nsteps``) at which each row of ``y`` is observed.
    nsteps : int
        Model steps K in the window.
    R : Covariance
        Observation-error covariance (m, m), the same at every time.
    Q : Covariance or None
        Model-error covariance per unit time (weak constraint); None for a
        perfect model (strong constraint).
    t0, dt : float
        Start time and model time step.

    Examples
    --------
    >>> w = VarWindow.create([0.0, 0.0], 1.0, [[1.0, np.nan]], [1], 1, 0.5, Q=0.1)
    >>> w.ndim, w.nobs, w.is_weak, w.control_size
    (2, 2, True, 4)
    >>> w.y0.tolist()  # the missing observation is zeroed (and gets zero weight)
    [[1.0, 0.0]]
    """

    xb: np.ndarray
    B: Covariance
    y: np.ndarray
    obs_steps: np.ndarray
    nsteps: int
    R: Covariance
    Q: Covariance | None = None
    t0: float = 0.0
    dt: float = 1.0
    _white: tuple = field(default=(), repr=False)

    @classmethod
    def create(cls, xb, B, y, obs_steps, nsteps: int, R, *, Q=None, t0: float = 0.0,
               dt: float = 1.0) -> "VarWindow":
        """Validate the pieces of a window.

        ``B``, ``R`` and ``Q`` may be scalars, vectors of variances, matrices or
        :class:`~filters.Covariance` objects.

        Raises
        ------
        ValueError
            Naming the bad parameter: shapes, non-finite values, covariances
            that are not symmetric positive definite, observation steps outside
            the window.

        Examples
        --------
        >>> w = VarWindow.create([0.0, 0.0], 1.0, [[1.0, 2.0]], [1], 1, 0.5)
        >>> w.ndim, w.nobs, w.is_weak
        (2, 2, False)
        """
        xb = as_float_array(xb, "xb", ndim=1)
        n = xb.shape[0]
        B = as_covariance(B, n, "B")
        yy = as_float_array(y, "y", ndim=2, finite=False)
        if np.any(np.isinf(yy)):
            raise ValueError("y contains infinite values (use NaN for missing observations)")
        R = as_covariance(R, yy.shape[1], "R")
        steps = np.asarray(obs_steps)
        if steps.ndim != 1 or steps.shape[0] != yy.shape[0] or (
                steps.size and not np.issubdtype(steps.dtype, np.integer)):
            raise ValueError(f"obs_steps must be {yy.shape[0]} integers (one per row of y), "
                             f"got {obs_steps!r}")
        check_positive(nsteps, "nsteps", strict=False, integer=True)
        if steps.size and (steps.min() < 0 or steps.max() > nsteps):
            raise ValueError(f"obs_steps must lie in [0, nsteps={nsteps}], got {steps.tolist()}")
        Qc = None if Q is None else as_covariance(Q, n, "Q")
        check_positive(dt, "dt")
        return cls(xb, B, yy, steps.astype(np.int64), int(nsteps), R, Qc, float(t0), float(dt),
                   _whitening(yy, R))

    # -- sizes ---------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """State dimension n."""
        return self.xb.shape[0]

    @property
    def nobs(self) -> int:
        """Observations per time m."""
        return self.y.shape[1]

    @property
    def is_weak(self) -> bool:
        """Whether the window has model-error terms (a ``Q``)."""
        return self.Q is not None

    @property
    def control_size(self) -> int:
        """Size d of the whitened control vector."""
        return self.ndim * (self.nsteps + 1 if self.is_weak else 1)

    # -- whitening ------------------------------------------------------------
    @property
    def y0(self) -> np.ndarray:
        """Observations with missing values set to 0, shape (p, m)."""
        return self._white[0]

    @property
    def obs_weights(self) -> np.ndarray:
        """``R^{-1/2}`` per time: (p, m) weights for a diagonal R, else (p, m, m) matrices.

        Missing observations get zero weight (zero columns).
        """
        return self._white[1]

    def whiten(self, d: np.ndarray) -> np.ndarray:
        """Whitened residuals of (p, m) innovations ``d``, shape (p, m)."""
        W = self.obs_weights
        return d * W if W.ndim == 2 else np.einsum("pij,pj->pi", W, d)

    def background_sqrt(self) -> np.ndarray:
        """``B^{1/2}`` (lower Cholesky factor), shape (n, n)."""
        return _sqrt_matrix(self.B)

    def noise_sqrt(self) -> np.ndarray | None:
        """``(dt Q)^{1/2}`` per model step, shape (n, n), or None."""
        return None if self.Q is None else _sqrt_matrix(self.Q.scaled(self.dt))


def _sqrt_matrix(C: Covariance) -> np.ndarray:
    return np.diag(np.sqrt(C.diag)) if C.is_diagonal else C.chol


def _whitening(y: np.ndarray, R: Covariance):
    """(y with NaN -> 0, weights) where weights whiten ``y - H x`` per time."""
    present = ~np.isnan(y)  # (p, m)
    y0 = np.where(present, y, 0.0)
    if R.is_diagonal:
        return y0, present / np.sqrt(R.diag)
    p, m = y.shape
    W = np.zeros((p, m, m))
    Linv = sla.solve_triangular(R.chol, np.eye(m), lower=True)
    for i in range(p):
        if present[i].all():
            W[i] = Linv
        elif present[i].any():
            idx = np.flatnonzero(present[i])
            Ls = np.linalg.cholesky(R.matrix[np.ix_(idx, idx)])
            W[i][: idx.size][:, idx] = sla.solve_triangular(Ls, np.eye(idx.size), lower=True)
    return y0, W


# ----------------------------------------------------------------------------
# Result of one window
# ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class WindowResult:
    """The solution of one window and how the minimiser got there.

    Parameters
    ----------
    trajectory : ndarray (K + 1, n)
        Analysed state at every model step of the window (step 0: start).
    background_trajectory : ndarray (K + 1, n)
        The background run forward (for strong constraint the free model run
        from ``xb``; for weak constraint the same, with zero model error).
    model_error : ndarray (K, n) or None
        Weak constraint: estimated model error ``x_{j+1} - M(x_j)`` of each step.
    cost_start, cost_end : float
        Cost at the background and at the analysis.
    iterations : int
        Minimiser iterations (L-BFGS) or outer loops (Gauss-Newton).
    function_evaluations : int
        Cost (and gradient) evaluations.
    grad_norm : float
        Euclidean norm of the cost's gradient with respect to the whitened
        control vector at the analysis.
    converged : bool
        Whether the minimiser met its tolerance.
    message : str
        The minimiser's own words.
    control : ndarray (d,)
        The whitened control vector at the analysis.
    tangent : ndarray (K + 1, n, d) or None
        ``d x_j / d w`` at the analysis (when covariances were asked for).
    posterior : ndarray (d, d) or None
        Gauss-Newton posterior covariance of ``w``: ``(I + G^T G)^{-1}``.
    noise_sqrt : ndarray (n, n) or None
        ``(dt Q)^{1/2}``, to turn ``w`` into model errors.

    Examples
    --------
    >>> from filters.models import LinearGaussian, Identity
    >>> win = VarWindow.create([0.0], 1.0, [[1.0]], [1], 1, 1.0)  # xb = 0, y = 1, B = R = 1
    >>> res = gauss_newton_solve(win, LinearGaussian([[1.0]]), Identity(1))
    >>> res.cost_start, round(res.cost_end, 6), res.has_covariance
    (0.5, 0.25, True)
    >>> res.cov(1).round(6).tolist()  # posterior variance 1 / (1/B + 1/R)
    [[0.5]]
    """

    trajectory: np.ndarray
    background_trajectory: np.ndarray
    model_error: np.ndarray | None
    cost_start: float
    cost_end: float
    iterations: int
    function_evaluations: int
    grad_norm: float
    converged: bool
    message: str
    control: np.ndarray = field(repr=False)
    tangent: np.ndarray | None = field(default=None, repr=False)
    posterior: np.ndarray | None = field(default=None, repr=False)
    noise_sqrt: np.ndarray | None = field(default=None, repr=False)

    @property
    def has_covariance(self) -> bool:
        """Whether :meth:`cov` is available."""
        return self.tangent is not None

    def cov(self, step: int, posterior: bool = True) -> np.ndarray:
        """Covariance (n, n) of the state at ``step``: analysis (posterior) or background.

        ``X P X^T`` with ``X = d x_step / d w`` and ``P`` the Gauss-Newton
        posterior of ``w`` (or the identity, for the background).
        """
        if self.tangent is None:
            raise ValueError("this window was solved without covariances (covariance=False)")
        X = self.tangent[step]  # (n, d)
        C = X @ self.posterior @ X.T if posterior else X @ X.T
        return 0.5 * (C + C.T)

    def variances(self, posterior: bool = True, steps=None) -> np.ndarray:
        """Diagonal of :meth:`cov` at the model steps ``steps`` (default: all), shape (len, n)."""
        if self.tangent is None:
            raise ValueError("this window was solved without covariances (covariance=False)")
        X = self.tangent if steps is None else self.tangent[np.asarray(steps)]  # (k, n, d)
        if not posterior:
            return np.sum(X * X, axis=-1)
        return np.sum((X @ self.posterior) * X, axis=-1)

    def model_error_variances(self, steps=None) -> np.ndarray:
        """Posterior variance of the model error of each step, shape (K, n).

        With ``steps`` (a list of index arrays), the variance of the *sum* of
        the model errors of each group of steps, shape (len(steps), n).
        """
        if self.noise_sqrt is None or self.posterior is None:
            raise ValueError("model-error variances need a weak-constraint window solved with "
                             "covariances")
        Lq, P = self.noise_sqrt, self.posterior
        n = Lq.shape[0]
        K = self.trajectory.shape[0] - 1
        groups = [np.array([j]) for j in range(K)] if steps is None else steps
        out = np.empty((len(groups), n))
        for g, js in enumerate(groups):
            # eta_j = Lq w_{j+1}: block j + 1 of w; the sum over js is S w with S = [Lq ... Lq].
            js = np.atleast_1d(js)
            idx = np.concatenate([np.arange((j + 1) * n, (j + 2) * n) for j in js])
            S = np.tile(Lq, (1, js.size))  # (n, |js| n)
            out[g] = np.sum((S @ P[np.ix_(idx, idx)]) * S, axis=1)
        return out


# ----------------------------------------------------------------------------
# Tangent-linear pieces (numpy)
# ----------------------------------------------------------------------------
def step_jacobian(model: Model, x: np.ndarray, t: float, dt: float) -> np.ndarray:
    """Tangent-linear model of one step at ``x`` (n,): the model's own Jacobian,
    else autograd of its torch step, shape (n, n)."""
    J = model.jacobian(x, t, dt)
    if J is not None:
        return np.asarray(J, dtype=float)
    from ..models.torch_models import as_torch_model
    import torch

    tm = as_torch_model(model)
    return torch.autograd.functional.jacobian(
        lambda z: tm.torch_step(z, t, dt), torch.as_tensor(np.asarray(x, dtype=float))
    ).detach().numpy()


def trajectory(window: VarWindow, model: Model, w: np.ndarray) -> np.ndarray:
    """States (K + 1, n) of the window for the whitened control ``w`` (numpy model)."""
    n, K = window.ndim, window.nsteps
    Lb, Lq = window.background_sqrt(), window.noise_sqrt()
    xs = np.empty((K + 1, n))
    xs[0] = window.xb + Lb @ w[:n]
    for j in range(K):
        x = model.step(xs[j], window.t0 + j * window.dt, window.dt)
        if Lq is not None:
            x = x + Lq @ w[(j + 1) * n:(j + 2) * n]
        xs[j + 1] = x
    return xs


def tangent(window: VarWindow, model: Model, xs: np.ndarray) -> np.ndarray:
    """``d x_j / d w`` along the trajectory ``xs`` (K + 1, n), shape (K + 1, n, d)."""
    n, K, d = window.ndim, window.nsteps, window.control_size
    Lq = window.noise_sqrt()
    X = np.zeros((K + 1, n, d))
    X[0, :, :n] = window.background_sqrt()
    for j in range(K):
        F = step_jacobian(model, xs[j], window.t0 + j * window.dt, window.dt)
        X[j + 1] = F @ X[j]
        if Lq is not None:
            X[j + 1, :, (j + 1) * n:(j + 2) * n] += Lq
    return X


def per_time_operators(obs, p: int) -> list | None:
    """The observation operators of a window, one per observation time, or None.

    ``obs`` is either one operator, used at every observation time of the
    window (None is returned), or a sequence (list or tuple) of ``p``
    operators, the i-th applied to the state at ``obs_steps[i]`` (returned as
    a list).  Each operator of a sequence must return the window's ``m``
    values for a state; give missing values as NaN in ``y``.

    Raises
    ------
    ValueError
        If a sequence does not hold exactly ``p`` operators.

    Examples
    --------
    >>> from filters.models import Identity
    >>> per_time_operators(Identity(1), 2) is None, len(per_time_operators([Identity(1)] * 2, 2))
    (True, 2)
    """
    if not isinstance(obs, (list, tuple)):
        return None
    ops = list(obs)
    if len(ops) != int(p):
        raise ValueError(f"obs must be one observation operator or {p} of them (one per "
                         f"observation time of the window), got a sequence of {len(ops)}")
    return ops


def _per_time_values(ops: list, xs: np.ndarray, steps: np.ndarray, m: int) -> np.ndarray:
    """``H_i(x_{s_i})`` for per-time operators, shape (p, m)."""
    hx = np.empty((len(ops), m))
    for i, (op, s) in enumerate(zip(ops, steps)):
        v = np.asarray(op(xs[s][None]), dtype=float).reshape(-1)
        if v.shape[0] != m:
            raise ValueError(f"observation operator {i} of the window returns {v.shape[0]} "
                             f"values, but y has {m} per time")
        hx[i] = v
    return hx


def _obs_residual_and_jacobian(window: VarWindow, obs, xs: np.ndarray, X: np.ndarray | None):
    """Whitened residuals r (p m,) and their Jacobian G = d(-r)/dw (p m, d).

    ``obs``: one operator for every time, or one per observation time
    (:func:`per_time_operators`).
    """
    steps = window.obs_steps
    ops = per_time_operators(obs, steps.shape[0])
    if ops is None:
        hx = np.asarray(obs(xs[steps]))  # (p, m)
    else:
        hx = _per_time_values(ops, xs, steps, window.nobs)  # (p, m)
    r = window.whiten(window.y0 - hx).ravel()
    if X is None:
        return r, None
    W = window.obs_weights
    rows = []
    for i, s in enumerate(steps):
        HX = (obs if ops is None else ops[i]).jacobian(xs[s]) @ X[s]  # (m, d)
        rows.append(HX * W[i][:, None] if W.ndim == 2 else W[i] @ HX)
    return r, np.concatenate(rows, axis=0)


def _cost(w, r) -> float:
    return 0.5 * float(w @ w) + 0.5 * float(r @ r)


def posterior_from_jacobian(G: np.ndarray) -> np.ndarray:
    """Gauss-Newton posterior covariance of the whitened control, ``(I + G^T G)^{-1}``."""
    d = G.shape[1]
    A = G.T @ G
    A.flat[:: d + 1] += 1.0
    L = np.linalg.cholesky(A)
    Linv = sla.solve_triangular(L, np.eye(d), lower=True)
    return Linv.T @ Linv


def gauss_newton_solve(window: VarWindow, model: Model, obs, *, maxiter: int = 10,
                       xtol: float = 1e-8, gtol: float = 1e-6, covariance: bool = True,
                       w0: np.ndarray | None = None) -> WindowResult:
    """Incremental 4D-Var: Gauss-Newton outer loops with the tangent-linear model.

    Each outer loop linearises the model (its :meth:`~filters.models.Model.jacobian`,
    else autodiff of its torch step) and the observation operator around the
    current trajectory and solves the quadratic inner problem exactly
    (``(I + G^T G) dw = -grad``), halving the step while the cost increases.

    Parameters
    ----------
    window : VarWindow
    model : Model
    obs : ObservationOperator or sequence of them
        One operator for every observation time, or one per observation time
        (``len(obs) == p``; :func:`per_time_operators`); each is linearised
        with its ``jacobian``.
    maxiter : int
        Maximum outer loops.
    xtol : float
        Stop when the max-norm of the step ``dw`` falls below this.
    gtol : float
        Stop when the max-norm of the gradient falls below this.
    covariance : bool
        Keep the tangent-linear map and the posterior covariance at the analysis.
    w0 : ndarray (d,), optional
        Starting control vector (default 0: the background).

    Returns
    -------
    WindowResult

    Raises
    ------
    NonFiniteCostError
        If the cost or its gradient is not finite.

    Examples
    --------
    >>> from filters.models import LinearGaussian, Identity
    >>> win = VarWindow.create([0.0], 1.0, [[1.0]], [1], 1, 1.0)
    >>> res = gauss_newton_solve(win, LinearGaussian([[1.0]]), Identity(1))
    >>> res.trajectory.round(6).tolist(), res.converged
    ([[0.5], [0.5]], True)
    """
    d = window.control_size
    w = np.zeros(d) if w0 is None else np.asarray(w0, dtype=float).copy()
    xs = trajectory(window, model, w)
    xs_b = xs if w0 is None else trajectory(window, model, np.zeros(d))
    r0, _ = _obs_residual_and_jacobian(window, obs, xs_b, None)
    cost_start = _cost(np.zeros(d), r0)
    _check_finite(cost_start, "at the background (step 0)")
    nfev, it, converged, message = 1, 0, False, "maximum number of outer loops reached"
    X = tangent(window, model, xs)
    r, G = _obs_residual_and_jacobian(window, obs, xs, X)
    J = _cost(w, r)
    _check_finite(J, "at the starting point")
    grad = w - G.T @ r
    for it in range(1, maxiter + 1):
        if np.max(np.abs(grad)) <= gtol:
            converged, message, it = True, "gradient below gtol", it - 1
            break
        A = G.T @ G
        A.flat[:: d + 1] += 1.0
        dw = -sla.cho_solve(sla.cho_factor(A, lower=True), grad)
        step = 1.0
        for _ in range(30):
            w_new = w + step * dw
            xs_new = trajectory(window, model, w_new)
            r_new, _ = _obs_residual_and_jacobian(window, obs, xs_new, None)
            nfev += 1
            J_new = _cost(w_new, r_new)
            if np.isfinite(J_new) and J_new <= J + 1e-12 * abs(J):
                break
            step *= 0.5
        else:
            _check_finite(J_new, f"in outer loop {it}")
            message = "no decrease along the Gauss-Newton step"
            break
        w, xs, J = w_new, xs_new, J_new
        X = tangent(window, model, xs)
        r, G = _obs_residual_and_jacobian(window, obs, xs, X)
        grad = w - G.T @ r
        _check_finite(float(grad @ grad), f"(gradient) in outer loop {it}")
        if np.max(np.abs(step * dw)) <= xtol:
            converged, message = True, "step below xtol"
            break
    if not converged and np.max(np.abs(grad)) <= gtol:
        converged, message = True, "gradient below gtol"
    return WindowResult(
        trajectory=xs, background_trajectory=xs_b,
        model_error=_model_errors(window, w), cost_start=cost_start, cost_end=J,
        iterations=int(it), function_evaluations=nfev, grad_norm=float(np.linalg.norm(grad)),
        converged=bool(converged), message=message, control=w,
        tangent=X if covariance else None,
        posterior=posterior_from_jacobian(G) if covariance else None,
        noise_sqrt=window.noise_sqrt())


def _model_errors(window: VarWindow, w: np.ndarray) -> np.ndarray | None:
    if not window.is_weak:
        return None
    n = window.ndim
    return w[n:].reshape(window.nsteps, n) @ window.noise_sqrt().T  # (K, n)


def _check_finite(J: float, where: str) -> None:
    if not np.isfinite(J):
        raise NonFiniteCostError(
            f"the 4D-Var cost is not finite ({J}) {where}: the model trajectory diverged or "
            "overflowed, or the inputs hold NaN/inf (check the model, the background and B)")


def with_covariance(window: VarWindow, model: Model, obs, result: WindowResult) -> WindowResult:
    """The same result with the tangent-linear map and the Gauss-Newton posterior added."""
    from dataclasses import replace

    X = tangent(window, model, result.trajectory)
    _, G = _obs_residual_and_jacobian(window, obs, result.trajectory, X)
    return replace(result, tangent=X, posterior=posterior_from_jacobian(G),
                   noise_sqrt=window.noise_sqrt())


# ----------------------------------------------------------------------------
# Model-error covariance: maximum likelihood
# ----------------------------------------------------------------------------
def ml_diagonal_Q(model_errors, variances=None, dt: float = 1.0) -> np.ndarray:
    """Maximum-likelihood (EM M-step) diagonal model-error covariance per unit time.

    With per-step model errors ``eta_j`` ~ N(0, dt Q), the M-step of the EM
    algorithm sets ``dt Q_i = mean_j (E[eta_{j,i}]^2 + Var[eta_{j,i}])``.  The
    MAP (4D-Var) estimates alone shrink towards zero, so their mean square
    underestimates Q; adding the posterior variances (from the Gauss-Newton
    Hessian of the weak-constraint cost) removes that bias.

    Parameters
    ----------
    model_errors : array_like (K, n)
        Estimates ``E[eta_j]`` of the model error of each model step.
    variances : array_like (K, n), optional
        Their posterior variances (0 if omitted: the biased MAP estimate).
    dt : float
        Model time step.

    Returns
    -------
    ndarray (n,)
        The diagonal of Q (per unit time).

    Examples
    --------
    >>> eta, var = [[0.1, 0.2], [-0.1, 0.0]], [[0.01, 0.01], [0.01, 0.01]]
    >>> ml_diagonal_Q(eta, var, dt=0.5).round(6).tolist()
    [0.04, 0.06]
    """
    E = as_float_array(model_errors, "model_errors", ndim=2)
    V = np.zeros_like(E) if variances is None else as_float_array(variances, "variances",
                                                                   shape=E.shape)
    if np.any(V < 0):
        raise ValueError("variances must be >= 0")
    check_positive(dt, "dt")
    if E.shape[0] == 0:
        raise ValueError("model_errors must hold at least one step")
    return np.mean(E * E + V, axis=0) / dt


# ----------------------------------------------------------------------------
# Climatology
# ----------------------------------------------------------------------------
_CLIMATOLOGY_CACHE: dict = {}


def climatology(model, dt: float | None = None, *, Q=None, x0=None, n_samples: int = 5000,
                interval: int = 5, spinup: int = 2000, seed: int = 0) -> GaussianState:
    """Climatological mean and covariance of a model from a long free run (cached).

    The free run starts at ``x0`` (plus a small seeded perturbation), discards
    ``spinup`` steps and keeps every ``interval``-th state, ``n_samples`` in all.
    With a model-noise covariance ``Q`` the run is stochastic (each step adds
    ``sqrt(dt) N(0, Q)``).  DAPPER's ``Var3D``/``Var4D`` use this covariance,
    scaled by ``xB``, as their static background covariance B.  Results are
    cached in memory per (model, arguments).

    Parameters
    ----------
    model : Model or Setting
        With a :class:`~filters.Setting`, its model, ``dt``, ``Q`` and prior
        mean are the defaults.
    dt : float
        Model time step (required with a bare model).
    Q : Covariance or array_like, optional
        Model-noise covariance per unit time.
    x0 : array_like (n,), optional
        Start of the run (default: the setting's prior mean, else zeros).
    n_samples, interval, spinup : int
        Length of the sample, steps between samples, steps discarded.
    seed : int
        Seeds the perturbation of ``x0`` and the model noise.

    Returns
    -------
    GaussianState
        Sample mean (n,) and covariance (n, n).

    Raises
    ------
    ValueError
        If the covariance is not positive definite (e.g. a stable linear
        model without noise collapses to a point): pass B explicitly then.

    Examples
    --------
    >>> from filters.models import Lorenz96
    >>> c = climatology(Lorenz96(n=10), dt=0.05, n_samples=500)
    >>> bool(10.0 < c.cov.trace() / 10 < 16.0)
    True
    """
    from ..settings import Setting

    if isinstance(model, Setting):
        s = model
        model, dt = s.model, s.dt if dt is None else dt
        Q = s.Q if Q is None else Q
        x0 = s.prior.mean if x0 is None else x0
    if dt is None:
        raise ValueError("dt is required when model is not a Setting")
    check_positive(dt, "dt")
    for name, v in (("n_samples", n_samples), ("interval", interval)):
        check_positive(v, name, integer=True)
    check_positive(spinup, "spinup", strict=False, integer=True)
    n = model.ndim
    x0 = np.zeros(n) if x0 is None else as_float_array(x0, "x0", shape=(n,))
    Qc = None if Q is None else as_covariance(Q, n, "Q")
    key = _cache_key(model, dt, Qc, x0, n_samples, interval, spinup, seed)
    if key is not None and key in _CLIMATOLOGY_CACHE:
        return _CLIMATOLOGY_CACHE[key]
    rng = np.random.default_rng(seed)
    x = x0 + 1e-3 * rng.standard_normal(n)
    samples = np.empty((n_samples, n))
    t = 0.0

    def advance(x, t, k):
        if Qc is None:
            return model.integrate(x, t, dt, k)
        for j in range(k):
            x = model.step(x, t + j * dt, dt) + np.sqrt(dt) * Qc.sample(rng, 1)[0]
        return x

    with np.errstate(over="raise", invalid="raise"):
        try:
            x = advance(x, t, spinup)
            t += spinup * dt
            for i in range(n_samples):
                x = advance(x, t, interval)
                t += interval * dt
                samples[i] = x
        except FloatingPointError as exc:
            raise ValueError(f"the free run of {type(model).__name__} for the climatology "
                             "overflowed; pass B explicitly") from exc
    mean = samples.mean(axis=0)
    cov = np.atleast_2d(np.cov(samples, rowvar=False))
    try:
        out = GaussianState.create(mean, cov)
    except ValueError:
        raise ValueError(
            f"the climatological covariance of {type(model).__name__} is not positive definite "
            "(the free run collapsed onto a point or a subspace); pass B explicitly") from None
    if key is not None:
        _CLIMATOLOGY_CACHE[key] = out
    return out


def _cache_key(model, *args):
    try:
        blob = pickle.dumps((type(model).__qualname__, model.__dict__, args[0],
                             None if args[1] is None else args[1].dense, *args[2:]))
    except Exception:  # unpicklable model (e.g. a lambda inside): no caching
        return None
    return hashlib.sha256(blob).hexdigest()


def warn_not_converged(name: str, n_bad: int, n_total: int) -> None:
    """One warning for a run in which some windows did not converge."""
    warnings.warn(f"{name}: {n_bad} of {n_total} windows stopped before the minimiser converged "
                  "(see the dataset's `converged` flag per window); raise maxiter or loosen gtol",
                  VariationalConvergenceWarning, stacklevel=3)
