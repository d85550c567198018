"""Subcommands defined by an experiment module's own ``add_parser`` and ``run_cli``.

``da-embed generate``, ``claims`` and ``spinup`` are declared next to the code
they run (:mod:`da_embed.generate`, :mod:`da_embed.claims`,
:mod:`da_embed.spinup`); the CLI modules of the same name only forward to
those two names.  The module is imported when the parser is built or the
command runs, not when :mod:`da_embed.cli` is imported.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["delegate"]

_ADD_DOC = """Add ``da-embed {name}``: :func:`da_embed.{name}.add_parser` ``(sub)``.

Parameters
----------
sub : argparse._SubParsersAction

Examples
--------
>>> callable(add_parser)
True
"""

_RUN_DOC = """Run ``da-embed {name}`` (:func:`da_embed.{name}.run_cli`).

Parameters
----------
args : argparse.Namespace
    The options of :func:`add_parser`.

Returns
-------
int
    Exit status.

Examples
--------
>>> callable(run)
True
"""


def delegate(name: str, load: Callable[[], tuple[Callable, Callable]]
             ) -> tuple[Callable, Callable]:
    """``(add_parser, run)`` forwarding to ``da_embed.<name>.add_parser`` / ``run_cli``.

    Parameters
    ----------
    name : str
        The experiment module (``"generate"``, ``"claims"``, ``"spinup"``), for the docstrings.
    load : callable
        Imports that module's ``add_parser`` and ``run_cli`` and returns them (called
        at each use: the import stays lazy).

    Returns
    -------
    add_parser : callable
        ``add_parser(sub)``.
    run : callable
        ``run(args) -> int``.

    Examples
    --------
    >>> import argparse
    >>> from da_embed.spinup import add_parser as add, run_cli
    >>> add_parser, run = delegate("spinup", lambda: (add, run_cli))
    >>> parser = argparse.ArgumentParser()
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["spinup"]).command
    'spinup'
    """
    def add_parser(sub) -> None:
        load()[0](sub)

    def run(args) -> int:
        return load()[1](args)

    add_parser.__doc__, run.__doc__ = _ADD_DOC.format(name=name), _RUN_DOC.format(name=name)
    return add_parser, run
