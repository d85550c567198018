"""The prompts of ``da-embed claims``: first sentences of WikiText paragraphs, detokenised."""

from __future__ import annotations

import os
import re

__all__ = ["detokenize_wikitext", "wikitext_prompts", "numpy_doc_prompts"]

_DETOK = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" , ", ", "), (" ; ", "; "),
          (" : ", ": "), (" 's ", "'s "), (" n't", "n't"), ("( ", "("), (" )", ")")]


def detokenize_wikitext(text: str) -> str:
    """Undo WikiText's tokenisation spaces (``@-@``, spaces before punctuation).

    Parameters
    ----------
    text : str
        A line of WikiText.

    Returns
    -------
    str

    Examples
    --------
    >>> detokenize_wikitext("a well @-@ known actor , born in 1 @,@ 000 .")
    'a well-known actor, born in 1,000.'
    """
    out = " " + text.strip() + " "
    for a, b in _DETOK:
        out = out.replace(a, b)
    out = re.sub(r" ([.!?])(?= |$)", r"\1", out)
    return out.strip()


def wikitext_prompts(path, n: int = 50) -> list[str]:
    """First sentences of the first ``n`` paragraphs of a WikiText file.

    A paragraph is a non-empty line that is not a heading (``" = ... = "``);
    its first sentence ends at the first ``" . "`` (WikiText's spaced full
    stop), or is the whole line.

    Parameters
    ----------
    path : str or PathLike
        E.g. :func:`da_embed.corpora.wikitext_path` ``("test")``.
    n : int, default 50

    Returns
    -------
    list of str
        Detokenised (:func:`detokenize_wikitext`).

    Raises
    ------
    ValueError
        If the file has fewer than ``n`` paragraphs.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "w.txt")
    >>> _ = open(path, "w").write(" = Title = \\n\\n A cat , sat . Then it left .\\n")
    >>> wikitext_prompts(path, 1)
    ['A cat, sat.']
    """
    from ..corpora import read_text

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of prompts) must be an integer >= 1, got {n!r}")
    prompts = []
    for line in read_text(path).splitlines():
        s = line.strip()
        if not s or (s.startswith("=") and s.endswith("=")):
            continue
        head, sep, _ = s.partition(" . ")
        prompts.append(detokenize_wikitext(head + (" ." if sep else "")))
        if len(prompts) == n:
            return prompts
    raise ValueError(f"{os.fspath(path)!r} has {len(prompts)} paragraphs, fewer than the "
                     f"{n} prompts asked for")


def numpy_doc_prompts(n: int = 50) -> list[str]:
    """First sentences of numpy's public docstrings: a second, held-out prompt domain.

    The reference model is trained on the standard library's documentation
    (:func:`da_embed.corpora.stdlib_corpus`), so that text cannot serve as a
    held-out domain; numpy (a dependency, so always installed) ships its own
    docstrings, technical prose the model has not seen.  Names of the
    ``numpy`` namespace in sorted order; the first sentence of each summary
    line (at least 20 characters, each text once).

    Parameters
    ----------
    n : int, default 50

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        If numpy has fewer than ``n`` such docstrings.

    Examples
    --------
    >>> len(numpy_doc_prompts(3))
    3
    """
    import inspect

    import numpy

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of prompts) must be an integer >= 1, got {n!r}")
    prompts, seen = [], set()
    for name in sorted(dir(numpy)):
        if name.startswith("_"):
            continue
        doc = inspect.getdoc(getattr(numpy, name, None)) or ""
        paras = [" ".join(p.split()) for p in doc.strip().split("\n\n")]
        paras = [p for p in paras if p and not re.match(r"[\w.]+\(", p)]  # not a signature
        if not paras:
            continue
        head, sep, _ = paras[0].partition(". ")
        text = head + "." if sep else paras[0]
        if len(text) < 20 or not text.endswith(".") or text in seen or not text[0].isalpha():
            continue
        seen.add(text)
        prompts.append(text)
        if len(prompts) == n:
            return prompts
    raise ValueError(f"numpy has {len(prompts)} usable docstrings, fewer than the {n} "
                     f"prompts asked for")
