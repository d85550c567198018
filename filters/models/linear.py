"""A linear model ``x_{k+1} = M x_k`` (with Gaussian noise added by the setting)."""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array
from .base import Model

__all__ = ["LinearGaussian"]


class LinearGaussian(Model):
    """The linear model ``x_{k+1} = M x_k``, the exact-Kalman reference.

    Process noise is not part of the model: the setting's ``Q`` adds it, so the
    same model serves every filter.  ``dt`` is ignored (one step is one ``M``).

    Parameters
    ----------
    M : array_like of shape (n, n)

    Examples
    --------
    >>> m = LinearGaussian([[1.0, 0.1], [0.0, 1.0]])
    >>> m.step(np.array([1.0, 2.0]), 0.0, 1.0).tolist()
    [1.2, 2.0]
    """

    linear = True

    def __init__(self, M):
        self.M = as_float_array(M, "M", ndim=2)
        if self.M.shape[0] != self.M.shape[1]:
            raise ValueError(f"M must be square, got shape {self.M.shape}")
        self.ndim = self.M.shape[0]

    def step(self, x, t, dt):
        return x @ self.M.T

    def jacobian(self, x, t, dt):
        return self.M

    def params(self):
        return {"name": "LinearGaussian", "ndim": self.ndim}
