"""Checks of numeric arguments shared across da_embed, each raising one clear ValueError.

The message names the parameter and what was expected, so bad input never
surfaces as a deep traceback.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_int", "check_positive"]


def check_int(value, name: str, minimum: int) -> int:
    """``value`` as an int, or a ValueError naming ``name`` and the bound.

    Parameters
    ----------
    value : object
        The value to check (bools are rejected).
    name : str
        The parameter's name, for the message.
    minimum : int
        The smallest value allowed.

    Returns
    -------
    int

    Examples
    --------
    >>> check_int(3, "chunk", 1)
    3
    >>> check_int(0, "chunk", 1)
    Traceback (most recent call last):
    ...
    ValueError: chunk must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value, name: str) -> float:
    """A learning rate, a spread or another scale: ``value`` as a float, if finite and > 0.

    Parameters
    ----------
    value : object
        A real number (not a bool).
    name : str
        How the ValueError calls it.

    Returns
    -------
    float
        ``float(value)``.

    Examples
    --------
    >>> check_positive(0.5, "lr")
    0.5
    >>> check_positive(0, "lr")
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number > 0, got 0
    """
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value)
                                       and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
