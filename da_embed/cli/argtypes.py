"""Argument types of the ``da-embed`` options: argparse ``type=`` callables.

They raise :class:`argparse.ArgumentTypeError`, so argparse prints the usage
line and the message and the command ends with exit status 2.
"""

from __future__ import annotations

import argparse

__all__ = ["positive_int", "number"]


def _parse(text: str, kind, what: str):
    """``kind(text)``, or the usage error "expected WHAT, got TEXT"."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (``--chunk``, ``--members``, ...).

    Parameters
    ----------
    text : str
        The option's value as typed.

    Returns
    -------
    int

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is not an integer or is below 1.

    Examples
    --------
    >>> positive_int("16")
    16
    """
    v = _parse(text, int, "an integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def number(text: str) -> float:
    """A float (``--P0``, ``--Q``, ...); anything else is a usage error.

    Examples
    --------
    >>> number("0.1")
    0.1

    Parameters
    ----------
    text : str

    Returns
    -------
    float
    """
    return _parse(text, float, "a number")
