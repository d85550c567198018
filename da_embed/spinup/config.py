"""The settings and the result of spin-up (:class:`SpinupConfig`, :class:`SpinupResult`)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ..checks import check_int, check_positive as _check_positive
from ..dynamics import DEFAULT_HIDDEN, DEFAULT_RANK, LearnedDynamics
from ..protocol import PrequentialConfig

__all__ = ["SpinupConfig", "SpinupResult", "CONSTRAINTS", "PARTS", "HESSIANS", "OBJECTIVES",
           "AUTO_EXACT_MAX", "AUTO_EXACT_WORK", "RESUMABLE"]

#: Values of ``SpinupConfig.constraint``.
CONSTRAINTS = ("weak", "strong")
#: What spin-up can learn (``SpinupConfig.learn``).
PARTS = ("initial", "transition", "adapter", "q")
#: NLL Hessians of the E-step: exact (autograd), empirical Fisher, or auto.
HESSIANS = ("auto", "exact", "fisher")
#: ``hessian="auto"`` uses exact NLL Hessians up to this state size, the Fisher above ...
AUTO_EXACT_MAX = 16
#: ... and while n * d * V (the work per token of the exact blocks) stays below this.
AUTO_EXACT_WORK = 2 ** 22
#: Configuration fields that may change when a run is resumed.
RESUMABLE = ("steps", "checkpoint_every", "cache_chunks")
#: What spin-up minimises (``SpinupConfig.objective``): the Laplace-EM of the 4D-Var
#: cost, or the prequential NLL of a differentiable EKF (:mod:`da_embed.spinup.predictive`).
OBJECTIVES = ("em", "predictive")
#: Fields added after checkpoints were first written, with their defaults: left out of
#: :meth:`SpinupConfig.identity` at the default, so older checkpoints still resume.
_LATER_FIELDS = {"objective": "em", "grad_clip": None, "obs_var": 1.0, "decrement": 1.0}


@dataclass(frozen=True)
class SpinupConfig:
    """Settings of :func:`~da_embed.spinup.spinup` (checked on construction).

    Parameters
    ----------
    chunk : int, default 32
        L, tokens per chunk (as in the prequential protocol the dynamics serve).
    context : int, default 224
        Tokens of context before each chunk.
    max_tokens : int, optional
        Use only the first ``max_tokens`` tokens of the corpus.
    window : int, default 8
        K, chunks per window (at least 2: one transition).
    batch : int, default 4
        B, windows per step: the next window of each of B tracks through the
        corpus (module notes).
    steps : int, default 200
        Steps (each an E-step on ``batch`` windows and ``m_steps`` Adam
        steps); the total: a resumed run continues up to it.
    lr : float, default 0.01
        Adam learning rate of every learned part.
    lr_half_life : float, optional
        Steps over which the learning rate halves, ``lr * 0.5 ** ((step - 1) /
        lr_half_life)`` (a function of the step only, so resuming is exact);
        default constant.  Decay lets the Monte-Carlo M-step settle.
    constraint : {"weak", "strong"}
        ``"weak"``: Laplace-EM on the weak-constraint cost (learns Q).
        ``"strong"``: the Q -> 0 limit (no Q), the hypersurface.
    learn : tuple of str or str, default all of :data:`PARTS`
        Which of ``initial`` (s_b), ``transition``, ``adapter``, ``q`` are
        learned (a comma-separated string is accepted); the rest keep their
        initial values.  Under the strong constraint ``q`` (and b) do not
        exist.
    q_init : float, default 0.01
        Initial diagonal of Q (the random walk's default).
    background_var : float, default 0.1
        Initial value of b, the variances of the prior of a window's first
        state (the online methods' default P0); learned with ``initial``.
    climatology : bool, default True
        How ``initial`` (s_b and b) is learned under the weak constraint.
        True: as the climatology of the states (the model is taken as
        stationary, so a stream's first state is distributed like any other):
        after every E-step, s_b and b move a fraction ``climatology_rate``
        of the way to the mean and variance (posterior variances included)
        of all the batch's states (a stochastic-approximation EM step).
        False: by Adam, from the windows whose first state has the
        climatological background only (a track's or document's first
        window: a few per pass, so s_b moves slowly).
    climatology_rate : float, default 0.1
        The fraction above (0 < rate <= 1).
    shrinkage : float, default 100
        Precision of a Gaussian prior on the parameters that are zero when
        the dynamics are the random walk (the transition network's output
        layer and the adapter's ``B``): the M-step minimises
        ``E_q[J] / tokens + shrinkage / 2 |theta_0|^2`` (MAP-EM).  It keeps the
        dynamics near the random walk where the tokens barely inform the
        state, in which EM's posterior follows the prior's drift.  The
        default was selected among 0, 1, 10 and 100 on held-out WikiText-2
        valid text for the reference model (docs/benchmarks.md, "Spin-up");
        0 gives the plain maximum-likelihood EM.
    hidden : int, default 32
        Hidden width of the transition network.
    rank : int, default 16
        Rank of the adapter.
    samples : int, default 0
        How the M-step takes the expectation over the posterior q: 0, in
        closed form with the dynamics linearised at S* (the extended-Kalman-
        smoother EM: no Monte-Carlo noise); M > 0, with M draws per window
        (antithetic pairs when M is even; exact for the nonlinear dynamics,
        but noisy).
    m_steps : int, default 1
        Adam steps per E-step (on the same posterior draws; under the strong
        constraint, on the same windows): more work per E-step, as in
        generalised EM.
    hessian : {"auto", "exact", "fisher"}
        NLL Hessian blocks of the E-step: ``exact`` (autograd), ``fisher``
        (empirical Fisher of the per-token gradients, the EKF's), ``auto``
        (exact up to n = 16 while n d V <= 2^22, the Fisher above).
    newton_iter : int, default 20
        Maximum Newton iterations of the E-step.
    newton_tol : float, default 1e-3
        The E-step stops when half the Newton decrement ``g^T H^-1 g / 2``
        (the predicted decrease of J, in nats per window) of every window is
        below it (with empirical Fisher blocks Newton converges linearly; a
        thousandth of a nat is far below the Monte-Carlo noise of the M-step).
    seed : int, default 0
        Seeds the networks' initialisation, the windows and the draws.
    checkpoint_every : int, default 50
        Steps between checkpoints (one is always written at the end).
    cache_chunks : int, default 8192
        Chunk observation operators kept in memory (for ``HiddenScale`` they
        hold the chunk's final hidden states, so the trunk runs once per
        chunk).
    objective : {"em", "predictive"}
        ``"em"``: the Laplace-EM on the 4D-Var cost (module notes of
        :mod:`da_embed.spinup.objective`).  ``"predictive"``: the prequential
        NLL of each next chunk under an EKF unrolled over the windows,
        minimised by backpropagation through its forecasts and analyses
        (:mod:`da_embed.spinup.predictive`; weak constraint, ``HiddenScale``
        or a subspace of it).  ``background_var`` is then the filter's P0
        (fixed, as in ``compare``), and ``climatology``, ``shrinkage``,
        ``samples``, ``hessian`` and the Newton settings are not used.
    grad_clip : float, optional
        Clip the gradient of the learned parameters to this Euclidean norm
        before each Adam step (default: no clipping).
    obs_var : float, default 1.0
        R = obs_var I of the predictive objective's EKF (``compare --R``).
    decrement : float, default 1.0
        The innovation per token of its ``"decrement"`` pseudo-observation
        (``compare --decrement``).

    Examples
    --------
    >>> cfg = SpinupConfig(chunk=8, context=16, window=4, learn="transition,q")
    >>> cfg.learn, cfg.protocol.window
    (('transition', 'q'), 23)
    >>> SpinupConfig(window=1)
    Traceback (most recent call last):
    ...
    ValueError: window must be an integer >= 2, got 1
    """

    chunk: int = 32
    context: int = 224
    max_tokens: int | None = None
    window: int = 8
    batch: int = 4
    steps: int = 200
    lr: float = 0.01
    lr_half_life: float | None = None
    constraint: str = "weak"
    learn: tuple = PARTS
    q_init: float = 0.01
    background_var: float = 0.1
    climatology: bool = True
    climatology_rate: float = 0.1
    shrinkage: float = 100.0
    hidden: int = DEFAULT_HIDDEN
    rank: int = DEFAULT_RANK
    samples: int = 0
    m_steps: int = 1
    hessian: str = "auto"
    newton_iter: int = 20
    newton_tol: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 50
    cache_chunks: int = 8192
    objective: str = "em"
    grad_clip: float | None = None
    obs_var: float = 1.0
    decrement: float = 1.0

    def __post_init__(self):
        _ = self.protocol  # checks chunk, context, max_tokens
        check_int(self.window, "window", 2)
        check_int(self.batch, "batch", 1)
        check_int(self.steps, "steps", 1)
        _check_positive(self.lr, "lr")
        if self.lr_half_life is not None:
            _check_positive(self.lr_half_life, "lr_half_life")
        if self.constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {list(CONSTRAINTS)}, "
                             f"got {self.constraint!r}")
        learn = self.learn
        if isinstance(learn, str):
            learn = [p.strip() for p in learn.split(",") if p.strip()]
        learn = list(learn)
        if "all" in learn:
            learn = list(PARTS)
        bad = [p for p in learn if p not in PARTS]
        if bad or not learn:
            raise ValueError(f"learn must name some of {list(PARTS)} (or 'all'), got "
                             f"{self.learn!r}")
        object.__setattr__(self, "learn", tuple(p for p in PARTS if p in learn))
        _check_positive(self.q_init, "q_init")
        _check_positive(self.background_var, "background_var")
        if not isinstance(self.climatology, bool):
            raise ValueError(f"climatology must be True or False, got {self.climatology!r}")
        _check_positive(self.climatology_rate, "climatology_rate")
        if self.climatology_rate > 1:
            raise ValueError(f"climatology_rate must be in (0, 1], got {self.climatology_rate!r}")
        if isinstance(self.shrinkage, bool) or not isinstance(self.shrinkage, numbers.Real) \
                or not math.isfinite(self.shrinkage) or self.shrinkage < 0:
            raise ValueError(f"shrinkage must be a finite number >= 0, got {self.shrinkage!r}")
        check_int(self.hidden, "hidden", 1)
        check_int(self.rank, "rank", 1)
        check_int(self.samples, "samples", 0)
        check_int(self.m_steps, "m_steps", 1)
        if self.hessian not in HESSIANS:
            raise ValueError(f"hessian must be one of {list(HESSIANS)}, got {self.hessian!r}")
        check_int(self.newton_iter, "newton_iter", 1)
        _check_positive(self.newton_tol, "newton_tol")
        check_int(self.seed, "seed", 0)
        check_int(self.checkpoint_every, "checkpoint_every", 1)
        check_int(self.cache_chunks, "cache_chunks", 1)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}, "
                             f"got {self.objective!r}")
        if self.objective == "predictive" and self.constraint != "weak":
            raise ValueError("objective='predictive' unrolls a filter with process noise Q: "
                             "it needs constraint='weak'")
        if self.grad_clip is not None:
            _check_positive(self.grad_clip, "grad_clip")
        _check_positive(self.obs_var, "obs_var")
        _check_positive(self.decrement, "decrement")

    @property
    def protocol(self) -> PrequentialConfig:
        """The chunking of the corpus (a :class:`~da_embed.protocol.PrequentialConfig`)."""
        return PrequentialConfig(chunk=self.chunk, context=self.context,
                                 max_tokens=self.max_tokens)

    def identity(self) -> dict:
        """The fields a resumed run must share with its checkpoint (all but :data:`RESUMABLE`)."""
        d = dataclasses.asdict(self)
        d["learn"] = list(d["learn"])
        return {k: v for k, v in d.items() if k not in RESUMABLE
                and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}


@dataclass(frozen=True, eq=False)
class SpinupResult:
    """What :func:`~da_embed.spinup.spinup` (or :func:`~da_embed.spinup.load_spinup`) returns.

    Parameters
    ----------
    dynamics : LearnedDynamics
        The learned forecast model (``initial_state`` is s_b).
    Q : numpy.ndarray (n,)
        The learned diagonal of the process-noise covariance per chunk (zeros
        under the strong constraint).
    initial_state : numpy.ndarray (n,)
        s_b, the learned initial scales.
    background_var : numpy.ndarray (n,)
        b, the learned variances of the state at a window's start.
    step : int
        Adam steps done.
    config : SpinupConfig
    history : xarray.Dataset
        The training trajectory (dim ``step``; see :data:`~da_embed.spinup.LOG_VARIABLES`).
    checkpoint : pathlib.Path or None
        The last checkpoint written (None without ``out``).
    placement : dict
        The placement the dynamics were learned on (``Placement.describe()``).

    Examples
    --------
    >>> from da_embed.spinup import spinup
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()  # a model: spin-up on HiddenScale(model)
    >>> res = spinup(model, random_input_ids(model, batch=1, length=97)[0],
    ...              SpinupConfig(chunk=8, context=8, window=3, batch=2, steps=1, hidden=4,
    ...                           rank=2), progress=False)
    >>> res.step, res.initial_state.shape, res.placement["placement"]
    (1, (32,), 'HiddenScale')
    """

    dynamics: LearnedDynamics
    Q: np.ndarray
    initial_state: np.ndarray
    background_var: np.ndarray
    step: int
    config: SpinupConfig
    history: xr.Dataset
    checkpoint: Path | None = None
    placement: dict = dataclasses.field(default_factory=dict)
