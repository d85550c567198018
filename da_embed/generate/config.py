"""The settings of a generation run, and their checks before any work."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Any

from ..checks import check_int

__all__ = ["FILTERS", "COMMITS", "EVERY", "CANDIDATE_LENGTH", "GenerationConfig"]

#: Default assimilation interval I (tokens per cycle), chosen from the measured cost curve
#: (docs/benchmarks.md, "Cost of generation with candidates").
EVERY = 64
#: Default candidate length L (capped at the interval), from the same curve.
CANDIDATE_LENGTH = 2

#: Filter names of :func:`~da_embed.generate.generate` and what they do.
FILTERS = {
    "etkf": "ensemble transform Kalman filter: M = members states, each proposes K candidates",
    "enkf": "stochastic EnKF (perturbed observations), M = members",
    "ukf": "unscented Kalman filter: M = 2n + 1 sigma points (use a small state or a subspace)",
    "verification": "the seeds' rule s <- s + eta * mean_j(z_j h_j), M = members perturbations",
    "none": "the base model's own generation (no candidates, no adaptation)",
}

#: What a cycle commits as its first ``candidate_length`` tokens.
COMMITS = {
    "mean": "the candidate of the row that carries the filter's mean (decoded in the same "
            "batch as the members' candidates; the state alone drives the text)",
    "best": "the best-scored of the members' candidates (best-of-M*K under the verifier)",
}


def _check_float(value, name: str, *, low: float = 0.0, strict: bool = True,
                 high: float | None = None) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if strict else value >= low
        if high is not None:
            ok = ok and value <= high
    if not ok:
        rng = f"{'>' if strict else '>='} {low}" + ("" if high is None else f" and <= {high}")
        raise ValueError(f"{name} must be a finite number {rng}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class GenerationConfig:
    """Every setting of :func:`~da_embed.generate.generate` but the model, tokenizer and prompt.

    Parameters
    ----------
    filter : {"etkf", "enkf", "ukf", "verification", "none"}
        See :data:`FILTERS` and the notes of :mod:`da_embed.generate.generation`.
    placement : str or Placement, default "hidden"
        Where the state acts (``hidden``, ``embedding``, ``svf[:targets]``,
        ``rotary[:mode]``, or a Placement of ``model``).
    subspace : str, optional
        ``"random:k"``: run in a random k-dimensional subspace (the UKF then
        needs 2k + 1 sigma points).
    candidates : int, default 1
        K, candidates per member and cycle (>= 1; > 1 needs ``sample``).
    every : int, default :data:`EVERY`
        I, tokens per cycle: the assimilation interval.
    candidate_length : int, optional
        L, tokens per candidate (1 <= L <= I); default
        ``min(CANDIDATE_LENGTH, every)``.
        The first L tokens of a cycle are decoded together with the
        candidates and committed (see ``commit``); the remaining I - L by the
        analysis mean alone.
    commit : {"mean", "best"}, default "mean"
        Which candidate becomes the cycle's first L tokens (:data:`COMMITS`).
    max_new_tokens : int, default 64
    verifier : "self", "judge", callable or path, default "self"
        See :func:`~da_embed.generate.make_verifier`.
    judge_model : path, model or (model, tokenizer), optional
        For ``verifier="judge"``.
    members : int, default 8
        Ensemble size (enkf, etkf; >= 2) or perturbed states (verification;
        even, >= 2).  Ignored by ukf (2n + 1 sigma points) and none.
    sample : bool, default True
        Sample (inverse CDF) or decode greedily.
    temperature, top_p : float
        Sampling temperature (> 0) and nucleus mass (0 < top_p <= 1).
    P0 : float, default 0.01
        Prior variance of each state entry (log-scale sd 0.1).
    Q : float, default 0.001
        Random-walk process-noise variance per cycle (0: none).
    R : "auto" or float, default "auto"
        Observation-error variance of a score (notes of :mod:`~da_embed.generate.generation`).
    target : "best" or float, default "best"
        The pseudo-observation (notes of :mod:`~da_embed.generate.generation`).
    inflation : float, optional
        Multiplicative inflation of the analysis anomalies (enkf, etkf) or
        covariance (ukf), against the collapse of the spread over cycles.
    eta, sigma : float, optional
        Step and perturbation size of the verification rule (default
        ``sqrt(P0)`` both).
    seed : int, default 0
    out : str or PathLike, optional
        netCDF file, appended cycle by cycle (state trajectory, member
        states, candidates, scores, observations, timings).
    progress : bool, default True
        A progress bar over cycles.

    Examples
    --------
    >>> cfg = GenerationConfig(filter="enkf", members=4).checked("the cat")
    >>> cfg.members, cfg.sigma, cfg.eta  # sigma and eta default to sqrt(P0)
    (4, 0.1, 0.1)
    >>> GenerationConfig(candidates=0).checked("the cat")
    Traceback (most recent call last):
    ...
    ValueError: candidates (K) must be an integer >= 1, got 0
    """

    filter: str = "etkf"
    placement: Any = "hidden"
    subspace: str | None = None
    candidates: int = 1
    every: int = EVERY
    candidate_length: int | None = None
    commit: str = "mean"
    max_new_tokens: int = 64
    verifier: Any = "self"
    judge_model: Any = None
    members: int = 8
    sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    P0: float = 0.01
    Q: float = 0.001
    R: Any = "auto"
    target: Any = "best"
    inflation: float | None = None
    eta: float | None = None
    sigma: float | None = None
    seed: int = 0
    out: Any = None
    progress: bool = True

    def kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of :func:`~da_embed.generate.generate`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def checked(self, prompt) -> "GenerationConfig":
        """The settings checked (for ``prompt``) and normalised; a ValueError names a bad one.

        Numbers become ``int``/``float``; ``sigma`` and ``eta`` get their
        defaults; ``members`` is checked where the filter uses it.
        """
        if self.filter not in FILTERS:
            raise ValueError(f"filter must be one of {', '.join(FILTERS)}, got {self.filter!r}")
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError("prompt must not be empty")
        K = check_int(self.candidates, "candidates (K)", 1)
        L = check_int(self.every, "every (I, tokens per cycle)", 1)
        Lc = (min(CANDIDATE_LENGTH, L) if self.candidate_length is None
              else check_int(self.candidate_length, "candidate_length", 1))
        if Lc > L:
            raise ValueError(f"candidate_length must be <= every (the cycle's {L} tokens), "
                             f"got {Lc}")
        if self.commit not in COMMITS:
            raise ValueError(f"commit must be one of {', '.join(COMMITS)}, got {self.commit!r}")
        T_new = check_int(self.max_new_tokens, "max_new_tokens", 1)
        seed = check_int(self.seed, "seed", 0)
        temperature = _check_float(self.temperature, "temperature")
        top_p = _check_float(self.top_p, "top_p", high=1.0)
        P0 = _check_float(self.P0, "P0")
        Q = _check_float(self.Q, "Q", strict=False)
        R, target, sample, members = self.R, self.target, self.sample, self.members
        if not (isinstance(R, str) and R == "auto"):
            R = _check_float(R, "R")
        if not (isinstance(target, str) and target == "best"):
            if isinstance(target, str):
                raise ValueError(f"target must be 'best' or a number, got {target!r}")
            target = _check_float(target, "target", low=-math.inf)
        if not isinstance(sample, bool):
            raise ValueError(f"sample must be True or False, got {sample!r}")
        if not sample and K > 1 and self.filter != "none":
            raise ValueError(f"candidates = {K} > 1 needs sampling: greedy candidates of one "
                             "member are identical (use sample=True or candidates=1)")
        if self.filter in ("etkf", "enkf", "verification"):
            members = check_int(members, "members", 2)
            if self.filter == "verification" and members % 2:
                raise ValueError(f"members must be even for the verification rule (antithetic "
                                 f"pairs), got {members}")
        sigma = math.sqrt(P0) if self.sigma is None else _check_float(self.sigma, "sigma")
        eta = sigma if self.eta is None else _check_float(self.eta, "eta")
        return replace(self, candidates=K, every=L, candidate_length=Lc, max_new_tokens=T_new, seed=seed,
                       temperature=temperature, top_p=top_p, P0=P0, Q=Q, R=R, target=target,
                       members=members, sigma=sigma, eta=eta)
