"""Bad input gets a clear ValueError naming the parameter; divergence is reported, not hidden.

Constructors only store their arguments (STYLE habit 1): the hyperparameter
errors below come when :func:`filters.assimilate` starts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import filters
from filters import (EKF, ETKF, LETKF, RTPP, RTPS, UKF, CovarianceJitterWarning, DEnKF,
                     DivergenceError, EnKF, EnSRF, KalmanFilter, Setting, Simulation,
                     as_covariance, assimilate)
from filters.base import safe_cholesky
from filters.ensemble import letkf_analysis, taper_matrix
from filters.models import (CallableObservation, LinearGaussian, LinearObservation, Lorenz96,
                            Model, Subset)
from filters.settings import linear_gaussian, sakov2008
from filters.states import EnsembleState, GaussianState

# Tolerances of this file (declared once).
# Logged cycles before a divergence must be those of a healthy run: bitwise with the tested
# versions; with numpy 1.x (the lower bounds) the compiled path's BLAS calls go to scipy's
# library instead of numpy's, 1e-15 apart, hence a tolerance at rounding level.
EXACT = 1e-13


@pytest.fixture(scope="module")
def lg():
    return linear_gaussian(n=3, n_obs=8, seed=0)


# ----------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------
def test_prior_shapes():
    with pytest.raises(ValueError, match=r"cov must have shape \(2, 2\)"):
        GaussianState.create([0.0, 0.0], np.eye(3))
    with pytest.raises(ValueError, match=r"cov must have shape \(3"):
        GaussianState.create([0.0, 0.0, 0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="mean must have 1 dimension"):
        GaussianState.create(np.zeros((2, 2)), 1.0)


def test_setting_shapes(lg):
    with pytest.raises(ValueError, match="prior has dimension 2, model has 3"):
        lg.with_(prior=GaussianState.create([0.0, 0.0], 1.0))
    with pytest.raises(ValueError, match="R has size 2"):
        lg.with_(R=as_covariance(1.0, 2, "R"))
    with pytest.raises(ValueError, match="obs acts on dimension 4"):
        lg.with_(obs=Subset(4, [0, 1, 2]))
    with pytest.raises(ValueError, match="dt must be > 0"):
        lg.with_(dt=0.0)
    with pytest.raises(ValueError, match="steps_per_obs must be an integer"):
        lg.with_(steps_per_obs=1.5)


def test_setting_checks_a_raw_r_or_q(lg):
    # A matrix handed to the setting is converted and checked there, naming R or Q.
    with pytest.raises(ValueError, match="R must be symmetric"):
        lg.with_(R=np.triu(np.ones((3, 3))))
    with pytest.raises(ValueError, match="R must be positive definite"):
        lg.with_(R=-np.eye(3))
    with pytest.raises(ValueError, match="R must be of size 3"):
        lg.with_(R=np.eye(2))
    with pytest.raises(ValueError, match="Q must be positive definite"):
        lg.with_(Q=np.ones((3, 3)))
    fixed = lg.with_(R=np.diag([1.0, 2.0, 3.0]), Q=0.5)
    assert fixed.R.variances.tolist() == [1.0, 2.0, 3.0]
    assert fixed.Q.variances.tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("bad,match", [
    (lambda y, x, t: Simulation(t, x, y[:, :2], None), r"simulation.observations must have shape \(T, 3\)"),
    (lambda y, x, t: Simulation(t, x, y[:, 0], None), r"simulation.observations must have shape \(T, 3\)"),
    (lambda y, x, t: Simulation(t, x[:, :2], y, None), r"simulation.truth must have shape \(8, 3\)"),
    (lambda y, x, t: Simulation(t, x[:5], y, None), r"simulation.truth must have shape \(8, 3\)"),
    (lambda y, x, t: Simulation(t[:5], x, y, None), r"simulation.times must have shape \(8,\)"),
], ids=["obs-m", "obs-1d", "truth-n", "truth-T", "times-T"])
def test_simulation_shapes(lg, bad, match):
    sim = lg.simulate(0)
    with pytest.raises(ValueError, match=match):
        assimilate(KalmanFilter(), lg, simulation=bad(sim.observations, sim.truth, sim.times))


def test_simulation_without_truth_is_fine(lg):
    sim = lg.simulate(0)
    ds = assimilate(ETKF(N=5), lg, simulation=Simulation(sim.times, None, sim.observations, None))
    assert "truth" not in ds and "rmse_analysis" not in ds and "truth_rank" not in ds
    assert ds.sizes["time"] == lg.n_obs


def test_observation_operator_arguments():
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\]"):
        Subset(4, [0, 4])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\]"):
        Subset(4, [-1, 2])
    with pytest.raises(ValueError, match="indices must be a non-empty 1-D array of integers"):
        Subset(4, [0.5, 1.0])
    with pytest.raises(ValueError, match="indices must be a non-empty"):
        Subset(4, [])
    with pytest.raises(ValueError, match=r"locations must have shape \(2, \?\)"):
        LinearObservation(np.eye(2), locations=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="fun must be callable"):
        CallableObservation("x", ndim=2, nobs=2)
    with pytest.raises(ValueError, match="nobs must be > 0"):
        CallableObservation(np.sin, ndim=2, nobs=0)
    with pytest.raises(ValueError, match="H must have 2 dimension"):
        LinearObservation(np.ones(3))


def test_model_arguments():
    with pytest.raises(ValueError, match="n must be >= 4"):
        Lorenz96(n=3)
    with pytest.raises(ValueError, match="n must be an integer"):
        Lorenz96(n=4.5)
    with pytest.raises(ValueError, match="M must be square"):
        LinearGaussian(np.ones((2, 3)))
    with pytest.raises(ValueError, match="state_coords must have 2 dimension"):
        taper_matrix(np.zeros(3), np.zeros((2, 1)), 1.0)
    with pytest.raises(ValueError, match=r"obs_coords must have shape \(\?, 1\)"):
        taper_matrix(np.zeros((3, 1)), np.zeros((2, 2)), 1.0)
    with pytest.raises(ValueError, match="radius must be > 0"):
        taper_matrix(np.zeros((3, 1)), np.zeros((2, 1)), -1.0)


# ----------------------------------------------------------------------------
# Covariances
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("C,match", [
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "R must be positive definite"),  # indefinite
    (np.array([[1.0, 1.0], [1.0, 1.0]]), "R must be positive definite"),  # singular
    # singular, but rounding gives Cholesky a tiny positive pivot
    (np.ones((2, 2)) * 1e300, "R must be positive definite: it is numerically singular"),
    (np.array([[1.0, 1.0], [1.0, 1.0 + 1e-15]]), "R must be positive definite: it is numer"),
    (np.array([[1.0, 0.5], [0.1, 1.0]]), "R must be symmetric"),
    (np.array([1.0, -1.0]), "R must be positive definite: variances must be > 0"),
    (np.array([1.0, np.nan]), "R contains non-finite values"),
    (np.array([[1.0, 0.0, 0.0]]), "R must be square"),
    (np.ones((2, 2, 2)), "R must be a scalar, a vector or a matrix"),
    (np.eye(3), "R must be of size 2, got 3"),
    (0.0, "R must be positive definite"),
])
def test_as_covariance_rejects(C, match):
    with pytest.raises(ValueError, match=match):
        as_covariance(C, 2, name="R")


def test_as_covariance_accepts_and_detects_structure():
    assert as_covariance(2.0, 3, "R").is_diagonal
    assert as_covariance(np.diag([1.0, 2.0]), 2, "R").is_diagonal
    full = as_covariance([[2.0, 0.5], [0.5, 1.0]], 2, "R")
    assert not full.is_diagonal
    np.testing.assert_allclose(full.chol @ full.chol.T, full.dense)


@pytest.mark.parametrize("cov,match", [
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "cov must be positive definite"),
    (np.array([[1.0, 0.5], [0.0, 1.0]]), "cov must be symmetric"),
    (np.array([[1.0, np.inf], [np.inf, 1.0]]), "cov contains non-finite values"),
    (-1.0, "cov must be positive definite"),
])
def test_gaussian_state_rejects_bad_cov(cov, match):
    with pytest.raises(ValueError, match=match):
        GaussianState.create([0.0, 0.0], cov)


@pytest.mark.parametrize("mean", [[np.nan, 0.0], [0.0, np.inf]])
def test_gaussian_state_rejects_non_finite_mean(mean):
    with pytest.raises(ValueError, match="mean contains non-finite values"):
        GaussianState.create(mean, 1.0)


def test_safe_cholesky_jitters_singular_psd():
    v = np.array([1.0, 2.0, 3.0])
    C = np.outer(v, v)  # rank 1, positive semi-definite
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(C)
    with pytest.warns(CovarianceJitterWarning, match="not positive definite"):
        L = safe_cholesky(C, "test covariance")
    assert np.all(np.isfinite(L)) and np.allclose(L, np.tril(L))
    np.testing.assert_allclose(L @ L.T, C, atol=1e-6 * np.trace(C))


def test_safe_cholesky_silent_on_spd_and_fails_on_indefinite():
    C = np.array([[2.0, 0.5], [0.5, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(safe_cholesky(C), np.linalg.cholesky(C))
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite even with jitter"):
        safe_cholesky(np.array([[1.0, 0.0], [0.0, -1.0]]))


# ----------------------------------------------------------------------------
# Filter hyperparameters: stored by the constructor, checked when the work starts
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda: ETKF(N=1), r"N \(ensemble size\) must be an integer >= 2"),
    (lambda: EnKF(N=0), r"N \(ensemble size\)"),
    (lambda: DEnKF(N=10.0), r"N \(ensemble size\) must be an integer"),
    (lambda: ETKF(N=10, inflation=-1.0), "inflation factor must be > 0"),
    (lambda: ETKF(N=10, inflation=0.0), "inflation factor must be > 0"),
    (lambda: ETKF(N=10, inflation="big"), "inflation must be None, a number"),
    (lambda: ETKF(N=10, inflation=RTPP(alpha=-0.1)), r"RTPP alpha must be a number in \[0.0, 1.0\]"),
    (lambda: ETKF(N=10, inflation=[1.02, RTPS(alpha=1.5)]), "RTPS alpha"),
    (lambda: EnSRF(N=10, order="sideways"), "order must be 'random' or 'given'"),
    (lambda: LETKF(N=10, radius=-4.0), "radius must be > 0"),
    (lambda: EKF(infl_rate=0.0), "infl_rate must be > 0"),
    (lambda: EKF(fd_eps=-1e-6), "fd_eps must be > 0"),
    (lambda: UKF(points="cubature"), "points must be one of"),
    (lambda: UKF(alpha=0.0), "alpha must be > 0"),
    (lambda: UKF(beta=-1.0), "beta must be >= 0"),
])
def test_bad_hyperparameters_raise_when_assimilate_starts(lg, make, match):
    flt = make()  # the constructor only stores
    with pytest.raises(ValueError, match=match):
        assimilate(flt, lg)


def test_julier_kappa_must_exceed_minus_n(lg):
    with pytest.raises(ValueError, match="kappa must be > -n"):
        assimilate(UKF(points="julier", kappa=-3.0), lg)


def test_assimilate_argument_types(lg):
    with pytest.raises(ValueError, match="filter must be a filters.Filter"):
        assimilate("ETKF", lg)
    with pytest.raises(ValueError, match="setting must be a filters.Setting"):
        assimilate(ETKF(N=5), {"model": None})


def test_rtpp_needs_an_ensemble(lg):
    with pytest.raises(ValueError, match="RTPP needs an ensemble filter"):
        assimilate(KalmanFilter(inflation=RTPP(0.5)), lg)


def test_letkf_needs_observation_positions():
    s = sakov2008(n_obs=5, n=8)
    fun = CallableObservation(lambda x: x, ndim=8, nobs=8)  # no locations
    with pytest.raises(ValueError, match="LETKF needs observation positions.*locations"):
        assimilate(LETKF(N=5, radius=2.0), s.with_(obs=fun))
    # with locations it runs
    located = CallableObservation(lambda x: x, ndim=8, nobs=8, locations=np.arange(8.0)[:, None])
    assert assimilate(LETKF(N=5, radius=2.0), s.with_(obs=located)).sizes["time"] == 5


def test_letkf_needs_prepare_and_diagonal_R():
    rng = np.random.default_rng(0)
    E = rng.standard_normal((5, 4))
    s = linear_gaussian(n=4, n_obs=1)
    with pytest.raises(ValueError, match=r"call LETKF.prepare\(model, obs\)"):
        LETKF(N=5, radius=1.0).analysis(EnsembleState(E), np.zeros(4), s.obs, s.R, rng)
    full = as_covariance([[1.0, 0.3, 0, 0], [0.3, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]], 4, "R")
    with pytest.raises(ValueError, match="R must be diagonal for the LETKF"):
        letkf_analysis(E, E, np.zeros(4), full, np.ones((4, 4)))


def test_kalman_filter_needs_linear_observations(lg):
    nonlinear = CallableObservation(lambda x: x**2, ndim=3, nobs=3)
    with pytest.raises(ValueError, match="obs must be a linear observation operator"):
        assimilate(KalmanFilter(), lg.with_(obs=nonlinear))
    # the EKF and the UKF accept it
    for flt in (EKF(), UKF()):
        assert assimilate(flt, lg.with_(obs=nonlinear)).sizes["time"] == lg.n_obs


class _Opaque(Model):
    """A model without a Jacobian."""

    ndim = 3
    linear = True  # claims linearity but offers no matrix

    def step(self, x, t, dt):
        return 0.9 * x


def test_kalman_filter_needs_a_jacobian(lg):
    with pytest.raises(ValueError, match="model _Opaque has no jacobian"):
        assimilate(KalmanFilter(), lg.with_(model=_Opaque()))


# ----------------------------------------------------------------------------
# Divergence
# ----------------------------------------------------------------------------
class _BlowsUp(LinearGaussian):
    """The linear model until time ``t_bad``, then inf (its step and its Jacobian,
    which is all the Kalman filter uses)."""

    def __init__(self, M, t_bad):
        super().__init__(M)
        self.t_bad = t_bad

    def step(self, x, t, dt):
        out = super().step(x, t, dt)
        return out if t < self.t_bad - 1e-9 else np.full_like(out, np.inf)

    def jacobian(self, x, t, dt):
        J = super().jacobian(x, t, dt)
        return J if t < self.t_bad - 1e-9 else np.full_like(J, np.inf)


FILTERS = [KalmanFilter(), EKF(), UKF(), EnKF(N=8), ETKF(N=8), DEnKF(N=8), EnSRF(N=8),
           LETKF(N=8, radius=2.0)]


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: f.name)
def test_divergence_error_keeps_earlier_cycles(flt):
    s = linear_gaussian(n=4, n_obs=12, seed=1)  # dt = 1, one step per observation
    sim = s.simulate(3)
    healthy = assimilate(flt, s, seed=2, simulation=sim)
    # The forecast of cycle k starts at time k: cycle 5 is the first to see inf.
    bad = s.with_(model=_BlowsUp(s.model.M, t_bad=5.0))
    with pytest.raises(DivergenceError, match=f"{flt.name} diverged at cycle 5") as info:
        assimilate(flt, bad, seed=2, simulation=sim)
    err = info.value
    assert err.cycle == 5
    ds = err.dataset
    assert ds.sizes["time"] == err.cycle
    assert ds.attrs["cycles_completed"] == 5
    for name in ("analysis_mean", "forecast_mean", "analysis_spread", "innovation", "rmse_analysis"):
        np.testing.assert_allclose(ds[name].values, healthy[name].values[:5], rtol=EXACT, atol=EXACT)
    np.testing.assert_array_equal(ds.time.values, sim.times[:5])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on the way to inf
@pytest.mark.parametrize("flt", [ETKF(N=10), EnKF(N=10), DEnKF(N=10), UKF(), EKF()],
                         ids=lambda f: f.name)
def test_lorenz96_with_huge_time_step_raises_divergence_error(flt):
    s = sakov2008(n_obs=20, n=10)
    sim = s.simulate(0)  # a healthy truth; the filter's model steps dt = 5
    with pytest.raises(DivergenceError) as info:
        assimilate(flt, s.with_(dt=5.0), seed=0, simulation=sim)
    err = info.value
    assert err.dataset.sizes["time"] == err.cycle < s.n_obs
    assert np.all(np.isfinite(err.dataset.analysis_mean.values))
    # Whatever failed inside the filter (a non-finite mean, or a covariance that lost
    # positive definiteness) is reported as a DivergenceError, the cause chained.
    assert err.__cause__ is None or isinstance(err.__cause__, np.linalg.LinAlgError)


def test_divergence_threshold(lg):
    healthy = assimilate(KalmanFilter(), lg, seed=4)
    peak = np.maximum(np.abs(healthy.analysis_mean.values).max(axis=1),
                      np.abs(healthy.forecast_mean.values).max(axis=1))
    k = int(np.argmax(peak > 0.5 * peak.max()))
    thr = float(0.5 * peak.max())
    with pytest.raises(DivergenceError) as info:
        assimilate(KalmanFilter(), lg, seed=4, divergence_threshold=thr)
    assert info.value.cycle == k
    np.testing.assert_array_equal(info.value.dataset.analysis_mean.values,
                                  healthy.analysis_mean.values[:k])
    # A threshold above the peak: no error.
    assimilate(KalmanFilter(), lg, seed=4, divergence_threshold=1.01 * float(peak.max()))


def test_divergence_error_is_exported():
    assert issubclass(filters.DivergenceError, RuntimeError)


def test_kalman_filter_refuses_nonlinear_model():
    from filters import KalmanFilter, assimilate
    from filters.settings import sakov2012

    with pytest.raises(ValueError, match="model Lorenz63 is not linear"):
        assimilate(KalmanFilter(), sakov2012(n_obs=5), seed=0)


def test_blas_threads_is_validated_and_does_not_change_results():
    from filters import ETKF, assimilate
    from filters.settings import sakov2008

    s = sakov2008(n_obs=30)
    with pytest.raises(ValueError, match="blas_threads"):
        assimilate(ETKF(N=10), s, blas_threads=0)
    a = assimilate(ETKF(N=10, inflation=1.02), s, seed=3, blas_threads="auto")
    b = assimilate(ETKF(N=10, inflation=1.02), s, seed=3, blas_threads=None)
    np.testing.assert_allclose(a["analysis_mean"].values, b["analysis_mean"].values, rtol=1e-12)
