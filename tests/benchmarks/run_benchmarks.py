#!/usr/bin/env python
"""Side-by-side performance benchmark of ``filters`` against DAPPER and filterpy.

Run with ``make bench`` (installs the ``bench`` extra: dapper 1.7.1, filterpy)
or directly: ``python tests/benchmarks/run_benchmarks.py``.  One process,
prints plain-text tables, takes a few minutes on 2 cores.  Not collected by
pytest (``--ignore=tests/benchmarks`` in pyproject).

What it measures
----------------
1. Cycling runs on DAPPER's ``sakov2008`` (Lorenz-96) and ``sakov2012``
   (Lorenz-63) settings.  The truth and observations are simulated ONCE with
   DAPPER (its own seed) and fed unchanged to every package, so all filters
   see the same data.  Each package integrates with its own model code
   (ours: Numba RK4; DAPPER: numpy RK4; filterpy: a plain numpy RK4 ``fx``
   of one state, as filterpy's documentation writes one, called by filterpy
   once per member or sigma point).

   * RMSE: analysis RMSE averaged in time after the burn-in, with the
     autocorrelation-corrected standard error (ours: ``summarize``; DAPPER:
     ``avrgs.rmse.a``; filterpy: the same formula as ours on its means).
   * "core" time per cycle = forecast + analysis (+ inflation, rotation),
     without diagnostics.  Ours: the ``wall_time`` logged per cycle.  DAPPER:
     per-cycle wall time between consecutive analyses minus the time spent in
     ``Stats.assess`` (measured by wrapping it; its stats are DAPPER's
     diagnostics).  filterpy: ``perf_counter`` around predict + update
     (+ inflation by hand).  The median over cycles is taken in each run.
   * "total" time per cycle = the whole call (``filters.assimilate``,
     ``xp.assimilate``, the filterpy loop) divided by the number of cycles;
     it includes each package's diagnostics (ours: mean, spread, innovation,
     CRPS, truth ranks and the Dataset; DAPPER: its Stats).
   * Every number is the median over ``--repeats`` repeats, interleaved
     (ours, DAPPER, filterpy, ours, ...) so that load from other processes
     hits all packages alike.  Ratios are peer time / our time.
2. The ETKF analysis alone (``filters.ensemble.etkf_analysis``) at
   (n, m, N) = (1000, 1000, 100) and (10000, 2000, 100), as a fraction of the
   matrix-multiply bound measured in the same run: the time of ``Y @ Y.T``
   (Y of shape (N, m)) plus ``T @ A`` (T (N, N), A (N, n)) done alone with
   numpy.  fraction = bound time / ETKF time (medians of interleaved repeats),
   with the BLAS's default threads and with one thread.

The header reports the background load (CPU used by other processes during
the run): on a shared 2-core machine it changes the absolute times a lot;
the interleaved medians and ratios are what to read.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import os
import platform
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import filters
from filters.ensemble import etkf_analysis
from filters.metrics import crps_ensemble, rmse, time_average
from filters.settings import Simulation, sakov2008, sakov2012

perf = time.perf_counter

TARGET_DAPPER = 30.0    # at least 30x less time per cycle than DAPPER (issue 12)
TARGET_FILTERPY = 50.0  # at least 50x less than filterpy's EnKF
TARGET_FRACTION = 0.6   # ETKF analysis at >= 60% of the matmul bound (large size, issue 12)


# ----------------------------------------------------------------------------
# Peers: imports (quiet), versions
# ----------------------------------------------------------------------------
def _blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return None
    nums = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(nums) if nums else None


def _import_peers():
    # NB: importing dapper.da_methods calls threadpoolctl.threadpool_limits(1) for the whole
    # process (dapper/tools/multiproc.py), so the cycling runs of ALL packages use one BLAS
    # thread; the ETKF-alone benchmark restores the previous count explicitly.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dapper
        import dapper.da_methods as da
        import dapper.mods as modelling  # noqa: F401
        import dapper.stats
        import dapper.tools.progressbar as pb
        from dapper.dpr_config import rc
        from dapper.tools.seeding import set_seed
        import filterpy
        from filterpy.kalman import EnsembleKalmanFilter, MerweScaledSigmaPoints, UnscentedKalmanFilter
    pb.disable_progbar = True
    pb.disable_user_interaction = True
    rc.liveplotting = False
    return dict(dapper=dapper, da=da, Stats=dapper.stats.Stats, set_seed=set_seed,
                filterpy=filterpy, EnKF=EnsembleKalmanFilter, UKF=UnscentedKalmanFilter,
                Merwe=MerweScaledSigmaPoints)


def _versions(peers) -> dict:
    import numba
    import scipy

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "numba": numba.__version__, "dapper": peers["dapper"].__version__,
            "filterpy": peers["filterpy"].__version__, "da-embed": filters.__version__}


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        out = []
        for p in threadpool_info():
            if p.get("user_api") == "blas":
                out.append(f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, "
                           f"{p.get('num_threads')} threads)")
        return "; ".join(dict.fromkeys(out)) or "unknown"
    except Exception:  # threadpoolctl missing
        return "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class LoadMonitor:
    """CPU time used by other processes while we run (Linux /proc/stat)."""

    def __init__(self):
        self.t0, self.busy0, self.self0 = perf(), self._busy(), self._self()

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as fh:
                v = [int(x) for x in fh.readline().split()[1:]]
            return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        except (OSError, ValueError):
            return float("nan")

    @staticmethod
    def _self():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def background_cores(self) -> float:
        """Average number of cores kept busy by other processes."""
        wall = perf() - self.t0
        other = (self._busy() - self.busy0) - (self._self() - self.self0)
        return max(other, 0.0) / wall if wall > 0 else float("nan")


# ----------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------
@dataclass
class Result:
    rmse: float = float("nan")
    stderr: float = float("nan")
    core: list = field(default_factory=list)   # per repeat: median core time per cycle (s)
    total: list = field(default_factory=list)  # per repeat: whole call / cycles (s)
    cycles: int = 0
    note: str = ""
    error: str = ""

    @property
    def core_ms(self) -> float:
        return float(np.median(self.core)) * 1e3 if self.core else float("nan")

    @property
    def total_ms(self) -> float:
        return float(np.median(self.total)) * 1e3 if self.total else float("nan")


def _rmse_summary(means: np.ndarray, truth: np.ndarray, times: np.ndarray, burn_in: float):
    keep = times > burn_in
    ta = time_average(rmse(means[keep], truth[keep]))
    return ta.mean, ta.stderr


# ----------------------------------------------------------------------------
# Runners: ours, DAPPER, filterpy
# ----------------------------------------------------------------------------
#: ``compiled=`` of our runs (``--path``): "auto" takes the compiled cycle path where it can.
COMPILED: bool | str = "auto"


def run_ours(flt, setting, sim, res: Result, seed: int = 1):
    t0 = perf()
    ds = filters.assimilate(flt, setting, seed=seed, simulation=sim, compiled=COMPILED)
    total = perf() - t0
    T = ds.sizes["time"]
    res.cycles = T
    res.core.append(float(np.median(ds["wall_time"].values)))
    res.total.append(total / T)
    res.rmse = float(ds.attrs["rmse_analysis_mean"])
    res.stderr = float(ds.attrs["rmse_analysis_stderr"])


def run_dapper(peers, make_xp, HMM, xx, yy, res: Result, seed: int = 7):
    """Run a DAPPER method; per-cycle times from wrapping ``Stats.assess``."""
    Stats = peers["Stats"]
    orig = Stats.assess
    calls = []  # (enter, exit, is_final_analysis_assessment)

    def assess(self, k, ko=None, faus=None, **kw):
        t_in = perf()
        out = orig(self, k, ko, faus, **kw)
        calls.append((t_in, perf(), k == 0 or (ko is not None and faus is None)))
        return out

    xp = make_xp()
    peers["set_seed"](seed)
    Stats.assess = assess
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = perf()
            xp.assimilate(HMM, xx, yy)
            total = perf() - t0
    finally:
        Stats.assess = orig
    arr = np.array(calls)
    ends = np.flatnonzero(arr[:, 2] > 0)  # k = 0, then the last assessment of each cycle
    exits = arr[:, 1]
    spent = np.cumsum(arr[:, 1] - arr[:, 0])  # time inside assess, cumulative
    core = (exits[ends[1:]] - exits[ends[:-1]]) - (spent[ends[1:]] - spent[ends[:-1]])
    Ko = len(yy)
    if core.size != Ko:
        raise RuntimeError(f"DAPPER timing: found {core.size} cycles, expected {Ko}")
    res.cycles = Ko
    res.core.append(float(np.median(core)))
    res.total.append(total / Ko)
    with contextlib.redirect_stdout(io.StringIO()):
        xp.stats.average_in_time()
    res.rmse = float(xp.avrgs.rmse.a.val)
    res.stderr = float(xp.avrgs.rmse.a.prec)


def _filterpy_fx(setting):
    """filterpy's ``fx`` as its documentation writes one: a plain numpy function of one state.

    filterpy's examples pass a small numpy ``fx(x, dt)``; here it is the RK4 of
    Lorenz-96 (``np.roll``) or Lorenz-63 with the setting's parameters, called
    once per member / sigma point by filterpy.  (Until issue 12 part 2 this
    wrapped OUR Numba model, which favoured filterpy.)
    """
    model, dt, nsteps = setting.model, setting.dt, setting.steps_per_obs
    if hasattr(model, "forcing"):
        F = float(model.forcing)

        def tend(x):
            return (np.roll(x, -1) - np.roll(x, 2)) * np.roll(x, 1) - x + F
    else:
        sig, rho, beta = float(model.sigma), float(model.rho), float(model.beta)

        def tend(x):
            return np.array([sig * (x[1] - x[0]), x[0] * (rho - x[2]) - x[1],
                             x[0] * x[1] - beta * x[2]])

    def fx(x, _dt):  # one member / sigma point through one observation interval
        for _ in range(nsteps):
            k1 = tend(x)
            k2 = tend(x + 0.5 * dt * k1)
            k3 = tend(x + 0.5 * dt * k2)
            k4 = tend(x + dt * k3)
            x = x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return x

    return fx


def run_filterpy_enkf(peers, setting, sim, N, infl, res: Result, cycles: int, seed: int = 11):
    """filterpy's EnsembleKalmanFilter with the same model, N and inflation (by hand)."""
    n, m = setting.model.ndim, setting.obs.nobs
    np.random.seed(seed)  # filterpy draws from numpy's global generator
    f = peers["EnKF"](x=setting.prior.mean.copy(), P=setting.prior.cov.copy(), dim_z=m,
                      dt=setting.dt_obs, N=N, hx=lambda x: x, fx=_filterpy_fx(setting))
    f.Q = np.zeros((n, n))  # no model noise (filterpy's default is I)
    f.R = setting.R.dense.copy()
    ys = sim.observations
    means = np.full((cycles, n), np.nan)
    per = np.empty(cycles)
    t0 = perf()
    for k in range(cycles):
        tic = perf()
        f.predict()
        f.update(ys[k])
        if infl != 1.0:  # multiplicative inflation of the analysis anomalies, as DAPPER/ours
            mu = f.sigmas.mean(axis=0)
            f.sigmas = mu + infl * (f.sigmas - mu)
        per[k] = perf() - tic
        means[k] = f.sigmas.mean(axis=0)
    total = perf() - t0
    _finish_filterpy(res, setting, sim, means, per, total, cycles)


