"""``da-embed generate`` (candidates as pseudo-observations).

Declared by :mod:`da_embed.generate`.
"""

from __future__ import annotations

from .delegate import delegate

__all__ = ["add_parser", "run"]

add_parser, run = delegate("generate")
