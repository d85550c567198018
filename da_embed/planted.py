"""Planted streams with known truth, for testing the online filters and spin-up.

:func:`planted_shift` samples a token stream from a model whose scale state
is 0 (the unmodified model) before a chosen chunk and a known ``s* = P a``
from then on, with ``P`` a few orthonormal directions of the state.  Because
every token is sampled from exactly the distribution the prequential
protocol scores it with (same context window), ``s*`` maximises the expected
log-likelihood of the shifted part: a consistent filter must recover it, and
its perplexity must approach the one of scoring with ``s*`` itself.

:func:`planted_drift` samples a stream whose state drifts from chunk to chunk
along a known linear dynamic ``s_k = A s_{k-1} + eps_k``, ``eps_k ~ N(0, Q)``:
spin-up (:mod:`da_embed.spinup`) must recover the drift and Q.

Shapes: n state size, k planted directions, T tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .protocol import PrequentialConfig
from .lm.kv_cache import forward_with_cache, output_cache
from .placements import Placement

__all__ = ["PlantedShift", "planted_shift", "PlantedDrift", "planted_drift"]


@dataclass(frozen=True, eq=False)
class PlantedShift:
    """A sampled stream and the truth it was sampled with.

    Parameters
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

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> ps = planted_shift(HiddenScale(tiny_gpt2()), PrequentialConfig(chunk=4, context=8), 30,
    ...                    k=2)
    >>> ps.coefficients.tolist(), round(float(np.linalg.norm(ps.state)), 4)  # |P a| = |a|
    ([2.0, -1.6], 2.5612)
    >>> truth = ps.truth()  # (chunks, n): 0 before the shift, s* from it on
    >>> truth.shape, bool(np.allclose(truth[ps.shift_chunk:], ps.state)), bool(truth[0].any())
    ((7, 32), True, False)
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
    starts = _chunk_starts(protocol, n_tokens)
    K = starts.size
    shift = K // 2 if shift_chunk is None else int(shift_chunk)
    if not 0 <= shift < K:
        raise ValueError(f"shift_chunk must be in [0, {K - 1}], got {shift_chunk}")
    states = np.zeros((K, 1, n))
    states[shift:] = P @ a
    ids = _sample_streams(placement, protocol, starts, states, seed)[0]
    return PlantedShift(ids, P, a, shift, protocol)


def _chunk_starts(protocol: PrequentialConfig, n_tokens: int) -> np.ndarray:
    """Start of every chunk of an ``n_tokens`` stream; ValueError unless there are >= 2."""
    starts = protocol.starts(int(n_tokens))
    if starts.size < 2:
        raise ValueError(f"n_tokens = {n_tokens} gives {starts.size} chunks; need at least 2")
    return starts


def _sample_streams(placement: Placement, protocol: PrequentialConfig, starts: np.ndarray,
                    states: np.ndarray, seed: int) -> np.ndarray:
    """Tokens (S, T) of S streams sampled at once; chunk c of stream j under ``states[c, j]``.

    The streams are the members of one batched forward pass per token (one
    row each), so S streams cost about what one does on a small model.
    """
    T = int(starts[-1]) + protocol.chunk
    S = states.shape[1]
    gen = torch.Generator().manual_seed(int(seed))
    V = placement.vocab_size
    ids = torch.zeros(S, T, dtype=torch.long)
    ids[:, 0] = torch.randint(0, V, (S,), generator=gen)
    model = placement.model
    with placement.attached(), torch.no_grad():
        for c, start in enumerate(starts):
            start = int(start)
            a0 = max(0, start - protocol.context)
            with placement.using(torch.as_tensor(states[c], dtype=torch.float64)):  # (S, n)
                out = model(input_ids=ids[:, a0:start], use_cache=True)
                for j in range(protocol.chunk):
                    probs = torch.softmax(out.logits[:, -1].double(), dim=-1)  # (S, V)
                    tok = torch.multinomial(probs, 1, generator=gen)  # (S, 1)
                    ids[:, start + j] = tok[:, 0]
                    if j + 1 < protocol.chunk:
                        out = forward_with_cache(model, tok, output_cache(out))
    return ids.numpy()


