"""Torch twins of the benchmark models and observation operators (for 4D-Var).

4D-Var gets the gradient of its cost (the adjoint model) from torch autograd,
so it needs the model step and the observation operator as torch callables.
Each class here *is* its numpy model (a subclass: same parameters, the same
Numba ``step`` for the other filters) and adds ``torch_step``, written with the
same arithmetic in the same order (the RK4 stages and the tendencies of
:mod:`filters._kernels`), so both give the same numbers to rounding;
``tests/test_variational.py`` proves the tendencies, steps and Jacobians agree
to 1e-12.

This module imports torch; :mod:`filters` does not import it (the names are
reached lazily through :mod:`filters.models`).

Examples
--------
>>> import torch
>>> m = TorchLorenz96(n=5)
>>> m.torch_tendency(torch.ones(5, dtype=torch.float64)).tolist()
[7.0, 7.0, 7.0, 7.0, 7.0]
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .base import Model
from .linear import LinearGaussian
from .lorenz import Lorenz63, Lorenz96, lorenz96_tendency
from .observations import (CallableObservation, Identity, LinearObservation,
                           ObservationOperator, Subset)

__all__ = ["TorchModel", "TorchLorenz63", "TorchLorenz96", "TorchLinearGaussian",
           "TorchCallableModel", "TorchObservation", "as_torch_model", "as_torch_observation",
           "rk4_step"]

DTYPE = torch.float64


def rk4_step(f: Callable, x, dt: float):
    """One classical Runge-Kutta 4 step of ``dx/dt = f(x)``, for numpy or torch arrays.

    The stages are written in the same order as :meth:`filters.models.RK4Model.step`
    and the Numba kernels, so the rounding is the same.

    Parameters
    ----------
    f : callable
        The tendency ``f(x)``.
    x : ndarray or torch.Tensor
        The state.
    dt : float
        The time step.

    Returns
    -------
    ndarray or torch.Tensor
        The state one step later, of the type of ``x``.

    Examples
    --------
    >>> float(rk4_step(lambda x: -x, torch.tensor(1.0, dtype=torch.float64), 0.1))
    0.9048375
    """
    k1 = f(x)
    k2 = f(x + 0.5 * dt * k1)
    k3 = f(x + 0.5 * dt * k2)
    k4 = f(x + dt * k3)
    return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


class TorchModel(Model):
    """A model that can also step torch tensors (float64), differentiably.

    Subclasses implement :meth:`torch_step`; :meth:`step` (numpy) defaults to
    running it without gradient.

    Examples
    --------
    >>> class Doubling(TorchModel):  # x_{k+1} = 2 x_k
    ...     ndim = 1
    ...     def torch_step(self, x, t, dt):
    ...         return 2.0 * x
    >>> m = Doubling()
    >>> m.step(np.array([1.5]), 0.0, 1.0).tolist()
    [3.0]
    >>> m.torch_integrate(torch.ones(1, dtype=DTYPE), 0.0, 1.0, 3).tolist()
    [8.0]
    """

    def torch_step(self, x: torch.Tensor, t: float, dt: float) -> torch.Tensor:
        """Advance ``x`` (shape (n,) or (N, n)) by one step ``dt`` from time ``t``."""
        raise NotImplementedError

    def torch_integrate(self, x: torch.Tensor, t: float, dt: float, nsteps: int) -> torch.Tensor:
        """Apply :meth:`torch_step` ``nsteps`` times."""
        for k in range(nsteps):
            x = self.torch_step(x, t + k * dt, dt)
        return x

    def step(self, x, t, dt):
        with torch.no_grad():
            return self.torch_step(torch.as_tensor(np.asarray(x, dtype=float)), t, dt).numpy()


class TorchLorenz63(Lorenz63, TorchModel):
    """:class:`~filters.models.Lorenz63` with a torch step (same parameters).

    Parameters
    ----------
    sigma, rho, beta
        As in :class:`~filters.models.Lorenz63`.

    Examples
    --------
    >>> m = TorchLorenz63()
    >>> m.torch_tendency(torch.ones(3, dtype=torch.float64)).round(decimals=4).tolist()
    [0.0, 26.0, -1.6667]
    """

    def torch_tendency(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` for ``x`` of shape (..., 3)."""
        x0, x1, x2 = x[..., 0], x[..., 1], x[..., 2]
        return torch.stack([self.sigma * (x1 - x0), x0 * (self.rho - x2) - x1,
                            x0 * x1 - self.beta * x2], dim=-1)

    def torch_step(self, x, t, dt):
        return rk4_step(self.torch_tendency, x, dt)

    step = Lorenz63.step  # the Numba kernel for the numpy side
    integrate = Lorenz63.integrate


