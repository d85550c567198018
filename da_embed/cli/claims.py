"""``da-embed claims`` (the seeds' claims table): declared by :mod:`da_embed.claims`."""

from __future__ import annotations

from .delegate import delegate

__all__ = ["add_parser", "run"]


def _load():
    from ..claims import add_parser, run_cli  # lazy: when the parser is built or it runs

    return add_parser, run_cli


add_parser, run = delegate("claims", _load)
