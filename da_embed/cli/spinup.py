"""``da-embed spinup`` (learned dynamics and Q by 4D-Var): declared by :mod:`da_embed.spinup`."""

from __future__ import annotations

from .delegate import delegate

__all__ = ["add_parser", "run"]


def _load():
    from ..spinup import add_parser, run_cli  # lazy: when the parser is built or it runs

    return add_parser, run_cli


add_parser, run = delegate("spinup", _load)