def run_filterpy_ukf(peers, setting, sim, res: Result, cycles: int):
    """filterpy's UnscentedKalmanFilter, Merwe points alpha=1, beta=2, kappa=0 (as ours)."""
    n, m = setting.model.ndim, setting.obs.nobs
    pts = peers["Merwe"](n, alpha=1.0, beta=2.0, kappa=0.0)
    f = peers["UKF"](dim_x=n, dim_z=m, dt=setting.dt_obs, hx=lambda x: x,
                     fx=_filterpy_fx(setting), points=pts)
    f.x = setting.prior.mean.copy()
    f.P = setting.prior.cov.copy()
    f.Q = np.zeros((n, n))
    f.R = setting.R.dense.copy()
    ys = sim.observations
    means = np.full((cycles, n), np.nan)
    per = np.empty(cycles)
    t0 = perf()
    for k in range(cycles):
        tic = perf()
        f.predict()
        f.update(ys[k])
        per[k] = perf() - tic
        means[k] = f.x
    total = perf() - t0
    _finish_filterpy(res, setting, sim, means, per, total, cycles)


def _finish_filterpy(res, setting, sim, means, per, total, cycles):
    res.cycles = cycles
    res.core.append(float(np.median(per)))
    res.total.append(total / cycles)
    if sim.times[cycles - 1] > setting.burn_in + 5 * setting.dt_obs:
        res.rmse, res.stderr = _rmse_summary(means, sim.truth[:cycles], sim.times[:cycles],
                                             setting.burn_in)


