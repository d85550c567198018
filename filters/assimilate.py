"""The cycling runner: forecast, analyse, log; an xarray Dataset at the end.

The loop writes into preallocated numpy arrays only (a
:class:`~filters.cycling.CycleLog`); the Dataset (CF metadata, time averages)
is built once, after the loop or when it stops, by
:func:`~filters.cycling.cycle_dataset`, which the 4D-Var window loop shares.
"""

from __future__ import annotations

import functools
import time as _time
from contextlib import nullcontext

import numpy as np
import xarray as xr
from threadpoolctl import ThreadpoolController

from ._compiled import run_compiled, unsupported_reason
from .base import Filter
from .cycling import CycleLog, DivergenceError, cycle_dataset, diverged, summarize
from .metrics import crps_ensemble
from .settings import Setting, Simulation
from .states import EnsembleState

# DivergenceError and summarize live in .cycling (shared with the 4D-Var window loop) and are
# re-exported here, where they have always been importable from.
__all__ = ["assimilate", "DivergenceError", "summarize"]


def assimilate(filter: Filter, setting: Setting, *, seed: int = 0,
               simulation: Simulation | None = None, store_ensemble: bool = False,
               store_cov: bool = False, divergence_threshold: float = 1e8,
               progress: bool = False, blas_threads: int | str | None = "auto",
               compiled: bool | str = "auto") -> xr.Dataset:
    """Cycle a filter over a setting's observations and log everything.

    Parameters
    ----------
    filter : Filter
        Any filter of this package (or a subclass of :class:`filters.Filter`).
    setting : Setting
        Model, observation operator and noise, prior, time axis.
    seed : int
        Seeds both the simulation (truth and observations, unless given) and
        the filter's own randomness, from independent streams.
    simulation : Simulation, optional
        Truth and observations to use instead of simulating them
        (``truth`` may be None when unknown).
    store_ensemble : bool
        Keep the analysis ensemble of every cycle (ensemble filters).
    store_cov : bool
        Keep the analysis covariance of every cycle.
    divergence_threshold : float
        A state with a component beyond this magnitude counts as diverged.
    progress : bool
        Print a progress line every 10% of the cycles.
    blas_threads : int, "auto" or None
        BLAS/LAPACK threads during the run (via threadpoolctl).  "auto" uses
        one thread when the state has at most 2000 components: the per-cycle
        matrices are then so small that threads only add synchronisation, and
        on a loaded machine a multithreaded 28 x 28 eigendecomposition was
        measured 10x slower per cycle on average.  None leaves BLAS alone.
    compiled : {"auto", True, False}
        Run blocks of cycles inside Numba (forecast, analysis, inflation,
        rotation, localisation and the per-cycle diagnostics).  "auto" does it
        whenever it can: the ETKF, EnKF, DEnKF, EnSRF and LETKF (these classes,
        not subclasses) with multiplicative, additive, RTPP or RTPS inflation on
        Lorenz-63, Lorenz-96 or the linear model, observed by ``Identity``,
        ``Subset`` or ``LinearObservation`` with a diagonal R; True insists
        (a ValueError says why it cannot); False always takes the generic path.
        Both paths give the same numbers to the last bit: the compiled kernels
        make numpy's BLAS/LAPACK calls on the same operands, and draw from the
        filter's Generator the same numbers in the same order (see
        ``filters._compiled._runner``).  Only ``wall_time`` differs: the
        compiled path shares each block's time equally among its cycles.

    Returns
    -------
    xarray.Dataset
        Dims ``time``, ``state``, ``obs`` (and ``member``, ``state_`` when
        asked): forecast and analysis mean and spread, observations,
        innovations, truth, RMSE, CRPS and truth ranks (ensembles), wall time
        per cycle; attributes carry the filter and its parameters (JSON), the
        setting, the seed, the package version and time averages after burn-in
        with autocorrelation-corrected standard errors.  Windowed filters
        (4D-Var, ``filter.windowed``) run window by window and add per-window
        variables (dim ``window``); see :mod:`filters.variational`.

    Raises
    ------
    DivergenceError
        When the state diverges; its ``dataset`` holds the cycles logged so far.

    Examples
    --------
    >>> from filters import ETKF
    >>> from filters.settings import sakov2008
    >>> ds = assimilate(ETKF(N=20, inflation=1.02), sakov2008(n_obs=50), seed=0)
    >>> sorted(ds.sizes.items())
    [('obs', 40), ('state', 40), ('time', 50)]
    """
    if not isinstance(filter, Filter):
        raise ValueError(f"filter must be a filters.Filter, got {type(filter).__name__}")
    if not isinstance(setting, Setting):
        raise ValueError(f"setting must be a filters.Setting, got {type(setting).__name__}")
    filter.validate()
    ss = np.random.SeedSequence(seed)
    sim_rng, flt_rng = (np.random.default_rng(s) for s in ss.spawn(2))
    sim = setting.simulate(sim_rng) if simulation is None else simulation
    ys, truth = _checked_simulation(sim, setting)
    n = setting.model.ndim

    use_compiled = _use_compiled(compiled, filter, setting)
    limit = _blas_limit(blas_threads, n)
    with (_blas_controller().limit(limits=limit, user_api="blas") if limit else nullcontext()):
        if use_compiled:
            return _cycle_compiled(filter, setting, sim, ys, truth, seed, flt_rng,
                                   store_ensemble, store_cov, divergence_threshold, progress)
        return _cycle(filter, setting, sim, ys, truth, seed, flt_rng, store_ensemble, store_cov,
                      divergence_threshold, progress)


