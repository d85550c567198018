"""Placement names (``--placement``) and the registry that builds them.

Each placement registers one line: its name, whether it takes ``:options``
and how it is built from the model and the option text.  Adding a placement
is one new module under :mod:`da_embed.placements`, one :func:`register`
line here and one test (see the architecture page of the documentation).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from .base import Placement
from .embedding import EmbeddingScale
from .hidden import HiddenScale
from .rotary import RotaryScale
from .singular import SingularValueScale

__all__ = ["PLACEMENTS", "make_placement", "register"]


class _Entry(NamedTuple):
    build: Callable[[object, str], Placement]
    options: str | None


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, build: Callable[[object, str], Placement], *,
             options: str | None = None) -> None:
    """Register a placement under a ``--placement`` name.

    Parameters
    ----------
    name : str
        The lower-case name (``svf``).
    build : callable
        ``build(model, option_text) -> Placement``; ``option_text`` is what
        follows ``:`` (empty when absent).
    options : str, optional
        What the text after ``:`` means (``"targets"`` for ``svf:mlp``), shown
        in messages; None when the name takes no options (then a name given
        options is rejected).

    Examples
    --------
    >>> "hidden" in PLACEMENTS
    True
    """
    global PLACEMENTS
    _REGISTRY[str(name).lower()] = _Entry(build, options)
    PLACEMENTS = tuple(_REGISTRY)


def make_placement(model, spec) -> Placement:
    """A placement from a name: ``hidden``, ``embedding``, ``svf[:targets]``, ``rotary[:mode]``.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The frozen causal LM.
    spec : str or Placement
        A name of :data:`PLACEMENTS` with its options (``svf:mlp``,
        ``rotary:base``), or a placement, returned as it is.

    Returns
    -------
    Placement
        Not attached yet.

    Raises
    ------
    ValueError
        For an unknown name.

    Examples
    --------
    >>> from da_embed.testing import tiny_llama
    >>> make_placement(tiny_llama(), "rotary:base").state_dim
    1
    """
    if isinstance(spec, Placement):
        return spec
    name, _, opt = str(spec).strip().partition(":")
    entry = _REGISTRY.get(name.lower())
    if entry is None or (opt and not entry.options):
        names = ", ".join(key if e.options is None else f"{key}[:{e.options}]"
                          for key, e in _REGISTRY.items())
        raise ValueError(f"placement must be one of {names}, got {spec!r}")
    return entry.build(model, opt)


#: Placement names of ``--placement`` (``svf`` and ``rotary`` take ``:options``).
PLACEMENTS: tuple[str, ...] = ()

register("hidden", lambda model, opt: HiddenScale(model))
register("embedding", lambda model, opt: EmbeddingScale(model))
register("svf", lambda model, opt: SingularValueScale(model, targets=opt or "mlp"),
         options="targets")
register("rotary", lambda model, opt: RotaryScale(model, mode=opt or "frequency"),
         options="mode")
