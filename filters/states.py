"""Immutable filter states: a Gaussian (mean, covariance) or an ensemble."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import as_float_array

__all__ = ["GaussianState", "EnsembleState", "DiagonalGaussianState"]


@dataclass(frozen=True, eq=False)
class GaussianState:
    """A Gaussian belief N(mean, cov) over the state.

    Parameters
    ----------
    mean : ndarray of shape (n,)
    cov : ndarray of shape (n, n)
        Symmetric positive semi-definite.

    Examples
    --------
    >>> s = GaussianState.create([0.0, 1.0], 2.0)
    >>> s.spread.tolist()
    [1.4142135623730951, 1.4142135623730951]
    """

    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def create(cls, mean, cov) -> "GaussianState":
        """Validate and build; ``cov`` may be a scalar, a vector of variances or a matrix.

        Raises
        ------
        ValueError
            If shapes disagree, values are not finite, or ``cov`` is not
            symmetric positive definite.
        """
        mu = as_float_array(mean, "mean", ndim=1)
        n = mu.shape[0]
        C = np.asarray(cov, dtype=float)
        if C.ndim == 0:
            C = np.eye(n) * float(C)
        elif C.ndim == 1:
            C = np.diag(as_float_array(C, "cov", shape=(n,)))
        C = as_float_array(C, "cov", shape=(n, n))
        if not np.allclose(C, C.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(C).max())):
            raise ValueError("cov must be symmetric")
        try:
            np.linalg.cholesky(C)
        except np.linalg.LinAlgError:
            raise ValueError("cov must be positive definite (Cholesky factorisation failed)") from None
        return cls(mu, 0.5 * (C + C.T))

    @property
    def ndim(self) -> int:
        """State dimension n."""
        return self.mean.shape[0]

    @property
    def spread(self) -> np.ndarray:
        """Standard deviation of each component, shape (n,)."""
        return np.sqrt(np.maximum(np.diag(self.cov), 0.0))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` members, shape (size, n)."""
        L = _safe_cholesky(self.cov)
        return self.mean + rng.standard_normal((size, self.ndim)) @ L.T


@dataclass(frozen=True, eq=False)
class EnsembleState:
    """An ensemble of N states, the rows of ``members`` (N, n).

    Parameters
    ----------
    members : ndarray of shape (N, n)
        One state per row.

    Examples
    --------
    >>> e = EnsembleState(np.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> e.mean.tolist(), e.spread.tolist()
    ([1.0, 2.0], [1.4142135623730951, 1.4142135623730951])
    """

    members: np.ndarray

    @property
    def ndim(self) -> int:
        """State dimension n."""
        return self.members.shape[1]

    @property
    def size(self) -> int:
        """Ensemble size N."""
        return self.members.shape[0]

    @property
    def mean(self) -> np.ndarray:
        """Ensemble mean, shape (n,)."""
        return self.members.mean(axis=0)

    @property
    def anomalies(self) -> np.ndarray:
        """Members minus the mean, shape (N, n)."""
        return self.members - self.mean

    @property
    def cov(self) -> np.ndarray:
        """Sample covariance (divisor N - 1), shape (n, n)."""
        A = self.anomalies
        return A.T @ A / (self.size - 1)

    @property
    def spread(self) -> np.ndarray:
        """Sample standard deviation of each component (divisor N - 1), shape (n,)."""
        return self.members.std(axis=0, ddof=1)


@dataclass(frozen=True, eq=False)
class DiagonalGaussianState:
    """A Gaussian belief N(mean, diag(variances)): O(n) memory for any n.

    The state of :class:`filters.DiagonalEKF`.  Correlations between
    components are not represented (they are assumed zero).

    Parameters
    ----------
    mean : ndarray of shape (n,)
    variances : ndarray of shape (n,)
        Non-negative variance of each component.

    Examples
    --------
    >>> s = DiagonalGaussianState(np.zeros(3), np.array([1.0, 4.0, 9.0]))
    >>> s.spread.tolist(), s.cov.shape
    ([1.0, 2.0, 3.0], (3, 3))
    """

    mean: np.ndarray
    variances: np.ndarray

    @property
    def ndim(self) -> int:
        """State dimension n."""
        return self.mean.shape[0]

    @property
    def spread(self) -> np.ndarray:
        """Standard deviation of each component, shape (n,)."""
        return np.sqrt(np.maximum(self.variances, 0.0))

    @property
    def cov(self) -> np.ndarray:
        """The covariance as a dense (n, n) diagonal matrix (O(n^2) memory: small n only)."""
        return np.diag(self.variances)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` members, shape (size, n)."""
        return self.mean + rng.standard_normal((size, self.ndim)) * self.spread


def _safe_cholesky(C: np.ndarray) -> np.ndarray:
    """Cholesky factor; falls back to an eigen square root for semi-definite C."""
    try:
        return np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(0.5 * (C + C.T))
        return V * np.sqrt(np.maximum(w, 0.0))
