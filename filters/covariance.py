"""Covariance matrices that know their own structure (diagonal or full).

Filters need ``R^{-1/2}`` (whitening), ``R^{1/2}`` (sampling) and ``R`` itself;
with a diagonal ``R`` these cost O(m), with a full one a Cholesky factor is
computed once, here, instead of once per cycle.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from ._validation import as_float_array

__all__ = ["Covariance", "as_covariance"]

#: Refuse a full covariance whose squared Cholesky pivot ratio is below this x m x eps.
_SINGULAR = 100.0


@dataclass(frozen=True, eq=False)
class Covariance:
    """A symmetric positive-definite covariance matrix, diagonal or full.

    Build it with :meth:`diagonal`, :meth:`full` or :func:`as_covariance`
    (which accepts a scalar, a vector of variances or a matrix).

    Parameters
    ----------
    diag : ndarray of shape (m,) or None
        Variances, when the matrix is diagonal.
    matrix : ndarray of shape (m, m) or None
        The full matrix, when it is not.
    chol : ndarray of shape (m, m) or None
        Lower Cholesky factor of ``matrix``.

    Examples
    --------
    >>> R = as_covariance(2.0, 3, name="R")
    >>> R.is_diagonal, R.dim, float(R.logdet)
    (True, 3, 2.0794415416798357)
    >>> R.whiten(np.array([2.0, 2.0, 2.0])).round(4).tolist()
    [1.4142, 1.4142, 1.4142]
    """

    diag: np.ndarray | None = None
    matrix: np.ndarray | None = None
    chol: np.ndarray | None = None

    @classmethod
    def diagonal(cls, variances, name: str = "covariance") -> "Covariance":
        """Diagonal covariance from a vector of strictly positive variances."""
        v = as_float_array(variances, name, ndim=1)
        if np.any(v <= 0):
            raise ValueError(f"{name} must be positive definite: variances must be > 0, "
                             f"got min {v.min():g}")
        return cls(diag=v)

    @classmethod
    def full(cls, matrix, name: str = "covariance") -> "Covariance":
        """Full covariance; checks symmetry and positive definiteness once."""
        C = as_float_array(matrix, name, ndim=2)
        if C.shape[0] != C.shape[1]:
            raise ValueError(f"{name} must be square, got shape {C.shape}")
        scale = max(np.abs(C).max(), 1e-300)
        if not np.allclose(C, C.T, rtol=1e-10, atol=1e-12 * scale):
            raise ValueError(f"{name} must be symmetric")
        C = 0.5 * (C + C.T)
        try:
            L = np.linalg.cholesky(C)
        except np.linalg.LinAlgError:
            raise ValueError(f"{name} must be positive definite (Cholesky factorisation failed)") from None
        d = np.diag(L)
        # Rounding can give a singular matrix tiny positive pivots (all-ones x 1e300 does):
        # a condition number beyond ~1 / (100 m eps) is refused as numerically singular.
        if d.min() ** 2 < _SINGULAR * C.shape[0] * np.finfo(float).eps * d.max() ** 2:
            raise ValueError(f"{name} must be positive definite: it is numerically singular "
                             f"(Cholesky pivots from {d.max():.3g} down to {d.min():.3g})")
        off = C - np.diag(np.diag(C))
        if not off.any():
            return cls(diag=np.diag(C).copy())
        return cls(matrix=C, chol=L)

    # -- properties --------------------------------------------------------
    @property
    def is_diagonal(self) -> bool:
        """Whether the matrix is diagonal."""
        return self.diag is not None

    @property
    def dim(self) -> int:
        """Size ``m`` of the (m, m) matrix."""
        return int(self.diag.shape[0] if self.is_diagonal else self.matrix.shape[0])

    @property
    def dense(self) -> np.ndarray:
        """The matrix as a dense (m, m) array."""
        return np.diag(self.diag) if self.is_diagonal else self.matrix

    @property
    def variances(self) -> np.ndarray:
        """The diagonal, shape (m,)."""
        return self.diag if self.is_diagonal else np.diag(self.matrix)

    @property
    def logdet(self) -> float:
        """Natural log of the determinant."""
        if self.is_diagonal:
            return float(np.sum(np.log(self.diag)))
        return float(2.0 * np.sum(np.log(np.diag(self.chol))))

    # -- operations (last axis is the m axis) --------------------------------
    def whiten(self, X: np.ndarray) -> np.ndarray:
        """Apply ``L^{-1}`` along the last axis (``L L^T = C``); shape kept."""
        if self.is_diagonal:
            return X / np.sqrt(self.diag)
        return sla.solve_triangular(self.chol, X.T, lower=True, check_finite=False).T

    def sqrt_apply(self, Z: np.ndarray) -> np.ndarray:
        """Apply ``L`` along the last axis: turns white noise into N(0, C) noise."""
        if self.is_diagonal:
            return Z * np.sqrt(self.diag)
        return Z @ self.chol.T

    def solve(self, X: np.ndarray) -> np.ndarray:
        """``C^{-1} X`` along the first axis of X (X of shape (m,) or (m, k))."""
        if self.is_diagonal:
            return X / (self.diag if X.ndim == 1 else self.diag[:, None])
        return sla.cho_solve((self.chol, True), X, check_finite=False)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` samples of N(0, C), shape (size, m)."""
        return self.sqrt_apply(rng.standard_normal((size, self.dim)))

    def subset(self, idx: np.ndarray) -> "Covariance":
        """The covariance of the components ``idx`` (rows and columns)."""
        if self.is_diagonal:
            return Covariance(diag=self.diag[idx])
        return Covariance.full(self.matrix[np.ix_(idx, idx)])

    def __add__(self, other: "Covariance") -> "Covariance":
        if self.is_diagonal and other.is_diagonal:
            return Covariance(diag=self.diag + other.diag)
        return Covariance.full(self.dense + other.dense)

    def scaled(self, factor: float) -> "Covariance":
        """The covariance times a positive scalar."""
        if self.is_diagonal:
            return Covariance(diag=self.diag * factor)
        return Covariance(matrix=self.matrix * factor, chol=self.chol * np.sqrt(factor))


