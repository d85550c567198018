"""Transformer^2 baseline: per-domain SVF expert vectors and two-pass adaptation.

The method and its design are described in :mod:`da_embed.transformer2.twopass`.
Modules: :mod:`~da_embed.transformer2.experts` (:class:`Experts`,
:func:`load_experts`), :mod:`~da_embed.transformer2.cem` (pass 1:
:func:`context_nll`, :func:`cem_weights`), :mod:`~da_embed.transformer2.twopass`
(:class:`TwoPass`, the filter-interface method) and
:mod:`~da_embed.transformer2.training` (:func:`train_experts`).
"""

from .cem import CEMResult, cem_weights, context_nll
from .experts import Experts, load_experts
from .training import train_experts
from .twopass import TwoPass

__all__ = ["Experts", "train_experts", "load_experts", "TwoPass", "CEMResult", "cem_weights",
           "context_nll"]
