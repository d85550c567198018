"""The 4D-Var window without torch: its problem (VarWindow), its result, its errors.

The Gauss-Newton solver is in ``._gauss_newton``, the static statistics
(climatology, maximum-likelihood Q) in ``._statistics``.

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

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla

from .._validation import as_float_array, check_positive
from ..covariance import Covariance, as_covariance

__all__ = ["VarWindow", "WindowResult", "NonFiniteCostError", "VariationalConvergenceWarning",
           "warn_not_converged"]


class NonFiniteCostError(FloatingPointError):
    """The 4D-Var cost or its gradient became NaN or infinite during a minimisation.

    Examples
    --------
    >>> from filters.models import LinearGaussian, Identity
    >>> from filters.variational import gauss_newton_solve
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
    >>> from filters.variational import gauss_newton_solve
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


def warn_not_converged(name: str, n_bad: int, n_total: int) -> None:
    """One warning for a run in which some windows did not converge."""
    warnings.warn(f"{name}: {n_bad} of {n_total} windows stopped before the minimiser converged "
                  "(see the dataset's `converged` flag per window); raise maxiter or loosen gtol",
                  VariationalConvergenceWarning, stacklevel=3)
