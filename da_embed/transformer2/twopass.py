"""Transformer^2's two-pass adaptation (:class:`TwoPass`), a baseline of the online loop.

Transformer^2 (Sun, Cetin and Tang 2025, "Transformer-squared: self-adaptive
LLMs") fine-tunes only a vector ``z`` that scales the singular values of
chosen weight matrices (SVF, :class:`~da_embed.placements.SingularValueScale`:
``W' = U diag(sigma * z) V^T``), one vector per task or domain, and adapts at
inference in two passes: pass 1 reads the prompt and picks an expert vector
(or mixes them, ``z' = sum_k alpha_k z_k`` with weights from the
cross-entropy method, CEM), pass 2 runs the model with the result.

Here the expert vectors live in a placement's state (for SVF the log-scales
``x = log z``; any placement works), and :class:`TwoPass` is a baseline with
the :class:`filters.Filter` interface, so :class:`~da_embed.OnlineAssimilator`
and :func:`~da_embed.compare.compare` run it like the filters (methods ``t2``
and ``t2-cem``).  Under the prequential protocol, pass 1 for chunk k + 1 runs
in the analysis step after chunk k: it reads only tokens before chunk k + 1
(the tokens the observation operator of chunk k holds: chunk k and its
context), never chunk k + 1 itself; pass 2 is the assimilator's scoring of
chunk k + 1 with the chosen state.  Pass 1 is part of the analysis step, so it
is inside every wall time the assimilator and ``compare`` report.

* ``mode="select"`` (``t2``): the expert under which the context is most
  likely (lowest mean token NLL).
* ``mode="cem"`` (``t2-cem``): the state ``x = sum_k alpha_k x_k`` whose
  weights ``alpha`` (unconstrained reals) minimise the context's mean NLL,
  found by CEM (:func:`cem_weights`: population 32, 3 iterations, 8 elites;
  seeded by the run's generator).  The first population holds the uniform
  mix and every expert alone, so CEM is never worse than ``select`` on the
  context.  The mix is linear in the state: for SVF that is geometric in the
  singular-value scales (``z' = prod_k z_k^alpha_k``; ``alpha = 0`` is the
  base model, a one-hot ``alpha`` one expert).

Shapes: E experts, n state size, P CEM population, T tokens.
"""

from __future__ import annotations

import numpy as np

from ..baselines import PointState, _PointFilter
from ..checks import check_int, check_positive
from ..placements.base import Placement
from ..protocol import max_positions
from .cem import cem_weights, context_nll
from .experts import Experts

__all__ = ["TwoPass"]