# ----------------------------------------------------------------------------
# The comparison table
# ----------------------------------------------------------------------------
@dataclass
class Row:
    label: str
    params: str
    ours: Callable
    dapper: Callable | None = None  # () -> xp
    filterpy: str | None = None      # "enkf" or "ukf"
    N: int = 0
    infl: float = 1.0
    note: str = ""


def rows_for(name: str, da) -> list[Row]:
    if name == "sakov2008":
        return [
            Row("ETKF", "N=28 infl=1.02 rot", lambda: filters.ETKF(N=28, inflation=1.02, rotate=True),
                lambda: da.EnKF("Sqrt", N=28, infl=1.02, rot=True)),
            Row("EnKF", "N=40 infl=1.06 (pert. obs)", lambda: filters.EnKF(N=40, inflation=1.06),
                lambda: da.EnKF("PertObs", N=40, infl=1.06), "enkf", 40, 1.06),
            Row("LETKF", "N=7 infl=1.04 rot r=4", lambda: filters.LETKF(N=7, inflation=1.04, radius=4.0,
                                                                       rotate=True),
                lambda: da.LETKF(N=7, infl=1.04, rot=True, loc_rad=4)),
            Row("EnSRF", "N=28 infl=1.02 rot (serial)", lambda: filters.EnSRF(N=28, inflation=1.02,
                                                                              rotate=True),
                lambda: da.EnKF("Serial", N=28, infl=1.02, rot=True)),
            Row("DEnKF", "N=40 infl=1.01", lambda: filters.DEnKF(N=40, inflation=1.01),
                lambda: da.EnKF("DEnKF", N=40, infl=1.01)),
            Row("EKF", "infl=10 per unit time", lambda: filters.EKF(infl_rate=10.0),
                lambda: da.ExtKF(infl=10)),
            Row("UKF", "Merwe a=1 b=2 k=0", lambda: filters.UKF(), None, "ukf"),
        ]
    return [
        Row("ETKF", "N=10 infl=1.02 rot", lambda: filters.ETKF(N=10, inflation=1.02, rotate=True),
            lambda: da.EnKF("Sqrt", N=10, infl=1.02, rot=True)),
        Row("EnKF", "N=10 infl=1.04 (pert. obs)", lambda: filters.EnKF(N=10, inflation=1.04),
            lambda: da.EnKF("PertObs", N=10, infl=1.04), "enkf", 10, 1.04),
        Row("LETKF", "-", None, None, None,
            note="not run: no localisation for 3 variables (DAPPER's HMM has no localizer)"),
        Row("EnSRF", "N=10 infl=1.02 rot (serial)", lambda: filters.EnSRF(N=10, inflation=1.02,
                                                                          rotate=True),
            lambda: da.EnKF("Serial", N=10, infl=1.02, rot=True),
            note="untuned: ETKF's parameters"),
        Row("DEnKF", "N=10 infl=1.02", lambda: filters.DEnKF(N=10, inflation=1.02),
            lambda: da.EnKF("DEnKF", N=10, infl=1.02), note="untuned: ETKF's parameters"),
        Row("EKF", "infl=180 per unit time", lambda: filters.EKF(infl_rate=180.0),
            lambda: da.ExtKF(infl=180)),
        Row("UKF", "Merwe a=1 b=2 k=0", lambda: filters.UKF(), None, "ukf"),
    ]


