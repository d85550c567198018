"""``Hypersurface``: a state generated from the context by the transition network.

Spin-up's strong-constraint limit: trained by :meth:`Hypersurface.fit`
(:func:`~da_embed.spinup.spinup`) and rolled out by the
:class:`~da_embed.assimilator.OnlineAssimilator`.  Its home before issue 11
was :mod:`da_embed.placements` (``from da_embed.placements import
Hypersurface`` still works: :mod:`da_embed` re-attaches it there).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import torch
from torch import nn

from ..assimilator import OnlineAssimilator
from ..baselines import Frozen
from ..dynamics import DEFAULT_HIDDEN, DEFAULT_RANK, LearnedDynamics, LowRankAdapter, \
    TransitionNetwork
from ..placements import EmbeddingScale, Placement
from ..checks import check_int
from .config import SpinupConfig
from .run import spinup

__all__ = ["Hypersurface"]


class Hypersurface(Placement):
    r"""The adaptive latent hypersurface: the strong-constraint limit of the scale dynamics.

    The state of chunk k is not estimated from data but *generated* from the
    context before it (seed ``001``, "adaptive latent hypersurfaces"):

    .. math:: s_0 = s_b, \qquad s_k = f_\phi(s_{k-1}, h_{k-1}) + A_r(h_{k-1}),

    with ``h_{k-1}`` the pooled final hidden state of chunk k - 1: the state
    space model of DESIGN.md section 2 with Q -> 0.  The state acts through a
    wrapped placement, by default :class:`~da_embed.placements.EmbeddingScale` (a context-dependent
    transform ``e * exp(s_k)`` of the token embeddings): the embedding table
    is never edited and the LM stays frozen; only ``s_b``, the transition
    network and the adapter are trained, autoregressively (chunk k is scored
    with the state generated from the chunks before it), by :meth:`fit`
    (:func:`da_embed.spinup.spinup` with ``constraint="strong"``).

    Given explicit states (``logits``, ``token_nll``, ``using``) it acts as
    the wrapped placement.

    Parameters
    ----------
    placement : Placement or transformers.PreTrainedModel
        Where the generated state acts; a model means ``EmbeddingScale(model)``.
    hidden : int, default 32
        Hidden width of the transition network.
    rank : int, default 16
        Rank of the adapter.
    seed : int, default 0
        Seeds the networks' initialisation (a private RNG).

    Attributes
    ----------
    placement : Placement
        The wrapped placement.
    transition : TransitionNetwork
        ``f_phi`` (float64; identity at initialisation).
    adapter : LowRankAdapter
        ``A_r`` (float64; zero at initialisation).
    initial_state : torch.nn.Parameter (n,)
        ``s_b`` (zeros at initialisation: the untrained hypersurface is the
        unmodified model).
    state_dim : int
        n, the wrapped placement's.

    Examples
    --------
    >>> from da_embed.assimilator import PrequentialConfig
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> hs = Hypersurface(model, hidden=4, rank=2)
    >>> type(hs.placement).__name__, hs.state_dim
    ('EmbeddingScale', 32)
    >>> ds = hs.rollout(random_input_ids(model, 1, 33)[0], PrequentialConfig(chunk=8, context=8))
    >>> ds.sizes["time"], float(abs(ds.forecast_mean).max())  # untrained: the zero state
    (4, 0.0)
    """

    #: Spin-up recognises a placement whose states are generated (not estimated) by this
    #: capability, so its core need not import this class (which is built on it).
    generates_states = True

    def __init__(self, placement, *, hidden: int = DEFAULT_HIDDEN, rank: int = DEFAULT_RANK,
                 seed: int = 0) -> None:
        inner = placement if isinstance(placement, Placement) else EmbeddingScale(placement)
        if isinstance(inner, Hypersurface):
            raise ValueError("placement is already a Hypersurface")
        self.placement = inner
        self.model = inner.model
        self._ctx = None
        self.state_dim = int(inner.state_dim)
        self.seed = check_int(seed, "seed", 0)
        d = int(self.model.get_output_embeddings().weight.shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.transition = TransitionNetwork(self.state_dim, d, hidden).double()
            self.adapter = LowRankAdapter(self.state_dim, d, rank).double()
        self.initial_state = nn.Parameter(torch.zeros(self.state_dim, dtype=torch.float64))

    # ------------------------------------------------------------- the networks
    def dynamics(self) -> LearnedDynamics:
        """The generator as a forecast model (shares the networks; starts at s_b).

        Returns
        -------
        LearnedDynamics

        Examples
        --------
        >>> from da_embed.testing import tiny_gpt2
        >>> Hypersurface(tiny_gpt2(), hidden=4, rank=2).dynamics().initial_state.shape
        (32,)
        """
        return LearnedDynamics(self.transition, self.adapter,
                               initial_state=self.initial_state.detach().cpu().numpy().copy())

    def rollout(self, token_ids, protocol=None, *, out=None, progress: bool = False):
        """Score a stream with the generated states (prequential, no data assimilated).

        Chunk k is scored with ``s_k`` generated from chunks ``< k``; this is
        :class:`~da_embed.assimilator.OnlineAssimilator` with the ``frozen``
        method (no analysis), the learned dynamics and Q = 0.

        Parameters
        ----------
        token_ids : array_like of int
        protocol : PrequentialConfig, optional
        out : str or PathLike, optional
            netCDF trajectory written as it goes.
        progress : bool, default False

        Returns
        -------
        xarray.Dataset
            The trajectory (``forecast_mean`` holds the generated states,
            ``nll`` the per-chunk scores, ``perplexity`` the total).
        """
        run = OnlineAssimilator(self.placement, Frozen(), protocol=protocol,
                                dynamics=self.dynamics(), Q=0.0, label="hypersurface",
                                progress=progress)
        return run.run(token_ids, out=out)

    def fit(self, token_ids, config=None, *, out=None, resume=None, progress: bool = False):
        """Train s_b, the transition network and the adapter autoregressively.

        :func:`da_embed.spinup.spinup` in the strong-constraint limit; the
        networks are trained in place.

        Parameters
        ----------
        token_ids : array_like of int
            The training corpus.
        config : SpinupConfig, optional
            Its ``constraint``, ``hidden`` and ``rank`` are set to this
            hypersurface's.
        out, resume, progress
            As in :func:`~da_embed.spinup.spinup`.

        Returns
        -------
        SpinupResult
        """
        cfg = SpinupConfig() if config is None else config
        cfg = dataclasses.replace(cfg, constraint="strong", hidden=self.transition.hidden,
                                  rank=self.adapter.rank)
        return spinup(self, token_ids, cfg, out=out, resume=resume, progress=progress)

    # ------------------------------------------------- delegation to the inner
    @property
    def is_attached(self) -> bool:
        """Whether the wrapped placement is attached."""
        return self.placement.is_attached

    def attach(self) -> "Hypersurface":
        """Attach the wrapped placement (see :meth:`Placement.attach`).

        Returns
        -------
        Hypersurface
            ``self``.

        Examples
        --------
        >>> from da_embed.testing import tiny_gpt2
        >>> hs = Hypersurface(tiny_gpt2()).attach()
        >>> hs.placement.is_attached
        True
        >>> hs.remove()
        """
        self.placement.attach()
        return self

    def remove(self) -> None:
        """Remove the wrapped placement; harmless if not attached.

        Examples
        --------
        >>> from da_embed.testing import tiny_gpt2
        >>> Hypersurface(tiny_gpt2()).remove()
        """
        self.placement.remove()

    def _check_states(self, states) -> torch.Tensor:
        return self.placement._check_states(states)

    @contextlib.contextmanager
    def _activated(self, states: torch.Tensor) -> Iterator[None]:
        with self.placement._activated(states):
            yield

    def _run(self, input_ids, attention_mask, n_members):
        return self.placement._run(input_ids, attention_mask, n_members)

    def _options(self) -> dict[str, Any]:
        return {"hidden": self.transition.hidden, "rank": self.adapter.rank, "seed": self.seed,
                "placement": self.placement.describe()}
