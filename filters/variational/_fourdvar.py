"""Windowed 4D-Var (strong and weak constraint) and the EM estimate of its Q.

:func:`filters.assimilate` hands these filters (``windowed = True``) to the
window loop of ``._runner``; the maths is in ``._core``, ``._gauss_newton``
(numpy) and ``._torch`` (costs, autograd, L-BFGS).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np

from .._validation import check_choice, check_in_range, check_positive
from ..base import Filter
from ..covariance import Covariance, as_covariance
from ..states import GaussianState
from ._background import (MINIMIZERS, check_background, describe_hyperparameter,
                          resolve_background_covariance)
from ._core import VarWindow, WindowResult
from ._gauss_newton import gauss_newton_solve, with_covariance

__all__ = ["StrongConstraint4DVar", "WeakConstraint4DVar", "QEstimate", "estimate_Q"]


# ----------------------------------------------------------------------------
class _Windowed4DVar(Filter):
    """Shared hyperparameters, validation and the window solver of 4D-Var."""

    #: :func:`filters.assimilate` runs windowed filters window by window.
    windowed = True
    _weak = False

    def __init__(self, *, window: int = 4, shift: int | None = None, B="clim", xB: float = 1.0,
                 b_update="static", minimizer: str = "lbfgs", maxiter: int = 200,
                 gtol: float = 1e-5, ftol: float = 1e-12, covariance: bool = True):
        super().__init__(inflation=None)
        self.window, self.shift = window, shift
        self.B, self.xB, self.b_update = B, xB, b_update
        self.minimizer, self.maxiter, self.gtol, self.ftol = minimizer, maxiter, gtol, ftol
        self.covariance = covariance

    def params(self):
        p = super().params()
        p["B"] = describe_hyperparameter(self.B)
        if "Q" in p:
            p["Q"] = describe_hyperparameter(self.Q)
        return p

    def validate(self):
        super().validate()
        check_positive(self.window, "window", integer=True)
        if self.shift is not None:
            check_positive(self.shift, "shift", integer=True)
            if self.shift > self.window:
                raise ValueError(f"shift must be <= window ({self.window}), got {self.shift}")
        check_background(self.B)
        check_positive(self.xB, "xB")
        if isinstance(self.b_update, str):
            check_choice(self.b_update, "b_update", ("static", "propagate"))
        else:
            check_in_range(self.b_update, "b_update", 0.0, 1.0)
        if self.b_update != "static" and not self.covariance:
            raise ValueError(f"b_update={self.b_update!r} needs covariance=True (the analysis "
                             "covariance is what is propagated)")
        check_choice(self.minimizer, "minimizer", MINIMIZERS)
        check_positive(self.maxiter, "maxiter", integer=True)
        check_positive(self.gtol, "gtol")
        check_positive(self.ftol, "ftol")
        if not isinstance(self.covariance, bool):
            raise ValueError(f"covariance must be True or False, got {self.covariance!r}")

    # -- windows ---------------------------------------------------------------
    def schedule(self, T: int) -> list[tuple[int, int, int]]:
        """The windows over ``T`` cycles: ``(start, first_new, end)`` per window.

        A window starts at observation point ``start`` (0 is the initial time;
        point ``k + 1`` is the time of observation ``k``) and assimilates the
        observations ``first_new`` to ``end - 1``, each exactly once; it spans
        ``min(window, end)`` cycles.  Consecutive windows are ``shift`` cycles
        apart (default: ``window``, i.e. non-overlapping windows).

        Examples
        --------
        >>> StrongConstraint4DVar(window=3).schedule(7)
        [(0, 0, 3), (3, 3, 6), (4, 6, 7)]
        >>> StrongConstraint4DVar(window=2, shift=1).schedule(3)
        [(0, 0, 1), (0, 1, 2), (1, 2, 3)]
        """
        check_positive(T, "T", integer=True)
        if self.window > T:
            raise ValueError(f"window ({self.window} cycles) is longer than the observation "
                             f"sequence ({T} cycles)")
        S = self.window if self.shift is None else self.shift
        out, a = [], 0
        while a < T:
            b = min(a + S, T)
            out.append((max(0, b - self.window), a, b))
            a = b
        return out

    def setup(self, model, obs, prior: GaussianState, dt: float, Q) -> None:
        """Resolve ``B_`` (and ``Q_`` for weak constraint) for a run; called by the runner."""
        self.B_ = resolve_background_covariance(self.B, self.xB, model.ndim, model=model, dt=dt,
                                                Q=Q, prior=prior)
        self._B_static_dense = self.B_.dense
        self.window_Q_ = self._resolve_Q(Q, model.ndim) if self._weak else None

    def _resolve_Q(self, Q, n):
        return None

    def solve(self, background: GaussianState, observations, obs_steps, nsteps: int, model, obs,
              R, *, t0: float = 0.0, dt: float = 1.0, Q=None) -> WindowResult:
        """Minimise the cost of one window.

        Parameters
        ----------
        background : GaussianState
            ``x_b`` and ``B`` at the start of the window.
        observations : array_like (p, m)
            Observations (NaN: missing).
        obs_steps : array_like (p,) of int
            Model step (from the window start) of each observation.
        nsteps : int
            Model steps in the window.
        model : Model
            Needs a torch twin for L-BFGS (:func:`~filters.models.as_torch_model`)
            and a Jacobian, or a torch twin, for Gauss-Newton and covariances.
        obs : ObservationOperator or sequence of them
            One operator for every observation time, or a list/tuple of ``p``
            operators, the i-th observing the state at ``obs_steps[i]`` (each
            returning the window's ``m`` values).  Gauss-Newton (and the
            covariances) use each operator's ``jacobian``; L-BFGS uses each
            operator's torch version, or, for an operator without one (numpy
            in and out, e.g. a language model's per-token NLLs), its value and
            exact ``jacobian`` inside a custom autograd function.
        R : Covariance or array_like
            Observation-error covariance.
        t0, dt : float
            Start time and model step.
        Q : Covariance or array_like, optional
            Model-error covariance per unit time (weak constraint; ignored by
            strong constraint).

        Returns
        -------
        WindowResult

        Raises
        ------
        ValueError
            For bad inputs (naming them), e.g. a non positive-definite B, R or Q.
        NonFiniteCostError
            If the cost becomes NaN or infinite.

        Examples
        --------
        >>> from filters.models import LinearGaussian, Identity
        >>> res = StrongConstraint4DVar(window=1).solve(
        ...     GaussianState.create([0.0], 1.0), [[1.0]], [1], 1, LinearGaussian([[1.0]]),
        ...     Identity(1), 1.0)
        >>> res.trajectory.round(6).tolist(), res.converged
        ([[0.5], [0.5]], True)
        """
        if self._weak and Q is None:
            raise ValueError("Q is required for weak-constraint 4D-Var (the model-error "
                             "covariance per unit time)")
        win = VarWindow.create(background.mean, background.cov, observations, obs_steps, nsteps,
                               R, Q=Q if self._weak else None, t0=t0, dt=dt)
        if self.minimizer == "gauss-newton":
            return gauss_newton_solve(win, model, obs, maxiter=self.maxiter, gtol=self.gtol,
                                      covariance=self.covariance)
        from . import _torch

        res = _torch.lbfgs_solve(win, model, obs, maxiter=self.maxiter, gtol=self.gtol,
                                 ftol=self.ftol)
        return with_covariance(win, model, obs, res) if self.covariance else res

    def next_background(self, result: WindowResult, step: int) -> GaussianState:
        """Background of the next window, which starts ``step`` model steps into this one.

        The mean is the analysed trajectory there; the covariance follows
        ``b_update``: ``"static"`` keeps ``B_``; ``"propagate"`` takes the
        analysis covariance (inverse Gauss-Newton Hessian) carried there by the
        tangent-linear model (with the window's model noise, for weak
        constraint); a number ``a`` mixes ``a * propagated + (1 - a) * B_``.
        """
        mean = result.trajectory[step]
        if self.b_update == "static":
            return GaussianState(mean, self._B_static_dense)
        P = result.cov(step)
        if self.b_update != "propagate":
            a = float(self.b_update)
            P = a * P + (1.0 - a) * self._B_static_dense
        return GaussianState(mean, P)

    # -- the cycle-by-cycle interface ----------------------------------------
    def initialize(self, prior, rng):
        self._prior = prior
        return GaussianState(prior.mean.copy(), prior.cov.copy())

    def forecast(self, state, model, t, dt, nsteps, Q, rng):
        """Run the mean forward; the covariance becomes the static ``B_``.

        Used cycle by cycle (outside :func:`filters.assimilate`, which runs
        whole windows) a 4D-Var filter has windows of one observation at its
        own time, i.e. it is 3D-Var.
        """
        if getattr(self, "B_", None) is None:
            self.setup(model, None, getattr(self, "_prior", None), dt, Q)
        self._dt = dt
        return GaussianState(model.integrate(state.mean, t, dt, nsteps), self._B_static_dense)

    def analysis(self, state, y, obs, R, rng):
        """Minimise the cost of a window holding only ``y``, at the state's time (3D-Var)."""
        y = np.asarray(y, dtype=float)
        if np.all(np.isnan(y)):
            return state
        res = self.solve(state, y[None], [0], 0, None, obs, R, dt=getattr(self, "_dt", 1.0),
                         Q=getattr(self, "window_Q_", None))
        cov = res.cov(0) if res.has_covariance else state.cov
        return GaussianState(res.trajectory[0], cov)


