r"""Spin-up: learn the scale dynamics (s_0, phi, adapter, Q) on a corpus by 4D-Var.

The state-space model of DESIGN.md section 2, on a *window* of K consecutive
chunks of a training corpus (chunk k: L tokens scored with ``context`` tokens
before them, as in :class:`~da_embed.assimilator.PrequentialConfig`), with
states ``S = (s_0, ..., s_{K-1})`` and chunk summaries ``h_k`` (the LM-head
input pooled over the chunk, as the online assimilator computes them):

.. math::

    s_0 &\sim N(s_b, \mathrm{diag}(b)), \\
    s_k &= m_\theta(s_{k-1}, h_{k-1}) + \varepsilon_k, \quad
           \varepsilon_k \sim N(0, Q), \quad Q = \mathrm{diag}(e^{\lambda}), \\
    m_\theta(s, h) &= f_\phi(s, h) + A_r(h)
           \quad \text{(TransitionNetwork + LowRankAdapter)}, \\
    y_k \mid s_k &\sim \text{the frozen LM under the state } s_k.

Its negative log joint density, the weak-constraint 4D-Var cost with its
normalising constants, is

.. math::

    J(S; \theta) = \tfrac12 |s_0 - s_b|^2_{\mathrm{diag}(b)^{-1}}
      + \tfrac12 \log\det 2\pi\,\mathrm{diag}(b)
      + \sum_{k=1}^{K-1} \Big[\tfrac12 |s_k - m_\theta(s_{k-1}, h_{k-1})|^2_{Q^{-1}}
      + \tfrac12 \log\det 2\pi Q\Big] + \sum_{k=0}^{K-1} \mathrm{NLL}_k(s_k),

with ``NLL_k`` the sum of the exact token negative log-likelihoods of chunk k
under ``s_k`` (no pseudo-observation).  ``theta`` = (the initial scales
``s_b`` and their variances ``b``, ``phi``, the adapter, ``lambda = log diag
Q``).  A stream starts anywhere in the domain, so ``N(s_b, diag b)`` is the
climatology of the state; ``b`` is learned with ``s_b`` (part ``initial``):
a fixed small ``b`` would pull every window's first state, and through the
dynamics the others, towards ``s_b`` and bias the learned drift.

What is minimised (weak constraint)
-----------------------------------
Not ``min_{S, theta} J``: profiling the states by their joint minimum does
not identify Q, because at the strong-constraint trajectory
``s_k = m(s_{k-1}, h_{k-1})`` the quadratic terms vanish and
``J -> -inf`` as ``Q -> 0`` through ``log det Q`` (:func:`window_cost` shows
it).  The log-determinant identifies Q once the states are *integrated out*,
so spin-up minimises the negative log marginal likelihood
``-log p(Y | theta) = -log int exp(-J) dS`` of each window by a stochastic
Laplace-EM, using Fisher's identity
``grad -log p(Y | theta) = E_{p(S | Y, theta)}[grad_theta J(S; theta)]``:

* *E-step* (per window, theta fixed): ``S* = argmin_S J`` by Newton's method
  with a line search; the Hessian is block-tridiagonal (K blocks of n x n:
  the NLL Hessians of the chunks, exact or their empirical Fisher
  ``sum_t g_t g_t^T``, plus the Gauss-Newton Hessian of the background and
  transition terms), factored by a block Cholesky in O(K n^3).  The posterior
  is approximated by ``q = N(S*, H^-1)`` (Laplace).
  The Newton iterations start from the chunks' states of their last E-step
  (the forecast for chunks not seen yet), so later E-steps take a few.
  The NLL Hessian blocks are exact for small states (closed form for
  ``HiddenScale``, autograd otherwise) and the empirical Fisher above
  ``AUTO_EXACT_MAX``; with the latter Newton converges linearly.
* *M-step*: ``m_steps`` Adam steps on ``E_q[J(S; theta)]`` (the NLL terms do
  not depend on theta: the LM is frozen).  By default the expectation is in
  closed form with ``m`` linearised at S* (``F_k = dm/ds``):
  ``E_q |eta_k|^2_{Q^-1} = sum_i (eta*_ki^2 + Var eta_ki) / Q_i`` with
  ``Var eta_k = Sigma_kk - 2 F_k Sigma_{k-1,k} + F_k Sigma_{k-1,k-1} F_k^T``
  from the band of ``H^-1`` (a selected inversion, as in the RTS smoother):
  the EM of the extended Kalman smoother.  It has no Monte-Carlo noise, which
  matters: in the many state directions the tokens barely inform, a noisy
  gradient is all Adam sees, and its normalised steps would random-walk the
  networks into a drift (``samples`` > 0 estimates the expectation by
  posterior draws instead).  With the dynamics fixed the stationary point in
  Q is ``Q_i = mean_k (eta*_ki^2 + Var eta_ki)``: the EM update of
  :func:`filters.variational.ml_diagonal_Q`, posterior variances included.

Windows are cycled as in operational 4D-Var: the corpus (one stream or a
list of documents) is cut into consecutive windows of ``window`` chunks,
split into ``batch`` tracks, and each step takes the next window of every
track.  A window's background is the forecast of the previous window's
analysis, ``N(m(mu, h), Q + diag((F o F) v))`` (``mu``, ``v``: mean and
marginal variances of its last state, ``F`` the Jacobian of ``m`` there);
only a track's first window and a document's use the climatology
``N(s_b, diag b)``.  Windows that always started from the climatology would
make the states trend from ``s_b`` towards where the data put them, and the
dynamics would learn that trend as a drift that never stops (measured on the
reference model: the open-loop forecast left the data after a few chunks).

``s_b`` and ``b`` (``climatology=True``, the default) are the climatology of
the states: the model is taken as stationary, so a new stream's first state
is distributed like any state of the domain, and every E-step's states (not
only the few windows that start a track) inform it: after each E-step,
``s_b`` and ``b`` move a fraction ``climatology_rate`` of the way to the
mean and variance (posterior variances included) of the batch's states, a
stochastic-approximation EM step (Delyon, Lavielle & Moulines 1999).  By
Adam on the track starts alone, ``s_b`` hardly moves (measured on the
reference model: norm 0.5 after 80 steps, where the states sit at norm 20 to
90), and a filter started there spends its first hundreds of chunks getting
to the data.  When the streams share a first state off the stationary mean
(planted streams that all start at one point), set ``climatology=False``.

``shrinkage`` > 0 puts a Gaussian prior on the parameters that are zero for
the random walk (MAP-EM).  Where the tokens barely inform the state, EM's
posterior follows the prior's drift and the M-step then confirms it; on the
reference model without the prior the learned drift carried the states (and,
with the climatology, ``s_b``) outward by about 0.4 per chunk, several times
the filters' own rate.

The logged ``objective`` is the Laplace approximation of
``-log p(Y | theta)``, ``J(S*) + 1/2 log det H - (K n / 2) log 2 pi``, per
token; its terms (``nll``, ``background``, ``transition``, ``logdet_q``,
``laplace``) are logged too.

The strong-constraint limit (``constraint="strong"``)
-----------------------------------------------------
With Q -> 0 the states are a deterministic function of the context:
``s_0 = s_b``, ``s_k = m_theta(s_{k-1}, h_{k-1})``, and ``J`` reduces to
``sum_k NLL_k(s_k)`` (the strong-constraint 4D-Var cost with ``s_0 = s_b``),
minimised by Adam through the unrolled window: the
:class:`~da_embed.placements.Hypersurface` ("adaptive latent hypersurface"),
trained autoregressively (chunk k is scored by the state generated from the
chunks before it).  At inference the state is carried over the whole stream,
so training does the same (truncated backpropagation through the chunks, as
for recurrent LMs): along the same tracks, the state after each window
(detached) starts the next; a track starts, and restarts at each document,
from ``s_b``.  Windows that always restart from ``s_b`` would never train the
long compositions of ``m`` that inference runs, and its state would drift.

Summaries
---------
``h_k`` is the mean over the chunk's positions of the LM head's input.  For
``HiddenScale`` (and its subspaces) it does not depend on the state.  For
other placements it is taken under the state the window's forecast assigns
to the chunk (the rollout ``s_0 = s_b``, ``s_k = m(s_{k-1}, h_{k-1})``), as
the online assimilator takes it under its forecast mean.

Outputs
-------
A checkpoint every ``checkpoint_every`` steps and at the end
(``checkpoint-NNNNNN.safetensors``, or ``.pt`` without safetensors, with a
JSON file beside it: configuration, hashes of the token stream and of the
model/placement, step, optimiser and random-generator state), and the
training trajectory ``spinup.nc`` (one record per step, synced as it goes).
``resume=`` continues bit for bit.  :func:`load_dynamics` turns a checkpoint
into the forecast model of every filter (``da-embed compare --dynamics``).

Shapes: B windows per step, K chunks per window, n state size, d summary
width, L tokens per chunk, V vocabulary, M posterior draws.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F

from ._version import __version__
from .protocol import PrequentialConfig, max_positions
from .dynamics import (DEFAULT_HIDDEN, DEFAULT_RANK, LearnedDynamics, LowRankAdapter,
                       TransitionNetwork, count_parameters)
from .observations import TokenNLLObservation, _hidden_parts
from .placements import HiddenScale, Hypersurface, Placement

__all__ = ["SpinupConfig", "SpinupResult", "spinup", "load_dynamics", "load_spinup",
           "window_cost", "check_learned_placement", "CONSTRAINTS",
           "PARTS", "HESSIANS", "LOG_VARIABLES", "LEARNED_SUFFIX"]

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
#: Sufficient decrease constant of the E-step line search (Armijo).
ARMIJO = 1e-4
#: File name of the training trajectory in ``out``.
LOG_NAME = "spinup.nc"
_FORMAT = "da-embed spinup checkpoint"
#: Tensors carried from step to step (checkpointed with the parameters).
_CARRIED = ("bank", "carry", "carry_var", "carry_h")
_LOG2PI = math.log(2.0 * math.pi)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SpinupConfig:
    """Settings of :func:`spinup` (checked on construction).

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

    def __post_init__(self):
        _ = self.protocol  # checks chunk, context, max_tokens
        _check_int(self.window, "window", 2)
        _check_int(self.batch, "batch", 1)
        _check_int(self.steps, "steps", 1)
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
        _check_int(self.hidden, "hidden", 1)
        _check_int(self.rank, "rank", 1)
        _check_int(self.samples, "samples", 0)
        _check_int(self.m_steps, "m_steps", 1)
        if self.hessian not in HESSIANS:
            raise ValueError(f"hessian must be one of {list(HESSIANS)}, got {self.hessian!r}")
        _check_int(self.newton_iter, "newton_iter", 1)
        _check_positive(self.newton_tol, "newton_tol")
        _check_int(self.seed, "seed", 0)
        _check_int(self.checkpoint_every, "checkpoint_every", 1)
        _check_int(self.cache_chunks, "cache_chunks", 1)

    @property
    def protocol(self) -> PrequentialConfig:
        """The chunking of the corpus (a :class:`PrequentialConfig`)."""
        return PrequentialConfig(chunk=self.chunk, context=self.context,
                                 max_tokens=self.max_tokens)

    def identity(self) -> dict:
        """The fields a resumed run must share with its checkpoint (all but :data:`RESUMABLE`)."""
        d = dataclasses.asdict(self)
        d["learn"] = list(d["learn"])
        return {k: v for k, v in d.items() if k not in RESUMABLE}


