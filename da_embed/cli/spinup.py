"""``da-embed spinup`` (learned dynamics and Q by 4D-Var): declared by :mod:`da_embed.spinup`."""

from __future__ import annotations

from .delegate import delegate

__all__ = ["add_parser", "run"]

add_parser, run = delegate("spinup")