def bench_setting(name: str, peers, repeats: int, fp_enkf_cycles: int | None, n_obs: int | None):
    if name == "sakov2008":
        from dapper.mods.Lorenz96.sakov2008 import HMM as HMM0
    else:
        from dapper.mods.Lorenz63.sakov2012 import HMM as HMM0
    HMM = HMM0.copy()
    if n_obs is not None:  # shorter runs (smoke tests)
        with contextlib.redirect_stdout(io.StringIO()):
            HMM.tseq.Ko = n_obs - 1
    peers["set_seed"](3000)
    with contextlib.redirect_stdout(io.StringIO()):
        xx, yy = HMM.simulate()
    ko_idx = HMM.tseq.kko
    yy = np.vstack(list(yy))
    setting = (sakov2008 if name == "sakov2008" else sakov2012)(n_obs=len(yy))
    if n_obs is not None:  # DAPPER shortens its burn-in for short runs
        setting = setting.with_(burn_in=float(HMM.tseq.BurnIn))
    if not np.allclose(setting.times, HMM.tseq.tto) or setting.burn_in != HMM.tseq.BurnIn:
        raise RuntimeError(f"{name}: our time axis or burn-in differs from DAPPER's")
    sim = Simulation(setting.times, xx[ko_idx], yy, xx[0])
    T = len(yy)
    fp_cycles = {"enkf": T if fp_enkf_cycles is None else min(fp_enkf_cycles, T), "ukf": T}

    rows = rows_for(name, peers["da"])
    out = []
    for row in rows:
        r = {"row": row, "ours": Result(), "dapper": Result() if row.dapper else None,
             "filterpy": Result() if row.filterpy else None}
        out.append(r)
        if row.ours is None:
            continue
        # Warm up Numba (one short run) before timing.
        filters.assimilate(row.ours(), setting.with_(n_obs=min(20, T)), seed=0)
    for rep in range(repeats):
        for r in out:
            row = r["row"]
            if row.ours is None:
                continue
            run_ours(row.ours(), setting, sim, r["ours"])
            if row.dapper is not None:
                try:
                    run_dapper(peers, row.dapper, HMM, xx, yy, r["dapper"])
                except Exception as exc:  # report, don't stop the benchmark
                    r["dapper"].error = f"{type(exc).__name__}: {exc}"
            if row.filterpy == "enkf":
                run_filterpy_enkf(peers, setting, sim, row.N, row.infl, r["filterpy"],
                                  fp_cycles["enkf"])
            elif row.filterpy == "ukf":
                try:
                    run_filterpy_ukf(peers, setting, sim, r["filterpy"], fp_cycles["ukf"])
                except Exception as exc:
                    r["filterpy"].error = f"{type(exc).__name__}: {exc}"
    return setting, out, HMM


