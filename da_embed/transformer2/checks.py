"""Checks of the numeric options shared by the Transformer^2 modules."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_positive"]


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