@dataclass(frozen=True, eq=False)
class SpinupResult:
    """What :func:`spinup` (or :func:`load_spinup`) returns.

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
        The training trajectory (dim ``step``; see :data:`LOG_VARIABLES`).
    checkpoint : pathlib.Path or None
        The last checkpoint written (None without ``out``).
    placement : dict
        The placement the dynamics were learned on (``Placement.describe()``).

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=97)[0]
    >>> cfg = SpinupConfig(chunk=8, context=8, window=3, batch=2, steps=1, hidden=4, rank=2)
    >>> res = spinup(HiddenScale(model), ids, cfg, progress=False)
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


# ----------------------------------------------------------------------------
# Block-tridiagonal algebra (the E-step Hessian): pure functions, tested against
# dense twins.  D (..., K, n, n) diagonal blocks, C (..., K - 1, n, n) with
# C[k] = H[k + 1, k]; the factor L is block lower-bidiagonal, H = L L^T.
# ----------------------------------------------------------------------------
def _btd_cholesky(D: torch.Tensor, C: torch.Tensor):
    """Block Cholesky factor (Ld, Lc) of H, and a (...,) int flag: 0 where H is PD."""
    K = D.shape[-3]
    Ld, Lc = [], []
    info = torch.zeros(D.shape[:-3], dtype=torch.int32, device=D.device)
    prev = None
    for k in range(K):
        Dk = D[..., k, :, :]
        if k > 0:
            # L[k, k-1] = C[k-1] L[k-1, k-1]^-T
            low = torch.linalg.solve_triangular(prev, C[..., k - 1, :, :].mT, upper=False).mT
            Lc.append(low)
            Dk = Dk - low @ low.mT
        Lkk, inf = torch.linalg.cholesky_ex(Dk)
        info = torch.maximum(info, inf)
        Ld.append(Lkk)
        prev = Lkk
    Lc_t = torch.stack(Lc, dim=-3) if Lc else D.new_zeros(*D.shape[:-3], 0, *D.shape[-2:])
    return (torch.stack(Ld, dim=-3), Lc_t), info


def _btd_solve(factor, r: torch.Tensor) -> torch.Tensor:
    """``H^-1 r`` for r (..., K, n) from the block Cholesky factor of H."""
    Ld, Lc = factor
    K = Ld.shape[-3]
    y = []
    for k in range(K):  # L y = r
        rk = r[..., k, :, None]
        if k > 0:
            rk = rk - Lc[..., k - 1, :, :] @ y[-1]
        y.append(torch.linalg.solve_triangular(Ld[..., k, :, :], rk, upper=False))
    x = [None] * K
    for k in range(K - 1, -1, -1):  # L^T x = y
        yk = y[k]
        if k < K - 1:
            yk = yk - Lc[..., k, :, :].mT @ x[k + 1]
        x[k] = torch.linalg.solve_triangular(Ld[..., k, :, :].mT, yk, upper=True)
    return torch.cat(x, dim=-1).mT.reshape(r.shape)


def _btd_sample(factor, eps: torch.Tensor) -> torch.Tensor:
    """``L^-T eps`` (..., K, n): deviations with covariance H^-1 for standard normal eps."""
    Ld, Lc = factor
    K = Ld.shape[-3]
    x = [None] * K
    for k in range(K - 1, -1, -1):
        ek = eps[..., k, :, None]
        if k < K - 1:
            ek = ek - Lc[..., k, :, :].mT @ x[k + 1]
        x[k] = torch.linalg.solve_triangular(Ld[..., k, :, :].mT, ek, upper=True)
    return torch.stack([v[..., 0] for v in x], dim=-2)


def _btd_logdet(factor) -> torch.Tensor:
    """``log det H`` (...,) from its block Cholesky factor."""
    Ld, _ = factor
    return 2.0 * torch.log(torch.diagonal(Ld, dim1=-2, dim2=-1)).sum((-1, -2))


def _btd_marginals(factor):
    """Blocks of H^-1 on the band: Sigma_kk (..., K, n, n) and Sigma_{k+1,k} (..., K-1, n, n).

    Selected inversion backwards from the last block, as the RTS smoother runs:
    with L_k = L[k, k] and E_k = L[k + 1, k],
    ``Sigma_{k+1,k} = -Sigma_{k+1,k+1} E_k L_k^-1`` and
    ``Sigma_kk = L_k^-T (L_k^-1 - E_k^T Sigma_{k+1,k})`` (rows of ``L^T H^-1 = L^-1``).
    """
    Ld, Lc = factor
    K, n = Ld.shape[-3], Ld.shape[-1]
    eye = torch.eye(n, dtype=Ld.dtype, device=Ld.device).expand(Ld.shape[:-3] + (n, n))
    inv = [torch.linalg.solve_triangular(Ld[..., k, :, :], eye, upper=False) for k in range(K)]
    diag, sub = [None] * K, [None] * (K - 1)
    diag[K - 1] = inv[K - 1].mT @ inv[K - 1]
    for k in range(K - 2, -1, -1):
        sub[k] = -diag[k + 1] @ Lc[..., k, :, :] @ inv[k]
        diag[k] = inv[k].mT @ (inv[k] - Lc[..., k, :, :].mT @ sub[k])
    sub_t = torch.stack(sub, -3) if sub else Ld.new_zeros(Ld.shape[:-3] + (0, n, n))
    return torch.stack(diag, -3), sub_t


def _factor_damped(D: torch.Tensor, C: torch.Tensor):
    """Block Cholesky of H, adding lambda I to the diagonal blocks until H is PD.

    Exact NLL Hessians may be indefinite away from the minimum; the damped
    matrix gives a descent direction (Levenberg).  Returns (factor, lambda).
    """
    factor, info = _btd_cholesky(D, C)
    if not bool(info.any()):
        return factor, 0.0
    eye = torch.eye(D.shape[-1], dtype=D.dtype, device=D.device)
    lam = 1e-8 * float(torch.diagonal(D, dim1=-2, dim2=-1).abs().max().clamp_min(1.0))
    for _ in range(40):
        factor, info = _btd_cholesky(D + lam * eye, C)
        if not bool(info.any()):
            return factor, lam
        lam *= 10.0
    raise FloatingPointError("the E-step Hessian could not be made positive definite "
                             "(non-finite NLL Hessian?)")


# ----------------------------------------------------------------------------
# Chunks: the observation terms NLL_k(s_k) of a batch of chunks
# ----------------------------------------------------------------------------
class _FastChunks:
    """NLL terms of chunks of a ``HiddenScale`` (or a Subspace of one), vectorised.

    Uses each chunk operator's cached final hidden states (the trunk ran once,
    when the operator was built); float64 throughout, so the E-step's Newton
    iterations converge cleanly.
    """

    fast = True

    def __init__(self, ops, head, sub):
        W, b = head
        self.W, self.b = W, b  # (V, d), (V,) or None, float64
        self.h = torch.stack([op._h for op in ops]).to(torch.float64)  # (C, L, d)
        self.y = torch.stack([op._y for op in ops])  # (C, L)
        self.P = None if sub is None else sub.basis.to(torch.float64)  # (n_full, n)
        self.ref = None if sub is None else sub.reference.to(torch.float64)  # (n_full,)
        self.summaries = torch.as_tensor(np.stack([op.summary_ for op in ops]))  # (C, d)

    def _full(self, Z):
        return Z if self.P is None else self.ref + Z @ self.P.T  # (C, n_full)

    def values(self, Z: torch.Tensor) -> torch.Tensor:
        """Chunk NLL sums (C,) for states Z (C, n); differentiable."""
        u = self.h * torch.exp(self._full(Z)).unsqueeze(1)  # (C, L, d)
        logits = F.linear(u, self.W, self.b)  # (C, L, V)
        C, L, V = logits.shape
        return F.cross_entropy(logits.reshape(-1, V), self.y.reshape(-1),
                               reduction="none").reshape(C, L).sum(1)

    def terms(self, Z: torch.Tensor, exact: bool):
        """Values (C,), gradients (C, n) and Hessian blocks (C, n, n) at Z (C, n).

        With u = h * exp(s), p = softmax(W u + b) and g_u = W^T (p - e_y), a
        token's gradient in s is ``u * g_u`` and its exact Hessian
        ``diag(u) W^T (diag p - p p^T) W diag(u) + diag(u * g_u)`` (mapped by
        the subspace basis P when there is one).
        """
        with torch.no_grad():
            u = self.h * torch.exp(self._full(Z)).unsqueeze(1)  # (C, L, d)
            logp = torch.log_softmax(F.linear(u, self.W, self.b), dim=-1)  # (C, L, V)
            val = -logp.gather(-1, self.y.unsqueeze(-1)).squeeze(-1).sum(1)  # (C,)
            p = logp.exp()
            r = p.clone()
            r.scatter_add_(-1, self.y.unsqueeze(-1), -torch.ones_like(logp[..., :1]))
            ug = u * (r @ self.W)  # (C, L, d): per-token gradients in s (DESIGN section 8)
            G = ug if self.P is None else ug @ self.P  # (C, L, n)
            grad = G.sum(1)
            if not exact:
                return val, grad, G.mT @ G  # empirical Fisher
            Pm = torch.eye(u.shape[-1], dtype=u.dtype) if self.P is None else self.P
            hess = Pm.T @ torch.diag_embed(ug.sum(1)) @ Pm  # (C, n, n)
            C, L, V, n = u.shape[0], u.shape[1], self.W.shape[0], Pm.shape[1]
            step = max(1, 2 ** 22 // (L * V * n))  # chunks per group: bounds (c, L, V, n)
            WT = self.W.T.contiguous()  # (d, V)
            for c in range(0, C, step):
                uP = u[c:c + step].unsqueeze(-2) * Pm.T  # (c, L, n, d)
                Y = uP @ WT  # (c, L, n, V): d logits / d s
                Yp = Y * p[c:c + step].unsqueeze(-2)  # (c, L, n, V)
                m = Yp.sum(-1)  # (c, L, n): E_p[d logit / d s]
                hess[c:c + step] += (Yp @ Y.mT).sum(1) - m.mT @ m
        return val, grad, hess


class _GenericChunks:
    """NLL terms of chunks of any placement, one chunk at a time (autograd)."""

    fast = False

    def __init__(self, ops):
        self.ops = ops
        self.summaries = None

    @staticmethod
    def nll_and_summary(op: TokenNLLObservation, x: torch.Tensor):
        """Chunk NLL sum (differentiable in x (n,)) and its summary (d,) under x."""
        head = op.placement.model.get_output_embeddings()
        captured = {}

        def grab(module, args):  # before the placement's own head hook: unscaled input
            captured["h"] = args[0]

        handle = head.register_forward_pre_hook(grab, prepend=True)
        try:
            nll = op.placement.token_nll(op._inputs, x.unsqueeze(0), targets=op._targets)
        finally:
            handle.remove()
        L = op.nobs
        summary = captured["h"][0, -L:].detach().to(torch.float64).mean(0).cpu()  # (d,)
        return nll[0, 0, -L:].sum().to(torch.float64), summary

    def values(self, Z: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.nll_and_summary(op, z)[0] for op, z in zip(self.ops, Z)])

    def terms(self, Z: torch.Tensor, exact: bool):
        vals, grads, hess = [], [], []
        for op, z in zip(self.ops, Z):
            x = z.detach().cpu().numpy()
            v, g = op.value_and_gradient(x)
            vals.append(float(np.sum(v)))
            grads.append(g)
            if exact:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                f = lambda s, op=op: self.nll_and_summary(op, s)[0]  # noqa: E731
                with sdpa_kernel([SDPBackend.MATH]):  # fused CPU kernels: no 2nd derivative
                    hess.append(torch.autograd.functional.hessian(f, z.detach()).detach())
            else:
                J = torch.as_tensor(op.jacobian(x))  # (L, n)
                hess.append(J.T @ J)
        return (torch.tensor(vals, dtype=torch.float64),
                torch.as_tensor(np.stack(grads), dtype=torch.float64),
                torch.stack(hess).to(torch.float64))


class _ChunkCache:
    """Chunk observation operators of a corpus, built on demand, kept in an LRU.

    Chunk c is chunk ``starts[c]`` of document ``docs[doc_of[c]]`` (its context
    never reaches into another document).
    """

    def __init__(self, placement: Placement, docs: list, doc_of: np.ndarray,
                 starts: np.ndarray, protocol: PrequentialConfig, capacity: int):
        self.placement, self.docs, self.doc_of, self.starts = placement, docs, doc_of, starts
        self.protocol, self.capacity = protocol, capacity
        self._ops: OrderedDict = OrderedDict()
        parts = _hidden_parts(placement)
        self._head = None
        self._sub = None if parts is None else parts[1]
        if parts is not None:
            head = parts[0].model.get_output_embeddings()
            self._head = (head.weight.detach().to(torch.float64),
                          None if head.bias is None else head.bias.detach().to(torch.float64))
        self.fast = None  # decided by the first operator's self-check

    def op(self, c: int) -> TokenNLLObservation:
        op = self._ops.get(c)
        if op is None:
            start, L = int(self.starts[c]), self.protocol.chunk
            a = max(0, start - self.protocol.context)
            op = TokenNLLObservation(self.placement, self.docs[self.doc_of[c]][a:start + L], L)
            if self.fast is None:
                self.fast = bool(op.fast_ and self._head is not None)
            self._ops[c] = op
            if len(self._ops) > self.capacity:
                self._ops.popitem(last=False)
        else:
            self._ops.move_to_end(c)
        return op

    def chunks(self, indices) -> _FastChunks | _GenericChunks:
        ops = [self.op(int(c)) for c in indices]
        if self.fast:
            return _FastChunks(ops, self._head, self._sub)
        return _GenericChunks(ops)


# ----------------------------------------------------------------------------
# The learned quantities
# ----------------------------------------------------------------------------
class _Learned:
    """s_b, log diag Q, the transition network and the adapter (float64)."""

    def __init__(self, n: int, d: int, config: SpinupConfig, hypersurface=None):
        if hypersurface is not None:
            self.transition, self.adapter = hypersurface.transition, hypersurface.adapter
            self.initial = hypersurface.initial_state
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                self.transition = TransitionNetwork(n, d, config.hidden).double()
                self.adapter = LowRankAdapter(n, d, config.rank).double()
            self.initial = nn.Parameter(torch.zeros(n, dtype=torch.float64))
        self.log_q = nn.Parameter(torch.full((n,), math.log(config.q_init),
                                             dtype=torch.float64))
        self.log_b = nn.Parameter(torch.full((n,), math.log(config.background_var),
                                             dtype=torch.float64))
        self.n, self.d = n, d

    def named(self) -> "OrderedDict[str, torch.Tensor]":
        out = OrderedDict([("initial_state", self.initial), ("log_b", self.log_b),
                           ("log_q", self.log_q)])
        out.update((f"transition.{k}", v) for k, v in self.transition.named_parameters())
        out.update((f"adapter.{k}", v) for k, v in self.adapter.named_parameters())
        return out

    def trainable(self, config: SpinupConfig) -> list[tuple[str, torch.Tensor]]:
        keep = {"initial": ("initial_state", "log_b"), "q": ("log_q",),
                "transition": ("transition.",), "adapter": ("adapter.",)}
        prefixes = tuple(x for p in config.learn for x in keep[p])
        strong_unused = ("log_b", "log_q") if config.constraint == "strong" else ()
        closed_form = (("initial_state", "log_b") if config.constraint == "weak"
                       and config.climatology else ())  # updated by climatology_update
        return [(k, v) for k, v in self.named().items()
                if k.startswith(prefixes) and k not in strong_unused + closed_form]

    def shrunk(self) -> list[torch.Tensor]:
        """The parameters that are zero for the random walk (``shrinkage``'s prior)."""
        return [self.transition.out.weight, self.transition.out.bias, self.adapter.B.weight]

    def climatology_update(self, S: torch.Tensor, V: torch.Tensor, rate: float) -> None:
        """Move s_b and b a fraction ``rate`` to the mean and variance of the states.

        ``S`` (..., n) posterior means, ``V`` (..., n) their marginal variances.
        """
        with torch.no_grad():
            S, V = S.reshape(-1, self.n), V.reshape(-1, self.n)
            mean = S.mean(0)
            var = ((S - mean) ** 2 + V).mean(0).clamp_min(1e-12)
            b = (1 - rate) * torch.exp(self.log_b) + rate * var
            self.initial.copy_((1 - rate) * self.initial + rate * mean)
            self.log_b.copy_(torch.log(b))

    def step(self, S: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
        """``m(s, h) = f_phi(s, h) + A_r(h)`` for S (N, n), H (N, d)."""
        return self.transition(S, H) + self.adapter(H.to(self.adapter.A.weight.dtype))

    def jacobian(self, S: torch.Tensor, H: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """``d m / d s`` (N, n, n) at S (N, n), H (N, d): ``I + W2 diag(1 - t^2) W1_s``.

        Differentiable in the parameters with ``grad=True`` (the M-step's
        linearised variances depend on it).
        """
        tr = self.transition
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            t = torch.tanh(tr.inp(torch.cat([S, H], dim=-1)))  # (N, hidden)
            W1s = tr.inp.weight[:, :self.n]  # (hidden, n)
            J = tr.out.weight @ ((1 - t * t).unsqueeze(-1) * W1s)  # (N, n, n)
        return J + torch.eye(self.n, dtype=J.dtype)

    def dynamics(self) -> LearnedDynamics:
        import copy

        return LearnedDynamics(copy.deepcopy(self.transition), copy.deepcopy(self.adapter),
                               initial_state=self.initial.detach().numpy().copy())


# ----------------------------------------------------------------------------
# The window cost and the two kinds of step
# ----------------------------------------------------------------------------
def _prior(S, Hs, sb, b, q, step_fn):
    """Background (B,), transition quadratic (B,) and model errors (B, K - 1, n).

    ``b`` and ``q`` are the diagonals (n,) of the background and process-noise
    covariances (or scalars).
    """
    B, K, n = S.shape
    pred = step_fn(S[:, :-1].reshape(-1, n), Hs[:, :-1].reshape(-1, Hs.shape[-1]))
    eta = S[:, 1:] - pred.reshape(B, K - 1, n)  # (B, K - 1, n)
    bg = 0.5 * ((S[:, 0] - sb) ** 2 / b).sum(-1)  # (B,)
    tr = 0.5 * (eta ** 2 / q).sum((1, 2))  # (B,)
    return bg, tr, eta


def window_cost(nll, states, summaries, step_fn, initial_state, background_var, q):
    r"""The weak-constraint cost ``J(S; theta)`` of windows, with its constants (nats).

    ``J = 1/2 |s_0 - s_b|^2_{diag(b)^-1} + 1/2 log det(2 pi diag b) + sum_k NLL_k
    + sum_{k >= 1} [1/2 |s_k - m(s_{k-1}, h_{k-1})|^2_{Q^-1} + 1/2 log det(2 pi Q)]``,
    the negative log joint density of the states and the tokens (see the
    module notes).

    Parameters
    ----------
    nll : torch.Tensor (B, K)
        Chunk NLL sums ``NLL_k(s_k)``.
    states : torch.Tensor (B, K, n)
    summaries : torch.Tensor (B, K, d)
    step_fn : callable
        ``m(S (N, n), H (N, d)) -> (N, n)``.
    initial_state : torch.Tensor (n,)
        s_b.
    background_var : float or torch.Tensor (n,)
        b, the diagonal of the background covariance.
    q : torch.Tensor (n,)
        The diagonal of Q.

    Returns
    -------
    torch.Tensor (B,)

    Examples
    --------
    Profiling the states does not identify Q: along the deterministic
    trajectory the cost falls without bound as Q -> 0.

    >>> import torch
    >>> S = torch.zeros(1, 3, 2, dtype=torch.float64)  # a trajectory of the identity map
    >>> cost = lambda q: float(window_cost(torch.zeros(1, 3), S, torch.zeros(1, 3, 1),
    ...                                    lambda s, h: s, torch.zeros(2), 0.1,
    ...                                    torch.full((2,), q, dtype=torch.float64))[0])
    >>> cost(1e-2) > cost(1e-4) > cost(1e-8)
    True
    """
    S = torch.as_tensor(states, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64)
    B, K, n = S.shape
    b = torch.as_tensor(background_var, dtype=torch.float64).expand(n)
    bg, tr, _ = _prior(S, torch.as_tensor(summaries, dtype=torch.float64),
                       torch.as_tensor(initial_state, dtype=torch.float64), b, q, step_fn)
    const = 0.5 * float((torch.log(b) + _LOG2PI).sum()) \
        + 0.5 * (K - 1) * float((torch.log(q) + _LOG2PI).sum())
    return torch.as_tensor(nll, dtype=torch.float64).sum(-1) + bg + tr + const


def _prior_blocks(S, Hs, q, b, jac_fn):
    """Gauss-Newton Hessian blocks (D (B, K, n, n), C (B, K - 1, n, n)) of the prior terms."""
    B, K, n = S.shape
    Fm = jac_fn(S[:, :-1].reshape(-1, n), Hs[:, :-1].reshape(-1, Hs.shape[-1]))
    Fm = Fm.detach().reshape(B, K - 1, n, n)  # d m(s_k) / d s_k
    qinv = 1.0 / q
    QF = qinv[:, None] * Fm  # Q^-1 F
    D = torch.zeros(B, K, n, n, dtype=S.dtype)
    D[:, 0] += torch.diag_embed(1.0 / b)  # b: (n,) or per window (B, n)
    D[:, :-1] += Fm.mT @ QF
    D[:, 1:] += torch.diag(qinv)
    return D, -QF


def _map_states(chunks, S, Hs, sb, b, q, step_fn, jac_fn, exact: bool, max_iter: int,
                tol: float):
    """E-step: Newton's method for S* = argmin J over every window at once.

    Returns S* (B, K, n), the block Cholesky factor of the Hessian at S*, the
    chunk NLL sums (B, K) there, and diagnostics.
    """
    B, K, n = S.shape

    def prior_grad(S):
        Sg = S.detach().requires_grad_(True)
        with torch.enable_grad():
            bg, tr, _ = _prior(Sg, Hs, sb, b, q, step_fn)
            (g,) = torch.autograd.grad((bg + tr).sum(), Sg)
        return bg.detach(), tr.detach(), g

    def cost(S):
        with torch.no_grad():
            nll = chunks.values(S.reshape(-1, n)).reshape(B, K)
            bg, tr, _ = _prior(S, Hs, sb, b, q, step_fn)
        return nll.sum(1) + bg + tr

    damping = 0.0
    stalled = torch.zeros(B, dtype=torch.bool)
    for it in range(max_iter + 1):
        val, g_obs, h_obs = chunks.terms(S.reshape(-1, n), exact)
        nll = val.reshape(B, K)
        bg, tr, g_p = prior_grad(S)
        D_p, C = _prior_blocks(S, Hs, q, b, jac_fn)
        g = g_obs.reshape(B, K, n) + g_p
        D = h_obs.reshape(B, K, n, n) + D_p
        factor, lam = _factor_damped(D, C)
        damping = max(damping, lam)
        delta = -_btd_solve(factor, g)
        dec = -(g * delta).sum((1, 2))  # Newton decrement squared (B,)
        active = (dec / 2 > tol) & ~stalled
        if it == max_iter or not bool(active.any()):
            break
        J = nll.sum(1) + bg + tr
        alpha = torch.ones(B, dtype=S.dtype)
        for _ in range(20):  # backtracking, per window
            J_try = cost(S + (alpha * active)[:, None, None] * delta)
            ok = (J_try <= J - ARMIJO * alpha * dec) | ~active
            if bool(ok.all()):
                break
            alpha = torch.where(ok, alpha, alpha / 2)
        alpha = torch.where(ok, alpha, torch.zeros_like(alpha))
        stalled |= active & (alpha == 0)  # no decrease: at the floating-point floor of J
        S = S + (alpha * active)[:, None, None] * delta
    info = {"iterations": it, "damping": damping, "decrement": float(dec.max() / 2),
            "background": bg, "transition": tr}
    return S, factor, nll, info


def _rollout(chunks, learned: _Learned, B: int, K: int, grad: bool, start=None):
    """The windows' forecast s_0, s_k = m(s_{k-1}, h_{k-1}): states, summaries, NLLs.

    ``s_0`` is ``s_b``, or ``start`` (B, n) where it is not NaN (a state
    carried from the window before).
    """
    n = learned.n
    s0 = learned.initial.to(torch.float64).expand(B, n)
    if start is not None:
        s0 = torch.where(torch.isnan(start), s0, start)
    with torch.set_grad_enabled(grad):
        if chunks.fast:
            Hs = chunks.summaries.reshape(B, K, -1).to(torch.float64)
            states = [s0]
            for k in range(1, K):
                states.append(learned.step(states[-1], Hs[:, k - 1]))
            S = torch.stack(states, 1)  # (B, K, n)
            nll = chunks.values(S.reshape(-1, n)).reshape(B, K)
            return S, Hs, nll
        states, summ, nll = [s0], [], []
        for k in range(K):
            row_h, row_v = [], []
            for w in range(B):
                v, h = chunks.nll_and_summary(chunks.ops[w * K + k], states[-1][w])
                row_v.append(v)
                row_h.append(h)
            summ.append(torch.stack(row_h))
            nll.append(torch.stack(row_v))
            if k + 1 < K:
                states.append(learned.step(states[-1], summ[-1]))
        return (torch.stack(states, 1), torch.stack(summ, 1).to(torch.float64),
                torch.stack(nll, 1))


def _weak_step(chunks, learned, config, rng, exact, B, K, tokens, warm, carried, restart):
    """E-step on the batch's windows; returns the M-step loss (a closure), the record, the
    states S* (B, K, n) and what the next windows of the tracks start from.

    ``warm`` (B, K, n) holds earlier E-step states of the chunks (NaN where
    none): the Newton iterations start there, elsewhere at the forecast.
    ``restart`` (B,) marks windows whose first state has the climatological
    background N(s_b, diag b); the others continue their track: their
    background is the forecast of the previous window's analysis,
    ``N(m(mu, h), Q + diag((F o F) v))`` (``mu``, ``v``, ``h`` in ``carried``:
    the mean and marginal variances of its last state, and its summary).
    """
    n = learned.n
    with torch.no_grad():
        mu, v, h_prev = carried["carry"], carried["carry_var"], carried["carry_h"]
        mu_safe = torch.where(restart[:, None], learned.initial.detach(), mu)
        h_safe = torch.where(restart[:, None], torch.zeros_like(h_prev), h_prev)
        F2v = (learned.jacobian(mu_safe, h_safe) ** 2 @ torch.nan_to_num(v).unsqueeze(-1))[..., 0]
        sb = torch.where(restart[:, None], learned.initial.detach(),
                         learned.step(mu_safe, h_safe))  # (B, n)
        q = torch.exp(learned.log_q.detach())
        b = torch.where(restart[:, None], torch.exp(learned.log_b.detach()), q + F2v)  # (B, n)
        S0, Hs, nll0 = _rollout(chunks, learned, B, K, grad=False, start=sb)
        step_fn = learned.step
        start = torch.where(torch.isnan(warm), S0, warm)
    S, factor, nll, info = _map_states(chunks, start, Hs, sb, b, q, step_fn,
                                       learned.jacobian, exact, config.newton_iter,
                                       config.newton_tol)
    with torch.no_grad():
        logdet = _btd_logdet(factor)  # (B,)
        Sd, Ss = _btd_marginals(factor)  # Sigma_kk (B, K, n, n), Sigma_{k+1,k} (B, K-1, n, n)
        following = {"carry": S[:, -1].clone(),
                     "carry_var": torch.diagonal(Sd[:, -1], dim1=-2, dim2=-1).clone(),
                     "carry_h": Hs[:, -1].clone()}
    keep = restart.to(torch.float64)  # (B,) 1: climatological background
    var0 = torch.diagonal(Sd[:, 0], dim1=-2, dim2=-1)  # (B, n) posterior variances of s_0

    def background(x0, extra):  # (..., B, n) first states; extra: E_q's variance term
        bt, qt = torch.exp(learned.log_b), torch.exp(learned.log_q)
        clim = 0.5 * (((x0 - learned.initial) ** 2 + extra) / bt).sum(-1) \
            + 0.5 * (learned.log_b + _LOG2PI).sum()  # climatology N(s_b, diag b)
        var = qt + F2v  # (B, n): the variance of the forecast from the track
        cyc = 0.5 * (((x0 - learned.step(mu_safe, h_safe)) ** 2 + extra) / var).sum(-1) \
            + 0.5 * (torch.log(var) + _LOG2PI).sum(-1)
        return keep * clim + (1 - keep) * cyc  # (..., B)

    M = config.samples
    if M == 0:  # E_q[J] in closed form under the dynamics linearised at S*
        Sk, Sp = S[:, 1:], S[:, :-1]  # (B, K-1, n)
        Hp = Hs[:, :-1].reshape(-1, Hs.shape[-1])

        def loss():  # M-step: E_q[J(S; theta)] (theta-dependent terms), per token
            qt = torch.exp(learned.log_q)
            eta = Sk - learned.step(Sp.reshape(-1, n), Hp).reshape(B, K - 1, n)
            Fm = learned.jacobian(Sp.reshape(-1, n), Hp, grad=True).reshape(B, K - 1, n, n)
            # Var eta_k = Sigma_kk - 2 F Sigma_{k-1,k} + F Sigma_{k-1,k-1} F^T (diagonals)
            var = torch.diagonal(Sd[:, 1:], dim1=-2, dim2=-1) - 2 * (Fm * Ss).sum(-1) \
                + ((Fm @ Sd[:, :-1]) * Fm).sum(-1)
            tr = 0.5 * ((eta ** 2 + var) / qt).sum()
            logq = 0.5 * (K - 1) * (learned.log_q + _LOG2PI).sum()
            return (background(S[:, 0], var0).sum() + tr + B * logq) / tokens
    else:  # M draws from q (antithetic pairs when M is even: the mean's error cancels)
        half = M // 2 if M % 2 == 0 else M
        eps = torch.as_tensor(rng.standard_normal((half, B, K, n)))
        if half != M:
            eps = torch.cat([eps, -eps])
        with torch.no_grad():
            X = S.unsqueeze(0) + _btd_sample(factor, eps)  # (M, B, K, n)
        Xf = X.reshape(M * B, K, n)
        Hf = Hs.unsqueeze(0).expand(M, B, K, Hs.shape[-1]).reshape(M * B, K, -1)

        def loss():  # M-step: Monte-Carlo E_q[J(S; theta)] (theta-dependent terms), per token
            _, tr_s, _ = _prior(Xf, Hf, learned.initial, 1.0, torch.exp(learned.log_q),
                                learned.step)
            logq = 0.5 * (K - 1) * (learned.log_q + _LOG2PI).sum()
            bg = background(X[:, :, 0], 0.0).sum() / M
            return (bg + tr_s.sum() / M + B * logq) / tokens

    const_b = 0.5 * float((torch.log(b) + _LOG2PI).sum())
    logq_term = 0.5 * (K - 1) * float((torch.log(q) + _LOG2PI).sum())
    laplace = 0.5 * logdet - 0.5 * K * n * _LOG2PI
    record = {
        "nll": float(nll.sum()) / tokens, "nll_forecast": float(nll0.sum()) / tokens,
        "background": float(info["background"].sum() + const_b) / tokens,
        "transition": float(info["transition"].sum()) / tokens,
        "logdet_q": B * logq_term / tokens, "laplace": float(laplace.sum()) / tokens,
        "state_norm": float(S.norm(dim=-1).mean()),
        "newton_iterations": info["iterations"], "damping": info["damping"],
    }
    record["objective"] = (record["nll"] + record["background"] + record["transition"]
                           + record["logdet_q"] + record["laplace"])
    V = torch.diagonal(Sd, dim1=-2, dim2=-1).clone()  # (B, K, n) posterior variances
    return loss, record, S, V, following


def _strong_step(chunks, learned, B, K, tokens, start):
    """The unrolled windows' NLL per token (a closure), the record, and the state after them.

    ``start`` (B, n): the state carried into each window (NaN: ``s_b``).
    """
    with torch.no_grad():
        S, Hs, nll = _rollout(chunks, learned, B, K, grad=False, start=start)
        after = learned.step(S[:, -1], Hs[:, -1])  # (B, n): carried into the next window

    def loss():
        return _rollout(chunks, learned, B, K, grad=True, start=start)[2].sum() / tokens

    nan = float("nan")
    value = float(nll.sum()) / tokens
    record = {"nll": value, "nll_forecast": value, "background": 0.0, "transition": 0.0,
              "logdet_q": nan, "laplace": nan, "state_norm": float(S.norm(dim=-1).mean()),
              "newton_iterations": 0, "damping": 0.0, "objective": value}
    return loss, record, after


def _tracks(doc_of: np.ndarray, K: int, B: int):
    """Strong-constraint schedule: consecutive windows of K chunks, cut into B tracks.

    Returns the first chunk of every window in stream order (documents one
    after the other), whether the window starts its document, and the track
    length; track j is windows ``j * length .. (j + 1) * length - 1``, walked
    one window per step, the state carried from each window into the next (the windows
    left over when they do not fill B tracks are not used).
    """
    first, starts_doc = [], []
    C = doc_of.size
    c = 0
    while c + K <= C:
        if doc_of[c] != doc_of[c + K - 1]:  # the document's remainder is too short
            c = int(np.searchsorted(doc_of, doc_of[c], side="right"))
            continue
        first.append(c)
        starts_doc.append(c == 0 or doc_of[c - 1] != doc_of[c])
        c += K
    first, starts_doc = np.asarray(first, dtype=np.int64), np.asarray(starts_doc, dtype=bool)
    return first, starts_doc, max(1, first.size // B)


# ----------------------------------------------------------------------------
# The training trajectory (netCDF, appended per step)
# ----------------------------------------------------------------------------
#: Per-step variables of ``spinup.nc``: name -> (dims, long_name, units).
LOG_VARIABLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "objective": (("step",), "Laplace approximation of the negative log marginal likelihood "
                  "of the step's windows (strong constraint: their NLL), per token", "nat"),
    "nll": (("step",), "token NLL at the E-step's states S* (strong: at the rollout), "
            "per token", "nat"),
    "nll_forecast": (("step",), "token NLL at the windows' forecast s_0 = s_b, "
                     "s_k = m(s_{k-1}, h_{k-1}) (no data used), per token", "nat"),
    "background": (("step",), "1/2 |s_0 - s_b|^2_{diag(b)^-1} + 1/2 log det(2 pi diag b) "
                   "at S*, per token", "nat"),
    "transition": (("step",), "1/2 sum_k |s_k - m(s_{k-1}, h_{k-1})|^2_{Q^-1} at S*, "
                   "per token", "nat"),
    "logdet_q": (("step",), "1/2 sum_k log det(2 pi Q), per token", "nat"),
    "laplace": (("step",), "1/2 log det H - (K n / 2) log(2 pi) (Laplace volume term), "
                "per token", "nat"),
    "mstep_loss": (("step",), "E_q[J(S; theta)] minimised by the M-step (theta-dependent "
                   "terms; strong constraint: the NLL), at its first Adam step, per token",
                   "nat"),
    "q": (("step", "state"), "diagonal of the process-noise covariance Q per chunk "
          "(before the step's update)", "1"),
    "q_mean": (("step",), "mean of the diagonal of Q", "1"),
    "q_min": (("step",), "smallest entry of the diagonal of Q", "1"),
    "q_max": (("step",), "largest entry of the diagonal of Q", "1"),
    "initial_state_norm": (("step",), "Euclidean norm of s_b", "1"),
    "b_mean": (("step",), "mean of the background variances b", "1"),
    "state_norm": (("step",), "mean Euclidean norm of the windows' states", "1"),
    "newton_iterations": (("step",), "Newton iterations of the E-step", "1"),
    "damping": (("step",), "largest Levenberg damping added to the E-step Hessian", "1"),
    "grad_norm": (("step",), "Euclidean norm of the gradient of the learned parameters",
                  "1"),
    "wall_time": (("step",), "wall time of the step", "s"),
}
_COORDS = {"step": {"long_name": "Adam step", "units": "1", "axis": "T"},
           "state": {"long_name": "state component index", "units": "1"}}


def _log_attrs(attrs: dict) -> dict:
    from .trajectory import netcdf_attrs

    return netcdf_attrs(attrs)


def _history(records: list[dict], n: int, attrs: dict) -> xr.Dataset:
    T = len(records)
    data = {}
    for k, (dims, long_name, units) in LOG_VARIABLES.items():
        if T:
            vals = np.array([r[k] for r in records], dtype=float)
        else:
            vals = np.zeros((0, n) if len(dims) == 2 else (0,))
        data[k] = xr.Variable(dims, vals, {"long_name": long_name, "units": units})
    coords = {"step": ("step", np.array([r["step"] for r in records], dtype=np.int64),
                       _COORDS["step"]),
              "state": ("state", np.arange(n), _COORDS["state"])}
    return xr.Dataset(data, coords=coords, attrs=_log_attrs(attrs))


class _StepLog:
    """``spinup.nc``: one record per step, appended and synced (a killed run keeps them)."""

    def __init__(self, path: Path, n: int, attrs: dict, previous: list[dict]):
        import netCDF4

        self.path = path
        ds = netCDF4.Dataset(os.fspath(path), "w", format="NETCDF4")
        self._ds = ds
        try:
            ds.setncatts(_log_attrs(attrs))
            ds.createDimension("step", None)
            ds.createDimension("state", n)
            for name in ("step", "state"):
                v = ds.createVariable(name, "i8", (name,))
                v.setncatts(_COORDS[name])
            ds["state"][:] = np.arange(n)
            for k, (dims, long_name, units) in LOG_VARIABLES.items():
                v = ds.createVariable(k, "f8", dims, fill_value=np.nan)
                v.setncatts({"long_name": long_name, "units": units})
            self.count = 0
            for r in previous:
                self.append(r, sync=False)
            ds.sync()
        except BaseException:
            ds.close()
            raise

    def append(self, record: dict, sync: bool = True) -> None:
        i, ds = self.count, self._ds
        ds["step"][i] = record["step"]
        for k, (dims, _, _) in LOG_VARIABLES.items():
            if len(dims) == 2:
                ds[k][i, :] = np.asarray(record[k], dtype=float)
            else:
                ds[k][i] = record[k]
        self.count = i + 1
        if sync:
            ds.setncattr("steps_logged", self.count)
            ds.sync()

    def close(self, attrs: dict | None = None) -> None:
        if self._ds is None:
            return
        try:
            if attrs:
                self._ds.setncatts(_log_attrs(attrs))
        finally:
            self._ds.close()
            self._ds = None


def _previous_records(path: Path, step: int) -> list[dict]:
    """Records of an existing log up to ``step`` (those after it are dropped on resume)."""
    if not path.exists():
        return []
    ds = xr.load_dataset(path, engine="netcdf4")
    out = []
    for i, s in enumerate(ds["step"].values):
        if int(s) > step:
            continue
        r = {"step": int(s)}
        for k, (dims, _, _) in LOG_VARIABLES.items():
            v = ds[k].values[i] if k in ds else (np.full(ds.sizes["state"], np.nan)
                                                 if len(dims) == 2 else np.nan)
            r[k] = np.asarray(v, dtype=float) if len(dims) == 2 else float(v)
        out.append(r)
    return out


# ----------------------------------------------------------------------------
# Fingerprints and checkpoints
# ----------------------------------------------------------------------------
def _stream_hash(docs: list) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(np.int64(d.size).tobytes())
        h.update(np.ascontiguousarray(d, dtype=np.int64).tobytes())
    return h.hexdigest()


def _model_hash(placement: Placement) -> str:
    """sha256 of the placement's description, its subspace (if any) and the LM's weights."""
    h = hashlib.sha256()
    h.update(json.dumps(placement.describe(), sort_keys=True, default=str).encode())
    for attr in ("basis", "reference"):
        t = getattr(placement, attr, None)
        if isinstance(t, torch.Tensor):
            h.update(t.detach().cpu().numpy().tobytes())
    for name, p in placement.model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _has_safetensors() -> bool:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return False
    return True


def _write_checkpoint(out: Path, step: int, learned: _Learned, optimizer, meta: dict,
                      carried: dict) -> Path:
    """Parameters, Adam state and ``carried`` (bank, carry, generator state) after ``step``."""
    tensors = {f"param.{k}": v.detach().cpu().contiguous().clone()
               for k, v in learned.named().items()}
    tensors.update({k: carried[k].clone() for k in _CARRIED})
    sd = optimizer.state_dict()
    shapes = {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            t = torch.as_tensor(v).detach().cpu()
            shapes[f"adam.{i}.{k}"] = list(t.shape)
            tensors[f"adam.{i}.{k}"] = t.reshape(-1).contiguous().clone()
    base = out / f"checkpoint-{step:06d}"
    if _has_safetensors():
        from safetensors.torch import save_file

        tensor_path = base.with_suffix(".safetensors")
        tmp = tensor_path.with_name(tensor_path.name + ".tmp")
        save_file(tensors, os.fspath(tmp))
    else:
        tensor_path = base.with_suffix(".pt")
        tmp = tensor_path.with_name(tensor_path.name + ".tmp")
        torch.save(tensors, tmp)
    os.replace(tmp, tensor_path)
    doc = {**meta, "step": int(step), "tensors": tensor_path.name,
           "rng": carried["rng"], "created": _now(),
           "optimizer": {"param_groups": sd["param_groups"], "shapes": shapes}}
    json_path = base.with_suffix(".json")
    tmp = json_path.with_name(json_path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=_json_default)
    os.replace(tmp, json_path)  # the JSON file is written last: it marks a complete checkpoint
    return json_path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def _checkpoint_json(path) -> Path:
    """The JSON file of a checkpoint given as a folder (latest), JSON or tensor file."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(p)!r}")
    if p.is_dir():
        found = sorted(p.glob("checkpoint-*.json"))
        if not found:
            raise FileNotFoundError(f"no checkpoint (checkpoint-*.json) in {os.fspath(p)!r}")
        return found[-1]
    if p.suffix in (".safetensors", ".pt"):
        p = p.with_suffix(".json")
    if p.suffix != ".json":
        raise ValueError(f"a checkpoint is a folder, a checkpoint-*.json file or its "
                         f".safetensors/.pt file, got {os.fspath(path)!r}")
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(p)!r}")
    return p


def _read_checkpoint(path):
    jp = _checkpoint_json(path)
    try:
        with open(jp) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"could not read the checkpoint {os.fspath(jp)!r}: {exc}") from None
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{os.fspath(jp)!r} is not a da-embed spin-up checkpoint")
    tp = jp.with_name(meta["tensors"])
    if not tp.exists():
        raise FileNotFoundError(f"the checkpoint's tensors are missing: {os.fspath(tp)!r}")
    if tp.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(os.fspath(tp))
    else:
        tensors = torch.load(tp, weights_only=True)
    return jp, meta, tensors


def _check_compatible(jp: Path, meta: dict, expected: dict) -> None:
    problems = []
    saved = meta.get("identity", {})
    for k, v in expected["identity"].items():
        if saved.get(k) != v:
            problems.append(f"{k} (checkpoint {saved.get(k)!r}, this run {v!r})")
    for k, what in (("stream_sha256", "token stream"), ("model_sha256", "model or placement"),
                    ("kind", "what is trained")):
        if meta.get(k) != expected[k]:
            a, b = str(meta.get(k)), str(expected[k])
            problems.append(f"{what} ({k}: checkpoint {a[:12]}, this run {b[:12]})")
    if problems:
        raise ValueError(f"checkpoint {os.fspath(jp)!r} is from another configuration: "
                         + "; ".join(problems))


def _restore(meta: dict, tensors: dict, learned: _Learned, optimizer, carried: dict) -> None:
    with torch.no_grad():
        for k in _CARRIED:
            carried[k] = tensors[k].clone()
        carried["rng"] = meta["rng"]
        for k, v in learned.named().items():
            t = tensors.get(f"param.{k}")
            if t is None or tuple(t.shape) != tuple(v.shape):
                raise ValueError(f"checkpoint parameter {k!r} is missing or has another shape")
            v.copy_(t)
    shapes = meta["optimizer"]["shapes"]
    state = {}
    for key, shape in shapes.items():
        _, i, name = key.split(".", 2)
        state.setdefault(int(i), {})[name] = tensors[key].reshape(shape).clone()
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------
# The public entry points
# ----------------------------------------------------------------------------
def _as_placement(model_or_placement) -> Placement:
    if isinstance(model_or_placement, Placement):
        return model_or_placement
    if isinstance(model_or_placement, nn.Module):
        return HiddenScale(model_or_placement)
    raise ValueError(f"model_or_placement must be a Hugging Face causal LM or a Placement, "
                     f"got {type(model_or_placement).__name__}")


def _check_streams(placement: Placement, token_ids, protocol: PrequentialConfig) -> list:
    """The corpus as a list of 1-D int64 documents (``max_tokens`` caps their total)."""
    def as_ids(x, what):
        try:
            arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} must be a sequence of token ids: {exc}") from None
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{what} must hold integer token ids, got dtype {arr.dtype}")
        return arr.astype(np.int64)

    if isinstance(token_ids, (list, tuple)) and len(token_ids) and np.ndim(token_ids[0]) > 0:
        docs = [as_ids(d, f"token_ids[{i}]") for i, d in enumerate(token_ids)]
        if any(d.ndim != 1 for d in docs):
            raise ValueError("token_ids: every document must be a 1-D sequence of token ids")
    else:
        arr = as_ids(token_ids, "token_ids")
        if arr.ndim not in (1, 2):
            raise ValueError(f"token_ids must be 1-D (one stream), 2-D (streams, tokens) or a "
                             f"list of 1-D documents, got shape {arr.shape}")
        docs = [arr] if arr.ndim == 1 else list(arr)
    if protocol.max_tokens is not None:
        kept, left = [], protocol.max_tokens
        for d in docs:
            if left <= 0:
                break
            kept.append(d[:left])
            left -= kept[-1].size
        docs = kept
    if not docs or sum(d.size for d in docs) == 0:
        raise ValueError("token_ids is empty (the corpus has no tokens)")
    V = placement.vocab_size
    lo = min(int(d.min()) for d in docs if d.size)
    hi = max(int(d.max()) for d in docs if d.size)
    if lo < 0 or hi >= V:
        raise ValueError(f"token ids must lie in [0, {V}) (the model's vocabulary), got "
                         f"[{lo}, {hi}]: tokenizer and model do not match")
    limit = max_positions(placement.model)
    if limit is not None and protocol.window > limit:
        raise ValueError(f"context + chunk - 1 = {protocol.window} tokens exceed the model's "
                         f"position limit of {limit}; lower context or chunk")
    return docs


def _chunk_index(docs: list, protocol: PrequentialConfig, K: int):
    """Per chunk its document and first target (doc_of, starts), and the valid window starts."""
    plain = PrequentialConfig(chunk=protocol.chunk, context=protocol.context)
    doc_of, starts = [], []
    for i, d in enumerate(docs):
        st = plain.starts(d.size)
        doc_of.extend([i] * st.size)
        starts.extend(st.tolist())
    doc_of, starts = np.asarray(doc_of, dtype=np.int64), np.asarray(starts, dtype=np.int64)
    C = starts.size
    first = np.arange(max(0, C - K + 1))
    valid = first[doc_of[first] == doc_of[first + K - 1]] if C >= K else first
    return doc_of, starts, valid


def spinup(model_or_placement, token_ids, config: SpinupConfig | None = None, *, out=None,
           resume=None, progress: bool = True) -> SpinupResult:
    """Learn s_b, the transition network, the adapter and Q on a corpus (see the module notes).

    Parameters
    ----------
    model_or_placement : transformers.PreTrainedModel or Placement
        Where the state acts (a model means ``HiddenScale(model)``); a
        :class:`~da_embed.placements.Hypersurface` is trained in place, in the
        strong-constraint limit.
    token_ids : array_like of int
        The training corpus: one stream (T,), S streams (S, T), or a list of
        1-D documents; windows never span two documents.
    config : SpinupConfig, optional
    out : str or PathLike, optional
        Folder for the checkpoints and ``spinup.nc`` (created).
    resume : str or PathLike, optional
        A checkpoint (its JSON or tensor file, or a folder: its latest) to
        continue from, bit for bit; its configuration (but ``steps``,
        ``checkpoint_every``, ``cache_chunks``), token stream and
        model/placement must be this run's.
    progress : bool, default True
        A tqdm progress bar.

    Returns
    -------
    SpinupResult

    Raises
    ------
    ValueError
        Bad input or a checkpoint from another configuration (the message
        names what differs).
    KeyboardInterrupt
        Re-raised after a checkpoint of the last completed step is written
        (with ``out``), so ``resume=out`` loses nothing.

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=97)[0]
    >>> cfg = SpinupConfig(chunk=8, context=8, window=3, batch=2, steps=2, hidden=4, rank=2)
    >>> res = spinup(HiddenScale(model), ids, cfg, progress=False)
    >>> res.Q.shape, res.history.sizes["step"], res.dynamics.num_parameters
    ((32,), 2, 548)
    """
    from tqdm.auto import tqdm

    cfg = SpinupConfig() if config is None else config
    if not isinstance(cfg, SpinupConfig):
        raise ValueError(f"config must be a SpinupConfig, got {type(cfg).__name__}")
    placement = _as_placement(model_or_placement)
    hyper = placement if isinstance(placement, Hypersurface) else None
    if hyper is not None:
        if cfg.constraint != "strong":
            raise ValueError("a Hypersurface is the strong-constraint limit: use "
                             "SpinupConfig(constraint='strong') (or Hypersurface.fit)")
        if (cfg.hidden, cfg.rank) != (hyper.transition.hidden, hyper.adapter.rank):
            raise ValueError(f"config hidden/rank ({cfg.hidden}, {cfg.rank}) differ from the "
                             f"Hypersurface's ({hyper.transition.hidden}, {hyper.adapter.rank})")
    target = placement if hyper is None else hyper.placement
    protocol = cfg.protocol
    docs = _check_streams(target, token_ids, protocol)
    K, B = cfg.window, cfg.batch
    doc_of, starts, valid = _chunk_index(docs, protocol, K)
    track_first, track_reset, track_len = _tracks(doc_of, K, B)
    if valid.size == 0:
        raise ValueError(f"the corpus has {starts.size} chunks of {cfg.chunk} tokens and no "
                         f"document with window = {K} consecutive chunks: give more text or "
                         f"lower window/chunk")
    n = int(target.state_dim)
    d = int(target.model.get_output_embeddings().weight.shape[1])
    learned = _Learned(n, d, cfg, hyper)
    trainable = learned.trainable(cfg)
    climatology = cfg.constraint == "weak" and cfg.climatology and "initial" in cfg.learn
    if not trainable and not climatology:
        raise ValueError(f"learn = {cfg.learn} leaves nothing to learn under the "
                         f"{cfg.constraint} constraint")
    # With the climatology alone (learn="initial") Adam has nothing to do: a zero-size
    # placeholder keeps the optimizer (and the checkpoint format) the same.
    optimizer = torch.optim.Adam([p for _, p in trainable] or [
        torch.zeros(0, dtype=torch.float64, requires_grad=True)], lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    kind = "hypersurface" if hyper is not None else "dynamics"
    meta = {"format": _FORMAT, "package": "da-embed", "version": __version__,
            "config": {**cfg.identity(), **{k: getattr(cfg, k) for k in RESUMABLE}},
            "identity": cfg.identity(), "stream_sha256": _stream_hash(docs),
            "stream_tokens": int(sum(doc.size for doc in docs)), "documents": len(docs),
            "chunks": int(starts.size),
            "model_sha256": _model_hash(target), "kind": kind,
            "placement": _placement_record(target), "state_dim": n, "summary_dim": d,
            "parameters": {"transition": count_parameters(learned.transition),
                           "adapter": count_parameters(learned.adapter)},
            "log": LOG_NAME}
    start_step = 0
    previous: list[dict] = []
    # What carries over from step to step (all of it is checkpointed): the E-step
    # states of every chunk seen (NaN: not yet; the warm starts of the weak
    # constraint), the states carried along the tracks (strong), the generator.
    carried = {"bank": torch.full((int(starts.size), n), float("nan"), dtype=torch.float64),
               "carry": torch.full((B, n), float("nan"), dtype=torch.float64),
               "carry_var": torch.full((B, n), float("nan"), dtype=torch.float64),
               "carry_h": torch.zeros((B, d), dtype=torch.float64),
               "rng": rng.bit_generator.state}
    if resume is not None:
        jp, saved, tensors = _read_checkpoint(resume)
        _check_compatible(jp, saved, meta)
        if int(saved["step"]) > cfg.steps:
            raise ValueError(f"steps = {cfg.steps} is below the checkpoint's step "
                             f"{saved['step']}")
        _restore(saved, tensors, learned, optimizer, carried)
        rng.bit_generator.state = carried["rng"]
        start_step = int(saved["step"])
        previous = _previous_records(jp.parent / LOG_NAME, start_step)
    out_dir = None if out is None else Path(os.fspath(out))
    attrs = {"title": f"da-embed spin-up ({cfg.constraint} constraint) on "
                      f"{type(target).__name__}", "constraint": cfg.constraint,
             "config": json.dumps(meta["config"], default=_json_default),
             "placement": json.dumps(meta["placement"], default=str),
             "stream_sha256": meta["stream_sha256"], "model_sha256": meta["model_sha256"],
             "package": "da-embed", "version": __version__, "created": _now(),
             "objective": "Laplace-EM on the weak-constraint 4D-Var cost (see da_embed.spinup)"
             if cfg.constraint == "weak" else "strong-constraint cost sum_k NLL_k(s_k), "
             "s_0 = s_b, s_k = m(s_{k-1}, h_{k-1})"}
    log = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        log = _StepLog(out_dir / LOG_NAME, n, attrs, previous)
    records = list(previous)
    V = int(target.model.get_output_embeddings().weight.shape[0])
    exact = cfg.hessian == "exact" or (cfg.hessian == "auto" and n <= AUTO_EXACT_MAX
                                       and n * d * V <= AUTO_EXACT_WORK)
    tokens = B * K * cfg.chunk
    params = [p for _, p in trainable]
    last_ckpt, done, status, updating = None, start_step, "interrupted", False
    bar = tqdm(total=cfg.steps, initial=start_step, desc=f"spin-up ({cfg.constraint})",
               disable=not progress, unit="step")
    try:
        with target.attached():
            cache = _ChunkCache(target, docs, doc_of, starts, protocol, cfg.cache_chunks)
            for step in range(start_step + 1, cfg.steps + 1):
                tic = time.perf_counter()
                # Track j's next window; what the window before left carries in, unless
                # the track (or a document) starts there.
                pos = (step - 1) % track_len
                w = np.minimum(np.arange(B) * track_len + pos, track_first.size - 1)
                first = track_first[w]
                restart = torch.as_tensor(track_reset[w] | (pos == 0))
                chunks_of = (first[:, None] + np.arange(K)).ravel()  # (B * K,) window-major
                chunks = cache.chunks(chunks_of)
                q_before = torch.exp(learned.log_q.detach()).numpy().copy()
                if cfg.constraint == "weak":
                    idx = torch.as_tensor(chunks_of)
                    loss_fn, record, S, V, following = _weak_step(
                        chunks, learned, cfg, rng, exact, B, K, tokens,
                        carried["bank"][idx].reshape(B, K, n), carried, restart)
                else:
                    start = torch.where(restart[:, None], torch.nan, carried["carry"])
                    loss_fn, record, after = _strong_step(chunks, learned, B, K, tokens, start)
                first_loss, gn = float("nan"), 0.0
                lr_now = cfg.lr if cfg.lr_half_life is None \
                    else cfg.lr * 0.5 ** ((step - 1) / cfg.lr_half_life)
                for group in optimizer.param_groups:
                    group["lr"] = lr_now
                shrunk = [w for w in learned.shrunk() if any(w is p for p in params)] \
                    if cfg.shrinkage > 0 and cfg.constraint == "weak" else []
                diverged = (f"spin-up diverged at step {step}: non-finite objective or gradient; "
                            "resume from the last checkpoint with a lower lr")
                if not math.isfinite(record["objective"]):
                    raise FloatingPointError(diverged)
                for it in range(cfg.m_steps if params else 0):  # Adam steps on this E-step
                    with torch.enable_grad():
                        loss = loss_fn()
                        if shrunk:  # MAP: the Gaussian prior towards the random walk
                            loss = loss + 0.5 * cfg.shrinkage * sum((w ** 2).sum()
                                                                    for w in shrunk)
                        grads = torch.autograd.grad(loss, params, allow_unused=True)
                    sq = sum(0.0 if g is None else float((g ** 2).sum()) for g in grads)
                    if it == 0:
                        first_loss, gn = float(loss.detach()), sq
                    if not math.isfinite(sq):
                        raise FloatingPointError(diverged)
                    for p, g in zip(params, grads):
                        p.grad = torch.zeros_like(p) if g is None else g.detach()
                    updating = True
                    optimizer.step()
                # The step is complete: what carries over is updated together.
                if cfg.constraint == "weak":
                    if climatology:
                        learned.climatology_update(S, V, cfg.climatology_rate)
                    carried["bank"][idx] = S.reshape(B * K, n)  # warm starts of later E-steps
                    carried.update(following)
                else:
                    carried["carry"] = after
                carried["rng"] = rng.bit_generator.state
                done, updating = step, False
                record.update(step=step, q=q_before, q_mean=float(q_before.mean()),
                              q_min=float(q_before.min()), q_max=float(q_before.max()),
                              initial_state_norm=float(learned.initial.detach().norm()),
                              b_mean=float(torch.exp(learned.log_b.detach()).mean()),
                              grad_norm=math.sqrt(gn), mstep_loss=first_loss,
                              wall_time=time.perf_counter() - tic)
                if cfg.constraint == "strong":
                    record["q"] = np.zeros(n)
                    record.update(q_mean=0.0, q_min=0.0, q_max=0.0)
                records.append(record)
                if log is not None:
                    log.append(record)
                if out_dir is not None and (step % cfg.checkpoint_every == 0
                                            or step == cfg.steps):
                    last_ckpt = _write_checkpoint(out_dir, step, learned, optimizer, meta,
                                                  carried)
                bar.update(1)
                bar.set_postfix(objective=f"{record['objective']:.4f}",
                                q=f"{record['q_mean']:.3g}")
        status = "complete"
    except KeyboardInterrupt:
        # Keep the last completed step (not one interrupted inside its parameter update).
        if out_dir is not None and done > start_step and not updating and (
                last_ckpt is None or not last_ckpt.name.startswith(f"checkpoint-{done:06d}")):
            last_ckpt = _write_checkpoint(out_dir, done, learned, optimizer, meta, carried)
        raise
    except BaseException as exc:
        status = f"failed: {type(exc).__name__}"
        raise
    finally:
        bar.close()
        if log is not None:
            log.close({"status": status, "steps_logged": len(records)})
    history = _history(records, n, {**attrs, "status": status})
    q = (np.zeros(n) if cfg.constraint == "strong"
         else torch.exp(learned.log_q.detach()).numpy().copy())
    return SpinupResult(learned.dynamics(), q, learned.initial.detach().numpy().copy(),
                        torch.exp(learned.log_b.detach()).numpy().copy(), done, cfg, history,
                        last_ckpt, meta["placement"])


def load_spinup(path) -> SpinupResult:
    """A spin-up checkpoint as a :class:`SpinupResult` (no model needed).

    Parameters
    ----------
    path : str or PathLike
        A checkpoint's JSON or tensor file, or a folder (its latest checkpoint).

    Returns
    -------
    SpinupResult
        ``history`` is the folder's ``spinup.nc`` up to the checkpoint's step
        (empty if absent).

    Raises
    ------
    FileNotFoundError, ValueError
        If there is no checkpoint there or it is not readable.

    Examples
    --------
    >>> import tempfile
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=97)[0]
    >>> cfg = SpinupConfig(chunk=8, context=8, window=3, batch=2, steps=1, hidden=4, rank=2)
    >>> with tempfile.TemporaryDirectory() as out:
    ...     res = spinup(HiddenScale(model), ids, cfg, out=out, progress=False)
    ...     back = load_spinup(out)
    >>> bool((back.Q == res.Q).all()), back.step
    (True, 1)
    """
    jp, meta, tensors = _read_checkpoint(path)
    cfg_dict = dict(meta["config"])
    cfg_dict["learn"] = tuple(cfg_dict["learn"])
    cfg = SpinupConfig(**cfg_dict)
    n, d = int(meta["state_dim"]), int(meta["summary_dim"])
    learned = _Learned(n, d, cfg)
    with torch.no_grad():
        for k, v in learned.named().items():
            v.copy_(tensors[f"param.{k}"])
    q = (np.zeros(n) if cfg.constraint == "strong"
         else torch.exp(learned.log_q.detach()).numpy().copy())
    step = int(meta["step"])
    history = _history(_previous_records(jp.parent / LOG_NAME, step), n,
                       {"checkpoint": jp.name})
    return SpinupResult(learned.dynamics(), q, learned.initial.detach().numpy().copy(),
                        torch.exp(learned.log_b.detach()).numpy().copy(), step, cfg, history,
                        jp, meta["placement"])


def load_dynamics(path):
    """The learned forecast model and Q of a spin-up checkpoint.

    Parameters
    ----------
    path : str or PathLike
        A checkpoint's JSON or tensor file, or a folder (its latest checkpoint).

    Returns
    -------
    dynamics : LearnedDynamics
        ``s -> f_phi(s, h) + A_r(h)``, starting from ``initial_state`` = s_b;
        give it to any filter as its forecast model (with
        :class:`~da_embed.assimilator.OnlineAssimilator` ``dynamics=``).
    Q : numpy.ndarray (n,)
        The diagonal of the learned process-noise covariance per chunk (zeros
        for a strong-constraint run).

    Examples
    --------
    >>> import tempfile
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=97)[0]
    >>> cfg = SpinupConfig(chunk=8, context=8, window=3, batch=1, steps=1, hidden=4, rank=2)
    >>> folder = tempfile.mkdtemp()
    >>> _ = spinup(model, ids, cfg, out=folder, progress=False)
    >>> dyn, Q = load_dynamics(folder)
    >>> dyn.ndim, Q.shape
    (32, (32,))
    """
    res = load_spinup(path)
    return res.dynamics, res.Q


# ----------------------------------------------------------------------------
# Learned forecasts in ``da-embed compare`` and the ``da-embed spinup`` command
# ----------------------------------------------------------------------------
#: Suffix of the comparison rows that use the learned dynamics and Q.
LEARNED_SUFFIX = "+learned"


def _placement_record(placement: Placement) -> dict:
    """``placement.describe()`` plus, for a subspace, a hash of its basis and reference."""
    out = dict(placement.describe())
    if isinstance(getattr(placement, "basis", None), torch.Tensor):
        h = hashlib.sha256(placement.basis.detach().cpu().numpy().tobytes())
        h.update(placement.reference.detach().cpu().numpy().tobytes())
        out["basis_sha256"] = h.hexdigest()
    return out


def check_learned_placement(result: SpinupResult, placement: Placement) -> None:
    """Raise ValueError unless ``result`` was learned on a placement like ``placement``.

    The placement class and state size must agree, and for a subspace its
    basis (compared by hash).

    Parameters
    ----------
    result : SpinupResult
        A spin-up result or loaded checkpoint (:func:`load_spinup`).
    placement : Placement
        The placement the learned dynamics are about to drive.

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> fake = SpinupResult(None, None, None, None, 0, None, None, None,
    ...                     {"placement": "EmbeddingScale", "state_dim": 32})
    >>> check_learned_placement(fake, HiddenScale(tiny_gpt2()))
    Traceback (most recent call last):
    ...
    ValueError: the learned dynamics are for EmbeddingScale (n = 32), not HiddenScale (n = 32): ...
    """
    want = result.placement or {}
    have = _placement_record(placement)
    if (want.get("placement"), int(want.get("state_dim", -1))) != (have["placement"],
                                                                   int(have["state_dim"])):
        raise ValueError(f"the learned dynamics are for {want.get('placement')} (n = "
                         f"{want.get('state_dim')}), not {have['placement']} (n = "
                         f"{have['state_dim']}): spin up on the placement you compare "
                         "(--placement, and the same --subspace)")
    if want.get("basis_sha256") != have.get("basis_sha256"):
        raise ValueError("the learned dynamics are for another subspace basis than this "
                         "placement's: build the subspace from the same tuning text")


def add_parser(sub) -> None:
    """Add ``da-embed spinup`` to the CLI's subparsers (see :func:`run_cli`)."""
    import argparse

    p = sub.add_parser(
        "spinup", help="learn the scale dynamics and Q on a corpus (weak-constraint 4D-Var)",
        description="Spin-up: learn the initial scales, the transition network, the low-rank "
                    "adapter and a diagonal process-noise covariance Q on a training corpus by "
                    "Laplace-EM on the weak-constraint 4D-Var cost over windows of chunks "
                    "(--constraint strong: the Q -> 0 hypersurface).  Writes "
                    "checkpoint-NNNNNN.safetensors/.json every --checkpoint-every steps and at "
                    "the end, and the training trajectory spinup.nc, to --out; --resume "
                    "continues bit for bit.  Use the result with da-embed compare --dynamics "
                    "OUT.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--corpus", help="training text file (UTF-8); default: WikiText-2 valid.txt")
    g.add_argument("--model", help="local Hugging Face causal LM folder (model + tokenizer); "
                   "default: the cached reference model")
    g.add_argument("--placement", default="hidden",
                   help="where the state acts: hidden, embedding, svf[:targets], rotary[:mode]")
    g.add_argument("--max-tokens", type=int, default=65536,
                   help="use the first MAX_TOKENS tokens of the corpus")
    g.add_argument("--subspace", default=None,
                   help="learn in a k-dim subspace: random:k, or fisher:k (top principal "
                        "directions of per-token NLL gradients on the first --tune-tokens "
                        "tokens of the corpus); compare with the same --subspace and, for "
                        "fisher, the same text as --tune-corpus")
    g.add_argument("--tune-tokens", type=int, default=4096,
                   help="tokens of the corpus used for a fisher subspace")
    d = SpinupConfig()
    g = p.add_argument_group("spin-up")
    g.add_argument("--chunk", type=int, default=d.chunk, help="tokens per chunk")
    g.add_argument("--context", type=int, default=d.context, help="tokens of context (>= chunk)")
    g.add_argument("--window", type=int, default=d.window, help="chunks per window (>= 2)")
    g.add_argument("--batch", type=int, default=d.batch, help="windows per step")
    g.add_argument("--steps", type=int, default=d.steps, help="total steps (E-step + M-steps)")
    g.add_argument("--m-steps", type=int, default=d.m_steps, help="Adam steps per E-step")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    g.add_argument("--lr-half-life", type=float, default=None,
                   help="steps over which the learning rate halves (default: constant)")
    g.add_argument("--constraint", default=d.constraint, choices=CONSTRAINTS,
                   help="weak (learns Q) or strong (Q -> 0, the hypersurface)")
    g.add_argument("--learn", default=",".join(d.learn),
                   help=f"comma-separated parts to learn, of {', '.join(PARTS)}")
    g.add_argument("--q-init", type=float, default=d.q_init, help="initial diagonal of Q")
    g.add_argument("--background-var", type=float, default=d.background_var,
                   help="initial variances of the window-start state")
    g.add_argument("--no-climatology", action="store_true",
                   help="learn s_b and b by Adam from the windows that start a track or "
                        "document only, instead of as the climatology of all states")
    g.add_argument("--climatology-rate", type=float, default=d.climatology_rate,
                   help="fraction of the way s_b and b move to the batch's climatology per step")
    g.add_argument("--shrinkage", type=float, default=d.shrinkage,
                   help="precision of the prior pulling the dynamics towards the random walk")
    g.add_argument("--hidden", type=int, default=d.hidden, help="transition network width")
    g.add_argument("--rank", type=int, default=d.rank, help="adapter rank")
    g.add_argument("--samples", type=int, default=d.samples, help="posterior draws per window")
    g.add_argument("--hessian", default=d.hessian, choices=HESSIANS,
                   help="NLL Hessian blocks of the E-step")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--out", default="da-embed-spinup", help="output folder")
    g.add_argument("--resume", metavar="CKPT", default=None,
                   help="continue from a checkpoint (its .json/.safetensors file, or a folder: "
                        "its latest)")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints")
    g.add_argument("--threads", type=int, default=None, help="torch threads")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def run_cli(args) -> int:
    """Run ``da-embed spinup`` from parsed arguments; returns the exit status.

    The configuration is checked before the model is loaded; Ctrl-C writes a
    checkpoint of the last completed step and returns 130.
    """
    from .lm.models import load_model
    from .placements.registry import make_placement
    from .corpora import read_text, wikitext_path
    from .reference import encode_text

    cfg = SpinupConfig(chunk=args.chunk, context=args.context, max_tokens=args.max_tokens,
                       window=args.window, batch=args.batch, steps=args.steps, lr=args.lr,
                       lr_half_life=args.lr_half_life, constraint=args.constraint,
                       learn=args.learn, q_init=args.q_init, background_var=args.background_var,
                       climatology=not args.no_climatology,
                       climatology_rate=args.climatology_rate, shrinkage=args.shrinkage,
                       hidden=args.hidden, rank=args.rank, samples=args.samples,
                       m_steps=args.m_steps, hessian=args.hessian, seed=args.seed,
                       checkpoint_every=args.checkpoint_every)
    if args.resume is not None:
        _checkpoint_json(args.resume)  # a missing checkpoint fails before any loading
    corpus = args.corpus if args.corpus is not None else wikitext_path("valid")
    try:
        text = read_text(corpus)
    except ValueError as exc:
        raise ValueError(f"--corpus: {exc}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        from .reference import load_reference

        model, tokenizer, _ = load_reference(progress=not args.no_progress)
    else:
        model, tokenizer = load_model(args.model)
    try:
        placement = make_placement(model, args.placement)
    except ValueError as exc:
        raise ValueError(f"--placement {args.placement!r}: {exc}") from None
    ids = encode_text(tokenizer, text)
    if args.subspace is not None:
        from .subspaces import make_subspace

        placement = make_subspace(placement, args.subspace, tune_ids=ids, protocol=cfg.protocol,
                                  seed=cfg.seed, max_tokens=args.tune_tokens)
    if cfg.constraint == "strong":
        placement = Hypersurface(placement, hidden=cfg.hidden, rank=cfg.rank, seed=cfg.seed)
    print(f"corpus {os.fspath(corpus)}: {ids.size} tokens (using at most {cfg.max_tokens}); "
          f"chunk {cfg.chunk}, context {cfg.context}, window {cfg.window} chunks", flush=True)
    try:
        res = spinup(placement, ids, cfg, out=args.out, resume=args.resume,
                     progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: resume with --resume {os.fspath(args.out)}", file=sys.stderr)
        return 130
    h = res.history
    last = {k: float(h[k].values[-1]) for k in ("objective", "nll", "nll_forecast")}
    print(f"spin-up done: {res.step} steps; objective {last['objective']:.4f} nat/token, NLL "
          f"{last['nll']:.4f} (forecast {last['nll_forecast']:.4f}); Q diagonal mean "
          f"{float(np.mean(res.Q)):.3g} [{float(np.min(res.Q)):.3g}, {float(np.max(res.Q)):.3g}]")
    print(f"checkpoint {res.checkpoint}; trajectory {Path(os.fspath(args.out)) / LOG_NAME}")
    return 0
