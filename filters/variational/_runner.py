"""The windowed runner behind :func:`filters.assimilate` for 4D-Var filters.

It fills the same preallocated per-cycle buffers as the cycle-by-cycle loop
(numpy only, no xarray inside the loop), plus per-window buffers, and builds
the Dataset once at the end (or at a divergence) with the same layout.
"""

from __future__ import annotations

import time as _time

import numpy as np

from ..covariance import Covariance
from ..cycling import CycleLog, DivergenceError, cf_variable, cycle_dataset, diverged
from ..states import GaussianState
from ._core import NonFiniteCostError, warn_not_converged

__all__: list[str] = []


def assimilate_windows(filter, setting, sim, ys, truth, *, seed, store_cov, divergence_threshold,
                       progress):
    """Run a windowed filter (see :func:`filters.assimilate`)."""
    T, n, m = ys.shape[0], setting.model.ndim, setting.obs.nobs
    model, obs, R = setting.model, setting.obs, setting.R
    dt, nsteps, dt_obs = setting.dt, setting.steps_per_obs, setting.dt_obs
    sched = filter.schedule(T)  # raises if the window is longer than the sequence
    filter.setup(model, obs, setting.prior, dt, setting.Q)
    weak = filter.window_Q_ is not None
    W = len(sched)
    log = CycleLog.allocate(T, n, m, cov=store_cov)
    wl = {"start": np.full(W, np.nan), "end": np.full(W, np.nan),
          "cost_start": np.full(W, np.nan), "cost_end": np.full(W, np.nan),
          "iterations": np.zeros(W, np.int32), "nfev": np.zeros(W, np.int32),
          "grad_norm": np.full(W, np.nan), "converged": np.zeros(W, np.int8)}
    me = np.full((T, n), np.nan) if weak else None  # (T, n) model error per cycle
    mev = np.full((T, n), np.nan) if weak else None
    q_sum, q_count = np.zeros(n), 0  # EM sums over model steps

    times = np.asarray(sim.times, dtype=float)
    bg = GaussianState(setting.prior.mean.copy(), filter.B_.dense)
    step_every = max(1, W // 10)
    done_w, done_c = 0, 0

    def dataset(K, Wdone):
        return cycle_dataset(filter, setting, sim, seed, log, K, truth,
                             **_window_extras(filter, wl, Wdone, me, mev, K, n, q_sum, q_count, dt))

    for j, (s, a, b) in enumerate(sched):
        K = (b - s) * nsteps
        steps = (np.arange(a, b) + 1 - s) * nsteps  # (b - a,) model step of each new obs
        t0 = float(times[a]) - (a + 1 - s) * dt_obs
        tic = _time.perf_counter()
        try:
            res = filter.solve(bg, ys[a:b], steps, K, model, obs, R, t0=t0, dt=dt,
                               Q=filter.window_Q_)
        except NonFiniteCostError as exc:
            raise NonFiniteCostError(
                f"{filter.name}, window {j} (observations {a} to {b - 1}, t = {t0:g} to "
                f"{times[b - 1]:g}): {exc}") from exc
        toc = _time.perf_counter()
        mean_a = res.trajectory[steps]  # (b - a, n)
        if diverged(mean_a, divergence_threshold):
            ds = dataset(a, j)
            raise DivergenceError(
                f"{filter.name} diverged in window {j} (t = {t0:g} to {times[b - 1]:g}): the "
                f"analysis is non-finite or beyond {divergence_threshold:g}; {a} cycles were kept "
                "in the error's `dataset`", ds, a)
        mean_f = res.background_trajectory[steps]
        log.mf[a:b], log.ma[a:b] = mean_f, mean_a
        if res.has_covariance:
            log.sf[a:b] = np.sqrt(np.maximum(res.variances(posterior=False, steps=steps), 0.0))
            log.sa[a:b] = np.sqrt(np.maximum(res.variances(posterior=True, steps=steps), 0.0))
            if log.cov is not None:
                log.cov[a:b] = np.stack([res.cov(int(st)) for st in steps])
        log.innov[a:b] = ys[a:b] - obs(mean_f)
        log.used[a:b] = np.count_nonzero(~np.isnan(ys[a:b]), axis=1)
        log.wall[a:b] = (toc - tic) / (b - a)
        wl["start"][j], wl["end"][j] = t0, times[b - 1]
        wl["cost_start"][j], wl["cost_end"][j] = res.cost_start, res.cost_end
        wl["iterations"][j], wl["nfev"][j] = res.iterations, res.function_evaluations
        wl["grad_norm"][j], wl["converged"][j] = res.grad_norm, int(res.converged)
        if weak:
            # model error j' is that of the step j' -> j' + 1; cycle k covers steps
            # (k - s) nsteps ... (k + 1 - s) nsteps - 1.
            groups = [np.arange((k - s) * nsteps, (k + 1 - s) * nsteps) for k in range(a, b)]
            new = np.concatenate(groups)
            eta = res.model_error  # (K, n)
            me[a:b] = np.stack([eta[g].sum(axis=0) for g in groups])
            sq = eta[new] ** 2
            if res.has_covariance:
                mev[a:b] = res.model_error_variances(groups)
                sq = sq + res.model_error_variances([np.array([j]) for j in new])
            q_sum += sq.sum(axis=0)
            q_count += new.size
        done_w, done_c = j + 1, b
        if j + 1 < W:
            bg = filter.next_background(res, (sched[j + 1][0] - s) * nsteps)
        if progress and (done_w % step_every == 0 or done_w == W):
            print(f"  {filter.name}: {done_w}/{W} windows", flush=True)
    ds = dataset(done_c, done_w)
    bad = int(W - wl["converged"][:done_w].sum())
    if bad:
        warn_not_converged(filter.name, bad, W)
    return ds


def _window_extras(filter, wl, Wd, me, mev, K, n, q_sum, q_count, dt):
    """Per-window variables (dim ``window``) and the weak-constraint ones, CF-style."""
    var = cf_variable
    u, w = "model units", ("window",)
    v = {
        "window_start": var(w, wl["start"][:Wd], "model time of the initial state of the window",
                            "model time units"),
        "window_end": var(w, wl["end"][:Wd], "model time of the last observation of the window",
                          "model time units"),
        "cost_start": var(w, wl["cost_start"][:Wd], "cost function at the background"),
        "cost_end": var(w, wl["cost_end"][:Wd], "cost function at the analysis"),
        "iterations": var(w, wl["iterations"][:Wd], "minimiser iterations"),
        "function_evaluations": var(w, wl["nfev"][:Wd], "cost and gradient evaluations"),
        "grad_norm": var(w, wl["grad_norm"][:Wd],
                         "norm of the cost gradient in whitened control variables at the analysis"),
        "converged": var(w, wl["converged"][:Wd], "minimiser converged (1) or stopped early (0)",
                         flag_values=np.array([0, 1], np.int8),
                         flag_meanings="not_converged converged"),
    }
    attrs = {"windows_not_converged": int(Wd - wl["converged"][:Wd].sum()),
             "window_cycles": int(filter.window),
             "window_shift": int(filter.window if filter.shift is None else filter.shift)}
    if me is not None:
        v["model_error"] = var(("time", "state"), me[:K],
                               "estimated model error over the cycle (sum of x_{j+1} - M(x_j) "
                               "over its model steps)", u)
        v["model_error_variance"] = var(("time", "state"), mev[:K],
                                        "posterior variance of the model error over the cycle",
                                        "model units squared")
        if q_count:
            q = q_sum / (q_count * dt)
            filter.Q_ml_ = Covariance.diagonal(np.maximum(q, 1e-300), "Q_ml")
            v["Q_ml"] = var(("state",), q, "maximum-likelihood (EM) diagonal model-error "
                            "covariance per unit time", "model units squared per time unit")
            attrs["Q_ml_includes_posterior_variance"] = int(filter.covariance)
    coords = {"window": ("window", np.arange(Wd), {"long_name": "assimilation window index",
                                                   "units": "1"})}
    return {"extra_vars": v, "extra_coords": coords, "extra_attrs": attrs}
