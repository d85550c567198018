"""Small validators whose errors name the bad parameter (private)."""

from __future__ import annotations

import numbers

import numpy as np

__all__: list[str] = []


def as_float_array(value, name: str, *, ndim: int | tuple[int, ...] | None = None,
                   shape: tuple[int | None, ...] | None = None,
                   finite: bool = True) -> np.ndarray:
    """Convert to a float64 array and check its rank, shape and finiteness."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of numbers, got {type(value).__name__}") from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                             f"got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            dims = ["?" if s is None else str(s) for s in shape]
            want = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
            raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def check_positive(value, name: str, *, strict: bool = True, integer: bool = False):
    """Check a scalar is (strictly) positive; return it."""
    if integer:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not np.isfinite(value) or (value <= 0 if strict else value < 0):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'}, got {value!r}")
    return value


def check_in_range(value, name: str, lo: float, hi: float):
    """Check ``lo <= value <= hi``; return it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (lo <= value <= hi):
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    return value


def check_choice(value, name: str, choices):
    """Check ``value`` is one of ``choices``; return it."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value
