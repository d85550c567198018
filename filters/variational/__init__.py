"""Variational data assimilation: 3D-Var, strong- and weak-constraint 4D-Var.

Design
------
* :class:`Var3D` is an ordinary cycle-by-cycle filter (forecast, then an
  analysis that minimises the 3D-Var cost with a static B).
* The 4D-Var filters are *windowed*: a window spans ``window`` observation
  cycles and is solved at once.  Rather than bending ``forecast``/``analysis``
  (an analysis that would have to buffer observations and rewrite earlier
  cycles), :func:`filters.assimilate` sees the class attribute
  ``windowed = True`` and hands the run to a dedicated window loop
  (:mod:`filters.variational._runner`).  That loop writes the same
  preallocated per-cycle arrays as the ensemble filters' loop (numpy only; no
  xarray work per cycle) and the Dataset is built once by the same function,
  so the layout is identical: per cycle (dim ``time``) ``forecast_mean`` (the
  background trajectory at the observation time), ``analysis_mean`` (the
  analysed trajectory there, from the window that assimilated that
  observation), spreads from the Gauss-Newton covariances, innovations, RMSE,
  wall time (the window's time shared by its new cycles); plus per window (dim
  ``window``) ``cost_start``, ``cost_end``, ``iterations``,
  ``function_evaluations``, ``grad_norm``, ``converged`` (int8 flag),
  ``window_start``/``window_end``; and for weak constraint ``model_error`` and
  ``model_error_variance`` (time, state) and ``Q_ml`` (state).  Every variable
  carries CF ``long_name`` and ``units``.  Called cycle by cycle (outside the
  runner), the 4D-Var classes degenerate to 3D-Var with their B.
* The costs are torch functions (:mod:`filters.variational._torch`): the model
  and the observation operator are torch callables (the twins in
  :mod:`filters.models.torch_models`), the gradient is autograd, and scipy's
  L-BFGS-B minimises on float64.  torch is imported only when a 4D-Var window
  is minimised with L-BFGS (or a cost function below is used), never by
  ``import filters``.
* The incremental variant (``minimizer="gauss-newton"``) uses the model's
  tangent-linear model (:meth:`~filters.models.Model.jacobian`, else
  torch autograd) and needs no torch for the Lorenz models.

Examples
--------
>>> from filters import Var3D, assimilate
>>> from filters.settings import linear_gaussian
>>> ds = assimilate(Var3D(B="prior"), linear_gaussian(n_obs=20), seed=0)
>>> ds.attrs["filter"]
'3D-Var'
"""

from ._background import resolve_background_covariance
from ._core import NonFiniteCostError, VariationalConvergenceWarning, VarWindow, WindowResult
from ._fourdvar import QEstimate, StrongConstraint4DVar, WeakConstraint4DVar, estimate_Q
from ._gauss_newton import gauss_newton_solve
from ._statistics import climatology, ml_diagonal_Q
from ._var3d import Var3D

__all__ = [
    "Var3D", "StrongConstraint4DVar", "WeakConstraint4DVar",
    "VarWindow", "WindowResult", "NonFiniteCostError", "VariationalConvergenceWarning",
    "climatology", "ml_diagonal_Q", "estimate_Q", "QEstimate", "gauss_newton_solve",
    "resolve_background_covariance",
    # torch (lazy)
    "WindowCost", "var3d_cost", "strong_constraint_cost", "weak_constraint_cost", "lbfgs_solve",
]

_TORCH_NAMES = frozenset(__all__[__all__.index("WindowCost"):])


def __getattr__(name):
    if name in _TORCH_NAMES:
        from . import _torch

        return getattr(_torch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
