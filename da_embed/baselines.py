"""Baselines that run in the same loop as the filters: frozen, dynamic evaluation,
and the seeds' verification rule.

Each is a :class:`filters.Filter` (``initialize``, ``forecast``, ``analysis``),
so :class:`~da_embed.OnlineAssimilator` runs and logs them exactly like the
filters.  Their states are :class:`PointState` (a point estimate, zero spread).
Their ``analysis`` ignores the pseudo-observation ``y`` and ``R`` and reads
the revealed chunk from the observation operator
(:class:`~da_embed.observations.TokenNLLObservation`): exact gradients for
dynamic evaluation, member NLLs for the verification rule.

Shapes: n state size, K candidates, L tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from filters import Filter

from .observations import verification_scores

__all__ = ["PointState", "Frozen", "DynamicEvaluation", "VerificationRule"]


@dataclass(frozen=True, eq=False)
class PointState:
    """A point estimate of the state (no uncertainty).

    Parameters
    ----------
    mean : ndarray (n,)
        The state.

    Examples
    --------
    >>> PointState(np.array([1.0, 2.0])).spread.tolist()
    [0.0, 0.0]
    """

    mean: np.ndarray

    @property
    def ndim(self) -> int:
        """State dimension n."""
        return int(self.mean.shape[0])

    @property
    def spread(self) -> np.ndarray:
        """Zeros (n,)."""
        return np.zeros_like(self.mean)


class _PointFilter(Filter):
    """Shared pieces: start at the prior mean, forecast the mean without noise."""

    def initialize(self, prior, rng):
        return PointState(np.array(prior.mean, dtype=float, copy=True))

    def forecast(self, state, model, t, dt, nsteps, Q, rng):
        return PointState(np.asarray(model.integrate(state.mean, t, dt, nsteps), dtype=float))


class Frozen(_PointFilter):
    """No adaptation: the state stays at the prior mean (the unmodified model at 0).

    Examples
    --------
    >>> Frozen().analysis(PointState(np.zeros(2)), None, None, None, None).mean.tolist()
    [0.0, 0.0]
    """

    name = "frozen"

    def __init__(self):
        super().__init__(inflation=None)

    def analysis(self, state, y, obs, R, rng):
        return state


class DynamicEvaluation(_PointFilter):
    """Dynamic evaluation: gradient steps on the state after each chunk.

    After a chunk is scored, ``steps`` optimiser steps on the chunk's mean
    token NLL move the state (Krause et al. 2018, "Dynamic evaluation of
    neural sequence models", applied to the scale state instead of the
    weights).  ``decay`` pulls the state back towards 0 (the unmodified model)
    after each step, Krause et al.'s decay towards the global parameters.

    Parameters
    ----------
    lr : float, default 0.1
        Learning rate (DESIGN section 8: Adam 0.1 under a strong shift, 0.03
        near in-domain; tune it on validation text,
        :func:`da_embed.compare.tune_dyneval_lr`).
    optimizer : {"adam", "sgd"}
        Adam keeps its moment estimates across chunks.
    steps : int, default 1
        Optimiser steps per chunk.
    decay : float, default 0.0
        ``s <- (1 - decay) s`` after each step.
    betas : tuple of float
        Adam's moment decay rates.

    Examples
    --------
    >>> DynamicEvaluation(lr=0.03).params()["lr"]
    0.03
    """

    name = "dyneval"

    def __init__(self, *, lr: float = 0.1, optimizer: str = "adam", steps: int = 1,
                 decay: float = 0.0, betas: tuple = (0.9, 0.999)):
        super().__init__(inflation=None)
        self.lr, self.optimizer, self.steps, self.decay = lr, optimizer, steps, decay
        self.betas = tuple(betas)

    def validate(self):
        if not (isinstance(self.lr, (int, float)) and np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {self.decay!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")

    def initialize(self, prior, rng):
        n = np.asarray(prior.mean).shape[0]
        self.m_, self.v_, self.t_ = np.zeros(n), np.zeros(n), 0
        return super().initialize(prior, rng)

    def analysis(self, state, y, obs, R, rng):
        x = state.mean.copy()
        for _ in range(self.steps):
            nll, g = obs.value_and_gradient(x)
            g = g / nll.shape[0]  # gradient of the mean token NLL
            if self.optimizer == "adam":
                b1, b2 = self.betas
                self.t_ += 1
                self.m_ = b1 * self.m_ + (1 - b1) * g
                self.v_ = b2 * self.v_ + (1 - b2) * g * g
                mhat = self.m_ / (1 - b1 ** self.t_)
                vhat = self.v_ / (1 - b2 ** self.t_)
                x = x - self.lr * mhat / (np.sqrt(vhat) + 1e-8)
            else:
                x = x - self.lr * g
            if self.decay:
                x = (1.0 - self.decay) * x
        return PointState(x)


class VerificationRule(_PointFilter):
    """The seeds' verification update with revealed-token scores.

    ``s <- s + delta_s + eta * mean_k(score_k * h_k)`` where, with revealed
    tokens, the K candidates are perturbed states ``s + sigma h_k``
    (``h_k ~ N(0, I)``, antithetic pairs), ``score_k`` is the centred mean
    log-likelihood of the revealed chunk under candidate k
    (:func:`~da_embed.observations.verification_scores`), and ``delta_s`` is
    the low-rank adapter's output, which the assimilator applies in the
    forecast step (zero for the random walk).  ``mean_k(score_k h_k)`` is the
    Gaussian-smoothing (evolution-strategies) estimate of ``-sigma`` times the
    gradient of the mean NLL, so the rule is a zeroth-order gradient step of
    length ``eta * sigma``.

    Parameters
    ----------
    K : int, default 16
        Candidates per chunk (even when ``antithetic``).
    eta : float, default 1.0
        Step size of the rule.
    sigma : float, default 0.1
        Standard deviation of the candidate perturbations.
    antithetic : bool, default True
        Use pairs ``+h_k, -h_k`` (halves the variance of the estimate).

    Examples
    --------
    >>> VerificationRule(K=4).params()["K"]
    4
    """

    name = "verify"

    def __init__(self, *, K: int = 16, eta: float = 1.0, sigma: float = 0.1,
                 antithetic: bool = True):
        super().__init__(inflation=None)
        self.K, self.eta, self.sigma, self.antithetic = K, eta, sigma, antithetic

    def validate(self):
        if isinstance(self.K, bool) or not isinstance(self.K, int) or self.K < 2:
            raise ValueError(f"K (candidates, --members) must be an integer >= 2, got {self.K!r}")
        if self.antithetic and self.K % 2:
            raise ValueError(f"K (candidates, --members) must be even with antithetic pairs, "
                             f"got {self.K}")
        for name in ("eta", "sigma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")

    def analysis(self, state, y, obs, R, rng):
        x = state.mean
        n = x.shape[0]
        if self.antithetic:
            half = rng.standard_normal((self.K // 2, n))
            H = np.concatenate([half, -half])  # (K, n)
        else:
            H = rng.standard_normal((self.K, n))
        scores = verification_scores(obs(x + self.sigma * H))  # (K,)
        return PointState(x + self.eta * (scores[:, None] * H).mean(axis=0))
