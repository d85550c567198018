"""The compiled cycle path of :func:`filters.assimilate` (private; see ``compiled=``).

What it runs: the ensemble filters ETKF, EnKF, DEnKF, EnSRF and LETKF (these
exact classes, not subclasses, whose methods could differ), with multiplicative,
additive, RTPP and RTPS inflation and the random rotation, on Lorenz-63,
Lorenz-96 and the linear model, observed by Identity, Subset or
LinearObservation with a diagonal R (process noise Q diagonal, full or none).
Anything else runs on the generic path; :func:`unsupported_reason` says why.

The random-stream contract: the compiled path draws from the run's numpy
Generator exactly what the generic path draws, in the same order and with the
same calls.  Per block of cycles it draws, cycle by cycle, the process noise of
each model step (``standard_normal((N, n))``), the EnKF perturbations
(``standard_normal((N, m))``, m the present observations), the EnSRF order
(``permutation(m)``), the additive-inflation noise and the rotation's
``standard_normal((N-1, N-1))``; consecutive normal draws are made as one call,
which a Generator fills with the same numbers as the separate calls.  A cycle
with no observation present draws nothing after its forecast (as the generic
path, which skips the analysis).  The draws of a block are made before the
block runs, so a block that stops early (divergence) has drawn more than it
used; the run ends there anyway.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass

import numba
import numpy as np

from ..cycling import CycleLog
from ..ensemble import DEnKF, EnKF, EnSRF, ETKF, LETKF
from ..ensemble._equations import _LETKF_PARALLEL_FLOPS, _ones_first_basis
from ..inflation import RTPP, RTPS, AdditiveInflation, MultiplicativeInflation
from ..models import Identity, LinearGaussian, LinearObservation, Lorenz63, Lorenz96, Subset
from ..states import EnsembleState
from . import _block
from ._analysis import ADDITIVE, MULTIPLICATIVE
from ._analysis import RTPP as _RTPP
from ._analysis import RTPS as _RTPS

__all__ = ["unsupported_reason", "run_compiled", "CompiledRun"]

_FILTERS = {ETKF: _block.ETKF, EnKF: _block.ENKF, DEnKF: _block.DENKF, EnSRF: _block.ENSRF,
            LETKF: _block.LETKF}
_INFLATIONS = {MultiplicativeInflation: (MULTIPLICATIVE, "factor"),
               AdditiveInflation: (ADDITIVE, "variance"), RTPP: (_RTPP, "alpha"),
               RTPS: (_RTPS, "alpha")}
#: Most cycles per block, and most pre-drawn normals per block (8 MB).
_BLOCK_CYCLES = 1000
_BLOCK_NORMALS = 1 << 20


def unsupported_reason(filter, setting) -> str | None:
    """Why the compiled path cannot run this filter on this setting, or None when it can.

    Parameters
    ----------
    filter : Filter
        The filter of the run.
    setting : Setting
        The setting of the run.

    Returns
    -------
    str or None
        A short reason ("the model Foo has no compiled kernel"), None when supported.
    """
    if type(filter) not in _FILTERS:
        return (f"the filter {type(filter).__name__} has no compiled cycle (ETKF, EnKF, DEnKF, "
                "EnSRF and LETKF have)")
    for inf in filter._inflations:
        if type(inf) not in _INFLATIONS:
            return f"the inflation {type(inf).__name__} has no compiled kernel"
    if type(setting.model) not in (Lorenz63, Lorenz96, LinearGaussian):
        return (f"the model {type(setting.model).__name__} has no compiled kernel (Lorenz63, "
                "Lorenz96 and LinearGaussian have)")
    if type(setting.obs) not in (Identity, Subset, LinearObservation):
        return (f"the observation operator {type(setting.obs).__name__} has no compiled kernel "
                "(Identity, Subset and LinearObservation have)")
    if not setting.R.is_diagonal:
        return "R is not diagonal (the compiled path whitens by standard deviations)"
    return None


@dataclass
class CompiledRun:
    """What the compiled path hands back to :func:`filters.assimilate`.

    Parameters
    ----------
    log : CycleLog
        The diagnostics of the finished cycles.
    done : int
        Number of finished cycles.
    diverged : str or None
        None, "forecast" or "analysis": which mean diverged at cycle ``done``.
    error : numpy.linalg.LinAlgError or None
        The linear-algebra failure at cycle ``done``, if any.
    """

    log: CycleLog
    done: int
    diverged: str | None = None
    error: np.linalg.LinAlgError | None = None


def _encode(filter, setting, N: int):
    """The model, noise, observation, filter and inflation arguments of ``_run_block``."""
    model, obs, n, m = setting.model, setting.obs, setting.model.ndim, setting.obs.nobs
    z2 = np.zeros((0, 0))
    if isinstance(model, Lorenz63):
        mkind, mpar, M = 0, np.array([model.sigma, model.rho, model.beta]), z2
    elif isinstance(model, Lorenz96):
        mkind, mpar, M = 1, np.array([model.forcing]), z2
    else:
        mkind, mpar, M = 2, np.zeros(0), np.ascontiguousarray(model.M, dtype=float)
    Q = setting.Q
    if Q is None:
        q = (0, np.zeros(0), z2)
    elif Q.is_diagonal:
        q = (1, np.sqrt(Q.diag), z2)
    else:
        q = (2, np.zeros(0), np.ascontiguousarray(Q.chol))
    if type(obs) is Identity:
        o = (0, np.zeros(0, np.int64), z2)
    elif type(obs) is Subset:
        o = (1, np.ascontiguousarray(obs.site_indices, dtype=np.int64), z2)
    else:
        o = (2, np.zeros(0, np.int64), np.ascontiguousarray(obs.H, dtype=float))
    taper = getattr(filter, "taper_", None) if isinstance(filter, LETKF) else None
    taper = np.zeros((0, m)) if taper is None else np.ascontiguousarray(taper, dtype=float)
    infl = [_INFLATIONS[type(i)] for i in filter._inflations]
    inf_kind = np.array([k for k, _ in infl], dtype=np.int64)
    inf_par = np.array([float(getattr(i, a)) for i, (_, a) in zip(filter._inflations, infl)])
    return dict(model=mkind, mpar=mpar, M=M, dt=float(setting.dt),
                nsteps=int(setting.steps_per_obs), q_kind=q[0], q_sd=q[1], q_chol=q[2],
                obs_kind=o[0], idx=o[1], H=o[2], r_sd=np.sqrt(setting.R.diag),
                filt=_FILTERS[type(filter)], taper=taper, rotate=bool(filter.rotate),
                basis=np.ascontiguousarray(_ones_first_basis(N)) if filter.rotate else z2,
                inf_kind=inf_kind, inf_par=inf_par)


class _Draws:
    """The pre-drawn randomness of each cycle, in the generic path's order."""

    def __init__(self, filter, setting, N: int, present: np.ndarray):
        n = setting.model.ndim
        self.pre = N * n * setting.steps_per_obs if setting.Q is not None else 0
        post = 0
        if isinstance(filter, EnKF):
            post_m = N  # times the present count, below
        else:
            post_m = 0
        for inf in filter._inflations:
            if isinstance(inf, AdditiveInflation) and inf.variance != 0.0:
                post += N * n
        if filter.rotate:
            post += (N - 1) ** 2
        self.present = present
        self.post = np.where(present > 0, post + post_m * present, 0).astype(np.int64)
        self.perm = isinstance(filter, EnSRF) and filter.order == "random"

    def block(self, rng: np.random.Generator, k0: int, k1: int):
        """The normals and permutations of cycles k0 .. k1-1 (flat arrays)."""
        if not self.perm:
            total = int(self.pre * (k1 - k0) + self.post[k0:k1].sum())
            return rng.standard_normal(total), np.zeros(0, np.int64)
        normals, perms, pending = [], [], 0
        for k in range(k0, k1):
            pending += self.pre
            m = int(self.present[k])
            if m > 0:
                if pending:
                    normals.append(rng.standard_normal(pending))
                    pending = 0
                perms.append(rng.permutation(m))
                pending += int(self.post[k])
        if pending:
            normals.append(rng.standard_normal(pending))
        cat = (lambda parts, dt: np.concatenate(parts).astype(dt, copy=False) if parts
               else np.zeros(0, dt))
        return cat(normals, np.float64), cat(perms, np.int64)