@dataclass(frozen=True, eq=False)
class PlantedDrift:
    """A stream sampled along a known linear dynamic of the state, and that truth.

    Parameters
    ----------
    token_ids : numpy.ndarray (T,) or (S, T)
        The stream (complete chunks only), or S independent streams.
    states : numpy.ndarray (T_chunks, n) or (S, T_chunks, n)
        The true state of every chunk.
    A : numpy.ndarray (n, n)
        The transition matrix.
    Q : numpy.ndarray (n,)
        The diagonal of the process-noise covariance per chunk.
    protocol : PrequentialConfig
        The chunks and context windows the tokens were sampled with.

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> protocol = PrequentialConfig(chunk=4, context=8)
    >>> drift = planted_drift(HiddenScale(tiny_gpt2()), protocol, 30, A=0.9 * np.eye(32), Q=0.01)
    >>> type(drift).__name__, drift.A.shape, drift.Q.shape
    ('PlantedDrift', (32, 32), (32,))
    """

    token_ids: np.ndarray
    states: np.ndarray
    A: np.ndarray
    Q: np.ndarray
    protocol: PrequentialConfig

    @property
    def noise(self) -> np.ndarray:
        """The realised process noise ``s_k - A s_{k-1}`` ((S,) T_chunks - 1, n)."""
        return self.states[..., 1:, :] - self.states[..., :-1, :] @ self.A.T


def planted_drift(placement: Placement, protocol: PrequentialConfig, n_tokens: int, A, Q, *,
                  initial=None, streams: int | None = None, seed: int = 0) -> PlantedDrift:
    """Sample a stream whose state drifts along ``s_k = A s_{k-1} + eps_k``, ``eps_k ~ N(0, Q)``.

    Chunk k's tokens are sampled with the context window the protocol scores
    them with, under the state ``s_k`` (one state per chunk, as the online
    filters and spin-up model it), so the state-space model of DESIGN.md
    section 2 with linear dynamics is exactly true of the stream.

    Parameters
    ----------
    placement : Placement
        Where the state acts (attached for the sampling if it is not); with a
        :class:`~da_embed.placements.Subspace` the state lives in its k dims.
    protocol : PrequentialConfig
    n_tokens : int
        Stream length before trimming to complete chunks.
    A : array_like (n, n)
        Transition matrix.
    Q : float or array_like (n,)
        Diagonal of the process-noise covariance (>= 0).
    initial : array_like (n,), optional
        s_0 (of every stream); default zeros.
    streams : int, optional
        Sample this many independent streams at once (their own noise, the
        same s_0): ``token_ids`` (S, T) and ``states`` (S, T_chunks, n).
        Default: one stream, 1-D ``token_ids``.
    seed : int, default 0
        Seeds the noise and the sampling.

    Returns
    -------
    PlantedDrift

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> ps = planted_drift(HiddenScale(tiny_gpt2()), PrequentialConfig(chunk=4, context=8), 30,
    ...                    A=0.9 * np.eye(32), Q=0.01)
    >>> ps.token_ids.shape, ps.states.shape, ps.noise.shape
    ((29,), (7, 32), (6, 32))
    """
    n = int(placement.state_dim)
    A = np.asarray(A, dtype=float)
    if A.shape != (n, n) or not np.all(np.isfinite(A)):
        raise ValueError(f"A must be a finite (n, n) = ({n}, {n}) matrix, got shape {A.shape}")
    q = np.broadcast_to(np.asarray(Q, dtype=float), (n,)).copy() if np.ndim(Q) == 0 \
        else np.asarray(Q, dtype=float)
    if q.shape != (n,) or not np.all(np.isfinite(q)) or np.any(q < 0):
        raise ValueError(f"Q must be a number or (n,) = ({n},) variances >= 0, got {Q!r}")
    s0 = np.zeros(n) if initial is None else np.asarray(initial, dtype=float).reshape(-1)
    if s0.shape != (n,):
        raise ValueError(f"initial must have shape (n,) = ({n},), got {s0.shape}")
    starts = _chunk_starts(protocol, n_tokens)
    S = 1 if streams is None else int(streams)
    if S < 1:
        raise ValueError(f"streams must be an integer >= 1, got {streams!r}")
    rng = np.random.default_rng(seed)
    states = np.empty((starts.size, S, n))
    states[0] = s0
    for k in range(1, starts.size):
        states[k] = states[k - 1] @ A.T + np.sqrt(q) * rng.standard_normal((S, n))
    ids = _sample_streams(placement, protocol, starts, states, seed)
    states = states.transpose(1, 0, 2)  # (S, T_chunks, n)
    if streams is None:
        return PlantedDrift(ids[0], states[0], A, q, protocol)
    return PlantedDrift(ids, states, A, q, protocol)