def _torch_roll(x: torch.Tensor, shift: int) -> torch.Tensor:
    return torch.roll(x, shift, dims=-1)


class TorchLorenz96(Lorenz96, TorchModel):
    """:class:`~filters.models.Lorenz96` with a torch step (same parameters).

    Parameters
    ----------
    n, forcing
        As in :class:`~filters.models.Lorenz96`.

    Examples
    --------
    >>> m = TorchLorenz96(n=4)
    >>> x = torch.arange(4.0, dtype=torch.float64)
    >>> m.torch_tendency(x).tolist() == m.tendency(x.numpy()).tolist()
    True
    """

    def torch_tendency(self, x: torch.Tensor) -> torch.Tensor:
        """``(x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`` for ``x`` of shape (..., n)."""
        return lorenz96_tendency(x, self.forcing, _torch_roll)

    def torch_step(self, x, t, dt):
        return rk4_step(self.torch_tendency, x, dt)

    step = Lorenz96.step
    integrate = Lorenz96.integrate


class TorchLinearGaussian(LinearGaussian, TorchModel):
    """:class:`~filters.models.LinearGaussian` with a torch step ``x M^T``.

    Parameters
    ----------
    M : array_like of shape (n, n)
        The transition matrix.

    Examples
    --------
    >>> m = TorchLinearGaussian([[1.0, 0.1], [0.0, 1.0]])
    >>> m.torch_step(torch.tensor([1.0, 2.0], dtype=torch.float64), 0.0, 1.0).tolist()
    [1.2, 2.0]
    """

    def __init__(self, M):
        super().__init__(M)
        self._Mt = torch.as_tensor(self.M.T.copy(), dtype=DTYPE)  # (n, n)

    def torch_step(self, x, t, dt):
        return x @ self._Mt

    step = LinearGaussian.step


class TorchCallableModel(TorchModel):
    """Any differentiable torch function ``step(x, t, dt)`` as a model.

    Parameters
    ----------
    step : callable
        Maps a float64 tensor (n,) or (N, n), a time and a time step to the
        next state, with torch operations (autograd differentiates it).
    ndim : int
        State dimension n.
    jacobian : callable, optional
        ``jacobian(x, t, dt) -> (n, n)`` numpy tangent-linear model of one step;
        by default torch autograd gives it.

    Examples
    --------
    >>> m = TorchCallableModel(lambda x, t, dt: x + dt * torch.sin(x), ndim=2)
    >>> m.step(np.zeros(2), 0.0, 0.1).tolist()
    [0.0, 0.0]
    >>> m.jacobian(np.zeros(2), 0.0, 0.1).round(3).tolist()
    [[1.1, 0.0], [0.0, 1.1]]
    """

    def __init__(self, step: Callable, ndim: int, jacobian: Callable | None = None):
        if not callable(step):
            raise ValueError(f"step must be callable, got {type(step).__name__}")
        self._fun, self._jac, self.ndim = step, jacobian, int(ndim)

    def torch_step(self, x, t, dt):
        return self._fun(x, t, dt)

    def jacobian(self, x, t, dt):
        if self._jac is not None:
            return np.asarray(self._jac(x, t, dt), dtype=float)
        x0 = torch.as_tensor(np.asarray(x, dtype=float))
        J = torch.autograd.functional.jacobian(lambda z: self._fun(z, t, dt), x0)
        return J.detach().numpy()

    def params(self):
        return {"name": "TorchCallableModel", "ndim": self.ndim,
                "step": getattr(self._fun, "__name__", repr(self._fun))}