def _fmt_rmse(res: Result | None) -> str:
    if res is None:
        return "-"
    if res.error:
        return "error"
    if not np.isfinite(res.rmse):
        return "n/a"
    se = f"{2 * res.stderr:.3f}" if np.isfinite(res.stderr) else "?"
    return f"{res.rmse:.3f}+-{se}"


def _equal(a: Result, b: Result | None) -> str:
    if b is None or b.error or not (np.isfinite(a.rmse) and np.isfinite(b.rmse)):
        return ""
    tol = 2.0 * np.hypot(a.stderr, b.stderr)
    d = a.rmse - b.rmse
    return "yes" if abs(d) <= tol else ("ours lower" if d < 0 else "OURS HIGHER")


def _ms(x: float) -> str:
    return "-" if not np.isfinite(x) else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def _ratio(peer: Result | None, ours: float, which: str = "core") -> tuple[str, float]:
    if peer is None or peer.error or not peer.core:
        return "-", float("nan")
    v = (peer.core_ms if which == "core" else peer.total_ms) / ours
    return f"{v:.1f}x", v


def model_costs(setting, HMM, reps: int = 300) -> str:
    """What one member's forecast costs in each package's model code."""
    x = setting.prior.mean.copy()
    dt, k = setting.dt, setting.steps_per_obs

    def clock(fn):
        fn()
        ts = []
        for _ in range(reps):
            t0 = perf()
            fn()
            ts.append(perf() - t0)
        return float(np.median(ts)) * 1e6

    ours = clock(lambda: setting.model.integrate(x, 0.0, dt, k))

    def dapper_interval():
        z = x
        for _ in range(k):
            z = HMM.Dyn(z, 0.0, dt)
        return z

    dap = clock(dapper_interval)
    fx = _filterpy_fx(setting)
    fxt = clock(lambda: fx(x, None))
    return (f"one state through one obs interval ({k} RK4 step{'s' if k > 1 else ''}): our Numba "
            f"model {ours:.0f} us, filterpy's numpy fx {fxt:.0f} us (once per member / sigma "
            f"point), DAPPER's numpy model {dap:.0f} us")


