r"""A planted domain-switching stream whose chunk summaries carry the domain.

The context-conditioned dynamics ``s_{t+1} = f_phi(s_t, h_t) + A_r(h_t)``
(:mod:`da_embed.dynamics`) can move the state in one step at a change of
domain only if the chunk summary ``h_t`` (the mean unscaled final hidden
state the forecast sees) tells the domains apart.  In tiny *random* GPT-2s it
barely does (a linear classifier of the domain from ``h`` reaches 0.58-0.74
accuracy), so a planted test of switching needs a model built for it:

* :func:`two_domain_gpt2` is a one-layer GPT-2 whose block is the identity, so
  the final hidden state of a position is ``ln_f`` of its token's embedding.
  The vocabulary has three groups of ``group`` tokens: A, B and neutral.  The
  input embeddings put A tokens on axis 0 and B tokens on axis 1 (so ``h``
  carries the fraction of A and B tokens of the chunk), ``ln_f`` makes axes 2
  and 3 the constant 1, and the untied head reads axis 2 for A tokens and
  axis 3 for B tokens with weight ``strength``.  Under the ``HiddenScale``
  state s the logit of an A token is ``strength * exp(s_2)`` (plus a small
  token-specific part on axes 4..), of a B token ``strength * exp(s_3)``, of a
  neutral token 0 (plus its part): the neutral group pins both scales, so
  the domain states are identified.
* :data:`DOMAIN_AXES` are those two axes: ``Subspace(HiddenScale(model),
  domain_basis(model))`` is the 2-dimensional domain state z = (s_2, s_3).
* :func:`planted_switch` samples streams that switch between known domain
  states at random chunks, every token sampled from the distribution the
  prequential protocol scores it with (as :func:`da_embed.planted.planted_shift`).
* :func:`distance_after_switch` measures how far a filter's analysis states
  are from the new domain's state 1, 2, ... chunks after each switch.

Shapes: S streams, K chunks per stream, n state size, d model width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .placements import Placement
from .planted import _chunk_starts, _sample_streams
from .protocol import PrequentialConfig

__all__ = ["DOMAIN_AXES", "two_domain_gpt2", "domain_basis", "PlantedSwitch",
           "planted_switch", "distance_after_switch"]

#: The axes of the hidden state whose scales set the domain (A: axis 2, B: axis 3).
DOMAIN_AXES = (2, 3)


def two_domain_gpt2(group: int = 8, width: int = 8, *, neutral: int | None = None,
                    strength: float = 1.0,
                    spread: float = 0.5, seed: int = 0, dtype: torch.dtype = torch.float64,
                    n_positions: int = 64):
    """A one-layer GPT-2 with three token groups (A, B, neutral) and domain-scale axes.

    Parameters
    ----------
    group : int, default 8
        Tokens of group A and of group B; the vocabulary has A first, then B,
        then the neutral tokens.
    width : int, default 8
        ``n_embd`` (>= 6: axes 0-3 are the domain axes, 4.. the token parts).
    neutral : int, optional
        Neutral tokens (default ``2 * group``): they pin the scales of both
        axes (without them only the difference of the A and B logits would
        be identified).
    strength : float, default 1.0
        Head weight of A tokens on axis 2 and of B tokens on axis 3.
    spread : float, default 0.5
        Standard deviation of the head's and the embeddings' token-specific
        parts (axes 4..), which give every group a non-uniform distribution.
    seed : int, default 0
        Seeds those parts.
    dtype : torch.dtype, default torch.float64
    n_positions : int, default 64

    Returns
    -------
    transformers.GPT2LMHeadModel
        In eval mode; untied head without bias.

    Examples
    --------
    >>> import torch
    >>> model = two_domain_gpt2()
    >>> model.config.vocab_size, model.config.n_embd
    (32, 8)
    >>> out = model(input_ids=torch.tensor([[0, 8, 16]]), output_hidden_states=True)
    >>> h = out.hidden_states[-1][0]  # final hidden states: A, B, neutral token
    >>> bool(h[0, 0] > 1 > h[1, 0]), bool(h[1, 1] > 1 > h[0, 1]), h[:, 2:4].tolist()
    (True, True, [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    group, width = int(group), int(width)
    neutral = 2 * group if neutral is None else int(neutral)
    if group < 1 or neutral < 1:
        raise ValueError(f"group and neutral must be integers >= 1, got {group} and {neutral}")
    if width < 6:
        raise ValueError(f"width must be an integer >= 6 (4 domain axes + token parts), "
                         f"got {width}")
    for name, value in (("strength", strength), ("spread", spread)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    V = 2 * group + neutral
    config = GPT2Config(n_layer=1, n_embd=width, n_head=2 if width % 2 == 0 else 1,
                        vocab_size=V, n_positions=n_positions, tie_word_embeddings=False,
                        bos_token_id=V - 1, eos_token_id=V - 1)
    g = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = GPT2LMHeadModel(config).to(dtype)
    rest = width - 4
    with torch.no_grad():
        block = model.transformer.h[0]
        for proj in (block.attn.c_proj, block.mlp.c_proj):  # the block adds nothing
            proj.weight.zero_()
            proj.bias.zero_()
        model.transformer.wpe.weight.zero_()
        emb = torch.zeros(V, width, dtype=dtype)
        emb[:group, 0] = 1.0  # A tokens on axis 0, B tokens on axis 1: h carries the domain
        emb[group:2 * group, 1] = 1.0
        emb[:, 4:] = spread * torch.randn(V, rest, generator=g, dtype=dtype)
        model.transformer.wte.weight.copy_(emb)
        ln = model.transformer.ln_f
        ln.weight.fill_(1.0)
        ln.weight[2:4] = 0.0  # axes 2 and 3 are the constant 1 ...
        ln.bias.zero_()
        ln.bias[2:4] = 1.0
        head = torch.zeros(V, width, dtype=dtype)
        head[:group, 2] = strength  # ... read by the head: exp(s_2) scales A, exp(s_3) B
        head[group:2 * group, 3] = strength
        head[:, 4:] = spread * torch.randn(V, rest, generator=g, dtype=dtype)
        model.lm_head.weight.copy_(head)
    return model.eval()


def domain_basis(model) -> np.ndarray:
    """The basis (n, 2) of the domain axes :data:`DOMAIN_AXES` of a ``HiddenScale`` state.

    Parameters
    ----------
    model : transformers.GPT2LMHeadModel
        A model of :func:`two_domain_gpt2`.

    Returns
    -------
    numpy.ndarray (n_embd, 2)

    Examples
    --------
    >>> domain_basis(two_domain_gpt2()).T.tolist()[0]
    [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    P = np.zeros((int(model.config.n_embd), 2))
    P[DOMAIN_AXES[0], 0] = P[DOMAIN_AXES[1], 1] = 1.0
    return P


@dataclass(frozen=True, eq=False)
class PlantedSwitch:
    """Streams that switch between known domain states, and that truth.

    Parameters
    ----------
    token_ids : numpy.ndarray (S, T)
        The streams (complete chunks only).
    domains : numpy.ndarray (S, K)
        The domain (row of ``states``) of every chunk.
    states : numpy.ndarray (D, n)
        The domain states.
    protocol : PrequentialConfig
        The chunks and context windows the tokens were sampled with.

    Examples
    --------
    >>> from da_embed.placements import HiddenScale, Subspace
    >>> model = two_domain_gpt2()
    >>> sub = Subspace(HiddenScale(model), domain_basis(model))
    >>> ps = planted_switch(sub, PrequentialConfig(chunk=8, context=8), 8 * 20 + 1,
    ...                     [[1.0, 0.0], [0.0, 1.0]], streams=2, segment=(4, 8), seed=1)
    >>> ps.token_ids.shape, ps.domains.shape, ps.truth().shape
    ((2, 161), (2, 20), (2, 20, 2))
    >>> [len(s) for s in ps.switches()] == [int((np.diff(d) != 0).sum()) for d in ps.domains]
    True
    """

    token_ids: np.ndarray
    domains: np.ndarray
    states: np.ndarray
    protocol: PrequentialConfig

    def truth(self) -> np.ndarray:
        """The true state of every chunk (S, K, n)."""
        return self.states[self.domains]

    def switches(self) -> list:
        """Per stream, the chunks (int array) whose domain differs from the chunk before."""
        return [np.flatnonzero(np.diff(d) != 0) + 1 for d in self.domains]


def _domain_sequences(S: int, K: int, D: int, segment: tuple, rng) -> np.ndarray:
    """Domains (S, K): segments of random length in ``segment``, each a new random domain."""
    out = np.empty((S, K), dtype=np.int64)
    lo, hi = segment
    for j in range(S):
        k, dom = 0, int(rng.integers(D))
        while k < K:
            length = int(rng.integers(lo, hi + 1))
            out[j, k:k + length] = dom
            k += length
            dom = (dom + 1 + int(rng.integers(D - 1))) % D if D > 1 else dom
    return out


def planted_switch(placement: Placement, protocol: PrequentialConfig, n_tokens: int, states,
                   *, streams: int = 1, segment: tuple = (6, 14),
                   seed: int = 0) -> PlantedSwitch:
    """Sample streams whose state switches between known domain states at random chunks.

    Each stream starts in a random domain; each segment lasts a random number
    of chunks in ``segment`` (both ends included) and is followed by another
    domain, chosen at random among the others.  Chunk k's tokens are sampled
    under its domain's state with the context window the protocol scores them
    with.

    Parameters
    ----------
    placement : Placement
        Where the state acts (e.g. the domain ``Subspace`` of :func:`domain_basis`).
    protocol : PrequentialConfig
    n_tokens : int
        Stream length before trimming to complete chunks.
    states : array_like (D, n)
        The D >= 2 domain states.
    streams : int, default 1
        S, independent streams (their own switch times).
    segment : (int, int), default (6, 14)
        Shortest and longest segment, in chunks.
    seed : int, default 0
        Seeds the switch times and the sampling.

    Returns
    -------
    PlantedSwitch

    Examples
    --------
    >>> from da_embed.placements import HiddenScale, Subspace
    >>> model = two_domain_gpt2()
    >>> sub = Subspace(HiddenScale(model), domain_basis(model))
    >>> ps = planted_switch(sub, PrequentialConfig(chunk=8, context=8), 8 * 30 + 1,
    ...                     [[1.0, 0.0], [0.0, 1.0]], streams=1, seed=0)
    >>> ids, dom = ps.token_ids[0, 1:], np.repeat(ps.domains[0], 8)
    >>> in_b = (ids >= 8) & (ids < 16)
    >>> bool((ids[dom == 0] < 8).mean() > 0.6), bool(in_b[dom == 1].mean() > 0.6)
    (True, True)
    """
    n = int(placement.state_dim)
    st = np.asarray(states, dtype=float)
    if st.ndim != 2 or st.shape[0] < 2 or st.shape[1] != n or not np.all(np.isfinite(st)):
        raise ValueError(f"states must be a finite (D, n) array with D >= 2 domains and n = "
                         f"{n} (the state size), got shape {st.shape}")
    S = streams
    if isinstance(S, bool) or not isinstance(S, (int, np.integer)) or S < 1:
        raise ValueError(f"streams must be an integer >= 1, got {streams!r}")
    try:
        lo, hi = (int(x) for x in segment)
    except (TypeError, ValueError):
        raise ValueError(f"segment must be two integers (shortest, longest), got "
                         f"{segment!r}") from None
    if not 1 <= lo <= hi:
        raise ValueError(f"segment must satisfy 1 <= shortest <= longest, got {segment!r}")
    starts = _chunk_starts(protocol, n_tokens)
    rng = np.random.default_rng(seed)
    domains = _domain_sequences(int(S), starts.size, st.shape[0], (lo, hi), rng)
    ids = _sample_streams(placement, protocol, starts, st[domains].transpose(1, 0, 2), seed)
    return PlantedSwitch(ids, domains, st, protocol)


def distance_after_switch(analysis, planted: PlantedSwitch, max_lag: int = 8) -> np.ndarray:
    """Distances of analysis states to the new domain's state, by chunks after a switch.

    Lag j (1-based) is the analysis after the j-th chunk of the new domain
    (chunk ``switch + j - 1``): the filter has seen j chunks of it.  Only
    switches followed by at least ``max_lag`` chunks of the same domain count.

    Parameters
    ----------
    analysis : array_like (S, K, n)
        Analysis means of every chunk of every stream of ``planted``.
    planted : PlantedSwitch
    max_lag : int, default 8

    Returns
    -------
    numpy.ndarray (switches, max_lag)
        Row i: the Euclidean distances at lags 1..max_lag after switch i.

    Examples
    --------
    >>> ps = PlantedSwitch(np.zeros((1, 1)), np.array([[0, 0, 1, 1, 1]]),
    ...                    np.array([[1.0], [-1.0]]), PrequentialConfig(chunk=1, context=1))
    >>> distance_after_switch(ps.truth() + 0.5, ps, max_lag=3).tolist()
    [[0.5, 0.5, 0.5]]
    """
    a = np.asarray(analysis, dtype=float)
    truth = planted.truth()
    if a.shape != truth.shape:
        raise ValueError(f"analysis must have the shape (S, K, n) = {truth.shape} of the "
                         f"planted streams, got {a.shape}")
    if isinstance(max_lag, bool) or not isinstance(max_lag, (int, np.integer)) or max_lag < 1:
        raise ValueError(f"max_lag must be an integer >= 1, got {max_lag!r}")
    rows = []
    for j, sw in enumerate(planted.switches()):
        dom = planted.domains[j]
        for k in sw:
            seg = dom[k:k + max_lag]
            if seg.size == max_lag and np.all(seg == dom[k]):
                rows.append(np.linalg.norm(a[j, k:k + max_lag] - truth[j, k:k + max_lag],
                                           axis=-1))
    return np.array(rows).reshape(-1, max_lag)
