"""``da-embed generate`` (candidates as pseudo-observations).

Declared by :mod:`da_embed.generate`.
"""

from __future__ import annotations

from .delegate import delegate

__all__ = ["add_parser", "run"]


def _load():
    from ..generate import add_parser, run_cli  # lazy: when the parser is built or it runs

    return add_parser, run_cli


add_parser, run = delegate("generate", _load)