_DOC_COMMON = """
    window : int
        Observation cycles per window (DAPPER's ``Lag``).
    shift : int, optional
        Cycles between consecutive windows, 1 to ``window``.  Default
        ``window``: non-overlapping windows, every observation assimilated once
        with all the others of its window.  With ``shift < window`` each window
        still reaches ``window`` cycles back, but only its newest ``shift``
        observations enter the cost (each observation is assimilated once);
        ``shift=1`` is DAPPER's ``Var4D`` cycling.
    B : {"clim", "prior", "eye"}, float, array_like or Covariance
        Background covariance at the start of the first window (and of every
        window with ``b_update="static"``); ``"clim"`` (default) is the model's
        climatological covariance (:func:`climatology`).
    xB : float
        Scale of B (DAPPER's ``xB``).
    b_update : {"static", "propagate"} or float in [0, 1]
        Background covariance of the next window: ``"static"`` (DAPPER) keeps
        ``xB * B``; ``"propagate"`` carries the analysis covariance (inverse
        Gauss-Newton Hessian) forward with the tangent-linear model; a number
        ``a`` is the hybrid ``a * propagated + (1 - a) * static``.
    minimizer : {"lbfgs", "gauss-newton"}
        ``"lbfgs"``: scipy's L-BFGS-B on float64 with the gradient (the
        adjoint) from torch autograd.  ``"gauss-newton"``: incremental 4D-Var,
        outer loops with the model's tangent-linear model (its ``jacobian``),
        each inner quadratic problem solved exactly.
    maxiter : int
        Maximum iterations (L-BFGS) or outer loops (Gauss-Newton) per window.
    gtol : float
        Convergence when the max-norm of the gradient with respect to the
        whitened control vector falls below this.
    ftol : float
        L-BFGS also stops when the relative decrease of the cost falls below this.
    covariance : bool
        Compute the Gauss-Newton analysis covariance of each window (spreads in
        the output, ``b_update="propagate"``, model-error variances); one
        tangent-linear sweep per window."""


