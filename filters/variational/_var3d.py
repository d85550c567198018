"""3D-Var: an ordinary cycle-by-cycle filter with a static background covariance.

The classes hold hyperparameters and the cycling; the maths is in ``._core``,
``._gauss_newton`` (numpy) and ``._torch`` (costs, autograd, L-BFGS).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg as sla

from .._validation import check_choice, check_positive
from ..base import Filter, observed_subset, symmetrize
from ..covariance import Covariance
from ..states import GaussianState
from ._background import (MINIMIZERS, check_background, describe_hyperparameter,
                          resolve_background_covariance)
from ._core import NonFiniteCostError, VariationalConvergenceWarning, VarWindow
from ._gauss_newton import with_covariance

__all__ = ["Var3D"]


# ----------------------------------------------------------------------------
class Var3D(Filter):
    """3D-Var: each analysis minimises ``1/2 |x - x_f|^2_{B^-1} + 1/2 |y - H(x)|^2_{R^-1}``.

    The background covariance ``B`` is static; the forecast is the model run
    of the previous analysis.  With a linear observation operator the
    minimiser is the Kalman analysis with ``P = B`` (one Gauss-Newton step,
    computed in observation space with a gain cached across cycles); with a
    nonlinear one Gauss-Newton iterates (incremental 3D-Var), or L-BFGS on the
    torch cost.

    Parameters
    ----------
    B : {"clim", "prior", "eye"}, float, array_like or Covariance
        Background covariance; ``"clim"`` (default) is the model's
        climatological covariance from a long free run (:func:`climatology`),
        DAPPER's convention.
    xB : float
        Scale of B (DAPPER's ``xB``): the covariance used is ``xB * B``.
    minimizer : {"gauss-newton", "lbfgs"}
        ``"lbfgs"`` minimises the torch cost with scipy's L-BFGS-B and autograd.
    maxiter : int, optional
        Maximum Gauss-Newton or L-BFGS iterations (nonlinear observations);
        default 20 for Gauss-Newton, 200 for L-BFGS.  An analysis that stops
        unconverged raises a :class:`VariationalConvergenceWarning`.
    gtol : float
        Tolerance on the step (Gauss-Newton) or the gradient (L-BFGS).

    Attributes
    ----------
    B_ : Covariance
        The resolved ``xB * B``, after the first forecast.

    Notes
    -----
    Lorenc (1986); Courtier et al. (1998).  DAPPER's ``Var3D(B, xB)`` is the
    same analysis for linear observation operators.

    Examples
    --------
    >>> from filters import assimilate
    >>> from filters.settings import sakov2008
    >>> ds = assimilate(Var3D(xB=0.02), sakov2008(n_obs=100), seed=0)
    >>> bool(ds.rmse_analysis[-50:].mean() < 1.0)
    True
    """

    name = "3D-Var"

    def __init__(self, *, B="clim", xB: float = 1.0, minimizer: str = "gauss-newton",
                 maxiter: int | None = None, gtol: float = 1e-8):
        super().__init__(inflation=None)
        self.B, self.xB, self.minimizer = B, xB, minimizer
        self.maxiter, self.gtol = maxiter, gtol

    def params(self):
        p = super().params()
        p["B"] = describe_hyperparameter(self.B)
        return p

    def validate(self):
        super().validate()
        check_background(self.B)
        check_positive(self.xB, "xB")
        check_choice(self.minimizer, "minimizer", MINIMIZERS)
        if self.maxiter is not None:
            check_positive(self.maxiter, "maxiter", integer=True)
        check_positive(self.gtol, "gtol")

    @property
    def _maxiter(self) -> int:
        if self.maxiter is not None:
            return self.maxiter
        return 200 if self.minimizer == "lbfgs" else 20

    def initialize(self, prior, rng):
        self._prior = prior
        self.B_ = None
        self._cache = None
        return GaussianState(prior.mean.copy(), prior.cov.copy())

    def forecast(self, state, model, t, dt, nsteps, Q, rng):
        if getattr(self, "B_", None) is None:
            self.B_ = resolve_background_covariance(self.B, self.xB, model.ndim, model=model,
                                                    dt=dt, Q=Q, prior=getattr(self, "_prior", None))
            self._Bdense = self.B_.dense
        return GaussianState(model.integrate(state.mean, t, dt, nsteps), self._Bdense)

    def analysis(self, state, y, obs, R, rng):
        mask, y_obs, R_obs = observed_subset(np.asarray(y, dtype=float), R)
        if y_obs.size == 0:
            return state
        xf, B = state.mean, state.cov
        if self.minimizer == "lbfgs":
            return self._lbfgs_analysis(xf, B, y, obs, R)
        if obs.linear:
            K, Pa = self._gain(B, obs, xf, mask, R, R_obs)
            hx = obs(xf) if mask is None else obs(xf)[mask]
            return GaussianState(xf + K @ (y_obs - hx), Pa)
        x, done = xf.copy(), False
        for _ in range(self._maxiter):
            H = obs.jacobian(x)
            hx = obs(x)
            if mask is not None:
                H, hx = H[mask], hx[mask]
            K, Pa = _var3d_gain(B, H, R_obs)
            x_new = xf + K @ (y_obs - hx - H @ (xf - x))
            if not np.all(np.isfinite(x_new)):
                raise NonFiniteCostError("3D-Var: the Gauss-Newton iterate is not finite (the "
                                         "observation operator or its Jacobian overflowed)")
            done = np.max(np.abs(x_new - x)) <= self.gtol
            x = x_new
            if done:
                break
        if not done:
            _warn_var3d(self._maxiter)
        return GaussianState(x, Pa)

    def _gain(self, B, obs, x, mask, R, R_obs):
        key = (B, obs, R, None if mask is None else mask.tobytes())
        c = getattr(self, "_cache", None)
        if c is not None and all(a is b or (isinstance(a, bytes) and a == b)
                                 for a, b in zip(c[0], key)):
            return c[1]
        H = obs.jacobian(x)
        if mask is not None:
            H = H[mask]
        out = _var3d_gain(B, H, R_obs)
        self._cache = (key, out)
        return out

    def _lbfgs_analysis(self, xf, B, y, obs, R):
        from . import _torch

        win = VarWindow.create(xf, B, np.asarray(y, dtype=float)[None], [0], 0, R)
        res = _torch.lbfgs_solve(win, None, obs, maxiter=self._maxiter, gtol=self.gtol)
        if not res.converged:
            _warn_var3d(self._maxiter)
        res = with_covariance(win, None, obs, res)
        return GaussianState(res.trajectory[0], res.cov(0))


def _warn_var3d(maxiter: int) -> None:
    warnings.warn(f"3D-Var: an analysis stopped after maxiter={maxiter} iterations before "
                  "converging; raise maxiter or loosen gtol", VariationalConvergenceWarning,
                  stacklevel=4)


def _var3d_gain(B: np.ndarray, H: np.ndarray, R: Covariance):
    """Gain ``K = B H^T (H B H^T + R)^{-1}`` (n, m) and ``(I - K H) B (I - K H)^T + K R K^T``."""
    BHt = B @ H.T  # (n, m)
    S = symmetrize(H @ BHt + R.dense)  # (m, m)
    K = sla.cho_solve(sla.cho_factor(S, lower=True), BHt.T).T  # (n, m)
    IKH = np.eye(B.shape[0]) - K @ H
    KR = K * R.diag if R.is_diagonal else K @ R.matrix
    return K, symmetrize(IKH @ B @ IKH.T + KR @ K.T)
