"""Benchmark models and observation operators.

Models advance a state (n,) or an ensemble (N, n) by one step; observation
operators map states to observations.
"""

from .base import Model, RK4Model, finite_difference_jacobian
from .linear import LinearGaussian
from .lorenz import Lorenz63, Lorenz96
from .observations import (CallableObservation, Identity, LinearObservation,
                           ObservationOperator, Subset)

__all__ = [
    "Model", "RK4Model", "finite_difference_jacobian",
    "Lorenz63", "Lorenz96", "LinearGaussian",
    "ObservationOperator", "Identity", "Subset", "LinearObservation", "CallableObservation",
]
