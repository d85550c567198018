"""The cycling runner: forecast, analyse, log; an xarray Dataset at the end.

The loop writes into preallocated numpy arrays only; the Dataset (CF
metadata, time averages) is built once, after the loop or when it stops.
"""

from __future__ import annotations

import datetime as _dt
import json
import time as _time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from .base import Filter
from .metrics import crps_ensemble, rmse, root_mean_variance, time_average
from .settings import Setting, Simulation
from .states import EnsembleState

__all__ = ["assimilate", "DivergenceError", "summarize"]


class DivergenceError(RuntimeError):
    """The filter's state became non-finite or exploded (or its covariance lost
    positive definiteness: the original ``LinAlgError`` is the ``__cause__``).

    Parameters
    ----------
    message : str
        What diverged, at which cycle.
    dataset : xarray.Dataset
        The cycles logged so far.
    cycle : int
        Index of the diverging cycle.

    Attributes
    ----------
    dataset : xarray.Dataset
        Every cycle logged before the divergence (the diverging cycle excluded).
    cycle : int
        Index of the cycle at which the state diverged.

    Examples
    --------
    >>> try:
    ...     raise DivergenceError("state exploded at cycle 3", xr.Dataset(), 3)
    ... except DivergenceError as error:
    ...     print(error, "| cycle", error.cycle)
    state exploded at cycle 3 | cycle 3
    """

    def __init__(self, message: str, dataset: xr.Dataset, cycle: int):
        super().__init__(message)
        self.dataset = dataset
        self.cycle = cycle


@dataclass
class _Log:
    """Preallocated per-cycle buffers (numpy only)."""

    mf: np.ndarray
    ma: np.ndarray
    sf: np.ndarray
    sa: np.ndarray
    innov: np.ndarray
    used: np.ndarray
    wall: np.ndarray
    rank: np.ndarray | None
    crps: np.ndarray | None
    ens: np.ndarray | None
    cov: np.ndarray | None


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("da-embed")
    except Exception:  # not installed (e.g. running from a source tree)
        return "unknown"


