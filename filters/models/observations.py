"""Observation operators ``y = H(x) + noise``: identity, a subset, a matrix, any callable."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from .._validation import as_float_array, check_positive
from .base import finite_difference_jacobian

__all__ = ["ObservationOperator", "Identity", "Subset", "LinearObservation",
           "CallableObservation"]


class ObservationOperator(ABC):
    """Maps a state (n,) or an ensemble (N, n) to observations (m,) or (N, m).

    ``site_indices`` (the observed state components, for direct observations)
    or ``locations`` (coordinates, shape (m, D)) tell localisation where each
    observation is.

    Examples
    --------
    >>> class Norm(ObservationOperator):  # the Euclidean norm of a 2-D state
    ...     nobs, ndim = 1, 2
    ...     def __call__(self, x):
    ...         return np.linalg.norm(x, axis=-1, keepdims=True)
    >>> H = Norm()
    >>> H(np.array([3.0, 4.0])).tolist(), H.jacobian(np.array([3.0, 4.0])).round(6).tolist()
    ([5.0], [[0.6, 0.8]])
    """

    #: Number of observations m.
    nobs: int
    #: State dimension n.
    ndim: int
    #: Whether ``H`` is linear (then :meth:`jacobian` is constant).
    linear: bool = False
    #: Observed state components (m,), or None.
    site_indices: np.ndarray | None = None
    #: Observation coordinates (m, D), or None.
    locations: np.ndarray | None = None

    @abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply the operator along the last axis."""

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """Jacobian (m, n) at ``x`` (n,); central finite differences by default."""
        return finite_difference_jacobian(self, x)

    def params(self) -> dict:
        """Parameters that identify the operator (for run metadata)."""
        return {"name": type(self).__name__, "nobs": self.nobs, "ndim": self.ndim}


class Subset(ObservationOperator):
    """Direct observations of the state components ``indices``.

    Parameters
    ----------
    ndim : int
        State dimension n.
    indices : array_like of int (m,)
        The observed components, each in ``[0, n)``.

    Examples
    --------
    >>> H = Subset(4, [0, 2])
    >>> H(np.arange(4.0)).tolist(), H.jacobian(np.zeros(4)).tolist()
    ([0.0, 2.0], [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    """

    linear = True

    def __init__(self, ndim: int, indices):
        check_positive(ndim, "ndim", integer=True)
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a non-empty 1-D array of integers, got {indices!r}")
        if idx.min() < 0 or idx.max() >= ndim:
            raise ValueError(f"indices must lie in [0, {ndim - 1}], got min {idx.min()} max {idx.max()}")
        self.ndim, self.nobs = int(ndim), int(idx.size)
        self.site_indices = idx.astype(np.int64)
        self._H = np.eye(ndim)[self.site_indices]

    def __call__(self, x):
        return x[..., self.site_indices]

    def jacobian(self, x):
        return self._H

    def params(self):
        return {**super().params(), "indices": self.site_indices.tolist()}


class Identity(Subset):
    """Every state component observed directly (``H = I``).

    Parameters
    ----------
    ndim : int
        State dimension n (= number of observations).

    Examples
    --------
    >>> Identity(3)(np.array([1.0, 2.0, 3.0])).tolist()
    [1.0, 2.0, 3.0]
    """

    def __init__(self, ndim: int):
        super().__init__(ndim, np.arange(ndim))

    def __call__(self, x):
        return x

    def params(self):
        return {"name": "Identity", "nobs": self.nobs, "ndim": self.ndim}


class LinearObservation(ObservationOperator):
    """``H(x) = H x`` for a matrix ``H`` (m, n).

    Parameters
    ----------
    H : array_like (m, n)
        The observation matrix.
    locations : array_like of shape (m, D), optional
        Observation coordinates, for localisation.

    Examples
    --------
    >>> LinearObservation([[1.0, 1.0]])(np.array([1.0, 2.0])).tolist()
    [3.0]
    """

    linear = True

    def __init__(self, H, locations=None):
        self.H = as_float_array(H, "H", ndim=2)
        self.nobs, self.ndim = self.H.shape
        if locations is not None:
            self.locations = as_float_array(locations, "locations", ndim=2, shape=(self.nobs, None))

    def __call__(self, x):
        return x @ self.H.T

    def jacobian(self, x):
        return self.H


class CallableObservation(ObservationOperator):
    """Any user function ``fun(x)`` applied along the last axis.

    Parameters
    ----------
    fun : callable
        Takes (n,) or (N, n) and returns (m,) or (N, m).
    ndim, nobs : int
        State and observation dimensions.
    jacobian : callable, optional
        ``jacobian(x) -> (m, n)``; central finite differences otherwise.
    locations : array_like of shape (m, D), optional
        Observation coordinates, for localisation.

    Examples
    --------
    >>> H = CallableObservation(lambda x: x[..., :1] ** 2, ndim=2, nobs=1)
    >>> H.jacobian(np.array([3.0, 0.0])).round(6).tolist()
    [[6.0, 0.0]]
    """

    def __init__(self, fun: Callable[[np.ndarray], np.ndarray], ndim: int, nobs: int,
                 jacobian: Callable[[np.ndarray], np.ndarray] | None = None, locations=None):
        if not callable(fun):
            raise ValueError(f"fun must be callable, got {type(fun).__name__}")
        self.fun, self._jac = fun, jacobian
        self.ndim = check_positive(ndim, "ndim", integer=True)
        self.nobs = check_positive(nobs, "nobs", integer=True)
        if locations is not None:
            self.locations = as_float_array(locations, "locations", shape=(nobs, None))

    def __call__(self, x):
        return np.asarray(self.fun(x), dtype=float)

    def jacobian(self, x):
        if self._jac is not None:
            return np.asarray(self._jac(x), dtype=float)
        return finite_difference_jacobian(self, x)

    def params(self):
        return {**super().params(), "fun": getattr(self.fun, "__name__", repr(self.fun))}
