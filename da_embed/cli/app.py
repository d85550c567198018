"""The ``da-embed`` parser and entry point: one subcommand per module of :mod:`da_embed.cli`.

Each subcommand module has ``add_parser(sub)`` and ``run(args)``; this module
only builds the parser from them and turns errors into exit statuses.
"""

from __future__ import annotations

import argparse
import sys

from . import claims, compare, generate, plot, spinup, sweep

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: Subcommand name -> its module, in the order of ``da-embed --help``.
SUBCOMMANDS = {"compare": compare, "plot": plot, "generate": generate, "claims": claims,
               "spinup": spinup, "sweep": sweep}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``da-embed --help``, ``da-embed compare --help``).

    Returns
    -------
    argparse.ArgumentParser
        With one subcommand per action (``compare``, ``plot``, ...).

    Examples
    --------
    >>> args = build_parser().parse_args(["compare", "--methods", "frozen,etkf", "--chunk", "16"])
    >>> args.command, args.methods, args.chunk
    ('compare', 'frozen,etkf', 16)
    """
    parser = argparse.ArgumentParser(
        prog="da-embed",
        description="Language-model scale adaptation as data assimilation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``da-embed`` console script.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 success, 2 bad input (argparse's usage errors
        included: they are returned, not raised), 1 an unexpected error
        (one line; ``--debug`` shows the traceback), 130 interrupted.

    Examples
    --------
    >>> main(["compare", "--chunk", "64", "--context", "32"])  # the error goes to stderr
    2
    """
    from ..assimilator import AssimilationDiverged

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0): already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return SUBCOMMANDS[args.command].run(args)
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError, AssimilationDiverged) as exc:
        if args.debug:
            raise
        print(f"da-embed {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line, the traceback with --debug
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"da-embed {args.command}: error: unexpected {type(exc).__name__}: {first} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