class StrongConstraint4DVar(_Windowed4DVar):
    __doc__ = """Strong-constraint 4D-Var over sliding windows.

    Each window minimises, over its initial state ``x0``,
    ``J(x0) = 1/2 |x0 - xb|^2_{B^-1} + 1/2 sum_k |y_k - H(M_{0->k}(x0))|^2_{R^-1}``.
    The model and the observation operator run in torch, so the gradient (the
    adjoint) is torch autograd; L-BFGS minimises in the whitened control
    ``w = B^{-1/2} (x0 - xb)``.  The analysis of a window's initial state,
    run forward, is the background of the next window.

    Parameters
    ----------""" + _DOC_COMMON + """

    Attributes
    ----------
    B_ : Covariance
        The resolved ``xB * B`` (after a run).

    Notes
    -----
    Le Dimet & Talagrand (1986); Courtier, Thepaut & Hollingsworth (1994) for
    the incremental form; the cycling with ``shift=1`` is DAPPER's ``Var4D``
    (Bocquet & Sakov 2013).  :func:`filters.assimilate` logs per cycle the
    background trajectory (``forecast_mean``) and the analysed trajectory
    (``analysis_mean``) at each observation time of the window that
    assimilated it, and per window the cost at start and end, the iterations,
    the gradient norm and a converged flag.

    Examples
    --------
    >>> from filters import assimilate
    >>> from filters.settings import linear_gaussian
    >>> s = linear_gaussian(n=2, n_obs=6)
    >>> ds = assimilate(StrongConstraint4DVar(window=3, B="prior"), s, seed=0)
    >>> ds.sizes["window"], int(ds.converged.sum())
    (2, 2)
    """

    name = "4D-Var"


