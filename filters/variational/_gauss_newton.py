"""Incremental 4D-Var in numpy: tangent-linear pieces and the Gauss-Newton solver.

The minimiser of the window cost (see ``._core`` for the control-variable
transform) by Gauss-Newton on the model's tangent-linear model, and the
Gauss-Newton (Laplace) posterior covariance of the control vector.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ..models.base import Model
from ._core import VarWindow, WindowResult, _check_finite, _model_errors

__all__ = ["gauss_newton_solve", "per_time_operators", "with_covariance", "step_jacobian",
           "trajectory", "tangent", "posterior_from_jacobian"]


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
        The analysis, its cost and convergence (``iterations`` counts outer
        loops); with ``covariance``, also ``tangent`` and ``posterior``.

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


def with_covariance(window: VarWindow, model: Model, obs, result: WindowResult) -> WindowResult:
    """The same result with the tangent-linear map and the Gauss-Newton posterior added."""
    from dataclasses import replace

    X = tangent(window, model, result.trajectory)
    _, G = _obs_residual_and_jacobian(window, obs, result.trajectory, X)
    return replace(result, tangent=X, posterior=posterior_from_jacobian(G),
                   noise_sqrt=window.noise_sqrt())