@functools.lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    """One threadpoolctl controller for the process.

    Building one scans every loaded shared library (about 3 ms, a few
    microseconds per cycle of a 1000-cycle compiled run); the BLAS libraries the
    runs use (numpy's, scipy's) are loaded when :mod:`filters` is imported.
    """
    return ThreadpoolController()


def _checked_simulation(sim: Simulation, setting: Setting):
    """The observations (T, m) and the truth (T, n) or None, after checking their shapes."""
    ys = np.asarray(sim.observations, dtype=float)
    T, n, m = ys.shape[0], setting.model.ndim, setting.obs.nobs
    if ys.ndim != 2 or ys.shape[1] != m:
        raise ValueError(f"simulation.observations must have shape (T, {m}), got {ys.shape}")
    if np.isinf(ys).any():
        k = int(np.flatnonzero(np.isinf(ys).any(axis=1))[0])
        raise ValueError(f"simulation.observations must be finite or NaN (missing), got an "
                         f"infinite value at cycle {k}")
    truth = None if sim.truth is None else np.asarray(sim.truth, dtype=float)
    if np.shape(sim.times) != (T,):
        raise ValueError(f"simulation.times must have shape ({T},) like the observations, "
                         f"got {np.shape(sim.times)}")
    if truth is not None and truth.shape != (T, n):
        raise ValueError(f"simulation.truth must have shape ({T}, {n}), got {truth.shape}")
    return ys, truth


def _use_compiled(compiled, filter, setting) -> bool:
    """Whether the run takes the compiled path (``compiled`` of :func:`assimilate`)."""
    if compiled not in ("auto", True, False) or isinstance(compiled, (int, float)) and \
            not isinstance(compiled, bool):
        raise ValueError(f"compiled must be 'auto', True or False, got {compiled!r}")
    if compiled is False or getattr(filter, "windowed", False):
        if compiled is True:
            raise ValueError(f"compiled=True: {filter.name} is windowed (4D-Var) and has no "
                             "compiled cycle")
        return False
    reason = unsupported_reason(filter, setting)
    if reason is not None and compiled is True:
        raise ValueError(f"compiled=True, but {reason}")
    return reason is None


def _cycle_compiled(filter, setting, sim, ys, truth, seed, flt_rng, store_ensemble, store_cov,
                    divergence_threshold, progress) -> xr.Dataset:
    """The compiled path (:mod:`filters._compiled`), with :func:`_cycle`'s errors and Dataset."""
    run = run_compiled(filter, setting, sim, ys, truth, flt_rng, store_ensemble=store_ensemble,
                       store_cov=store_cov, divergence_threshold=divergence_threshold,
                       progress=progress)
    k, log = run.done, run.log
    if run.error is not None:
        raise _divergence_error(filter, setting, sim, seed, log, k, truth,
                                f"linear algebra failed ({run.error})") from run.error
    if run.diverged is not None:
        raise _divergence_error(
            filter, setting, sim, seed, log, k, truth,
            f"the {run.diverged} mean is non-finite or beyond {divergence_threshold:g}")
    return cycle_dataset(filter, setting, sim, seed, log, k, truth)