def print_setting(name, setting, out, repeats, HMM):
    desc = {"sakov2008": "Lorenz-96 n=40 F=8, dt=0.05, obs every step, H=I, R=I, X0~N(e1, 0.001 I)",
            "sakov2012": "Lorenz-63, dt=0.01, obs every 25 steps (dto=0.25), H=I, R=2I, "
                         "X0~N([1.509,-1.531,25.46], 2I)"}[name]
    T = len(setting.times)
    kept = int(np.sum(setting.times > setting.burn_in))
    print()
    print(f"== {name}: {desc}")
    print(f"   {T} cycles (DAPPER Ko={T - 1}), burn-in {setting.burn_in:g} time units "
          f"({kept} cycles averaged); same truth and obs for all packages (simulated by DAPPER)")
    ref = setting.reference.get("rmse_a", {})
    print()
    print("Analysis RMSE (time average after burn-in, +- 2 standard errors)")
    hdr = f"{'filter':<6} {'parameters':<28} {'ours':>13} {'DAPPER':>13} {'=DAPPER?':>10} " \
          f"{'filterpy':>13} {'=filterpy?':>11}"
    print(hdr)
    print("-" * len(hdr))
    notes = []
    for r in out:
        row = r["row"]
        if row.ours is None:
            print(f"{row.label:<6} {'':<28} {'-':>13}  ({row.note})")
            continue
        o = r["ours"]
        print(f"{row.label:<6} {row.params:<28} {_fmt_rmse(o):>13} {_fmt_rmse(r['dapper']):>13} "
              f"{_equal(o, r['dapper']):>10} {_fmt_rmse(r['filterpy']):>13} "
              f"{_equal(o, r['filterpy']):>11}")
        if row.note:
            notes.append(f"{row.label}: {row.note}")
        for who in ("dapper", "filterpy"):
            if r[who] is not None and r[who].error:
                notes.append(f"{row.label} {who}: {r[who].error}")
    if ref:
        print("DAPPER's published rmse.a for this setting: "
              + "; ".join(f"{k}: {v}" for k, v in ref.items()))
    print()
    print(f"Time per cycle in ms (median of {repeats} interleaved repeats). core = forecast + "
          "analysis, median over cycles;")
    print("total = whole call / cycles, incl. each package's diagnostics. ratio = peer / ours "
          f"(targets: DAPPER >= {TARGET_DAPPER:g}x, filterpy EnKF >= {TARGET_FILTERPY:g}x)")
    hdr = f"{'filter':<6} {'ours':>7} {'DAPPER':>7} {'ratio':>7} {'filterpy':>9} {'ratio':>8} | " \
          f"{'ours':>7} {'DAPPER':>7} {'ratio':>7} {'filterpy':>9} {'ratio':>8} | target"
    print(f"{'':<6} {'---------------- core ----------------':^41} | "
          f"{'---------------- total ---------------':^41} |")
    print(hdr)
    print("-" * len(hdr))
    verdicts = []
    for r in out:
        row = r["row"]
        if row.ours is None:
            continue
        o, d, f = r["ours"], r["dapper"], r["filterpy"]
        rd, vd = _ratio(d, o.core_ms)
        rf, vf = _ratio(f, o.core_ms)
        rdt, _ = _ratio(d, o.total_ms, "total")
        rft, _ = _ratio(f, o.total_ms, "total")
        fcore = "-" if f is None or f.error else _ms(f.core_ms) + ("*" if f.cycles < o.cycles else "")
        ftot = "-" if f is None or f.error else _ms(f.total_ms) + ("*" if f.cycles < o.cycles else "")
        target = []
        if d is not None and np.isfinite(vd):
            vdt = d.total_ms / o.total_ms
            target.append(f"DAPPER core {'met' if vd >= TARGET_DAPPER else 'MISSED'}, "
                          f"total {'met' if vdt >= TARGET_DAPPER else 'MISSED'}")
        if row.filterpy == "enkf" and np.isfinite(vf):
            target.append(f"filterpy {'met' if vf >= TARGET_FILTERPY else 'MISSED'}")
        print(f"{row.label:<6} {_ms(o.core_ms):>7} {_ms(d.core_ms) if d and not d.error else '-':>7} "
              f"{rd:>7} {fcore:>9} {rf:>8} | {_ms(o.total_ms):>7} "
              f"{_ms(d.total_ms) if d and not d.error else '-':>7} {rdt:>7} {ftot:>9} {rft:>8} | "
              f"{', '.join(target) or '-'}")
        verdicts.append({"setting": name, "filter": row.label,
                         "rmse_dapper": _equal(o, d), "rmse_filterpy": _equal(o, f),
                         "dapper_core": vd, "dapper_total": (d.total_ms / o.total_ms) if
                         d is not None and not d.error and d.total else float("nan"),
                         "filterpy_enkf": vf if row.filterpy == "enkf" else float("nan")})
    short = [r for r in out if r["filterpy"] is not None and r["filterpy"].cycles
             and r["filterpy"].cycles < r["ours"].cycles]
    for r in short:
        notes.append(f"* filterpy {r['row'].label}: timed on the first {r['filterpy'].cycles} cycles "
                     "only (slow); no RMSE when that ends inside the burn-in")
    notes.append("filterpy has no ETKF/LETKF/serial EnSRF, DAPPER has no UKF; filterpy's EKF is "
                 "not compared.")
    notes.append(model_costs(setting, HMM))
    for nline in notes:
        print("  note: " + nline)
    return verdicts


