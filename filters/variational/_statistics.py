"""Static statistics for the variational filters: climatology and maximum-likelihood Q.

:func:`climatology` gives the climatological B of 3D-Var and 4D-Var (DAPPER's
default background covariance); :func:`ml_diagonal_Q` the EM update of a
diagonal model-error covariance that :func:`~filters.variational.estimate_Q`
iterates.
"""

from __future__ import annotations

import hashlib
import pickle

import numpy as np

from .._validation import as_float_array, check_positive
from ..covariance import as_covariance
from ..states import GaussianState

__all__ = ["climatology", "ml_diagonal_Q"]


def ml_diagonal_Q(model_errors, variances=None, dt: float = 1.0) -> np.ndarray:
    """Maximum-likelihood (EM M-step) diagonal model-error covariance per unit time.

    With per-step model errors ``eta_j`` ~ N(0, dt Q), the M-step of the EM
    algorithm sets ``dt Q_i = mean_j (E[eta_{j,i}]^2 + Var[eta_{j,i}])``.  The
    MAP (4D-Var) estimates alone shrink towards zero, so their mean square
    underestimates Q; adding the posterior variances (from the Gauss-Newton
    Hessian of the weak-constraint cost) removes that bias.

    Parameters
    ----------
    model_errors : array_like (K, n)
        Estimates ``E[eta_j]`` of the model error of each model step.
    variances : array_like (K, n), optional
        Their posterior variances (0 if omitted: the biased MAP estimate).
    dt : float
        Model time step.

    Returns
    -------
    ndarray (n,)
        The diagonal of Q (per unit time).

    Examples
    --------
    >>> eta, var = [[0.1, 0.2], [-0.1, 0.0]], [[0.01, 0.01], [0.01, 0.01]]
    >>> ml_diagonal_Q(eta, var, dt=0.5).round(6).tolist()
    [0.04, 0.06]
    """
    E = as_float_array(model_errors, "model_errors", ndim=2)
    V = np.zeros_like(E) if variances is None else as_float_array(variances, "variances",
                                                                   shape=E.shape)
    if np.any(V < 0):
        raise ValueError("variances must be >= 0")
    check_positive(dt, "dt")
    if E.shape[0] == 0:
        raise ValueError("model_errors must hold at least one step")
    return np.mean(E * E + V, axis=0) / dt


# ----------------------------------------------------------------------------
# Climatology
# ----------------------------------------------------------------------------
_CLIMATOLOGY_CACHE: dict = {}


def climatology(model, dt: float | None = None, *, Q=None, x0=None, n_samples: int = 5000,
                interval: int = 5, spinup: int = 2000, seed: int = 0) -> GaussianState:
    """Climatological mean and covariance of a model from a long free run (cached).

    The free run starts at ``x0`` (plus a small seeded perturbation), discards
    ``spinup`` steps and keeps every ``interval``-th state, ``n_samples`` in all.
    With a model-noise covariance ``Q`` the run is stochastic (each step adds
    ``sqrt(dt) N(0, Q)``).  DAPPER's ``Var3D``/``Var4D`` use this covariance,
    scaled by ``xB``, as their static background covariance B.  Results are
    cached in memory per (model, arguments).

    Parameters
    ----------
    model : Model or Setting
        With a :class:`~filters.Setting`, its model, ``dt``, ``Q`` and prior
        mean are the defaults.
    dt : float
        Model time step (required with a bare model).
    Q : Covariance or array_like, optional
        Model-noise covariance per unit time.
    x0 : array_like (n,), optional
        Start of the run (default: the setting's prior mean, else zeros).
    n_samples, interval, spinup : int
        Length of the sample, steps between samples, steps discarded.
    seed : int
        Seeds the perturbation of ``x0`` and the model noise.

    Returns
    -------
    GaussianState
        Sample mean (n,) and covariance (n, n).

    Raises
    ------
    ValueError
        If the covariance is not positive definite (e.g. a stable linear
        model without noise collapses to a point): pass B explicitly then.

    Examples
    --------
    >>> from filters.models import Lorenz96
    >>> c = climatology(Lorenz96(n=10), dt=0.05, n_samples=500)
    >>> bool(10.0 < c.cov.trace() / 10 < 16.0)
    True
    """
    from ..settings import Setting

    if isinstance(model, Setting):
        s = model
        model, dt = s.model, s.dt if dt is None else dt
        Q = s.Q if Q is None else Q
        x0 = s.prior.mean if x0 is None else x0
    if dt is None:
        raise ValueError("dt is required when model is not a Setting")
    check_positive(dt, "dt")
    for name, v in (("n_samples", n_samples), ("interval", interval)):
        check_positive(v, name, integer=True)
    check_positive(spinup, "spinup", strict=False, integer=True)
    n = model.ndim
    x0 = np.zeros(n) if x0 is None else as_float_array(x0, "x0", shape=(n,))
    Qc = None if Q is None else as_covariance(Q, n, "Q")
    key = _cache_key(model, dt, Qc, x0, n_samples, interval, spinup, seed)
    if key is not None and key in _CLIMATOLOGY_CACHE:
        return _CLIMATOLOGY_CACHE[key]
    rng = np.random.default_rng(seed)
    x = x0 + 1e-3 * rng.standard_normal(n)
    samples = np.empty((n_samples, n))
    t = 0.0

    def advance(x, t, k):
        if Qc is None:
            return model.integrate(x, t, dt, k)
        for j in range(k):
            x = model.step(x, t + j * dt, dt) + np.sqrt(dt) * Qc.sample(rng, 1)[0]
        return x

    with np.errstate(over="raise", invalid="raise"):
        try:
            x = advance(x, t, spinup)
            t += spinup * dt
            for i in range(n_samples):
                x = advance(x, t, interval)
                t += interval * dt
                samples[i] = x
        except FloatingPointError as exc:
            raise ValueError(f"the free run of {type(model).__name__} for the climatology "
                             "overflowed; pass B explicitly") from exc
    mean = samples.mean(axis=0)
    cov = np.atleast_2d(np.cov(samples, rowvar=False))
    try:
        out = GaussianState.create(mean, cov)
    except ValueError:
        raise ValueError(
            f"the climatological covariance of {type(model).__name__} is not positive definite "
            "(the free run collapsed onto a point or a subspace); pass B explicitly") from None
    if key is not None:
        _CLIMATOLOGY_CACHE[key] = out
    return out


def _cache_key(model, *args):
    try:
        blob = pickle.dumps((type(model).__qualname__, model.__dict__, args[0],
                             None if args[1] is None else args[1].dense, *args[2:]))
    except Exception:  # unpicklable model (e.g. a lambda inside): no caching
        return None
    return hashlib.sha256(blob).hexdigest()
