"""The baseline methods: ``frozen``, ``dyneval`` and ``verify`` (:mod:`da_embed.baselines`)."""

from __future__ import annotations

from ..baselines import DynamicEvaluation, Frozen, VerificationRule
from .registry import register

__all__: list[str] = []


@register("frozen", "the unmodified model (no adaptation)")
def _frozen(members, P0, **options):
    return Frozen(**options)


@register("dyneval", "dynamic evaluation (Krause et al. 2018): Adam steps on the chunk NLL",
          aliases=("dynamiceval",))
def _dyneval(members, P0, **options):
    return DynamicEvaluation(**options)


@register("verify", "the seeds' verification rule with revealed-token scores (K = --members)",
          aliases=("verification",), ensemble=True)
def _verify(members, P0, **options):
    return VerificationRule(K=members, **options)