def as_covariance(C, dim: int, name: str = "covariance") -> Covariance:
    """Turn a scalar, a vector of variances, a matrix or a Covariance into a Covariance.

    Parameters
    ----------
    C : float, array_like of shape (dim,) or (dim, dim), or Covariance
        A scalar means ``C * I``; a vector the diagonal; a matrix the full covariance.
    dim : int
        The expected size.
    name : str
        Used in error messages (e.g. ``"R"``).

    Returns
    -------
    Covariance

    Raises
    ------
    ValueError
        If the size is wrong or the matrix is not symmetric positive definite.

    Examples
    --------
    >>> as_covariance([1.0, 4.0], 2, name="R").variances.tolist()
    [1.0, 4.0]
    >>> R = as_covariance(np.array([[2.0, 1.0], [1.0, 2.0]]), 2, name="R")
    >>> R.is_diagonal, round(R.logdet, 4)
    (False, 1.0986)
    """
    if isinstance(C, Covariance):
        cov = C
    elif isinstance(C, numbers.Real) and not isinstance(C, bool):
        cov = Covariance.diagonal(np.full(dim, float(C)), name)
    else:
        arr = np.asarray(C, dtype=float)
        if arr.ndim == 0:
            cov = Covariance.diagonal(np.full(dim, float(arr)), name)
        elif arr.ndim == 1:
            cov = Covariance.diagonal(arr, name)
        elif arr.ndim == 2:
            cov = Covariance.full(arr, name)
        else:
            raise ValueError(f"{name} must be a scalar, a vector or a matrix, got shape {arr.shape}")
    if cov.dim != dim:
        raise ValueError(f"{name} must be of size {dim}, got {cov.dim}")
    return cov