class TwoPass(_PointFilter):
    """Transformer^2's two-pass adaptation as a baseline of the online loop.

    After chunk k is scored, pass 1 reads the tokens before chunk k + 1 (at
    most ``context_tokens``, at most the model's position limit, from the
    chunk just scored and its context; never chunk k + 1) and chooses the
    state for chunk k + 1 (``select``: the expert with the lowest context
    NLL; ``cem``: the weights of a mix of the experts' states found by CEM).
    Pass 2 is the assimilator's prequential scoring of chunk k + 1 with that
    state.  Chunk 0 is scored with the prior mean (0, the base model): its
    context is one token.  There are no dynamics: the forecast keeps the
    chosen state as it is (``Q`` and the forecast model are not used).

    Parameters
    ----------
    experts : Experts
        The expert states (required; checked against the run's placement).
    mode : {"select", "cem"}
        Method names ``t2`` and ``t2-cem``.
    population : int, default 32
        CEM draws per iteration.
    iterations : int, default 3
        CEM iterations (cost: population x iterations context passes).
    elite : int, default 8
        CEM elites.
    init_std : float, default 0.5
        CEM's first standard deviation of every weight (its first mean is
        the uniform mix 1 / E).
    context_tokens : int, optional
        Most tokens pass 1 reads (default: all it may).
    member_batch : int, default 32
        States per forward pass of pass 1.

    Attributes
    ----------
    history_ : list of dict
        One per analysis (entry k chose the state of chunk k + 1):
        ``weights`` (E,), ``context_nll`` (the chosen state's context NLL),
        ``expert_nll`` (E,) (select) and ``context_tokens``.
    adaptation_parameters : int
        E * n (the expert vectors), plus E mixing weights for ``cem``.

    Examples
    --------
    >>> import numpy as np
    >>> from da_embed import OnlineAssimilator, PrequentialConfig
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> placement = HiddenScale(model)
    >>> experts = Experts(("up", "down"), np.stack([np.full(32, 0.3), np.full(32, -0.3)]),
    ...                   placement.describe(), training={"placement_spec": "hidden"})
    >>> run = OnlineAssimilator(placement, TwoPass(experts), protocol=PrequentialConfig(8, 8))
    >>> ds = run.run(random_input_ids(model, batch=1, length=33)[0])
    >>> ds.attrs["method"], len(run.filter_.history_), run.filter_.history_[0]["weights"].tolist()
    ('t2', 4, [1.0, 0.0])
    """

    def __init__(self, experts: Experts | None = None, *, mode: str = "select",
                 population: int = 32, iterations: int = 3, elite: int = 8,
                 init_std: float = 0.5, context_tokens: int | None = None,
                 member_batch: int = 32):
        super().__init__(inflation=None)
        self.experts, self.mode = experts, mode
        self.population, self.iterations, self.elite = population, iterations, elite
        self.init_std, self.context_tokens = init_std, context_tokens
        self.member_batch = member_batch

    @property
    def name(self) -> str:
        """``t2`` (select) or ``t2-cem``."""
        return "t2-cem" if self.mode == "cem" else "t2"

    @property
    def adaptation_parameters(self) -> int:
        """E * n (the expert vectors), plus E mixing weights in CEM mode."""
        if not isinstance(self.experts, Experts):
            return 0
        E, n = len(self.experts), self.experts.state_dim
        return E * n + (E if self.mode == "cem" else 0)

    def validate(self):
        """Check the options; ValueError names the bad one."""
        if self.experts is None:
            raise ValueError(f"{self.name} needs experts (Experts from train_experts or "
                             "load_experts; on the command line --experts PATH or "
                             "--expert-corpus NAME=PATH)")
        if not isinstance(self.experts, Experts):
            raise ValueError(f"experts must be an Experts object, got "
                             f"{type(self.experts).__name__}")
        if self.mode not in ("select", "cem"):
            raise ValueError(f"mode must be 'select' or 'cem', got {self.mode!r}")
        check_int(self.population, "population", 2)
        check_int(self.iterations, "iterations", 1)
        check_int(self.elite, "elite", 1)
        if self.elite > self.population:
            raise ValueError(f"elite ({self.elite}) must not exceed population "
                             f"({self.population})")
        check_positive(self.init_std, "init_std")
        if self.context_tokens is not None:
            check_int(self.context_tokens, "context_tokens", 2)
        check_int(self.member_batch, "member_batch", 1)

    def check_placement(self, placement: Placement) -> None:
        """Raise ValueError unless the experts belong to ``placement``.

        See :meth:`Experts.check_placement`.

        Parameters
        ----------
        placement : Placement
            The run's placement.
        """
        self.validate()
        self.experts.check_placement(placement)

    def initialize(self, prior, rng):
        """Start at the prior mean (the base model); reset the history."""
        self.validate()
        n = int(np.asarray(prior.mean).shape[0])
        if n != self.experts.state_dim:
            raise ValueError(f"{self.name}: the experts have state size n = "
                             f"{self.experts.state_dim} but the run's state has n = {n}; use "
                             "the placement the experts were trained on, without a subspace")
        self.history_: list[dict] = []
        self._checked = None
        return super().initialize(prior, rng)

    def forecast(self, state, model, t, dt, nsteps, Q, rng):
        """No dynamics: the chosen state is kept as it is."""
        return state

    def _pass1_tokens(self, obs) -> np.ndarray:
        tokens = getattr(obs, "tokens", None)
        if tokens is None:
            raise ValueError(f"{self.name} reads the context from the observation operator: "
                             f"it needs a TokenNLLObservation, got {type(obs).__name__}")
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        m = tokens.size
        if self.context_tokens is not None:
            m = min(m, int(self.context_tokens))
        limit = max_positions(obs.placement.model)
        if limit is not None:
            m = min(m, limit)
        return tokens[tokens.size - m:]

    def choose(self, placement: Placement, context_ids, rng=None) -> tuple[np.ndarray, dict]:
        """Pass 1: the expert weights for the text after ``context_ids``.

        Parameters
        ----------
        placement : Placement
            Attached, the experts' placement.
        context_ids : array_like of int (T,)
            The tokens before the text to adapt to (T >= 2).
        rng : numpy.random.Generator or int, optional
            CEM's randomness.

        Returns
        -------
        weights : ndarray (E,)
            One-hot for ``select``; the state is ``weights @ experts.states``.
        info : dict
            ``context_nll`` (of the chosen state), ``expert_nll`` (E,) for
            ``select``, ``context_tokens``.

        Examples
        --------
        >>> import numpy as np
        >>> from da_embed.placements import HiddenScale
        >>> from da_embed.testing import tiny_gpt2
        >>> model = tiny_gpt2()
        >>> placement = HiddenScale(model)
        >>> ex = Experts(("base", "cold"), np.stack([np.zeros(32), np.full(32, -3.0)]),
        ...              placement.describe())
        >>> with placement.attached():
        ...     w, info = TwoPass(ex).choose(placement, np.arange(12))
        >>> w.tolist(), info["context_tokens"]
        ([1.0, 0.0], 12)
        """
        self.validate()
        X = self.experts.states  # (E, n)
        E = X.shape[0]
        ids = np.asarray(context_ids, dtype=np.int64).reshape(-1)

        def objective(W):  # (P, E) -> (P,)
            return context_nll(placement, W @ X, ids, member_batch=self.member_batch)

        if self.mode == "select":
            nll = objective(np.eye(E))  # (E,)
            k = int(np.argmin(nll))
            return np.eye(E)[k], {"context_nll": float(nll[k]), "expert_nll": nll,
                                  "context_tokens": int(ids.size)}
        seeds = np.vstack([np.full((1, E), 1.0 / E), np.eye(E)])[:self.population]
        res = cem_weights(objective, E, population=self.population, iterations=self.iterations,
                          elite=self.elite, init_std=self.init_std, initial_candidates=seeds,
                          rng=rng)
        return res.weights, {"context_nll": res.value, "context_tokens": int(ids.size)}

    def analysis(self, state, y, obs, R, rng):
        """Pass 1 for the next chunk on the tokens ``obs`` holds (this chunk and its context)."""
        placement = obs.placement
        if getattr(self, "_checked", None) is not placement:
            self.experts.check_placement(placement)
            self._checked = placement
        ids = self._pass1_tokens(obs)
        weights, info = self.choose(placement, ids, rng)
        if not hasattr(self, "history_"):
            self.history_ = []
        self.history_.append({"weights": weights, **info})
        return PointState(weights @ self.experts.states)