# ----------------------------------------------------------------------------
# ETKF analysis vs the matrix-multiply bound
# ----------------------------------------------------------------------------
def bench_etkf(sizes, reps: int, default_threads: int | None):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    results = []
    modes = [1] if threadpool_limits is None or default_threads is None else [default_threads, 1]
    for mode in dict.fromkeys(modes):
        ctx = contextlib.nullcontext() if threadpool_limits is None else \
            threadpool_limits(limits=mode, user_api="blas")
        with ctx:
            for n, m, N in sizes:
                rng = np.random.default_rng(42)
                E = 3.0 + rng.standard_normal((N, n))
                HE = E[:, :m] + 0.1 * rng.standard_normal((N, m))
                y = rng.standard_normal(m)
                R = filters.as_covariance(1.0, m)
                Y = rng.standard_normal((N, m))
                Tm = rng.standard_normal((N, N))
                A = rng.standard_normal((N, n))
                for _ in range(3):  # warm-up
                    Y @ Y.T
                    Tm @ A
                    etkf_analysis(E, HE, y, R)
                tb, te = [], []
                for _ in range(reps):  # interleaved
                    t0 = perf()
                    Y @ Y.T
                    Tm @ A
                    tb.append(perf() - t0)
                    t0 = perf()
                    etkf_analysis(E, HE, y, R)
                    te.append(perf() - t0)
                b, e = float(np.median(tb)), float(np.median(te))
                results.append((mode, n, m, N, b, e, b / e, min(tb) / min(te)))
    return results


def print_etkf(results, reps):
    print()
    print("== ETKF analysis alone: filters.ensemble.etkf_analysis(E, HE, y, R), R = as_covariance(1.0, m)")
    print(f"   bound = Y @ Y.T (Y: N x m) + T @ A (T: N x N, A: N x n) alone in numpy; "
          f"median of {reps} interleaved repeats")
    print("   fraction = bound / ETKF of the medians; (min) = of the fastest repeats, less "
          "sensitive to other processes")
    hdr = f"{'BLAS threads':>12} {'n':>6} {'m':>6} {'N':>4} {'bound ms':>9} {'ETKF ms':>9} " \
          f"{'fraction':>9} {'(min)':>6}  target"
    print(hdr)
    print("-" * len(hdr))
    for mode, n, m, N, b, e, fr, frmin in results:
        tgt = ""
        if n >= 10000:
            tgt = f">= {TARGET_FRACTION:.0%}: {'met' if fr >= TARGET_FRACTION else 'MISSED'}"
        print(f"{mode:>12} {n:>6} {m:>6} {N:>4} {b * 1e3:>9.3f} {e * 1e3:>9.3f} {fr:>9.0%} "
              f"{frmin:>6.0%}  {tgt}")


def diagnostics_cost(N: int, n: int, reps: int = 2000) -> float:
    """Per-cycle cost (s) of the runner's CRPS and truth-rank diagnostics for an (N, n) ensemble."""
    rng = np.random.default_rng(0)
    E = rng.standard_normal((N, n))
    x = rng.standard_normal(n)
    t0 = perf()
    for _ in range(reps):
        np.sum(E < x, axis=0)
        crps_ensemble(E, x).mean()
    return (perf() - t0) / reps


