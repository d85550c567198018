"""Lorenz-63 and Lorenz-96, integrated by RK4 (Numba kernels for ensembles)."""

from __future__ import annotations

import numpy as np

from .. import _kernels
from .._validation import check_positive
from .base import RK4Model

__all__ = ["Lorenz63", "Lorenz96", "lorenz96_tendency"]


class Lorenz63(RK4Model):
    """The Lorenz (1963) convection model, ``n = 3``.

    Parameters
    ----------
    sigma, rho, beta : float
        The classical parameters (10, 28, 8/3 give the chaotic attractor).

    Examples
    --------
    >>> m = Lorenz63()
    >>> m.tendency(np.array([1.0, 1.0, 1.0])).round(4).tolist()
    [0.0, 26.0, -1.6667]
    """

    ndim = 3

    def __init__(self, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0):
        self.sigma, self.rho, self.beta = float(sigma), float(rho), float(beta)

    def tendency(self, x):
        if x.ndim == 1 and x.dtype == np.float64:
            # One state (the EKF's Jacobian path): the same arithmetic on plain
            # floats, without the slicing and np.stack that cost ~10x more here.
            x0, x1, x2 = float(x[0]), float(x[1]), float(x[2])
            return np.array([self.sigma * (x1 - x0), x0 * (self.rho - x2) - x1,
                             x0 * x1 - self.beta * x2])
        x0, x1, x2 = x[..., 0], x[..., 1], x[..., 2]
        return np.stack([self.sigma * (x1 - x0), x0 * (self.rho - x2) - x1,
                         x0 * x1 - self.beta * x2], axis=-1)

    def tendency_jacobian(self, x):
        s, r, b = self.sigma, self.rho, self.beta
        return np.array([[-s, s, 0.0], [r - x[2], -1.0, -x[0]], [x[1], x[0], -b]])

    def step(self, x, t, dt):
        return self.integrate(x, t, dt, 1)

    def integrate(self, x, t, dt, nsteps):
        E = np.atleast_2d(np.asarray(x, dtype=float))
        out = _kernels._l63_rk4(np.ascontiguousarray(E), self.sigma, self.rho, self.beta,
                                float(dt), int(nsteps))
        return out[0] if np.ndim(x) == 1 else out

    def integrate_tlm(self, x, t, dt, nsteps):
        p = np.array([self.sigma, self.rho, self.beta])
        return _kernels._lorenz_rk4_tlm(0, np.asarray(x, dtype=float), p, float(dt), int(nsteps))

    def params(self):
        return {"name": "Lorenz63", "ndim": 3, "sigma": self.sigma, "rho": self.rho,
                "beta": self.beta}


def _roll(x, shift):
    return np.roll(x, shift, axis=-1)


def lorenz96_tendency(x, forcing: float, roll=_roll):
    """The Lorenz-96 tendency ``(x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`` on the last axis.

    One definition for the numpy model and its torch twin
    (:class:`~filters.models.torch_models.TorchLorenz96`): both pass their
    array type's periodic shift, so both do the same arithmetic in the same
    order.

    Parameters
    ----------
    x : array_like of shape (..., n)
        States (numpy arrays, or whatever ``roll`` shifts).
    forcing : float
        The constant forcing F.
    roll : callable, optional
        ``roll(x, shift)``, the periodic shift of the last axis (default:
        :func:`numpy.roll`).

    Returns
    -------
    array of shape (..., n)
        ``dx/dt``.

    Examples
    --------
    >>> lorenz96_tendency(np.arange(4.0), 8.0).tolist()
    [5.0, 7.0, 9.0, 3.0]
    """
    return (roll(x, -1) - roll(x, 2)) * roll(x, 1) - x + forcing


class Lorenz96(RK4Model):
    """The Lorenz (1996) model on a periodic ring of ``n`` sites.

    ``dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F``.

    Parameters
    ----------
    n : int
        Number of sites (any n >= 4).
    forcing : float
        The constant forcing F (8 gives chaos).

    Examples
    --------
    >>> m = Lorenz96(n=5)
    >>> m.tendency(np.ones(5)).tolist()
    [7.0, 7.0, 7.0, 7.0, 7.0]
    """

    def __init__(self, n: int = 40, forcing: float = 8.0):
        check_positive(n, "n", integer=True)
        if n < 4:
            raise ValueError(f"n must be >= 4 for Lorenz-96, got {n}")
        self.ndim = int(n)
        self.forcing = float(forcing)

    def tendency(self, x):
        return lorenz96_tendency(x, self.forcing)

    def tendency_jacobian(self, x):
        n = self.ndim
        i = np.arange(n)
        J = np.zeros((n, n))
        J[i, i] = -1.0
        J[i, (i - 2) % n] += -x[(i - 1) % n]
        J[i, (i + 1) % n] += x[(i - 1) % n]
        J[i, (i - 1) % n] += x[(i + 1) % n] - x[(i - 2) % n]
        return J

    def step(self, x, t, dt):
        return self.integrate(x, t, dt, 1)

    def integrate(self, x, t, dt, nsteps):
        E = np.atleast_2d(np.asarray(x, dtype=float))
        out = _kernels._l96_rk4(np.ascontiguousarray(E), self.forcing, float(dt), int(nsteps))
        return out[0] if np.ndim(x) == 1 else out

    def integrate_tlm(self, x, t, dt, nsteps):
        p = np.array([self.forcing])
        return _kernels._lorenz_rk4_tlm(1, np.asarray(x, dtype=float), p, float(dt), int(nsteps))

    @property
    def period(self):
        return np.array([float(self.ndim)])

    def params(self):
        return {"name": "Lorenz96", "ndim": self.ndim, "forcing": self.forcing}