class WeakConstraint4DVar(_Windowed4DVar):
    __doc__ = """Weak-constraint 4D-Var: the state at every model step of the window is free.

    Each window minimises, over the states ``x_0 .. x_K`` at its ``K`` model steps,
    ``J = 1/2 |x_0 - xb|^2_{B^-1} + 1/2 sum_k |y_k - H(x_{s_k})|^2_{R^-1}
    + 1/2 sum_j |x_{j+1} - M(x_j)|^2_{(dt Q)^-1}``
    (each model step adds noise of covariance ``dt * Q``, as in
    :meth:`filters.Setting.simulate`).  The minimiser works in the whitened
    model-error (forcing) variables ``w``, a change of variables of the same
    states.  Each run logs the model-error estimates per cycle and their
    posterior variances, and sets ``Q_ml_``, the maximum-likelihood (EM)
    update of a diagonal Q; :func:`estimate_Q` iterates it.

    Parameters
    ----------
    Q : float, array_like or Covariance, optional
        Model-error covariance per unit time; default: the setting's ``Q``.""" + \
        _DOC_COMMON + """

    Attributes
    ----------
    B_ : Covariance
        The resolved ``xB * B``.
    window_Q_ : Covariance
        The Q used in the last run.
    Q_ml_ : Covariance
        EM update of a diagonal Q from the last run: per-step mean of the
        squared model-error estimates plus their posterior variances, over dt.

    Notes
    -----
    Tremolet (2006); the EM update of Q is Shumway & Stoffer (1982) applied to
    the Gauss-Newton (Laplace) posterior of each window.

    Examples
    --------
    >>> from filters import assimilate, linear_gaussian
    >>> ds = assimilate(WeakConstraint4DVar(window=2, B="prior"), linear_gaussian(n=2, n_obs=4),
    ...                 seed=0)
    >>> ds.model_error.dims
    ('time', 'state')
    """

    name = "weak 4D-Var"
    _weak = True

    def __init__(self, *, Q=None, window: int = 4, shift: int | None = None, B="clim",
                 xB: float = 1.0, b_update="static", minimizer: str = "lbfgs", maxiter: int = 200,
                 gtol: float = 1e-5, ftol: float = 1e-12, covariance: bool = True):
        super().__init__(window=window, shift=shift, B=B, xB=xB, b_update=b_update,
                         minimizer=minimizer, maxiter=maxiter, gtol=gtol, ftol=ftol,
                         covariance=covariance)
        self.Q = Q

    def validate(self):
        super().validate()
        if self.Q is not None and not isinstance(self.Q, Covariance):
            arr = np.asarray(self.Q, dtype=float)
            if arr.ndim > 2:
                raise ValueError(f"Q must be a scalar, a vector or a matrix, got shape {arr.shape}")
            as_covariance(self.Q if arr.ndim else float(arr), arr.shape[0] if arr.ndim else 1, "Q")

    def _resolve_Q(self, Q, n):
        if self.Q is not None:
            return as_covariance(self.Q, n, "Q")
        if Q is None:
            raise ValueError("WeakConstraint4DVar needs Q: the setting has none, pass Q=...")
        return as_covariance(Q, n, "Q")



