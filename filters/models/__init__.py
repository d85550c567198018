"""Benchmark models and observation operators.

Models advance a state (n,) or an ensemble (N, n) by one step; observation
operators map states to observations.  The torch twins used by 4D-Var
(:mod:`filters.models.torch_models`) are imported on first use, so importing
this package does not import torch.
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
    # torch twins (lazy: importing them imports torch)
    "TorchModel", "TorchLorenz63", "TorchLorenz96", "TorchLinearGaussian", "TorchCallableModel",
    "TorchObservation", "as_torch_model", "as_torch_observation",
]

_TORCH_NAMES = frozenset(__all__[__all__.index("TorchModel"):])


def __getattr__(name):
    if name in _TORCH_NAMES:
        from . import torch_models

        return getattr(torch_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