class TorchObservation(ObservationOperator):
    """An observation operator given as a differentiable torch function.

    Parameters
    ----------
    fun : callable
        Maps a float64 tensor (..., n) to (..., m) with torch operations.
    ndim, nobs : int
        State and observation dimensions.

    Examples
    --------
    >>> H = TorchObservation(lambda x: x[..., :1] ** 2, ndim=2, nobs=1)
    >>> H(np.array([3.0, 1.0])).tolist(), H.jacobian(np.array([3.0, 1.0])).tolist()
    ([9.0], [[6.0, 0.0]])
    """

    def __init__(self, fun: Callable, ndim: int, nobs: int):
        if not callable(fun):
            raise ValueError(f"fun must be callable, got {type(fun).__name__}")
        self.fun, self.ndim, self.nobs = fun, int(ndim), int(nobs)

    def torch_call(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator to a tensor (..., n)."""
        return self.fun(x)

    def __call__(self, x):
        with torch.no_grad():
            return self.fun(torch.as_tensor(np.asarray(x, dtype=float))).numpy()

    def jacobian(self, x):
        x0 = torch.as_tensor(np.asarray(x, dtype=float))
        return torch.autograd.functional.jacobian(self.fun, x0).detach().numpy()

    def params(self):
        return {**super().params(), "fun": getattr(self.fun, "__name__", repr(self.fun))}


def as_torch_model(model: Model) -> TorchModel:
    """The torch twin of a model (the model itself when it already steps tensors).

    Parameters
    ----------
    model : Model
        A :class:`TorchModel`, or one of :class:`~filters.models.Lorenz63`,
        :class:`~filters.models.Lorenz96`, :class:`~filters.models.LinearGaussian`.

    Returns
    -------
    TorchModel

    Raises
    ------
    ValueError
        If no torch version of ``model`` is known.

    Examples
    --------
    >>> from filters.models import Lorenz96
    >>> type(as_torch_model(Lorenz96(n=8))).__name__
    'TorchLorenz96'
    """
    if isinstance(model, TorchModel):
        return model
    if type(model) is Lorenz96:
        return TorchLorenz96(n=model.ndim, forcing=model.forcing)
    if type(model) is Lorenz63:
        return TorchLorenz63(sigma=model.sigma, rho=model.rho, beta=model.beta)
    if type(model) is LinearGaussian:
        return TorchLinearGaussian(model.M)
    raise ValueError(
        f"model {type(model).__name__} has no torch version; 4D-Var needs the model step as a "
        "differentiable torch function: wrap it in filters.models.TorchCallableModel or subclass "
        "filters.models.TorchModel")


def as_torch_observation(obs: ObservationOperator) -> Callable[[torch.Tensor], torch.Tensor]:
    """The observation operator as a torch function of a tensor (..., n).

    Identity, subsets and matrices are translated; :class:`TorchObservation`
    (or any operator with a ``torch_call`` method) is used as it is; a
    :class:`~filters.models.CallableObservation` is assumed to be written with
    operations that torch tensors support (its function is called on tensors).

    Parameters
    ----------
    obs : ObservationOperator
        Any operator of :mod:`filters.models`, or one with a ``torch_call`` method.

    Returns
    -------
    callable
        Maps a float64 tensor (..., n) to (..., m), differentiably.

    Raises
    ------
    ValueError
        If the operator has no torch version.

    Examples
    --------
    >>> from filters.models import Subset
    >>> h = as_torch_observation(Subset(3, [0, 2]))
    >>> h(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).tolist()
    [1.0, 3.0]
    """
    if hasattr(obs, "torch_call"):
        return obs.torch_call
    if isinstance(obs, Identity):
        return lambda x: x
    if isinstance(obs, Subset):
        idx = torch.as_tensor(obs.site_indices)
        return lambda x: x[..., idx]
    if isinstance(obs, LinearObservation):
        Ht = torch.as_tensor(obs.H.T.copy(), dtype=DTYPE)  # (n, m)
        return lambda x: x @ Ht
    if isinstance(obs, CallableObservation):
        return obs.fun
    raise ValueError(
        f"observation operator {type(obs).__name__} has no torch version; 4D-Var needs it as a "
        "differentiable torch function: use filters.models.TorchObservation")
