"""``da-embed claims`` (the seeds' claims table): declared by :mod:`da_embed.claims`."""

from __future__ import annotations

from .delegate import delegate

__all__ = ["add_parser", "run"]

add_parser, run = delegate("claims")
