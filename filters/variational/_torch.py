"""The 4D-Var costs in torch (float64) and the L-BFGS minimiser (scipy) on them.

The adjoint model is torch autograd: the cost is written once, forward, and
``torch.autograd.grad`` gives its gradient.  This module imports torch; the
rest of :mod:`filters` imports it lazily, only when a variational filter
minimises with L-BFGS.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize as sopt
import torch

from ..models.torch_models import as_torch_model, as_torch_observation
from ._core import NonFiniteCostError, VarWindow, WindowResult, _check_finite, _model_errors
from ._gauss_newton import per_time_operators

__all__ = ["WindowCost", "var3d_cost", "strong_constraint_cost", "weak_constraint_cost",
           "lbfgs_solve"]

DTYPE = torch.float64


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=DTYPE)


class _NumpyObservation(torch.autograd.Function):
    """A numpy observation operator as a torch function of one state (n,) -> (m,).

    Forward: the operator's value; backward: the vector-Jacobian product with
    its exact ``jacobian`` (one Jacobian per backward pass).
    """

    @staticmethod
    def forward(ctx, x, op):
        ctx.op = op
        ctx.save_for_backward(x)
        v = np.asarray(op(x.detach().cpu().numpy()[None]), dtype=float).reshape(-1)
        return torch.as_tensor(v, dtype=DTYPE)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        J = np.asarray(ctx.op.jacobian(x.detach().cpu().numpy()), dtype=float)  # (m, n)
        return _t(J).T @ g, None


def _per_time_torch_observation(op):
    """Torch function of one state (n,) -> (m,) for one operator of a per-time sequence.

    A plain callable is taken as the torch function; an operator with a torch
    version (:func:`~filters.models.as_torch_observation`) uses it; any other
    operator with ``__call__`` and ``jacobian`` on numpy arrays (e.g. one that
    runs a neural network) is wrapped in :class:`_NumpyObservation`.
    """
    if callable(op) and not hasattr(op, "nobs"):
        return op
    try:
        return as_torch_observation(op)
    except ValueError:
        if not hasattr(op, "jacobian"):
            raise
        return lambda x: _NumpyObservation.apply(x, op)


class WindowCost:
    """A window's cost as torch functions, in state space and in whitened control space.

    Parameters
    ----------
    window : VarWindow
    model : Model
        Converted with :func:`~filters.models.as_torch_model`.
    obs : ObservationOperator or callable, or a sequence of them
        Converted with :func:`~filters.models.as_torch_observation` (a plain
        callable is taken as the torch function itself).  A sequence (list or
        tuple) holds one operator per observation time of the window
        (:func:`~filters.variational._gauss_newton.per_time_operators`); its operators
        without a torch version are used through their numpy value and exact
        ``jacobian`` (a custom autograd function: the vector-Jacobian product
        ``J^T g``), so the gradient stays exact.

    Examples
    --------
    >>> from filters.models import LinearGaussian, Identity
    >>> win = VarWindow.create([0.0], 1.0, [[1.0]], [1], 1, 1.0)
    >>> c = WindowCost(win, LinearGaussian([[1.0]]), Identity(1))
    >>> float(c.strong(torch.tensor([0.5], dtype=torch.float64)))
    0.25
    """

    def __init__(self, window: VarWindow, model, obs):
        self.window = window
        self.model = as_torch_model(model) if window.nsteps > 0 else None
        ops = per_time_operators(obs, window.obs_steps.shape[0])
        if ops is None:
            self.h = obs if (callable(obs) and not hasattr(obs, "nobs")) else \
                as_torch_observation(obs)
            self.hs = None
        else:
            self.h, self.hs = None, [_per_time_torch_observation(op) for op in ops]
        n = window.ndim
        self.n, self.K = n, window.nsteps
        self.t0, self.dt = window.t0, window.dt
        self.xb = _t(window.xb)  # (n,)
        self.Lb = _t(window.background_sqrt())  # (n, n)
        self.Lb_inv = torch.linalg.solve_triangular(self.Lb, torch.eye(n, dtype=DTYPE), upper=False)
        Lq = window.noise_sqrt()
        self.Lq = None if Lq is None else _t(Lq)
        self.Lq_inv = None if Lq is None else torch.linalg.solve_triangular(
            self.Lq, torch.eye(n, dtype=DTYPE), upper=False)
        self.steps = torch.as_tensor(window.obs_steps)  # (p,)
        self.y0 = _t(window.y0)  # (p, m)
        self.W = _t(window.obs_weights)  # (p, m) or (p, m, m)

    # -- pieces ----------------------------------------------------------------
    def _obs_term(self, xs: torch.Tensor) -> torch.Tensor:
        if self.hs is None:
            hx = self.h(xs[self.steps])  # (p, m)
        elif self.hs:
            hx = torch.stack([h(xs[int(s)]).reshape(-1) for h, s in zip(self.hs, self.steps)])
        else:
            hx = torch.zeros_like(self.y0)
        d = self.y0 - hx  # (p, m)
        r = d * self.W if self.W.ndim == 2 else torch.einsum("pij,pj->pi", self.W, d)
        return 0.5 * (r * r).sum()

    def _step(self, x: torch.Tensor, j: int) -> torch.Tensor:
        return self.model.torch_step(x, self.t0 + j * self.dt, self.dt)

    def trajectory(self, w: torch.Tensor) -> torch.Tensor:
        """States (K + 1, n) for the whitened control ``w`` (d,)."""
        n = self.n
        x = self.xb + self.Lb @ w[:n]
        xs = [x]
        for j in range(self.K):
            x = self._step(x, j)
            if self.Lq is not None:
                x = x + self.Lq @ w[(j + 1) * n:(j + 2) * n]
            xs.append(x)
        return torch.stack(xs)

    # -- costs -------------------------------------------------------------------
    def control(self, w: torch.Tensor) -> torch.Tensor:
        """``J(w) = 1/2 |w|^2 + 1/2 sum_i |R^{-1/2}(y_i - H(x_{s_i}(w)))|^2``."""
        return 0.5 * (w * w).sum() + self._obs_term(self.trajectory(w))

    def background(self, x0: torch.Tensor) -> torch.Tensor:
        """``1/2 |x0 - xb|^2_{B^{-1}}``."""
        z = self.Lb_inv @ (x0 - self.xb)
        return 0.5 * (z * z).sum()

    def strong(self, x0: torch.Tensor) -> torch.Tensor:
        """Strong-constraint cost of the initial state ``x0`` (n,).

        ``1/2 |x0 - xb|^2_{B^-1} + 1/2 sum_i |y_i - H(M_{0->s_i}(x0))|^2_{R^-1}``.
        """
        xs = [x0]
        x = x0
        for j in range(self.K):
            x = self._step(x, j)
            xs.append(x)
        return self.background(x0) + self._obs_term(torch.stack(xs))

    def weak(self, xs: torch.Tensor) -> torch.Tensor:
        """Weak-constraint cost of the states ``xs`` (K + 1, n) at every model step.

        ``1/2 |x_0 - xb|^2_{B^-1} + 1/2 sum_i |y_i - H(x_{s_i})|^2_{R^-1}
        + 1/2 sum_j |x_{j+1} - M(x_j)|^2_{(dt Q)^-1}``.
        """
        if self.Lq is None:
            raise ValueError("the weak-constraint cost needs a window with Q")
        J = self.background(xs[0]) + self._obs_term(xs)
        if self.K:
            pred = torch.stack([self._step(xs[j], j) for j in range(self.K)])  # (K, n)
            z = (xs[1:] - pred) @ self.Lq_inv.T  # (K, n)
            J = J + 0.5 * (z * z).sum()
        return J


def var3d_cost(x, xb, y, obs, B, R) -> torch.Tensor:
    """The 3D-Var cost ``1/2 |x - xb|^2_{B^-1} + 1/2 |y - H(x)|^2_{R^-1}`` as a torch scalar.

    Parameters
    ----------
    x : torch.Tensor (n,)
        Where to evaluate (differentiable).
    xb : array_like (n,)
        Background.
    y : array_like (m,)
        Observations (NaN: missing).
    obs : ObservationOperator or torch callable
    B, R : Covariance, matrix, vector or scalar

    Returns
    -------
    torch.Tensor (scalar)

    Examples
    --------
    >>> from filters.models import Identity
    >>> x = torch.zeros(2, dtype=torch.float64)
    >>> round(float(var3d_cost(x, [0.0, 0.0], [1.0, 1.0], Identity(2), 1.0, 2.0)), 12)
    0.5
    """
    win = VarWindow.create(xb, B, np.atleast_2d(np.asarray(y, dtype=float)), [0], 0, R)
    return WindowCost(win, None, obs).strong(x)


def strong_constraint_cost(x0, window: VarWindow, model, obs) -> torch.Tensor:
    """Strong-constraint 4D-Var cost of ``x0`` (n,) over ``window``, a torch scalar.

    Parameters
    ----------
    x0 : torch.Tensor (n,)
        Initial state of the window (differentiable).
    window : VarWindow
    model, obs
        Model and observation operator, as in :class:`WindowCost`.

    Returns
    -------
    torch.Tensor (scalar)
        ``1/2 |x0 - xb|^2_{B^-1} + 1/2 sum_i |y_i - H(M_{0->s_i}(x0))|^2_{R^-1}``.

    Examples
    --------
    >>> from filters.models import LinearGaussian, Identity
    >>> win = VarWindow.create([0.0], 1.0, [[1.0]], [1], 1, 1.0)
    >>> x0 = torch.tensor([0.5], dtype=torch.float64)
    >>> float(strong_constraint_cost(x0, win, LinearGaussian([[1.0]]), Identity(1)))
    0.25
    """
    return WindowCost(window, model, obs).strong(x0)


def weak_constraint_cost(xs, window: VarWindow, model, obs) -> torch.Tensor:
    """Weak-constraint 4D-Var cost of the states ``xs`` (K + 1, n), a torch scalar.

    Parameters
    ----------
    xs : torch.Tensor (K + 1, n)
        The state at every model step of the window (differentiable).
    window : VarWindow
        A window with a model-error covariance ``Q``.
    model, obs
        Model and observation operator, as in :class:`WindowCost`.

    Returns
    -------
    torch.Tensor (scalar)
        The strong-constraint terms plus ``1/2 sum_j |x_{j+1} - M(x_j)|^2_{(dt Q)^-1}``.

    Examples
    --------
    >>> from filters.models import LinearGaussian, Identity
    >>> win = VarWindow.create([0.0], 1.0, [[1.0]], [1], 1, 1.0, Q=1.0)
    >>> xs = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> float(weak_constraint_cost(xs, win, LinearGaussian([[1.0]]), Identity(1)))
    0.5
    """
    return WindowCost(window, model, obs).weak(xs)


def lbfgs_solve(window: VarWindow, model, obs, *, maxiter: int = 200, gtol: float = 1e-6,
                ftol: float = 1e-12, maxcor: int = 10, w0=None) -> WindowResult:
    """Minimise the window's cost with scipy's L-BFGS-B (float64), gradient by autograd.

    Parameters
    ----------
    window : VarWindow
    model, obs
        Model and observation operator (torch twins are taken); ``obs`` may be
        a sequence of one operator per observation time (see :class:`WindowCost`).
    maxiter : int
        Maximum L-BFGS iterations.
    gtol : float
        Convergence when the max-norm of the gradient (whitened control) is
        below this.
    ftol : float
        Convergence when the relative decrease of the cost is below this.
    maxcor : int
        L-BFGS memory.
    w0 : ndarray (d,), optional
        Starting control (default 0: the background).

    Returns
    -------
    WindowResult
        Without covariances (see :func:`filters.variational._gauss_newton.with_covariance`).

    Raises
    ------
    NonFiniteCostError
        When the cost or the gradient becomes NaN or infinite.

    Examples
    --------
    >>> from filters.models import LinearGaussian, Identity
    >>> win = VarWindow.create([0.0], 1.0, [[1.0]], [1], 1, 1.0)  # xb = 0, y = 1, B = R = 1
    >>> res = lbfgs_solve(win, LinearGaussian([[1.0]]), Identity(1))
    >>> res.trajectory.round(6).tolist(), res.converged, round(res.cost_end, 6)
    ([[0.5], [0.5]], True, 0.25)
    """
    cost = WindowCost(window, model, obs)
    d = window.control_size
    count = {"nfev": 0}

    def fg(w_np):
        w = torch.tensor(w_np, dtype=DTYPE, requires_grad=True)
        J = cost.control(w)
        (g,) = torch.autograd.grad(J, w)
        count["nfev"] += 1
        Jv, gv = float(J.detach()), g.numpy().copy()
        if not (np.isfinite(Jv) and np.all(np.isfinite(gv))):
            where = "at the background" if count["nfev"] == 1 and not np.any(w_np) else \
                f"at evaluation {count['nfev']} of the minimiser"
            what = f"the 4D-Var cost is not finite ({Jv})" if not np.isfinite(Jv) else \
                f"the gradient of the 4D-Var cost is not finite (cost {Jv:g})"
            raise NonFiniteCostError(
                f"{what} {where}: the model trajectory diverged or overflowed, or the inputs "
                "hold NaN/inf (check the model, the background, B and the minimiser's steps)")
        return Jv, gv

    with torch.no_grad():
        zero = torch.zeros(d, dtype=DTYPE)
        xs_b = cost.trajectory(zero)
        cost_start = float(cost.control(zero))
    _check_finite(cost_start, "at the background")
    start = np.zeros(d) if w0 is None else np.asarray(w0, dtype=float)
    res = sopt.minimize(fg, start, jac=True, method="L-BFGS-B",
                        options={"maxiter": int(maxiter), "gtol": float(gtol), "ftol": float(ftol),
                                 "maxcor": int(maxcor), "maxls": 40})
    w = np.asarray(res.x, dtype=float)
    with torch.no_grad():
        xs = cost.trajectory(_t(w)).numpy()
    g = np.asarray(res.jac, dtype=float)
    msg = res.message if isinstance(res.message, str) else res.message.decode()
    converged = res.status == 0 or float(np.max(np.abs(g))) <= gtol
    return WindowResult(
        trajectory=xs, background_trajectory=xs_b.numpy(), model_error=_model_errors(window, w),
        cost_start=cost_start, cost_end=float(res.fun), iterations=int(res.nit),
        function_evaluations=int(count["nfev"]), grad_norm=float(np.linalg.norm(g)),
        converged=bool(converged), message=msg, control=w, noise_sqrt=window.noise_sqrt())
