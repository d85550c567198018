"""The model interface shared by every filter: one step of the dynamics."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = ["Model", "RK4Model", "finite_difference_jacobian"]


class Model(ABC):
    """A (possibly nonlinear) discrete-time model ``x_{k+1} = M(x_k, t_k, dt)``.

    Subclasses implement :meth:`step`; they may implement :meth:`jacobian` (the
    tangent-linear model of one step), which the Kalman filter needs and the
    extended Kalman filter uses when present.  ``coordinates`` and ``period``
    place the state components in space for localisation.

    Examples
    --------
    >>> class Decay(Model):  # x' = -x, solved exactly
    ...     ndim, linear = 1, True
    ...     def step(self, x, t, dt):
    ...         return x * np.exp(-dt)
    ...     def jacobian(self, x, t, dt):
    ...         return np.array([[np.exp(-dt)]])
    >>> x, M = Decay().integrate_tlm(np.array([1.0]), 0.0, 0.5, 2)
    >>> x.round(4).tolist(), M.round(4).tolist()
    ([0.3679], [[0.3679]])
    """

    #: State dimension n.
    ndim: int
    #: Whether the step is linear in x (then :meth:`jacobian` is its matrix).
    linear: bool = False

    @abstractmethod
    def step(self, x: np.ndarray, t: float, dt: float) -> np.ndarray:
        """Advance ``x`` (shape (n,) or (N, n)) from time ``t`` by ``dt``."""

    def jacobian(self, x: np.ndarray, t: float, dt: float) -> np.ndarray | None:
        """Jacobian (n, n) of :meth:`step` at ``x`` (n,), or None if unknown."""
        return None

    def integrate(self, x: np.ndarray, t: float, dt: float, nsteps: int) -> np.ndarray:
        """Apply :meth:`step` ``nsteps`` times."""
        for k in range(nsteps):
            x = self.step(x, t + k * dt, dt)
        return x

    def integrate_tlm(self, x: np.ndarray, t: float, dt: float, nsteps: int):
        """State after ``nsteps`` steps and the Jacobian of that map.

        Parameters
        ----------
        x : ndarray (n,)
        t, dt : float
        nsteps : int

        Returns
        -------
        x_new : ndarray (n,)
        M : ndarray (n, n) or None
            ``J_nsteps ... J_1``, the product of the step Jacobians along the
            trajectory; None when the model has no :meth:`jacobian`.
        """
        M = np.eye(x.shape[0])
        for k in range(nsteps):
            J = self.jacobian(x, t + k * dt, dt)
            if J is None:
                return self.integrate(x, t + k * dt, dt, nsteps - k), None
            x, M = self.step(x, t + k * dt, dt), J @ M
        return x, M

    @property
    def coordinates(self) -> np.ndarray:
        """Positions of the state components, shape (n, D); default: their index."""
        return np.arange(self.ndim, dtype=float)[:, None]

    @property
    def period(self) -> np.ndarray:
        """Length of the periodic domain along each coordinate (0: not periodic)."""
        return np.zeros(1)

    def params(self) -> dict:
        """Parameters that identify the model (for run metadata)."""
        return {"name": type(self).__name__, "ndim": self.ndim}


class RK4Model(Model):
    """An autonomous ODE ``dx/dt = f(x)`` integrated by classical Runge-Kutta 4.

    Subclasses give :meth:`tendency` and :meth:`tendency_jacobian`; the exact
    Jacobian of one RK4 step follows by the chain rule through the stages.

    Examples
    --------
    >>> class Relaxation(RK4Model):  # dx/dt = -x
    ...     ndim = 1
    ...     def tendency(self, x):
    ...         return -x
    ...     def tendency_jacobian(self, x):
    ...         return -np.eye(1)
    >>> model = Relaxation()
    >>> model.integrate(np.array([1.0]), 0.0, 0.1, 10).round(5).tolist()  # exp(-1) = 0.36788
    [0.36788]
    >>> model.jacobian(np.array([1.0]), 0.0, 0.1).round(6).tolist()  # exp(-0.1) to O(dt^5)
    [[0.904838]]
    """

    @abstractmethod
    def tendency(self, x: np.ndarray) -> np.ndarray:
        """``f(x)`` for ``x`` of shape (..., n)."""

    @abstractmethod
    def tendency_jacobian(self, x: np.ndarray) -> np.ndarray:
        """``df/dx`` at ``x`` (n,), shape (n, n)."""

    def step(self, x, t, dt):
        f = self.tendency
        k1 = f(x)
        k2 = f(x + 0.5 * dt * k1)
        k3 = f(x + 0.5 * dt * k2)
        k4 = f(x + dt * k3)
        return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    def jacobian(self, x, t, dt):
        f, J = self.tendency, self.tendency_jacobian
        eye = np.eye(x.shape[-1])
        k1 = f(x)
        d1 = J(x)
        x2 = x + 0.5 * dt * k1
        k2 = f(x2)
        d2 = J(x2) @ (eye + 0.5 * dt * d1)
        x3 = x + 0.5 * dt * k2
        k3 = f(x3)
        d3 = J(x3) @ (eye + 0.5 * dt * d2)
        x4 = x + dt * k3
        d4 = J(x4) @ (eye + dt * d3)
        return eye + dt / 6.0 * (d1 + 2.0 * d2 + 2.0 * d3 + d4)


def finite_difference_jacobian(fun, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite-difference Jacobian of ``fun`` at ``x`` (n,), shape (m, n).

    All 2n perturbed points are evaluated as one batch of shape (2n, n), so a
    model that steps an ensemble in one call pays for one call.

    Parameters
    ----------
    fun : callable
        Maps a batch (2n, n) of states to a batch (2n, m) of outputs.
    x : ndarray (n,)
        Where to differentiate.
    eps : float, default 1e-6
        Relative step: component ``i`` moves by ``eps * max(1, |x_i|)``.

    Returns
    -------
    ndarray (m, n)
        The Jacobian.

    Examples
    --------
    >>> finite_difference_jacobian(lambda X: X ** 2, np.array([1.0, 2.0])).round(6).tolist()
    [[2.0, 0.0], [0.0, 4.0]]
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    h = eps * np.maximum(1.0, np.abs(x))
    X = np.concatenate([x + np.diag(h), x - np.diag(h)])  # (2n, n)
    F = np.asarray(fun(X))  # (2n, m)
    return ((F[:n] - F[n:]) / (2.0 * h[:, None])).T