def _blas_limit(blas_threads, n: int) -> int | None:
    """BLAS thread limit for a run, or None for no limit."""
    if blas_threads is None:
        return None
    if blas_threads == "auto":
        return 1 if n <= 2000 else None
    if isinstance(blas_threads, bool) or not isinstance(blas_threads, int) or blas_threads < 1:
        raise ValueError(f"blas_threads must be a positive integer, 'auto' or None, got {blas_threads!r}")
    return blas_threads


def _cycle(filter, setting, sim, ys, truth, seed, flt_rng, store_ensemble, store_cov,
           divergence_threshold, progress) -> xr.Dataset:
    """The cycling loop of :func:`assimilate` (arguments already validated)."""
    T, n, m = ys.shape[0], setting.model.ndim, setting.obs.nobs
    if getattr(filter, "windowed", False):
        # 4D-Var: whole windows of observations at a time (filters.variational).
        from .variational._runner import assimilate_windows

        return assimilate_windows(filter, setting, sim, ys, truth, seed=seed, store_cov=store_cov,
                                  divergence_threshold=divergence_threshold, progress=progress)

    filter.prepare(setting.model, setting.obs)
    state = filter.initialize(setting.prior, flt_rng)
    is_ens = isinstance(state, EnsembleState)
    log = CycleLog.allocate(T, n, m, scores=is_ens and truth is not None,
                            members=state.size if is_ens and store_ensemble else 0, cov=store_cov)
    model, obs, R, Q = setting.model, setting.obs, setting.R, setting.Q
    dt, nsteps = setting.dt, setting.steps_per_obs
    step_every = max(1, T // 10)
    done = 0
    for k in range(T):
        t0 = float(sim.times[k]) - setting.dt_obs
        tic = _time.perf_counter()
        try:
            fc = filter.forecast(state, model, t0, dt, nsteps, Q, flt_rng)
            mean_f = fc.mean
            # Check the forecast too: the analysis of a non-finite forecast would
            # fail in its linear algebra before the divergence could be reported.
            if diverged(mean_f, divergence_threshold):
                raise _divergence_error(
                    filter, setting, sim, seed, log, k, truth,
                    f"the forecast mean is non-finite or beyond {divergence_threshold:g}")
            an = filter.analysis(fc, ys[k], obs, R, flt_rng)
        except np.linalg.LinAlgError as exc:
            # A covariance that lost positive definiteness mid-run (e.g. after a
            # huge forecast spread) is a diverged filter too; keep the cycles so far.
            raise _divergence_error(filter, setting, sim, seed, log, k, truth,
                                    f"linear algebra failed ({exc})") from exc
        toc = _time.perf_counter()
        mean_a = an.mean
        if diverged(mean_a, divergence_threshold):
            raise _divergence_error(
                filter, setting, sim, seed, log, k, truth,
                f"the analysis mean is non-finite or beyond {divergence_threshold:g}")
        log.mf[k], log.ma[k], log.sf[k], log.sa[k] = mean_f, mean_a, fc.spread, an.spread
        log.innov[k] = ys[k] - obs(mean_f)
        log.used[k] = np.count_nonzero(~np.isnan(ys[k]))
        log.wall[k] = toc - tic
        if log.rank is not None:
            log.rank[k] = np.sum(an.members < truth[k], axis=0)
            log.crps[k] = crps_ensemble(an.members, truth[k]).mean()
        if log.ens is not None:
            log.ens[k] = an.members
        if log.cov is not None:
            log.cov[k] = an.cov
        state = an
        done = k + 1
        if progress and (done % step_every == 0 or done == T):
            print(f"  {filter.name}: {done}/{T} cycles", flush=True)
    return cycle_dataset(filter, setting, sim, seed, log, done, truth)


def _divergence_error(filter, setting, sim, seed, log: CycleLog, k: int, truth,
                      reason: str) -> DivergenceError:
    """A DivergenceError at cycle k carrying the Dataset of cycles 0..k-1."""
    ds = cycle_dataset(filter, setting, sim, seed, log, k, truth)
    return DivergenceError(
        f"{filter.name} diverged at cycle {k} (t = {sim.times[k]:g}): {reason}; {k} cycles "
        "were kept in the error's `dataset`", ds, k)
