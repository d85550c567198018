"""The interface every filter shares: initialise, forecast, analyse.

A filter object only stores hyperparameters (keyword-only, validated when the
work starts); the states it passes around are immutable.  Update equations are
pure module functions in the family modules (:mod:`filters.kalman`,
:mod:`filters.ensemble`, :mod:`filters.unscented`).
"""

from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from .covariance import Covariance
from .inflation import Inflation, as_inflations
from .models.base import Model
from .models.observations import ObservationOperator
from .states import EnsembleState, GaussianState

__all__ = ["Filter", "CovarianceJitterWarning", "observed_subset"]


class CovarianceJitterWarning(UserWarning):
    """A covariance was not numerically positive definite and got a jitter.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     L = safe_cholesky(np.ones((2, 2)), name="P")
    >>> caught[0].category.__name__
    'CovarianceJitterWarning'
    """


class Filter(ABC):
    """Base class of all filters.

    Subclasses implement :meth:`initialize`, :meth:`forecast` and
    :meth:`analysis`; :func:`filters.assimilate` cycles them.

    Parameters
    ----------
    inflation : None, float, Inflation or sequence of them, optional
        Applied to every analysis, in order (see :func:`filters.inflation.as_inflations`).

    Examples
    --------
    >>> from filters import ETKF
    >>> f = ETKF(N=10, inflation=1.02)
    >>> isinstance(f, Filter), f.name
    (True, 'ETKF')
    >>> f.params()["inflation"]
    1.02
    """

    #: Short name used in tables and run metadata.
    name: ClassVar[str] = "filter"

    def __init__(self, *, inflation=None):
        self.inflation = inflation

    # -- metadata -----------------------------------------------------------
    def params(self) -> dict:
        """The constructor arguments, JSON-serialisable (for run metadata)."""
        out = {}
        for key in inspect.signature(type(self).__init__).parameters:
            if key == "self":
                continue
            val = getattr(self, key, None)
            if isinstance(val, (list, tuple)):
                val = [v.params() if hasattr(v, "params") else v for v in val]
            elif hasattr(val, "params"):
                val = val.params()
            elif callable(val):
                val = getattr(val, "__name__", repr(val))
            out[key] = val
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def validate(self) -> None:
        """Check hyperparameters; raises ValueError naming the bad one."""
        for inf in self._inflations:
            inf.validate()

    @property
    def _inflations(self) -> tuple[Inflation, ...]:
        return as_inflations(self.inflation)

    # -- the three steps ------------------------------------------------------
    def prepare(self, model: Model, obs: ObservationOperator) -> None:
        """Precompute what depends on the model and observation geometry (default: nothing)."""

    @abstractmethod
    def initialize(self, prior: GaussianState, rng: np.random.Generator):
        """The initial state of the filter from the prior N(mean, cov)."""

    @abstractmethod
    def forecast(self, state, model: Model, t: float, dt: float, nsteps: int,
                 Q: Covariance | None, rng: np.random.Generator):
        """Advance ``state`` by ``nsteps`` model steps of length ``dt`` from time ``t``.

        ``Q`` is the process-noise covariance per unit time (each step adds
        noise of covariance ``dt * Q``, DAPPER's convention), or None.
        """

    @abstractmethod
    def analysis(self, state, y: np.ndarray, obs: ObservationOperator, R: Covariance,
                 rng: np.random.Generator):
        """Update ``state`` with observations ``y`` (m,) of noise covariance ``R``.

        Entries of ``y`` that are NaN are missing and skipped.
        """

    def _post_analysis(self, forecast, analysis, rng):
        """Apply the inflation objects, in order, to the raw analysis."""
        for inf in self._inflations:
            analysis = inf.apply(forecast, analysis, rng)
        return analysis


def observed_subset(y: np.ndarray, R: Covariance):
    """Mask of present (non-NaN) observations, the present values and their R.

    Returns ``(mask or None, y, R)``; ``mask`` is None when nothing is missing,
    so the common case costs one ``isnan`` pass.

    Parameters
    ----------
    y : ndarray of shape (m,)
        Observations; NaN marks a missing one.
    R : Covariance
        Their noise covariance (m, m).

    Returns
    -------
    mask : ndarray of bool of shape (m,) or None
        True where an observation is present; None when all are.
    y : ndarray of shape (k,)
        The present observations.
    R : Covariance
        Their covariance (k, k).

    Examples
    --------
    >>> from filters.covariance import as_covariance
    >>> R = as_covariance([1.0, 2.0, 3.0], 3)
    >>> mask, y, R = observed_subset(np.array([1.0, np.nan, 3.0]), R)
    >>> mask.tolist(), y.tolist(), R.variances.tolist()
    ([True, False, True], [1.0, 3.0], [1.0, 3.0])
    """
    present = ~np.isnan(y)
    if present.all():
        return None, y, R
    idx = np.flatnonzero(present)
    return present, y[idx], R.subset(idx)


def safe_cholesky(C: np.ndarray, name: str = "covariance") -> np.ndarray:
    """Cholesky factor of C; adds a growing jitter (with a warning) if it fails."""
    try:
        return np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        pass
    scale = max(np.trace(C) / C.shape[0], 1e-300)
    for k in range(-12, -2):
        jitter = scale * 10.0 ** k
        try:
            L = np.linalg.cholesky(C + jitter * np.eye(C.shape[0]))
        except np.linalg.LinAlgError:
            continue
        warnings.warn(f"{name} was not positive definite; added a jitter of {jitter:.3g} "
                      "to the diagonal", CovarianceJitterWarning, stacklevel=3)
        return L
    raise np.linalg.LinAlgError(f"{name} is not positive definite even with jitter")


def symmetrize(C: np.ndarray) -> np.ndarray:
    """``(C + C^T) / 2``."""
    return 0.5 * (C + C.T)


# Re-exported for type hints in subclasses.
State = GaussianState | EnsembleState
