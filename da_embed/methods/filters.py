"""The data-assimilation methods: the filters and variational solvers of :mod:`filters`.

``3dvar``, ``4dvar`` and ``w4dvar`` get the defaults the LM comparison uses
(a static ``B = P0 I``, Gauss-Newton, 20 iterations); options override them.
"""

from __future__ import annotations

from filters import (EKF, UKF, DEnKF, DiagonalEKF, EnKF, EnSRF, ETKF, StrongConstraint4DVar,
                     Var3D, WeakConstraint4DVar)

from .registry import register, register_unavailable

__all__: list[str] = []


def _background(P0) -> dict:
    """The static background ``xB = P0`` when a prior variance is given."""
    return {} if P0 is None else {"xB": P0}


@register("ekf", "extended Kalman filter with exact per-token gradients (Ollivier 2018); "
          "a diagonal covariance (ekf-diag) above n = 4096", covariance=True)
def _ekf(members, P0, **options):
    return EKF(**options)


@register("ekf-diag", "extended Kalman filter with a diagonal covariance: O(n L^2) per chunk, "
          "any state size (diagonal-Fisher online natural gradient)",
          aliases=("diagekf", "diagonalekf"))
def _ekf_diag(members, P0, **options):
    return DiagonalEKF(**options)


@register("3dvar", "3D-Var with a static background B = P0 I (Gauss-Newton)",
          aliases=("var3d",), covariance=True)
def _var3d(members, P0, **options):
    return Var3D(**{"B": "eye", "maxiter": 20, "gtol": 1e-4, **_background(P0), **options})


def _ensemble(cls, name: str, description: str) -> None:
    """Register the ensemble filter ``cls`` with ``N = members``."""
    register(name, description, ensemble=True)(
        lambda members, P0, **options: cls(N=members, **options))


_ensemble(EnKF, "enkf", "stochastic EnKF (perturbed observations), N = --members")
_ensemble(ETKF, "etkf", "ensemble transform Kalman filter, N = --members")
_ensemble(EnSRF, "ensrf", "serial ensemble square-root filter, N = --members")
_ensemble(DEnKF, "denkf", "deterministic EnKF, N = --members")


@register("ukf", "unscented Kalman filter, 2n + 1 sigma points (use a small state or "
          "--subspace)", covariance=True)
def _ukf(members, P0, **options):
    return UKF(**options)


def _windowed(cls, P0, options):
    """A 4D-Var over the last 4 chunks by default (``window`` option)."""
    return cls(**{"window": 4, "B": "eye", "minimizer": "gauss-newton", "maxiter": 20,
                  "gtol": 1e-4, **_background(P0), **options})


@register("4dvar", "strong-constraint 4D-Var over a sliding window of the last 4 chunks "
          "(Gauss-Newton, exact per-token Jacobians, B = P0 I)",
          aliases=("var4d", "strong4dvar"), covariance=True, windowed=True)
def _var4d(members, P0, **options):
    return _windowed(StrongConstraint4DVar, P0, options)


@register("w4dvar", "weak-constraint 4D-Var over the last 4 chunks, model error Q per chunk",
          aliases=("weak4dvar",), covariance=True, windowed=True)
def _weak_var4d(members, P0, **options):
    return _windowed(WeakConstraint4DVar, P0, options)


register_unavailable(
    "letkf", "the LETKF localises by distance between state components and observations, "
    "but a token's NLL depends on every state component (it has no position in the state "
    "index), so every local analysis would use every token and the LETKF would equal the "
    "ETKF at n times the cost; use etkf")