# ----------------------------------------------------------------------------
# Model-error covariance by EM
# ----------------------------------------------------------------------------
class QEstimate(NamedTuple):
    """Result of :func:`estimate_Q`.

    Parameters
    ----------
    Q : Covariance
        Final diagonal estimate (per unit time).
    history : ndarray (iterations + 1, n)
        The diagonal at the start and after each EM iteration.
    converged : bool
        Whether the relative change fell below ``rtol``.
    dataset : xarray.Dataset
        The last run.

    Examples
    --------
    >>> from filters.settings import linear_gaussian
    >>> est = estimate_Q(WeakConstraint4DVar(window=2, B="prior", Q=1.0),
    ...                  linear_gaussian(n=2, n_obs=20), n_iter=2)
    >>> est.Q.dim, est.history.shape, est.dataset.attrs["filter"]
    (2, (3, 2), 'weak 4D-Var')
    """

    Q: Covariance
    history: np.ndarray
    converged: bool
    dataset: object


def estimate_Q(filter: WeakConstraint4DVar, setting, *, Q0=None, n_iter: int = 10,
               rtol: float = 0.01, seed: int = 0, simulation=None) -> QEstimate:
    """Estimate a diagonal model-error covariance by EM over weak-constraint 4D-Var runs.

    Each iteration runs :func:`filters.assimilate` with the current Q (the
    E-step: per window, the model-error estimates and their Gauss-Newton
    posterior variances) and replaces Q by the run's ``Q_ml_`` (the M-step).

    Parameters
    ----------
    filter : WeakConstraint4DVar
        Its hyperparameters are used (``covariance`` must be True); its ``Q``
        is replaced.
    setting : Setting
    Q0 : float, array_like or Covariance, optional
        Starting guess (default: the filter's Q, else the setting's).
    n_iter : int
        Maximum EM iterations.
    rtol : float
        Stop when no component changes by more than this fraction.
    seed : int
    simulation : Simulation, optional
        Truth and observations (default: simulated from ``seed``).

    Returns
    -------
    QEstimate

    Examples
    --------
    >>> from filters.settings import linear_gaussian
    >>> s = linear_gaussian(n=2, n_obs=20)
    >>> est = estimate_Q(WeakConstraint4DVar(window=2, B="prior", Q=1.0), s, n_iter=2)
    >>> est.history.shape
    (3, 2)
    """
    from ..assimilate import assimilate

    if not isinstance(filter, WeakConstraint4DVar):
        raise ValueError(f"filter must be a WeakConstraint4DVar, got {type(filter).__name__}")
    if not filter.covariance:
        raise ValueError("estimate_Q needs covariance=True (the posterior variances are the "
                         "E-step's correction of the biased MAP estimates)")
    check_positive(n_iter, "n_iter", integer=True)
    check_positive(rtol, "rtol")
    n = setting.model.ndim
    start = Q0 if Q0 is not None else (filter.Q if filter.Q is not None else setting.Q)
    if start is None:
        raise ValueError("estimate_Q needs a starting Q0 (neither the filter nor the setting "
                         "has Q)")
    q = as_covariance(start, n, "Q0").variances.copy()
    sim = simulation
    if sim is None:  # the same draw as assimilate(seed=seed) makes
        sim = setting.simulate(np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0]))
    history, converged, ds = [q.copy()], False, None
    for _ in range(n_iter):
        flt = copy.copy(filter)
        flt.Q = Covariance.diagonal(q, "Q")
        ds = assimilate(flt, setting, seed=seed, simulation=sim)
        q_new = flt.Q_ml_.variances.copy()
        change = np.max(np.abs(q_new - q) / q)
        q = q_new
        history.append(q.copy())
        if change < rtol:
            converged = True
            break
    return QEstimate(Covariance.diagonal(q, "Q"), np.array(history), converged, ds)
