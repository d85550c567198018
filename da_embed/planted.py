"""A planted-shift stream with known truth, for testing the online filters.

:func:`planted_shift` samples a token stream from a model whose scale state
is 0 (the unmodified model) before a chosen chunk and a known ``s* = P a``
from then on, with ``P`` a few orthonormal directions of the state.  Because
every token is sampled from exactly the distribution the prequential
protocol scores it with (same context window), ``s*`` maximises the expected
log-likelihood of the shifted part: a consistent filter must recover it, and
its perplexity must approach the one of scoring with ``s*`` itself.

Shapes: n state size, k planted directions, T tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .assimilator import PrequentialConfig
from .placements import Placement

__all__ = ["PlantedShift", "planted_shift"]


@dataclass(frozen=True, eq=False)
class PlantedShift:
    """A sampled stream and the truth it was sampled with.

    Attributes
    ----------
    token_ids : numpy.ndarray (T,)
        The stream (complete chunks only).
    directions : numpy.ndarray (n, k)
        P, orthonormal columns.
    coefficients : numpy.ndarray (k,)
        a.
    shift_chunk : int
        Index of the first chunk sampled under ``s*``.
    protocol : PrequentialConfig
        The protocol whose windows were used for sampling.
    """

    token_ids: np.ndarray
    directions: np.ndarray
    coefficients: np.ndarray
    shift_chunk: int
    protocol: PrequentialConfig

    @property
    def state(self) -> np.ndarray:
        """The planted state ``s* = P a`` (n,)."""
        return self.directions @ self.coefficients

    def truth(self) -> np.ndarray:
        """The true state of every chunk (T_chunks, n): 0 before the shift, ``s*`` after."""
        K = len(self.protocol.starts(self.token_ids.size))
        out = np.zeros((K, self.directions.shape[0]))
        out[self.shift_chunk:] = self.state
        return out


def planted_shift(placement: Placement, protocol: PrequentialConfig, n_tokens: int, *,
                  k: int = 4, amplitude: float = 2.0, coefficients=None,
                  shift_chunk: int | None = None, seed: int = 0) -> PlantedShift:
    """Sample a stream whose state jumps from 0 to ``s* = P a`` mid-stream.

    Parameters
    ----------
    placement : Placement
        Where the planted state acts (attached for the sampling if it is not).
    protocol : PrequentialConfig
        Each chunk's tokens are sampled with the context window the protocol
        scores them with.
    n_tokens : int
        Stream length before trimming to complete chunks.
    k : int, default 4
        Number of planted directions.
    amplitude : float, default 2.0
        Scale of the default coefficients ``amplitude * (1, -0.8, 0.6, -0.4, ...)``.
    coefficients : array_like (k,), optional
        a, instead of the default.
    shift_chunk : int, optional
        First chunk under the shift; default the middle chunk.
    seed : int, default 0
        Seeds the directions and the sampling.

    Returns
    -------
    PlantedShift

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> ps = planted_shift(HiddenScale(tiny_gpt2()), PrequentialConfig(chunk=4, context=8), 30)
    >>> ps.token_ids.shape, ps.directions.shape, ps.shift_chunk
    ((29,), (32, 4), 3)
    """
    n = int(placement.state_dim)
    if not 1 <= int(k) <= n:
        raise ValueError(f"k must be in [1, n = {n}], got {k}")
    rng = np.random.default_rng(seed)
    P, _ = np.linalg.qr(rng.standard_normal((n, int(k))))  # (n, k)
    if coefficients is None:
        a = amplitude * np.array([(-1) ** i * max(0.2, 1.0 - 0.2 * i) for i in range(int(k))])
    else:
        a = np.asarray(coefficients, dtype=float).reshape(-1)
        if a.shape != (int(k),):
            raise ValueError(f"coefficients must have shape (k,) = ({k},), got {a.shape}")
    starts = protocol.starts(int(n_tokens))
    if starts.size < 2:
        raise ValueError(f"n_tokens = {n_tokens} gives {starts.size} chunks; need at least 2")
    K = starts.size
    shift = K // 2 if shift_chunk is None else int(shift_chunk)
    if not 0 <= shift < K:
        raise ValueError(f"shift_chunk must be in [0, {K - 1}], got {shift_chunk}")
    T = int(starts[-1]) + protocol.chunk
    gen = torch.Generator().manual_seed(int(seed))
    V = placement.vocab_size
    ids = torch.zeros(T, dtype=torch.long)
    ids[0] = int(torch.randint(0, V, (1,), generator=gen))
    model = placement.model
    s_star = torch.as_tensor(P @ a)[None]  # (1, n)
    with placement.attached(), torch.no_grad():
        for c, start in enumerate(starts):
            start = int(start)
            states = s_star if c >= shift else torch.zeros(1, n, dtype=torch.float64)
            a0 = max(0, start - protocol.context)
            with placement.using(states):
                out = model(input_ids=ids[a0:start][None], use_cache=True)
                for j in range(protocol.chunk):
                    probs = torch.softmax(out.logits[0, -1].double(), dim=-1)  # (V,)
                    tok = torch.multinomial(probs, 1, generator=gen)  # (1,)
                    ids[start + j] = tok
                    if j + 1 < protocol.chunk:
                        out = model(input_ids=tok[None], past_key_values=out.past_key_values,
                                    use_cache=True)
    return PlantedShift(ids.numpy(), P, a, shift, protocol)
