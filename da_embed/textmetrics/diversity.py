"""Diversity of generated text: the fraction of repeated n-grams and their product.

============  ==============================================================  ====================
metric        definition                                                      source
============  ==============================================================  ====================
rep-n         ``1 - unique n-grams / total n-grams`` (whitespace tokens,      Welleck et al. 2020;
              counts pooled over the texts, :func:`rep_n`)                    Su et al. 2022
diversity     ``prod_{n=2..4} (1 - rep-n)`` (:func:`diversity`)               Su et al. 2022
============  ==============================================================  ====================

References
----------
Su, Lan, Wang, Yogatama, Kong & Collier (2022), "A contrastive framework for
neural text generation", NeurIPS (rep-n and diversity as in its section 5
and its ``measure_repetition_and_diversity`` script).
Welleck, Kulikov, Roller, Dinan, Cho & Weston (2020), "Neural text generation
with unlikelihood training", ICLR (rep-n, the fraction of repeated n-grams).
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from ._texts import _as_texts

__all__ = ["rep_n", "diversity", "DIVERSITY_NS"]

#: n-gram orders of the diversity product (Su et al. 2022).
DIVERSITY_NS = (2, 3, 4)


def _check_order(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n (the n-gram order) must be an integer >= 1, got {n!r}")
    return int(n)


def rep_n(texts, n: int) -> float:
    """Fraction of repeated n-grams: ``1 - unique n-grams / total n-grams``.

    Tokens are whitespace-separated words (as in Su et al.'s script).  For a
    list of texts the unique and total counts of each text are summed before
    the ratio is taken (Su et al. 2022's pooling); n-grams never span two
    texts.  Every one of the ``len(words) - n + 1`` n-grams of a text counts
    (the SimCTG script's loop stops one n-gram early; this does not).

    Parameters
    ----------
    texts : str or sequence of str
    n : int
        n-gram order (>= 1).

    Returns
    -------
    float
        In [0, 1); NaN when no text has n words.

    Examples
    --------
    >>> rep_n("a b a b a", 2)  # bigrams ab ba ab ba: 2 unique of 4
    0.5
    >>> rep_n(["a b c", "a b c"], 2)  # unique counted per text: (2 + 2) / (2 + 2)
    0.0
    """
    n = _check_order(n)
    unique = total = 0
    for text in _as_texts(texts):
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        unique += len(set(grams))
        total += len(grams)
    return float("nan") if total == 0 else 1.0 - unique / total


def diversity(texts, ns: Sequence[int] = DIVERSITY_NS) -> float:
    """Diversity of Su et al. (2022): ``prod_{n in ns} (1 - rep-n)``.

    Parameters
    ----------
    texts : str or sequence of str
    ns : sequence of int, default (2, 3, 4)

    Returns
    -------
    float
        In (0, 1]; 1 means no repeated n-gram; NaN when a text list has no
        n-gram of some order.

    Examples
    --------
    >>> diversity("a b a b a")  # (1 - 1/2) (1 - 1/3) (1 - 0)
    0.3333333333333333
    """
    ns = [_check_order(n) for n in ns]
    if not ns:
        raise ValueError("ns must list at least one n-gram order")
    texts = _as_texts(texts)
    return float(np.prod([1.0 - rep_n(texts, n) for n in ns]))
