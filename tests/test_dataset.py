"""The Dataset returned by :func:`filters.assimilate`, its netCDF round trip, and the metrics.

Logged quantities are recomputed independently with numpy from the stored
fields (RMSE, innovations, ranks, CRPS); the metrics are checked against
brute-force definitions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from filters import (ETKF, RTPS, UKF, EnKF, KalmanFilter, LETKF, assimilate, crps_ensemble,
                     open_run, rank_histogram, rmse, summarize, time_average, to_netcdf)
from filters.metrics import TimeAverage, root_mean_variance
from filters.models import LinearObservation
from filters.settings import linear_gaussian, sakov2008

# Tolerances of this file (declared once).
RTOL = 1e-12  # numpy recomputations of logged quantities and brute-force metrics
COVERAGE = (0.8, 1.25)  # AR(1) check: empirical sd of the mean / reported stderr


@pytest.fixture(scope="module")
def setting():
    """Lorenz-96 with 10 sites, 60 cycles, burn-in of 1 time unit (20 cycles)."""
    return sakov2008(n_obs=60, n=10).with_(burn_in=1.0)


@pytest.fixture(scope="module")
def ens_run(setting):
    flt = ETKF(N=12, inflation=[1.02, RTPS(alpha=0.3)], rotate=True)
    return assimilate(flt, setting, seed=3, store_ensemble=True, store_cov=True)


@pytest.fixture(scope="module")
def gauss_run(setting):
    return assimilate(UKF(points="julier", kappa=1.0), setting, seed=3, store_cov=True)


# ----------------------------------------------------------------------------
# Structure and metadata
# ----------------------------------------------------------------------------
COMMON = {"forecast_mean": ("time", "state"), "analysis_mean": ("time", "state"),
          "forecast_spread": ("time", "state"), "analysis_spread": ("time", "state"),
          "observations": ("time", "obs"), "innovation": ("time", "obs"),
          "obs_used": ("time",), "wall_time": ("time",), "truth": ("time", "state"),
          "rmse_forecast": ("time",), "rmse_analysis": ("time",),
          "rmv_forecast": ("time",), "rmv_analysis": ("time",),
          "analysis_cov": ("time", "state", "state_")}
ENSEMBLE_ONLY = {"crps_analysis": ("time",), "truth_rank": ("time", "state"),
                 "analysis_ensemble": ("time", "member", "state")}


def test_ensemble_run_variables_and_dims(ens_run, setting):
    ds = ens_run
    assert dict(ds.sizes) == {"time": 60, "state": 10, "obs": 10, "member": 12, "state_": 10}
    for name, dims in {**COMMON, **ENSEMBLE_ONLY}.items():
        assert name in ds.data_vars, name
        assert ds[name].dims == dims, name
    np.testing.assert_allclose(ds.time.values, setting.times)
    assert np.all(ds.wall_time.values > 0)


def test_gaussian_run_variables_and_dims(gauss_run):
    ds = gauss_run
    for name, dims in COMMON.items():
        assert ds[name].dims == dims, name
    for name in ENSEMBLE_ONLY:
        assert name not in ds
    # The stored covariance is the spread's source.
    np.testing.assert_allclose(np.sqrt(np.einsum("tii->ti", ds.analysis_cov.values)),
                               ds.analysis_spread.values, rtol=RTOL)


def test_optional_variables_only_when_asked(setting):
    ds = assimilate(ETKF(N=6), setting.with_(n_obs=5), seed=0)
    assert "analysis_ensemble" not in ds and "member" not in ds.dims
    assert "analysis_cov" not in ds and "state_" not in ds.dims


def test_every_variable_and_coordinate_has_long_name_and_units(ens_run, gauss_run):
    for ds in (ens_run, gauss_run):
        for name, var in {**ds.data_vars, **ds.coords}.items():
            assert var.attrs.get("long_name"), name
            assert isinstance(var.attrs.get("units"), str) and var.attrs["units"], name
        assert ds.time.attrs["axis"] == "T"
        assert ds.wall_time.attrs["units"] == "s"


def test_attrs(ens_run):
    a = ens_run.attrs
    assert a["filter"] == "ETKF"
    assert a["setting"] == "sakov2008"
    assert a["seed"] == 3
    assert a["Conventions"].startswith("CF-")
    assert isinstance(a["version"], str) and a["version"]
    params = json.loads(a["filter_params"])
    assert params["N"] == 12 and params["rotate"] is True
    assert params["inflation"] == [1.02, {"name": "RTPS", "alpha": 0.3}]
    setting_params = json.loads(a["setting_params"])
    assert setting_params["model"]["name"] == "Lorenz96" and setting_params["n_obs"] == 60
    assert a["cycles_completed"] == 60


def test_filter_params_are_the_constructor_args():
    for flt, expected in [
        (ETKF(N=7, inflation=1.1), {"N": 7, "inflation": 1.1, "rotate": False}),
        (LETKF(N=5, radius=3.0), {"N": 5, "radius": 3.0, "inflation": None, "rotate": False}),
        (UKF(points="julier", kappa=2.0),
         {"points": "julier", "alpha": 1.0, "beta": 2.0, "kappa": 2.0, "inflation": None}),
        (KalmanFilter(), {"inflation": None}),
    ]:
        ds = assimilate(flt, linear_gaussian(n=5, n_obs=3), seed=0)
        assert json.loads(ds.attrs["filter_params"]) == expected


def test_summary_attrs_are_time_averages_after_burn_in(ens_run, setting):
    keep = ens_run.time.values > setting.burn_in
    assert keep.sum() == 40
    for name in ("rmse_analysis", "rmse_forecast", "rmv_analysis", "crps_analysis"):
        ta = time_average(ens_run[name].values[keep])
        assert ens_run.attrs[f"{name}_mean"] == ta.mean
        assert ens_run.attrs[f"{name}_stderr"] == ta.stderr
    assert summarize(ens_run, burn_in=0.0)["rmse_analysis_mean"] == pytest.approx(
        ens_run.rmse_analysis.values.mean(), rel=RTOL)


# ----------------------------------------------------------------------------
# netCDF round trip and reproducibility
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["ens", "gauss"])
def test_netcdf_round_trip(ens_run, gauss_run, which, tmp_path):
    ds = ens_run if which == "ens" else gauss_run
    path = to_netcdf(ds, tmp_path / "sub" / "run.nc")
    back = open_run(path)
    xr.testing.assert_identical(back, ds)


def test_open_run_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run file"):
        open_run(tmp_path / "nope.nc")


@pytest.mark.parametrize("make", [lambda: EnKF(N=8, inflation=1.02),
                                  lambda: ETKF(N=8, rotate=True), lambda: UKF()],
                         ids=["EnKF", "ETKF-rot", "UKF"])
def test_same_seed_same_run_different_seed_different_run(setting, make):
    s = setting.with_(n_obs=20)
    a = assimilate(make(), s, seed=11)
    b = assimilate(make(), s, seed=11)
    c = assimilate(make(), s, seed=12)
    np.testing.assert_array_equal(a.analysis_mean.values, b.analysis_mean.values)
    np.testing.assert_array_equal(a.observations.values, b.observations.values)
    assert not np.array_equal(a.analysis_mean.values, c.analysis_mean.values)
    assert not np.array_equal(a.truth.values, c.truth.values)


def test_filter_randomness_is_independent_of_the_simulation(setting):
    """Same simulation, different seeds: the stochastic filter differs, the deterministic one not."""
    s = setting.with_(n_obs=10)
    sim = s.simulate(0)
    e1 = assimilate(EnKF(N=8), s, seed=1, simulation=sim)
    e2 = assimilate(EnKF(N=8), s, seed=2, simulation=sim)
    assert not np.array_equal(e1.analysis_mean.values, e2.analysis_mean.values)
    u1 = assimilate(UKF(), s, seed=1, simulation=sim)
    u2 = assimilate(UKF(), s, seed=2, simulation=sim)
    np.testing.assert_array_equal(u1.analysis_mean.values, u2.analysis_mean.values)


# ----------------------------------------------------------------------------
# Logged quantities recomputed
# ----------------------------------------------------------------------------
def test_innovation_is_observation_minus_observed_forecast_mean():
    s = linear_gaussian(n=5, m=3, n_obs=15, seed=2)
    H = np.random.default_rng(0).standard_normal((3, 5))
    s = s.with_(obs=LinearObservation(H))
    for flt in (KalmanFilter(), ETKF(N=10)):
        ds = assimilate(flt, s, seed=1)
        expected = ds.observations.values - ds.forecast_mean.values @ H.T
        np.testing.assert_allclose(ds.innovation.values, expected, rtol=RTOL, atol=RTOL)


def test_rmse_and_spread_recomputed(ens_run, gauss_run):
    for ds in (ens_run, gauss_run):
        for kind in ("analysis", "forecast"):
            err = ds[f"{kind}_mean"].values - ds.truth.values
            np.testing.assert_allclose(ds[f"rmse_{kind}"].values,
                                       np.sqrt(np.mean(err**2, axis=1)), rtol=RTOL)
            np.testing.assert_allclose(ds[f"rmv_{kind}"].values,
                                       np.sqrt(np.mean(ds[f"{kind}_spread"].values ** 2, axis=1)),
                                       rtol=RTOL)
    assert float(rmse([3.0, 4.0], [0.0, 0.0])) == pytest.approx(np.sqrt(12.5), rel=RTOL)
    assert float(root_mean_variance([3.0, 4.0])) == pytest.approx(np.sqrt(12.5), rel=RTOL)


def test_ensemble_diagnostics_recomputed_from_stored_members(ens_run):
    E = ens_run.analysis_ensemble.values  # (T, N, n)
    truth = ens_run.truth.values  # (T, n)
    np.testing.assert_allclose(E.mean(axis=1), ens_run.analysis_mean.values, rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(E.std(axis=1, ddof=1), ens_run.analysis_spread.values, rtol=1e-10)
    ranks = (E < truth[:, None, :]).sum(axis=1)
    np.testing.assert_array_equal(ens_run.truth_rank.values, ranks)
    crps = np.array([crps_brute(E[k], truth[k]).mean() for k in range(E.shape[0])])
    np.testing.assert_allclose(ens_run.crps_analysis.values, crps, rtol=1e-10)
    cov = np.einsum("tri,trj->tij", E - E.mean(axis=1, keepdims=True),
                    E - E.mean(axis=1, keepdims=True)) / (E.shape[1] - 1)
    np.testing.assert_allclose(ens_run.analysis_cov.values, cov, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------
# Metrics against brute force
# ----------------------------------------------------------------------------
def crps_brute(members, truth):
    """CRPS by its O(N^2) definition, per component: E|X - y| - E|X - X'| / 2."""
    X = np.asarray(members, dtype=float)
    y = np.asarray(truth, dtype=float)
    term1 = np.mean(np.abs(X - y), axis=0)
    term2 = np.mean(np.abs(X[:, None, :] - X[None, :, :]), axis=(0, 1))
    return term1 - 0.5 * term2


