"""What every cycling loop shares: its log, its Dataset, its divergence error.

Both loops behind :func:`filters.assimilate` (the cycle-by-cycle one of
:mod:`filters.assimilate` and the window-by-window one of 4D-Var,
``filters.variational._runner``) write into a :class:`CycleLog` (preallocated
numpy arrays, no xarray work per cycle) and build their Dataset once with
:func:`cycle_dataset`, so that both produce the same layout.  This module
imports neither loop, so neither loop has to import the other to share it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .metrics import rmse, root_mean_variance, time_average

__all__ = ["DivergenceError", "CycleLog", "diverged", "cf_variable", "cycle_dataset", "summarize"]


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
class CycleLog:
    """Preallocated per-cycle buffers of a run (numpy only).

    Parameters
    ----------
    mf, ma : ndarray (T, n)
        Forecast and analysis means.
    sf, sa : ndarray (T, n)
        Forecast and analysis standard deviations.
    innov : ndarray (T, m)
        Observation minus forecast mean, in observation space.
    used : ndarray (T,) of int32
        Number of observations assimilated per cycle.
    wall : ndarray (T,)
        Wall time per cycle, in seconds.
    rank : ndarray (T, n) of int16 or None
        Number of analysis members below the truth (ensembles with a truth).
    crps : ndarray (T,) or None
        Analysis CRPS, mean over components (ensembles with a truth).
    ens : ndarray (T, N, n) or None
        Analysis members, when they are stored.
    cov : ndarray (T, n, n) or None
        Analysis covariances, when they are stored.

    Examples
    --------
    >>> log = CycleLog.allocate(5, 3, 2)
    >>> log.mf.shape, log.used.dtype.name, log.rank is None
    ((5, 3), 'int32', True)
    """

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

    @classmethod
    def allocate(cls, T: int, n: int, m: int, *, scores: bool = False, members: int = 0,
                 cov: bool = False) -> CycleLog:
        """Buffers for ``T`` cycles of an ``n``-state, ``m``-observation run (NaN-filled).

        Parameters
        ----------
        T, n, m : int
            Cycles, state and observation sizes.
        scores : bool
            Allocate the ensemble scores against the truth (``rank``, ``crps``).
        members : int
            Ensemble size of the stored members; 0 stores none (``ens`` is None).
        cov : bool
            Allocate the analysis covariances.

        Returns
        -------
        CycleLog

        Examples
        --------
        >>> CycleLog.allocate(4, 2, 1, members=3).ens.shape
        (4, 3, 2)
        """
        return cls(
            mf=np.full((T, n), np.nan), ma=np.full((T, n), np.nan), sf=np.full((T, n), np.nan),
            sa=np.full((T, n), np.nan), innov=np.full((T, m), np.nan),
            used=np.zeros(T, np.int32), wall=np.full(T, np.nan),
            rank=np.zeros((T, n), np.int16) if scores else None,
            crps=np.full(T, np.nan) if scores else None,
            ens=np.full((T, members, n), np.nan) if members else None,
            cov=np.full((T, n, n), np.nan) if cov else None,
        )


def diverged(mean: np.ndarray, threshold: float) -> bool:
    """Whether a state mean is non-finite or has a component beyond ``threshold``.

    Parameters
    ----------
    mean : ndarray
        A state mean (or several).
    threshold : float
        The largest magnitude that still counts as finite.

    Returns
    -------
    bool

    Examples
    --------
    >>> diverged(np.array([1.0, np.nan]), 1e8), diverged(np.array([1.0, -2.0]), 1e8)
    (True, False)
    """
    return not (np.all(np.isfinite(mean)) and np.abs(mean).max() < threshold)


def cf_variable(dims, data, long_name: str, units: str = "1", **extra) -> xr.Variable:
    """An :class:`xarray.Variable` with CF ``long_name`` and ``units`` attributes.

    Parameters
    ----------
    dims : tuple of str
        Dimension names.
    data : array_like
        Values.
    long_name : str
        CF long name.
    units : str
        CF units ("1" for dimensionless).
    **extra
        Further attributes (e.g. ``flag_values``).

    Returns
    -------
    xarray.Variable

    Examples
    --------
    >>> cf_variable(("time",), [1.0, 2.0], "wall time", "s").attrs
    {'long_name': 'wall time', 'units': 's'}
    """
    return xr.Variable(dims, data, {"long_name": long_name, "units": units, **extra})


@functools.lru_cache(maxsize=1)
def _package_version() -> str:
    # importlib.metadata reads the installed METADATA file: about 3 ms a call, once is enough.
    try:
        from importlib.metadata import version

        return version("da-embed")
    except Exception:  # not installed (e.g. running from a source tree)
        return "unknown"


def cycle_dataset(filter, setting, sim, seed: int, log: CycleLog, K: int, truth, *,
                  extra_vars: dict | None = None, extra_coords: dict | None = None,
                  extra_attrs: dict | None = None) -> xr.Dataset:
    """The CF-style Dataset of the first K cycles of a run.

    Parameters
    ----------
    filter : Filter
        The filter that ran (its name and parameters go into the attributes).
    setting : Setting
        The setting it ran on.
    sim : Simulation
        Times and observations of the run.
    seed : int
        The run's seed.
    log : CycleLog
        The per-cycle buffers.
    K : int
        Number of cycles completed.
    truth : ndarray (T, n) or None
        The true states, when known.
    extra_vars, extra_coords, extra_attrs : dict, optional
        Filter-specific output (e.g. the per-window variables of 4D-Var).

    Returns
    -------
    xarray.Dataset
        The layout described in :func:`filters.assimilate`, with the time
        averages of :func:`summarize` among its attributes.

    Examples
    --------
    >>> from filters import KalmanFilter
    >>> from filters.settings import linear_gaussian
    >>> s = linear_gaussian(n=2, n_obs=3)
    >>> sim = s.simulate(0)
    >>> ds = cycle_dataset(KalmanFilter(), s, sim, 0, CycleLog.allocate(3, 2, 2), 3, sim.truth)
    >>> ds.attrs["cycles_completed"], "rmse_analysis" in ds
    (3, True)
    """
    times = np.asarray(sim.times[:K], dtype=float)
    n, m = setting.model.ndim, setting.obs.nobs
    ts, tso = ("time", "state"), ("time", "obs")
    var = cf_variable
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
    coords = _coords(times, n, m, log)
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


def _coords(times: np.ndarray, n: int, m: int, log: CycleLog) -> dict:
    """The CF coordinates of :func:`cycle_dataset` (``state_``, ``member`` when stored)."""
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
    return coords


def summarize(ds: xr.Dataset, burn_in: float | None = None) -> dict:
    """Time averages after burn-in, each with its corrected standard error.

    Parameters
    ----------
    ds : xarray.Dataset
        A run from :func:`filters.assimilate`.
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
    >>> from filters import KalmanFilter, assimilate
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