# ----------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="repeats of every run (default 3)")
    ap.add_argument("--cycles", type=int, default=None,
                    help="analysis cycles per run (default: DAPPER's Ko + 1 = 1001)")
    ap.add_argument("--filterpy-enkf-cycles", type=int, default=None,
                    help="cycles for filterpy's EnKF (default: all)")
    ap.add_argument("--etkf-repeats", type=int, default=30)
    ap.add_argument("--settings", default="sakov2008,sakov2012")
    ap.add_argument("--path", choices=["auto", "generic"], default="auto",
                    help="our cycling path: auto (compiled where it can, the default) or generic")
    args = ap.parse_args(argv)

    wall0 = perf()
    load = LoadMonitor()
    threads0 = _blas_threads()
    peers = _import_peers()
    v = _versions(peers)
    print("da-embed filters benchmark: filters vs DAPPER and filterpy")
    print("command : make bench   (runs: python tests/benchmarks/run_benchmarks.py"
          + (" " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else "") + ")")
    print(f"date    : {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(f"machine : nproc {os.cpu_count()}, {_cpu_model()}, {platform.system()} {platform.release()}")
    import numba

    print(f"BLAS    : {_blas()}; {threads0} threads before dapper's import, which sets 1 for the "
          "whole process (so all cycling runs below use 1 BLAS thread)")
    print(f"numba   : threading layer {numba.config.THREADING_LAYER}, {numba.get_num_threads()} threads")
    global COMPILED
    COMPILED = "auto" if args.path == "auto" else False
    print(f"settings: {args.settings}; repeats {args.repeats}; our path: {args.path}; "
          "numba warmed up before timing")
    sys.stdout.flush()

    all_verdicts = []
    for name in args.settings.split(","):
        setting, out, HMM = bench_setting(name, peers, args.repeats, args.filterpy_enkf_cycles,
                                        args.cycles)
        all_verdicts += print_setting(name, setting, out, args.repeats, HMM)
        N = 40 if name == "sakov2008" else 10
        dc = diagnostics_cost(N, setting.model.ndim)
        core = [r["ours"].core_ms for r in out if r["row"].label == "EnKF"][0]
        print(f"  note: our runner's per-cycle CRPS + truth ranks (outside 'core') cost "
              f"{dc * 1e6:.0f} us for N={N}, n={setting.model.ndim} "
              f"({dc * 1e3 / core:.0%} of our EnKF core time)")
        sys.stdout.flush()

    sizes = [(1000, 1000, 100), (10000, 2000, 100)]
    res = bench_etkf(sizes, args.etkf_repeats, threads0)
    print_etkf(res, args.etkf_repeats)

    print()
    print("== Summary against the targets")
    eq = [f"{v['setting']} {v['filter']} vs {who}: {v['rmse_' + who]}" for v in all_verdicts
          for who in ("dapper", "filterpy") if v["rmse_" + who]]
    bad = [e for e in eq if not e.endswith("yes")]
    print(f"equal RMSE (within 2 combined standard errors): {len(eq) - len(bad)} of {len(eq)} "
          "comparisons" + (f"; not equal: {'; '.join(bad)}" if bad else ""))
    for key, label in (("dapper_core", "core"), ("dapper_total", "total")):
        vals = [v for v in all_verdicts if np.isfinite(v[key])]
        met = [f"{v['setting']} {v['filter']} {v[key]:.1f}x" for v in vals if v[key] >= TARGET_DAPPER]
        missed = [f"{v['setting']} {v['filter']} {v[key]:.1f}x" for v in vals
                  if v[key] < TARGET_DAPPER]
        print(f">= {TARGET_DAPPER:g}x less time than DAPPER ({label}): met by {len(met)} of "
              f"{len(vals)} rows" + (f" ({', '.join(met)})" if met else "")
              + (f"; missed: {', '.join(missed)}" if missed else ""))
    vals = [v for v in all_verdicts if np.isfinite(v["filterpy_enkf"])]
    print(f">= {TARGET_FILTERPY:g}x less time than filterpy's EnKF (core): "
          + ", ".join(f"{v['setting']} {v['filterpy_enkf']:.1f}x "
                      f"({'met' if v['filterpy_enkf'] >= TARGET_FILTERPY else 'MISSED'})" for v in vals))
    big = [r for r in res if r[1] >= 10000]
    print(f"ETKF analysis >= {TARGET_FRACTION:.0%} of the matmul bound at the large size: "
          + ", ".join(f"{r[0]} BLAS thread{'s' if r[0] != 1 else ''} {r[6]:.0%} "
                      f"({'met' if r[6] >= TARGET_FRACTION else 'MISSED'}; {r[7]:.0%} on the "
                      "fastest repeats)" for r in big))
    print()
    print(f"background load: other processes kept {load.background_cores():.2f} of "
          f"{os.cpu_count()} cores busy on average during this run")
    print(f"wall time of the benchmark: {perf() - wall0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
