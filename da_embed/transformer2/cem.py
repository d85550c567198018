"""Pass 1 of Transformer^2: a context's likelihood under states, and the CEM search.

:func:`context_nll` scores a context under many states (pass 1's objective);
:func:`cem_weights` minimises an objective over mixing weights with the
cross-entropy method (CEM), as Transformer^2's few-shot mixing does.

Shapes: E weights (experts), n state size, P CEM population, T tokens.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch

from ..checks import check_int, check_positive
from ..placements.base import Placement

__all__ = ["CEMResult", "cem_weights", "context_nll"]


def context_nll(placement: Placement, states, context_ids, *,
                member_batch: int = 32) -> np.ndarray:
    """Mean next-token NLL of a context under each state (pass 1's score).

    Parameters
    ----------
    placement : Placement
        Attached.
    states : array_like (N, n)
    context_ids : array_like of int (T,)
        T >= 2 tokens; tokens 1 .. T - 1 are scored, each given those before.
    member_batch : int, default 32
        States per forward pass.

    Returns
    -------
    ndarray (N,)
        Mean NLL per token (nats), float64.

    Examples
    --------
    >>> import numpy as np
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> with HiddenScale(tiny_gpt2()).attached() as placement:
    ...     nll = context_nll(placement, np.zeros((3, 32)), np.arange(10))
    >>> nll.shape, bool(np.allclose(nll, nll[0]))  # three copies of the base model
    ((3,), True)
    """
    ids = torch.as_tensor(np.asarray(context_ids, dtype=np.int64)).reshape(1, -1)  # (1, T)
    if ids.shape[1] < 2:
        raise ValueError(f"context_ids needs at least 2 tokens to score, got {ids.shape[1]}")
    X = np.array(states, dtype=np.float64)  # a writable copy (torch warns on read-only arrays)
    if X.ndim != 2:
        raise ValueError(f"states must have shape (N, n), got {X.shape}")
    check_int(member_batch, "member_batch", 1)
    out = []
    with torch.no_grad():
        for i in range(0, X.shape[0], member_batch):
            nll = placement.token_nll(ids, X[i:i + member_batch])  # (b, 1, T - 1)
            out.append(nll[:, 0].double().mean(-1).cpu().numpy())
    return np.concatenate(out)


class CEMResult(NamedTuple):
    """What :func:`cem_weights` found.

    Parameters
    ----------
    weights : ndarray (E,)
        The best evaluated weights.
    value : float
        The objective at ``weights``.
    mean, std : ndarray (E,)
        The sampling distribution after the last iteration.
    evaluations : int
        Objective evaluations (population x iterations).

    Examples
    --------
    >>> CEMResult(np.ones(2), 0.5, np.ones(2), np.zeros(2), 32).value
    0.5
    """

    weights: np.ndarray
    value: float
    mean: np.ndarray
    std: np.ndarray
    evaluations: int


def cem_weights(objective: Callable[[np.ndarray], np.ndarray], n_weights: int, *,
                population: int = 32, iterations: int = 3, elite: int = 8,
                init_mean=None, init_std: float = 0.5, min_std: float = 1e-3,
                initial_candidates=None, rng=None) -> CEMResult:
    """Minimise ``objective`` over weight vectors with the cross-entropy method.

    Each iteration draws ``population`` weight vectors from a diagonal
    Gaussian, evaluates them in one call, and refits the Gaussian's mean and
    standard deviation to the ``elite`` best (Rubinstein 1999; the CEM of
    Transformer^2's few-shot mixing).  The best vector evaluated so far
    replaces one draw of every later population, so the result never gets
    worse; ``initial_candidates`` replace the first draws of the first
    population (for :class:`TwoPass`: the uniform mix and each expert alone).

    Parameters
    ----------
    objective : callable
        ``objective(W)`` with W (P, E) returns (P,) values to minimise
        (non-finite values count as +inf).
    n_weights : int
        E.
    population : int, default 32
    iterations : int, default 3
    elite : int, default 8
        Draws the Gaussian is refitted to (<= population).
    init_mean : array_like (E,), optional
        Default: the uniform mix ``1 / E``.
    init_std : float, default 0.5
    min_std : float, default 1e-3
        Floor of the standard deviation (keeps the search alive).
    initial_candidates : array_like (c, E), optional
        Evaluated in the first population (c <= population).
    rng : numpy.random.Generator or int, optional
        The randomness (same seed, same result).

    Returns
    -------
    CEMResult

    Examples
    --------
    >>> target = np.array([1.0, 0.0, 0.0])
    >>> res = cem_weights(lambda W: ((W - target) ** 2).sum(1), 3, iterations=8, rng=0)
    >>> bool(np.abs(res.weights - target).max() < 0.1), res.evaluations
    (True, 256)
    """
    E = check_int(n_weights, "n_weights", 1)
    P = check_int(population, "population", 2)
    iterations = check_int(iterations, "iterations", 1)
    elite = check_int(elite, "elite", 1)
    if elite > P:
        raise ValueError(f"elite ({elite}) must not exceed population ({P})")
    init_std = check_positive(init_std, "init_std")
    min_std = check_positive(min_std, "min_std")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    mean, seeds = _cem_start(E, P, init_mean, initial_candidates)
    std = np.full(E, init_std)
    best_w, best_v = mean.copy(), math.inf
    for it in range(iterations):
        W = mean + std * rng.standard_normal((P, E))  # (P, E)
        if it == 0:
            W[:seeds.shape[0]] = seeds
        else:
            W[0] = best_w
        v = np.asarray(objective(W), dtype=float).reshape(-1)  # (P,)
        if v.shape != (P,):
            raise ValueError(f"objective must return {P} values for {P} weight vectors, got "
                             f"shape {v.shape}")
        v = np.where(np.isfinite(v), v, np.inf)
        i = int(np.argmin(v))
        if v[i] < best_v:
            best_w, best_v = W[i].copy(), float(v[i])
        top = W[np.argsort(v, kind="stable")[:elite]]  # (elite, E)
        mean, std = top.mean(0), np.maximum(top.std(0), min_std)
    return CEMResult(best_w, best_v, mean, std, P * iterations)


def _cem_start(E: int, P: int, init_mean, initial_candidates) -> tuple[np.ndarray, np.ndarray]:
    """CEM's first mean (E,) and the candidates (c, E) of its first population, checked."""
    mean = np.full(E, 1.0 / E) if init_mean is None else np.array(init_mean, dtype=float)
    if mean.shape != (E,) or not np.all(np.isfinite(mean)):
        raise ValueError(f"init_mean must be {E} finite numbers, got {init_mean!r}")
    seeds = np.zeros((0, E)) if initial_candidates is None else np.atleast_2d(
        np.asarray(initial_candidates, dtype=float))
    if seeds.ndim != 2 or seeds.shape[1] != E or seeds.shape[0] > P:
        raise ValueError(f"initial_candidates must have shape (c, {E}) with c <= population "
                         f"({P}), got {seeds.shape}")
    return mean, seeds
