"""Checks shared by the text metrics: strings, or sequences of strings, in pairs."""

from __future__ import annotations

__all__: list[str] = []


def _as_texts(texts, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        return [texts]
    try:
        out = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be a string or a sequence of strings, "
                        f"got {type(texts).__name__}") from None
    bad = [type(t).__name__ for t in out if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must hold strings, got {bad[0]}")
    return out


def _paired_texts(prompts, continuations) -> tuple[list[str], list[str]]:
    """Prompts and continuations as two lists of strings of the same length."""
    prompts, continuations = _as_texts(prompts, "prompts"), _as_texts(continuations,
                                                                      "continuations")
    if len(prompts) != len(continuations):
        raise ValueError(f"prompts and continuations must have the same length, got "
                         f"{len(prompts)} and {len(continuations)}")
    return prompts, continuations