def assimilate(filter: Filter, setting: Setting, *, seed: int = 0,
               simulation: Simulation | None = None, store_ensemble: bool = False,
               store_cov: bool = False, divergence_threshold: float = 1e8,
               progress: bool = False, blas_threads: int | str | None = "auto") -> xr.Dataset:
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
    ys = np.asarray(sim.observations, dtype=float)
    T, n, m = ys.shape[0], setting.model.ndim, setting.obs.nobs
    if ys.ndim != 2 or ys.shape[1] != m:
        raise ValueError(f"simulation.observations must have shape (T, {m}), got {ys.shape}")
    truth = None if sim.truth is None else np.asarray(sim.truth, dtype=float)
    if np.shape(sim.times) != (T,):
        raise ValueError(f"simulation.times must have shape ({T},) like the observations, "
                         f"got {np.shape(sim.times)}")
    if truth is not None and truth.shape != (T, n):
        raise ValueError(f"simulation.truth must have shape ({T}, {n}), got {truth.shape}")

    limit = _blas_limit(blas_threads, n)
    with (threadpool_limits(limits=limit, user_api="blas") if limit else nullcontext()):
        return _cycle(filter, setting, sim, ys, truth, seed, flt_rng, store_ensemble, store_cov,
                      divergence_threshold, progress)


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
    N = state.size if is_ens else 0
    log = _Log(
        mf=np.full((T, n), np.nan), ma=np.full((T, n), np.nan), sf=np.full((T, n), np.nan),
        sa=np.full((T, n), np.nan), innov=np.full((T, m), np.nan), used=np.zeros(T, np.int32),
        wall=np.full(T, np.nan),
        rank=np.zeros((T, n), np.int16) if is_ens and truth is not None else None,
        crps=np.full(T, np.nan) if is_ens and truth is not None else None,
        ens=np.full((T, N, n), np.nan) if is_ens and store_ensemble else None,
        cov=np.full((T, n, n), np.nan) if store_cov else None,
    )
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
            if _diverged(mean_f, divergence_threshold):
                raise _divergence_error(
                    filter, setting, sim, seed, log, k, truth, is_ens,
                    f"the forecast mean is non-finite or beyond {divergence_threshold:g}")
            an = filter.analysis(fc, ys[k], obs, R, flt_rng)
        except np.linalg.LinAlgError as exc:
            # A covariance that lost positive definiteness mid-run (e.g. after a
            # huge forecast spread) is a diverged filter too; keep the cycles so far.
            raise _divergence_error(filter, setting, sim, seed, log, k, truth, is_ens,
                                    f"linear algebra failed ({exc})") from exc
        toc = _time.perf_counter()
        mean_a = an.mean
        if _diverged(mean_a, divergence_threshold):
            raise _divergence_error(
                filter, setting, sim, seed, log, k, truth, is_ens,
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
    return _to_dataset(filter, setting, sim, seed, log, done, truth, is_ens)


def _diverged(mean: np.ndarray, threshold: float) -> bool:
    """Whether a state mean is non-finite or has a component beyond ``threshold``."""
    return not (np.all(np.isfinite(mean)) and np.abs(mean).max() < threshold)


def _divergence_error(filter, setting, sim, seed, log: _Log, k: int, truth, is_ens,
                      reason: str) -> DivergenceError:
    """A DivergenceError at cycle k carrying the Dataset of cycles 0..k-1."""
    ds = _to_dataset(filter, setting, sim, seed, log, k, truth, is_ens)
    return DivergenceError(
        f"{filter.name} diverged at cycle {k} (t = {sim.times[k]:g}): {reason}; {k} cycles "
        "were kept in the error's `dataset`", ds, k)


def _to_dataset(filter, setting, sim, seed, log: _Log, K: int, truth, is_ens, *,
                extra_vars: dict | None = None, extra_coords: dict | None = None,
                extra_attrs: dict | None = None) -> xr.Dataset:
    """Build the CF-style Dataset of the first K cycles.

    ``extra_vars``, ``extra_coords`` and ``extra_attrs`` add filter-specific
    output (e.g. the per-window variables of 4D-Var).
    """
    times = np.asarray(sim.times[:K], dtype=float)
    n, m = setting.model.ndim, setting.obs.nobs
    ts, tso = ("time", "state"), ("time", "obs")

    def var(dims, data, long_name, units="1", **extra):
        return xr.Variable(dims, data, {"long_name": long_name, "units": units, **extra})

    u = "model units"
    v = {
        "forecast_mean": var(ts, log.mf[:K], "forecast mean", u),
        "analysis_mean": var(ts, log.ma[:K], "analysis mean", u),
        "forecast_spread": var(ts, log.sf[:K], "forecast standard deviation", u),
        "analysis_spread": var(ts, log.sa[:K], "analysis standard deviation", u),
        "observations": var(tso, np.asarray(sim.observations[:K], dtype=float),
                            "observations (NaN: missing)", u),
        "innovation": var(tso, log.innov[:K], "observation minus forecast mean in observation space", u),
        "obs_used": var(("time",), log.used[:K], "number of observations assimilated"),
        "wall_time": var(("time",), log.wall[:K], "wall time of forecast and analysis", "s"),
        "rmv_forecast": var(("time",), root_mean_variance(log.sf[:K]), "forecast root-mean variance (spread)", u),
        "rmv_analysis": var(("time",), root_mean_variance(log.sa[:K]), "analysis root-mean variance (spread)", u),
    }
    if truth is not None:
        tr = truth[:K]
        v["truth"] = var(ts, tr, "true state", u)
        v["rmse_forecast"] = var(("time",), rmse(log.mf[:K], tr), "forecast root-mean-square error", u)
        v["rmse_analysis"] = var(("time",), rmse(log.ma[:K], tr), "analysis root-mean-square error", u)
    if log.crps is not None:
        v["crps_analysis"] = var(("time",), log.crps[:K], "analysis CRPS, mean over components", u)
        v["truth_rank"] = var(ts, log.rank[:K], "number of analysis members below the truth")
    if log.ens is not None:
        v["analysis_ensemble"] = var(("time", "member", "state"), log.ens[:K], "analysis members", u)
    if log.cov is not None:
        v["analysis_cov"] = var(("time", "state", "state_"), log.cov[:K], "analysis covariance",
                                "model units squared")
    coords = {
        "time": ("time", times, {"long_name": "model time of the analysis", "units": "model time units",
                                 "axis": "T"}),
        "state": ("state", np.arange(n), {"long_name": "state component index", "units": "1"}),
        "obs": ("obs", np.arange(m), {"long_name": "observation index", "units": "1"}),
    }
    if log.cov is not None:
        coords["state_"] = ("state_", np.arange(n), {"long_name": "state component index (second)",
                                                     "units": "1"})
    if log.ens is not None:
        coords["member"] = ("member", np.arange(log.ens.shape[1]),
                            {"long_name": "ensemble member", "units": "1"})
    attrs = {
        "Conventions": "CF-1.8",
        "title": f"{filter.name} on {setting.name}",
        "filter": filter.name,
        "filter_params": json.dumps(filter.params()),
        "setting": setting.name,
        "setting_params": json.dumps(setting.describe()),
        "seed": int(seed),
        "package": "da-embed",
        "version": _package_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "burn_in": float(setting.burn_in),
        "cycles_completed": int(K),
    }
    v.update(extra_vars or {})
    coords.update(extra_coords or {})
    attrs.update(extra_attrs or {})
    ds = xr.Dataset(v, coords=coords, attrs=attrs)
    ds.attrs.update(summarize(ds))
    return ds


def summarize(ds: xr.Dataset, burn_in: float | None = None) -> dict:
    """Time averages after burn-in, each with its corrected standard error.

    Parameters
    ----------
    ds : xarray.Dataset
        A run from :func:`assimilate`.
    burn_in : float, optional
        Model time to exclude (default: the run's ``burn_in`` attribute).

    Returns
    -------
    dict
        ``<metric>_mean`` and ``<metric>_stderr`` for RMSE, spread (rmv) and
        CRPS of the analysis and forecast where present, plus
        ``time_per_cycle_median`` in seconds.

    Examples
    --------
    >>> from filters import KalmanFilter
    >>> from filters.settings import linear_gaussian
    >>> stats = summarize(assimilate(KalmanFilter(), linear_gaussian(n_obs=20), seed=0))
    >>> round(stats["rmse_analysis_mean"], 2), round(stats["rmv_analysis_mean"], 2)
    (0.35, 0.38)
    """
    b = ds.attrs.get("burn_in", 0.0) if burn_in is None else burn_in
    keep = ds["time"].values > b
    out = {}
    for name in ("rmse_analysis", "rmse_forecast", "rmv_analysis", "rmv_forecast", "crps_analysis"):
        if name in ds:
            ta = time_average(ds[name].values[keep])
            out[f"{name}_mean"], out[f"{name}_stderr"] = ta.mean, ta.stderr
    w = ds["wall_time"].values
    out["time_per_cycle_median"] = float(np.median(w)) if w.size else float("nan")
    return out
