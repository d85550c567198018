"""What :func:`~da_embed.generate.generate` returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = ["GenerationResult"]


@dataclass(frozen=True, eq=False)
class GenerationResult:
    """What :func:`~da_embed.generate.generate` returns.

    Parameters
    ----------
    prompt : str
    text : str
        The generated continuation (decoded ``token_ids``).
    prompt_ids, token_ids : numpy.ndarray
        Token ids of the prompt and of the continuation (``max_new_tokens``).
    filter : str
    states : numpy.ndarray (C, n)
        The analysis mean of each cycle (the state that drove its tokens).
    scores : numpy.ndarray (C, M, K)
        Verifier scores of the candidates (NaN: failed); (C, 0, 0) for "none".
    verifier_failures : int
        Candidates whose verifier raised or returned a non-finite value.
    skipped_analyses : int
        Cycles whose scores could not update the state.
    seconds : float
        Wall time of the generation loop (candidates, verifier, analysis, tokens).
    path : str or None
        The netCDF log, if one was written.
    dataset : xarray.Dataset
        The full log (same content as the file).

    Examples
    --------
    >>> from da_embed.generate import generate
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> res = generate(tiny_gpt2(vocab_size=len(tok)), tok, "the cat", filter="none",
    ...                max_new_tokens=4, progress=False)
    >>> res.token_ids.size, res.verifier_failures, res.tokens_per_second > 0
    (4, 0, True)
    """

    prompt: str
    text: str
    prompt_ids: np.ndarray
    token_ids: np.ndarray
    filter: str
    states: np.ndarray
    scores: np.ndarray
    verifier_failures: int
    skipped_analyses: int
    seconds: float
    path: str | None
    dataset: xr.Dataset

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of wall time."""
        return float(self.token_ids.size / self.seconds) if self.seconds > 0 else float("inf")
