"""The background covariance of the variational filters, and the options they share.

3D-Var (``._var3d``) and 4D-Var (``._fourdvar``) resolve their static
``xB * B`` and check and describe their hyperparameters the same way.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import check_choice, check_positive
from ..covariance import Covariance, as_covariance
from ..states import GaussianState
from ._statistics import climatology

__all__ = ["resolve_background_covariance", "check_background", "describe_hyperparameter",
           "B_NAMES", "MINIMIZERS"]

#: The named choices of ``B``.
B_NAMES = ("clim", "prior", "eye")
#: The minimisers of the variational filters.
MINIMIZERS = ("lbfgs", "gauss-newton")


# ----------------------------------------------------------------------------
def resolve_background_covariance(B, xB: float, n: int, *, model=None, dt=None, Q=None,
                                  prior: GaussianState | None = None) -> Covariance:
    """The static background covariance ``xB * B`` as a :class:`~filters.Covariance`.

    Parameters
    ----------
    B : {"clim", "prior", "eye"}, float, array_like or Covariance
        ``"clim"``: the model's climatological covariance (:func:`climatology`,
        DAPPER's default); ``"prior"``: the setting's prior covariance;
        ``"eye"``: the identity; otherwise a scalar, variances or a matrix.
    xB : float
        Scale factor (DAPPER's ``xB``).
    n : int
        State dimension.
    model, dt, Q
        Needed for ``"clim"``.
    prior : GaussianState
        Needed for ``"prior"`` (its mean also starts the climatological run).

    Returns
    -------
    Covariance
        ``xB`` times the chosen covariance (named ``"B"`` in messages).

    Raises
    ------
    ValueError
        Naming ``B`` if it is unknown, of the wrong size or not positive definite.

    Examples
    --------
    >>> resolve_background_covariance("eye", 0.5, 2).variances.tolist()
    [0.5, 0.5]
    """
    check_positive(xB, "xB")
    if isinstance(B, str):
        check_choice(B, "B", B_NAMES)
        if B == "clim":
            if model is None or dt is None:
                raise ValueError("B='clim' needs the model and its time step")
            C = climatology(model, dt, Q=Q, x0=None if prior is None else prior.mean).cov
        elif B == "prior":
            if prior is None:
                raise ValueError("B='prior' needs the prior (the setting's initial distribution)")
            C = prior.cov
        else:
            C = np.ones(n)
    else:
        C = B
    return as_covariance(C, n, "B").scaled(float(xB))


def check_background(B) -> None:
    """Raise ValueError unless ``B`` is a name of :data:`B_NAMES`, a Covariance or a valid array."""
    if isinstance(B, str):
        check_choice(B, "B", B_NAMES)
    elif isinstance(B, Covariance):
        return
    else:
        arr = np.asarray(B, dtype=float)
        if arr.ndim > 2:
            raise ValueError(f"B must be a scalar, a vector or a matrix, got shape {arr.shape}")
        as_covariance(B if arr.ndim else float(arr), arr.shape[0] if arr.ndim else 1, "B")


def describe_hyperparameter(value):
    """JSON-friendly description of a hyperparameter."""
    if value is None or isinstance(value, (str, bool, numbers.Number)):
        return value
    if isinstance(value, Covariance):
        return f"Covariance({'diagonal' if value.is_diagonal else 'full'}, dim {value.dim})"
    arr = np.asarray(value)
    return f"array of shape {list(arr.shape)}"