@pytest.mark.parametrize("N,n", [(1, 3), (2, 1), (7, 4), (50, 6)])
def test_crps_equals_definition(N, n):
    rng = np.random.default_rng(N + n)
    X = rng.standard_normal((N, n)) * rng.uniform(0.5, 3, n)
    y = rng.standard_normal(n) * 2
    np.testing.assert_allclose(crps_ensemble(X, y), crps_brute(X, y), rtol=RTOL, atol=RTOL)
    # ties and a truth inside the ensemble
    Xt = np.repeat(X[: max(1, N // 2)], 2, axis=0)
    np.testing.assert_allclose(crps_ensemble(Xt, Xt[0]), crps_brute(Xt, Xt[0]), rtol=RTOL, atol=RTOL)


def test_crps_limits():
    # A point forecast: CRPS is the absolute error.
    np.testing.assert_allclose(crps_ensemble([[2.0, -1.0]], [0.5, 0.5]), [1.5, 1.5])
    # Large ensemble of N(0, 1), truth 0: CRPS -> (sqrt(2) - 1) / sqrt(pi).
    X = np.random.default_rng(0).standard_normal((200000, 1))
    np.testing.assert_allclose(crps_ensemble(X, [0.0]), (np.sqrt(2) - 1) / np.sqrt(np.pi),
                               rtol=1e-2)


def test_rank_histogram_counts():
    rng = np.random.default_rng(1)
    N = 6
    ranks = rng.integers(0, N + 1, size=(40, 5))
    counts = rank_histogram(ranks, N)
    assert counts.shape == (N + 1,)
    np.testing.assert_array_equal(counts, [np.sum(ranks == r) for r in range(N + 1)])
    assert counts.sum() == ranks.size
    np.testing.assert_array_equal(rank_histogram([0, 0, 3], 5), [2, 0, 0, 1, 0, 0])


def test_rank_histogram_of_calibrated_ensemble_is_flat():
    """Truth and members drawn from the same distribution: ranks uniform on 0..N."""
    rng = np.random.default_rng(2)
    N, T = 9, 20000
    members, truth = rng.standard_normal((T, N)), rng.standard_normal(T)
    counts = rank_histogram((members < truth[:, None]).sum(axis=1), N)
    expected = T / (N + 1)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 30.0  # chi-square with 9 dof: P(> 30) ~ 4e-4


def time_average_brute(x):
    """The documented formula, written out: lag-1 autocorrelation a (clipped to [0, 0.999]),
    stderr^2 = var / T * (1 + 2 / T * sum_{k=1}^{T-1} (T - k) a^k)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    T = len(x)
    mu = sum(x) / T
    var = sum((xi - mu) ** 2 for xi in x) / T
    a = sum((x[t] - mu) * (x[t - 1] - mu) for t in range(1, T)) / T / var
    a = min(max(a, 0.0), 0.999)
    s = sum((T - k) * a**k for k in range(1, T))
    return mu, np.sqrt(var / T * (1.0 + 2.0 / T * s))


def ar1(rng, phi, T, size=None):
    shape = (T,) if size is None else (size, T)
    e = rng.standard_normal(shape)
    x = np.empty(shape)
    x[..., 0] = e[..., 0] / np.sqrt(1 - phi**2)
    for t in range(1, T):
        x[..., t] = phi * x[..., t - 1] + e[..., t]
    return x


@pytest.mark.parametrize("phi,T", [(0.0, 50), (0.5, 200), (0.9, 300), (0.99, 100), (-0.5, 80)])
def test_time_average_matches_brute_force(phi, T):
    x = 3.0 + ar1(np.random.default_rng(int(100 * phi) + T), phi, T)
    x[[5, 17]] = np.nan  # non-finite entries are dropped
    ta = time_average(x)
    assert isinstance(ta, TimeAverage)
    mu, se = time_average_brute(x)
    assert ta.mean == pytest.approx(mu, rel=RTOL)
    assert ta.stderr == pytest.approx(se, rel=1e-10)


def test_time_average_stderr_larger_than_naive_for_positive_autocorrelation():
    x = ar1(np.random.default_rng(3), 0.8, 1000)
    naive = x.std() / np.sqrt(x.size)
    assert time_average(x).stderr > 2.0 * naive  # theory: sqrt(1.8 / 0.2) = 3
    # a negatively correlated series claims no reduction below the naive error
    alt = np.tile([1.0, -1.0], 50) + 0.01 * np.random.default_rng(4).standard_normal(100)
    assert time_average(alt).stderr == pytest.approx(alt.std() / np.sqrt(alt.size), rel=1e-12)


def test_time_average_stderr_covers_the_sampling_error():
    """Over many AR(1) series, the sd of their means matches the reported stderr."""
    rng = np.random.default_rng(5)
    X = ar1(rng, 0.7, 400, size=600)
    means = X.mean(axis=1)
    stderrs = np.array([time_average(x).stderr for x in X])
    ratio = means.std() / np.median(stderrs)
    assert COVERAGE[0] < ratio < COVERAGE[1]
    naive = np.median(X.std(axis=1) / np.sqrt(X.shape[1]))
    assert means.std() / naive > 1.8  # the naive error would be badly overconfident


def test_time_average_edge_cases():
    assert time_average([]).mean != time_average([]).mean  # nan
    ta = time_average([1.0, 2.0, 3.0])
    assert ta.mean == 2.0 and np.isnan(ta.stderr)
    assert time_average(np.full(20, 4.0)) == (4.0, 0.0)
    assert time_average([np.nan, np.inf] + [1.0] * 10).mean == 1.0