def _letkf_threads(filter, args, N: int, n: int) -> int | None:
    """The thread count of ``letkf_analysis``'s rule for this run (None: leave as is)."""
    if args["filt"] != _block.LETKF:
        return None
    taper = args["taper"]
    m_local = int(np.count_nonzero(taper[0] > 0.0)) if n else 0
    return None if n * (N**3 + N**2 * m_local) >= _LETKF_PARALLEL_FLOPS else 1


def run_compiled(filter, setting, sim, ys, truth, flt_rng, *, store_ensemble: bool,
                 store_cov: bool, divergence_threshold: float, progress: bool) -> CompiledRun:
    """Cycle a supported ensemble filter in compiled blocks (see the module docstring).

    Parameters
    ----------
    filter, setting
        A pair for which :func:`unsupported_reason` is None.
    sim : Simulation
        Its times are used for progress only.
    ys : ndarray (T, m)
        Observations (NaN: missing).
    truth : ndarray (T, n) or None
        The truth, for the ensemble scores.
    flt_rng : numpy.random.Generator
        The filter's generator (initial ensemble, then the draws of the cycles).
    store_ensemble, store_cov, divergence_threshold, progress
        As in :func:`filters.assimilate`.

    Returns
    -------
    CompiledRun
    """
    filter.prepare(setting.model, setting.obs)
    state = filter.initialize(setting.prior, flt_rng)
    E = np.ascontiguousarray(state.members, dtype=float)
    N, n = E.shape
    T, m = ys.shape
    log = CycleLog.allocate(T, n, m, scores=truth is not None,
                            members=N if store_ensemble else 0, cov=store_cov)
    args = _encode(filter, setting, N)
    ys = np.ascontiguousarray(ys, dtype=float)
    tr = np.zeros((0, n)) if truth is None else np.ascontiguousarray(truth, dtype=float)
    rank = log.rank if log.rank is not None else np.zeros((0, n), np.int16)
    crps = log.crps if log.crps is not None else np.zeros(0)
    draws = _Draws(filter, setting, N, np.count_nonzero(~np.isnan(ys), axis=1))
    per = max(1, draws.pre + int(draws.post.max(initial=0)))
    B = int(min(_BLOCK_CYCLES, max(1, _BLOCK_NORMALS // per)))
    step_every = max(1, T // 10)
    if progress:
        B = min(B, step_every)
    threads = _letkf_threads(filter, args, N, n)
    saved = numba.get_num_threads()
    status = np.zeros(2, np.int64)
    try:
        if threads is not None:
            numba.set_num_threads(threads)
        for k0 in range(0, T, B):
            k1 = min(T, k0 + B)
            normals, perms = draws.block(flt_rng, k0, k1)
            ens = (log.ens, 0) if log.ens is not None else (
                np.full((k1 - k0 if store_cov else 0, N, n), np.nan), k0)
            status[:] = (0, k0)
            tic = _time.perf_counter()
            try:
                E = _block._run_block(E, k0, k1, ys, tr, normals=normals, perms=perms,
                                      threshold=float(divergence_threshold), mf=log.mf,
                                      ma=log.ma, sf=log.sf, sa=log.sa, innov=log.innov,
                                      used=log.used, rank=rank, crps=crps, ens=ens[0],
                                      ens_base=ens[1], status=status, **args)
            except np.linalg.LinAlgError as exc:
                return _finish(log, status, k0, tic, ens, store_cov, error=exc)
            done = int(status[1])
            _finish_block(log, k0, done, tic, ens, store_cov)
            if status[0] != _block.OK:
                kind = "forecast" if status[0] == _block.FORECAST_DIVERGED else "analysis"
                return CompiledRun(log, done, diverged=kind)
            if progress and (done % step_every == 0 or done == T or k1 - k0 != B):
                print(f"  {filter.name}: {done}/{T} cycles", flush=True)
    finally:
        numba.set_num_threads(saved)
    return CompiledRun(log, T)


def _finish_block(log: CycleLog, k0: int, done: int, tic: float, ens, store_cov: bool) -> None:
    """Wall time (the block's time shared equally) and covariances of cycles k0 .. done-1."""
    wall = _time.perf_counter() - tic
    if done > k0:
        log.wall[k0:done] = wall / (done - k0)
    if store_cov:
        members, base = ens
        for k in range(k0, done):
            log.cov[k] = EnsembleState(members[k - base]).cov


def _finish(log, status, k0, tic, ens, store_cov, error) -> CompiledRun:
    done = int(status[1])
    _finish_block(log, k0, done, tic, ens, store_cov)
    return CompiledRun(log, done, error=error)
