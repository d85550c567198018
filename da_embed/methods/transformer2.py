"""The Transformer^2 methods ``t2`` and ``t2-cem`` (:class:`da_embed.transformer2.TwoPass`).

The class is imported when a method is built, not when the registry is
filled, so ``import da_embed.methods`` stays light; it comes from
:mod:`da_embed.transformer2.twopass`, the method half of the package (the
training half, :mod:`da_embed.transformer2.training`, is an experiment).
"""

from __future__ import annotations

from .registry import register

__all__: list[str] = []


def _two_pass(mode: str, options):
    from ..transformer2.twopass import TwoPass

    return TwoPass(mode=mode, **options)


@register("t2", "Transformer^2 two-pass: the expert state (--experts) under which the context "
          "is most likely scores the next chunk", aliases=("transformer2",), expert=True)
def _t2(members, P0, **options):
    return _two_pass("select", options)


@register("t2-cem", "Transformer^2 two-pass: a mix of the expert states, weights by CEM "
          "(population 32) on the context's likelihood", aliases=("transformer2cem",),
          expert=True)
def _t2_cem(members, P0, **options):
    return _two_pass("cem", options)
