"""Limiting-case equivalences on linear-Gaussian problems, where the Kalman filter is exact.

* The UKF (Merwe and Julier points, partial observations, process noise)
  equals the Kalman filter; so does the EKF.
* EnKF and ETKF with N = 2000 agree with the Kalman filter within their
  Monte Carlo error, with tolerances derived from the sampling theory (see
  :func:`se_mean_single`, :func:`se_mean_cycled`, :func:`se_cov`).
* Deterministic filters on a fixed forecast ensemble are *exactly* a Kalman
  analysis of that ensemble's mean and covariance (ETKF, EnSRF; DEnKF's mean
  and its half-gain covariance; the perturbed-obs EnKF's mean).
* The RTS smoother equals conditioning the joint Gaussian of all states and
  observations with dense linear algebra.
* Inflation objects and the random rotation do what they say.
* Missing observations (NaN) are skipped: the same as the reduced operator.
"""

from __future__ import annotations

import numpy as np
import pytest

from filters import (EKF, ETKF, LETKF, RTPP, RTPS, UKF, AdditiveInflation, DEnKF, EnKF, EnSRF,
                     KalmanFilter, MultiplicativeInflation, Setting, Simulation, as_covariance,
                     assimilate)
from filters.ensemble import (denkf_analysis, enkf_analysis, ensrf_analysis, etkf_analysis,
                              random_rotation)
from filters.kalman import kalman_analysis
from filters.models import Identity, LinearGaussian, LinearObservation, Lorenz96, Subset
from filters.settings import linear_gaussian
from filters.states import EnsembleState, GaussianState

# Tolerances of this file (declared once).
EXACT = 1e-10  # algebraically identical computations (UKF/EKF vs KF, deterministic square roots)
SMOOTHER = 1e-8  # RTS smoother vs dense conditioning of the joint Gaussian
Z = 5.0  # Monte Carlo checks: allowed standard errors (two-sided p ~ 6e-7 per entry)
N_MC = 2000  # ensemble size of the Monte Carlo checks


def close(actual, desired, tol=EXACT):
    np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------
# Random linear-Gaussian systems
# ----------------------------------------------------------------------------
def random_spd(rng, n, scale=1.0):
    B = rng.standard_normal((n, n))
    return scale * (B @ B.T / n + 0.3 * np.eye(n))


def dense_setting(seed=0, n=4, m=3, n_obs=6, steps_per_obs=2, dt=0.5) -> Setting:
    """A linear system with a dense H (m < n), full R, full Q and a correlated prior."""
    rng = np.random.default_rng(seed)
    Qm, _ = np.linalg.qr(rng.standard_normal((n, n)))
    M = 0.97 * Qm @ np.diag(np.linspace(1.0, 0.8, n))
    return Setting(name="dense_linear", model=LinearGaussian(M),
                   obs=LinearObservation(rng.standard_normal((m, n))),
                   R=as_covariance(random_spd(rng, m, 0.5), m, "R"),
                   prior=GaussianState.create(rng.standard_normal(n), random_spd(rng, n)),
                   dt=dt, steps_per_obs=steps_per_obs, n_obs=n_obs,
                   Q=as_covariance(random_spd(rng, n, 0.2), n, "Q"))


SETTINGS = {
    "identity": lambda: linear_gaussian(n=4, n_obs=15, seed=1),
    "subset-m<n": lambda: linear_gaussian(n=5, m=2, n_obs=15, seed=2),
    "dense-H-full-R-Q": lambda: dense_setting(seed=3),
}


# ----------------------------------------------------------------------------
# UKF and EKF equal the Kalman filter
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("setting", SETTINGS, ids=list(SETTINGS))
@pytest.mark.parametrize("ukf", [UKF(), UKF(points="merwe", alpha=0.5, beta=2.0, kappa=1.0),
                                 UKF(points="julier", kappa=1.0), UKF(points="julier", kappa=2.5)],
                         ids=["merwe-default", "merwe-scaled", "julier-1", "julier-2.5"])
def test_ukf_equals_kalman_filter(setting, ukf):
    s = SETTINGS[setting]()
    kf = assimilate(KalmanFilter(), s, seed=5, store_cov=True)
    uk = assimilate(ukf, s, seed=5, store_cov=True)
    for name in ("forecast_mean", "forecast_spread", "analysis_mean", "analysis_cov"):
        close(uk[name].values, kf[name].values)
    # the observations really moved the state (the test is not trivial)
    assert np.abs(kf.analysis_mean - kf.forecast_mean).max() > 0.1


@pytest.mark.parametrize("setting", SETTINGS, ids=list(SETTINGS))
def test_ekf_on_linear_model_equals_kalman_filter(setting):
    s = SETTINGS[setting]()
    kf = assimilate(KalmanFilter(), s, seed=6, store_cov=True)
    ek = assimilate(EKF(), s, seed=6, store_cov=True)
    for name in ("forecast_mean", "forecast_spread", "analysis_mean", "analysis_cov"):
        close(ek[name].values, kf[name].values)


class _NoJacobian(LinearGaussian):
    """The same linear model without its Jacobian: the EKF must use finite differences."""

    def jacobian(self, x, t, dt):
        return None


def test_ekf_with_finite_difference_jacobian_equals_kalman_filter():
    s = linear_gaussian(n=4, m=3, n_obs=10, seed=4)
    kf = assimilate(KalmanFilter(), s, seed=7, store_cov=True)
    ek = assimilate(EKF(), s.with_(model=_NoJacobian(s.model.M)), seed=7, store_cov=True)
    # Central differences of a linear map are exact up to roundoff / step (~1e-16 / 1e-6).
    close(ek.analysis_mean.values, kf.analysis_mean.values, tol=1e-7)
    close(ek.analysis_cov.values, kf.analysis_cov.values, tol=1e-7)


# ----------------------------------------------------------------------------
# Monte Carlo agreement of EnKF and ETKF (N = 2000) with the Kalman filter
# ----------------------------------------------------------------------------
def se_cov(C, N):
    """Standard error of the sample covariance of N draws of N(0, C) (Wishart):
    ``sd(C^_ij) = sqrt((C_ii C_jj + C_ij^2) / N)``.

    For the perturbed-obs EnKF the analysis members are, to first order, N
    draws of N(., Pa); for the ETKF the analysis covariance error
    ``(I-KH) dPf (I-KH)^T`` has a smaller standard error than this with C = Pa.
    """
    d = np.diag(C)
    return np.sqrt((np.outer(d, d) + C**2) / N)


def se_mean_single(P, H, R, d, N):
    """Standard error of the ensemble analysis mean after one analysis (delta method).

    With the forecast sample mean and covariance off by ``dm ~ N(0, P/N)`` and
    ``dP`` (Wishart), the analysis mean ``m + K (y - H m)`` is off by
    ``(I-KH) dm + (I-KH) dP v`` with ``v = H^T S^-1 d``, whose covariance is
    ``[A (1 + v^T P v) + u u^T] / N`` with ``A = (I-KH) P (I-KH)^T``,
    ``u = (I-KH) P v``.
    """
    S = H @ P @ H.T + R
    K = P @ H.T @ np.linalg.inv(S)
    IKH = np.eye(P.shape[0]) - K @ H
    v = H.T @ np.linalg.solve(S, d)
    A, u = IKH @ P @ IKH.T, IKH @ P @ v
    return np.sqrt(np.diag(A * (1.0 + v @ P @ v) + np.outer(u, u)) / N)


def se_mean_cycled(Pf, H, R, d, N):
    """Standard error of the ensemble analysis mean after several cycles.

    The forecast ensemble mean of a well-sampled filter is off by about
    ``N(0, Pf / N)`` (the propagated analysis error plus the mean of the model
    noise draws); the gain's sampling error acting on the innovation adds a
    factor ``1 + d^T S^-1 d`` at most.  (Checked by 100 repeated runs: the
    observed z-scores have standard deviation <= 1.07.)
    """
    S = H @ Pf @ H.T + R
    return np.sqrt((1.0 + d @ np.linalg.solve(S, d)) * np.diag(Pf) / N)


def single_analysis_problem(seed=0, n=4, m=3):
    rng = np.random.default_rng(seed)
    prior = GaussianState.create(rng.standard_normal(n), random_spd(rng, n))
    H = rng.standard_normal((m, n))
    R = as_covariance(rng.uniform(0.3, 1.0, m), m, "R")
    S = H @ prior.cov @ H.T + R.dense
    y = H @ prior.mean + np.linalg.cholesky(S) @ rng.standard_normal(m)  # a typical innovation
    return prior, H, R, y


@pytest.fixture(scope="module")
def single_analysis():
    prior, H, R, y = single_analysis_problem()
    rng = np.random.default_rng(1)
    E = prior.sample(rng, N_MC)
    ma, Pa = kalman_analysis(prior.mean, prior.cov, y - H @ prior.mean, H, R)
    out = {"ETKF": etkf_analysis(E, E @ H.T, y, R),
           "EnKF": enkf_analysis(E, E @ H.T, y, R, rng)}
    se_m = se_mean_single(prior.cov, H, R.dense, y - H @ prior.mean, N_MC)
    return out, ma, Pa, se_m


@pytest.mark.parametrize("name", ["ETKF", "EnKF"])
def test_large_ensemble_single_analysis_matches_kalman(single_analysis, name):
    out, ma, Pa, se_m = single_analysis
    Ea = out[name]
    assert np.all(np.abs(Ea.mean(axis=0) - ma) <= Z * se_m)
    assert np.all(np.abs(np.cov(Ea, rowvar=False) - Pa) <= Z * se_cov(Pa, N_MC))


def test_monte_carlo_bounds_have_power(single_analysis):
    """The bounds above are tight enough to catch a 10% inflation or a 0.2-sigma bias."""
    out, ma, Pa, se_m = single_analysis
    Ea = out["ETKF"]
    inflated = MultiplicativeInflation(1.1).apply(None, EnsembleState(Ea), None).members
    assert np.any(np.abs(np.cov(inflated, rowvar=False) - Pa) > Z * se_cov(Pa, N_MC))
    biased = Ea.mean(axis=0) + 0.2 * np.sqrt(np.diag(Pa))
    assert np.any(np.abs(biased - ma) > Z * se_m)


@pytest.mark.parametrize("flt", [ETKF(N=N_MC), EnKF(N=N_MC)], ids=["ETKF", "EnKF"])
def test_large_ensemble_cycles_match_kalman(flt):
    s = linear_gaussian(n=4, m=3, n_obs=3, seed=3)
    sim = s.simulate(np.random.default_rng(5))
    kf = KalmanFilter().smooth(s.prior, s.model, s.obs, s.R, sim.observations, Q=s.Q)
    ds = assimilate(flt, s, seed=8, simulation=sim, store_cov=True)
    H = s.obs.jacobian(None)
    for k in range(s.n_obs):
        Pf = kf.predicted_cov[k]
        d = sim.observations[k] - H @ kf.predicted_mean[k]
        se_m = se_mean_cycled(Pf, H, s.R.dense, d, N_MC)
        assert np.all(np.abs(ds.analysis_mean.values[k] - kf.filtered_mean[k]) <= Z * se_m), k
        assert np.all(np.abs(ds.analysis_cov.values[k] - kf.filtered_cov[k])
                      <= Z * se_cov(Pf, N_MC)), k


# ----------------------------------------------------------------------------
# Deterministic filters: exact Kalman analyses of the ensemble's own statistics
# ----------------------------------------------------------------------------
def ensemble_kalman(E, obs, y, R):
    """Kalman analysis (mean, cov, gain) of the sample mean and covariance of E."""
    state = EnsembleState(E)
    H = obs.jacobian(state.mean)
    m, P = kalman_analysis(state.mean, state.cov, y - obs(state.mean), H, R)
    K = state.cov @ H.T @ np.linalg.inv(H @ state.cov @ H.T + R.dense)
    return m, P, K, H


@pytest.mark.parametrize("flt", [ETKF(N=10), ETKF(N=40), EnSRF(N=10, order="random"),
                                 EnSRF(N=25, order="given"), DEnKF(N=10), DEnKF(N=30),
                                 EnKF(N=10), EnKF(N=30)],
                         ids=lambda f: repr(f))
def test_deterministic_analysis_is_kalman_of_ensemble_statistics(flt):
    """Cycle with a fixed initial ensemble; at every cycle compare with the Kalman
    analysis of the forecast ensemble's mean and covariance."""
    s = linear_gaussian(n=5, m=3, n_obs=5, seed=9)
    sim = s.simulate(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    state = flt.initialize(s.prior, rng)
    for k in range(s.n_obs):
        fc = flt.forecast(state, s.model, k * s.dt_obs, s.dt, s.steps_per_obs, s.Q, rng)
        y = sim.observations[k]
        m, P, K, H = ensemble_kalman(fc.members, s.obs, y, s.R)
        an = flt.analysis(fc, y, s.obs, s.R, rng)
        close(an.mean, m)
        if isinstance(flt, (ETKF, EnSRF)):
            close(an.cov, P)
        elif isinstance(flt, DEnKF):  # half gain on the anomalies (Sakov & Oke 2008a)
            G = np.eye(s.model.ndim) - 0.5 * K @ H
            close(an.cov, G @ fc.cov @ G.T)
        state = an


def test_letkf_infinite_radius_is_etkf_on_linear_system():
    s = linear_gaussian(n=6, n_obs=8, seed=10)
    # LinearGaussian has index coordinates; radius 1e6 reaches everything.
    a = assimilate(LETKF(N=12, radius=1e6), s, seed=2, store_cov=True)
    b = assimilate(ETKF(N=12), s, seed=2, store_cov=True)
    close(a.analysis_mean.values, b.analysis_mean.values, tol=1e-8)
    close(a.analysis_cov.values, b.analysis_cov.values, tol=1e-8)


# ----------------------------------------------------------------------------
# RTS smoother against dense conditioning of the joint Gaussian
# ----------------------------------------------------------------------------
def batch_posterior(s: Setting, observations):
    """Condition the joint Gaussian of (x_0, x_1..x_T at obs times, y_1..y_T) directly.

    Every quantity is linear in ``xi = (x_0 - m_0, w_1..w_S, v_1..v_T)`` with
    ``w`` the model noise of each of the ``S = T * steps_per_obs`` model steps
    (covariance ``dt Q``) and ``v`` the observation noise.
    """
    M, H = s.model.M, s.obs.jacobian(None)
    n, m, T, ns = s.model.ndim, s.obs.nobs, s.n_obs, s.steps_per_obs
    S = T * ns
    dim = n * (S + 1) + m * T
    cov_xi = np.zeros((dim, dim))
    cov_xi[:n, :n] = s.prior.cov
    for r in range(1, S + 1):
        cov_xi[n * r:n * (r + 1), n * r:n * (r + 1)] = s.dt * s.Q.dense
    off = n * (S + 1)
    for k in range(T):
        cov_xi[off + m * k:off + m * (k + 1), off + m * k:off + m * (k + 1)] = s.R.dense
    # Every model step's state: x_s - mean_s = M^s xi_0 + sum_{r<=s} M^{s-r} w_r.
    Lx = np.zeros((S + 1, n, dim))
    Lx[0, :, :n] = np.eye(n)
    for step in range(1, S + 1):
        Lx[step] = M @ Lx[step - 1]
        Lx[step, :, n * step:n * (step + 1)] += np.eye(n)
    mean_x = [s.prior.mean]
    for step in range(1, S + 1):
        mean_x.append(M @ mean_x[-1])
    # Keep x_0 and the states at observation times, and the observations.
    keep = [0] + [ns * k for k in range(1, T + 1)]
    Lz = [Lx[i] for i in keep]
    mz = [mean_x[i] for i in keep]
    for k in range(1, T + 1):
        Ly = H @ Lx[ns * k]
        Ly[:, off + m * (k - 1):off + m * k] += np.eye(m)
        Lz.append(Ly)
        mz.append(H @ mean_x[ns * k])
    L, mu = np.vstack(Lz), np.concatenate(mz)
    C = L @ cov_xi @ L.T
    nx = n * (T + 1)

    def condition(n_y):
        """Posterior of the states given the first n_y observations."""
        iy = slice(nx, nx + m * n_y)
        Cxy, Cyy = C[:nx, iy], C[iy, iy]
        y = np.concatenate(observations[:n_y]) if n_y else np.zeros(0)
        G = np.linalg.solve(Cyy, Cxy.T).T if n_y else np.zeros((nx, 0))
        post_m = mu[:nx] + G @ (y - mu[iy])
        post_C = C[:nx, :nx] - G @ Cxy.T
        return post_m.reshape(T + 1, n), post_C

    return condition


@pytest.mark.parametrize("setting", SETTINGS, ids=list(SETTINGS))
def test_rts_smoother_equals_batch_conditioning(setting):
    s = SETTINGS[setting]().with_(n_obs=6)
    sim = s.simulate(np.random.default_rng(11))
    res = KalmanFilter().smooth(s.prior, s.model, s.obs, s.R, sim.observations, Q=s.Q, dt=s.dt,
                                nsteps=s.steps_per_obs)
    condition = batch_posterior(s, sim.observations)
    n, T = s.model.ndim, s.n_obs
    post_m, post_C = condition(T)
    block = lambda C, k: C[n * k:n * (k + 1), n * k:n * (k + 1)]  # noqa: E731
    close(res.initial_mean, post_m[0], SMOOTHER)
    close(res.initial_cov, block(post_C, 0), SMOOTHER)
    for k in range(1, T + 1):
        close(res.smoothed_mean[k - 1], post_m[k], SMOOTHER)
        close(res.smoothed_cov[k - 1], block(post_C, k), SMOOTHER)
        # Filtered moments: conditioning on the observations up to time k only.
        fm, fC = condition(k)
        close(res.filtered_mean[k - 1], fm[k], SMOOTHER)
        close(res.filtered_cov[k - 1], block(fC, k), SMOOTHER)
        # Predicted moments: up to time k - 1.
        pm, pC = condition(k - 1)
        close(res.predicted_mean[k - 1], pm[k], SMOOTHER)
        close(res.predicted_cov[k - 1], block(pC, k), SMOOTHER)
    # Smoothing uses the future: it is better than filtering before the last time.
    assert np.trace(res.smoothed_cov[0]) < np.trace(res.filtered_cov[0]) - 1e-3
    close(res.smoothed_cov[-1], res.filtered_cov[-1])


def test_smoother_filtered_moments_equal_assimilate():
    s = SETTINGS["dense-H-full-R-Q"]()
    ds = assimilate(KalmanFilter(), s, seed=3, store_cov=True)
    sim = Simulation(ds.time.values, ds.truth.values, ds.observations.values, None)
    res = KalmanFilter().smooth(s.prior, s.model, s.obs, s.R, sim.observations, Q=s.Q, dt=s.dt,
                                nsteps=s.steps_per_obs)
    close(res.filtered_mean, ds.analysis_mean.values)
    close(res.filtered_cov, ds.analysis_cov.values)
    close(res.predicted_mean, ds.forecast_mean.values)


# ----------------------------------------------------------------------------
# Inflation and rotation
# ----------------------------------------------------------------------------
@pytest.fixture()
def pair():
    """A forecast ensemble and a (narrower) analysis ensemble, N=30, n=4."""
    rng = np.random.default_rng(12)
    Ef = rng.standard_normal((30, 4)) * [1.0, 2.0, 0.5, 1.5] + [1.0, -1.0, 0.0, 3.0]
    Ea = Ef.mean(axis=0) + 0.3 + 0.4 * (Ef - Ef.mean(axis=0)) @ random_spd(rng, 4)
    return EnsembleState(Ef), EnsembleState(Ea)


def test_multiplicative_inflation_scales_anomalies_exactly(pair):
    fc, an = pair
    out = MultiplicativeInflation(1.3).apply(fc, an, None)
    close(out.mean, an.mean)
    close(out.anomalies, 1.3 * an.anomalies)
    g = GaussianState.create([1.0, 2.0], [[2.0, 0.5], [0.5, 1.0]])
    gi = MultiplicativeInflation(1.3).apply(g, g, None)
    close(gi.mean, g.mean)
    close(gi.cov, 1.69 * g.cov)


def test_rtpp(pair):
    fc, an = pair
    one = RTPP(alpha=1.0).apply(fc, an, None)
    close(one.mean, an.mean)
    close(one.anomalies, fc.anomalies)
    zero = RTPP(alpha=0.0).apply(fc, an, None)
    close(zero.members, an.members)
    half = RTPP(alpha=0.5).apply(fc, an, None)
    close(half.anomalies, 0.5 * (fc.anomalies + an.anomalies))


def test_rtps(pair):
    fc, an = pair
    one = RTPS(alpha=1.0).apply(fc, an, None)
    close(one.mean, an.mean)
    close(one.spread, fc.spread)
    # Each component's anomalies are scaled, not mixed: correlations are kept.
    close(np.corrcoef(one.members, rowvar=False), np.corrcoef(an.members, rowvar=False))
    half = RTPS(alpha=0.5).apply(fc, an, None)
    close(half.spread, 0.5 * (fc.spread + an.spread))
    gf = GaussianState.create([0.0, 0.0], [[4.0, 1.0], [1.0, 9.0]])
    ga = GaussianState.create([1.0, 1.0], [[1.0, 0.2], [0.2, 2.0]])
    gone = RTPS(alpha=1.0).apply(gf, ga, None)
    close(gone.spread, gf.spread)
    close(gone.mean, ga.mean)


def test_additive_inflation_gaussian_exact():
    g = GaussianState.create([1.0, 2.0, 3.0], [[2.0, 0.5, 0.0], [0.5, 1.0, 0.1], [0.0, 0.1, 1.0]])
    out = AdditiveInflation(0.7).apply(g, g, None)
    close(out.mean, g.mean)
    close(out.cov, g.cov + 0.7 * np.eye(3))


def test_additive_inflation_ensemble_in_expectation():
    rng = np.random.default_rng(13)
    N, v = 20000, 0.7
    C = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.1], [0.0, 0.1, 1.0]])
    an = EnsembleState(rng.multivariate_normal([1.0, 2.0, 3.0], C, size=N))
    out = AdditiveInflation(v).apply(an, an, rng)
    close(out.mean, an.mean)  # centred perturbations: the mean is kept exactly
    expected = an.cov + v * np.eye(3)
    assert np.all(np.abs(out.cov - expected) <= Z * se_cov(expected, N))
    assert not np.allclose(out.cov, an.cov, atol=0.1)


def test_random_rotation_keeps_mean_and_covariance(pair):
    _, an = pair
    N = an.size
    T = random_rotation(N, np.random.default_rng(14))
    close(T @ T.T, np.eye(N))
    close(T @ np.ones(N), np.ones(N))
    assert np.abs(T - np.eye(N)).max() > 0.1  # it does rotate
    rotated = EnsembleState(an.mean + T @ an.anomalies)
    close(rotated.mean, an.mean)
    close(rotated.cov, an.cov)
    assert np.abs(rotated.members - an.members).max() > 0.1


def test_rotating_filter_keeps_analysis_moments():
    s = linear_gaussian(n=4, n_obs=1, seed=15)
    rng = np.random.default_rng(0)
    fc = EnsembleState(s.prior.sample(rng, 12))
    y = s.simulate(1).observations[0]
    plain = ETKF(N=12).analysis(fc, y, s.obs, s.R, np.random.default_rng(2))
    rot = ETKF(N=12, rotate=True).analysis(fc, y, s.obs, s.R, np.random.default_rng(2))
    close(rot.mean, plain.mean)
    close(rot.cov, plain.cov)
    assert np.abs(rot.members - plain.members).max() > 1e-3


def test_inflation_sequence_applies_in_order(pair):
    s = linear_gaussian(n=4, n_obs=1, seed=16)
    fc, _ = pair
    y = s.simulate(2).observations[0]
    raw = ETKF(N=30).analysis(fc, y, s.obs, s.R, None)
    both = ETKF(N=30, inflation=[RTPP(0.5), 1.2]).analysis(fc, y, s.obs, s.R, None)
    expected = MultiplicativeInflation(1.2).apply(fc, RTPP(0.5).apply(fc, raw, None), None)
    close(both.members, expected.members)


# ----------------------------------------------------------------------------
# Missing observations
# ----------------------------------------------------------------------------
GAUSSIAN_FILTERS = [KalmanFilter(), EKF(), UKF(), UKF(points="julier", kappa=1.0)]
ENSEMBLE_FILTERS = [EnKF(N=15), ETKF(N=15), DEnKF(N=15), EnSRF(N=15), EnSRF(N=15, order="given"),
                    LETKF(N=15, radius=2.0)]


@pytest.mark.parametrize("flt", GAUSSIAN_FILTERS + ENSEMBLE_FILTERS, ids=lambda f: repr(f))
def test_nan_observations_equal_reduced_operator(flt):
    """One analysis with NaNs in y equals the analysis with the reduced operator."""
    n = 10
    rng = np.random.default_rng(17)
    model = Lorenz96(n=n)
    obs = Identity(n)
    R = as_covariance(rng.uniform(0.5, 2.0, n), n, "R")
    y = rng.standard_normal(n) * 2
    missing = np.array([2, 5, 6])
    present = np.setdiff1d(np.arange(n), missing)
    y_nan = y.copy()
    y_nan[missing] = np.nan
    reduced, R_red = Subset(n, present), R.subset(present)
    if isinstance(flt, (EnKF, ETKF, DEnKF, EnSRF, LETKF)):
        state = EnsembleState(rng.standard_normal((15, n)) * 2 + 3)
    else:
        state = GaussianState.create(rng.standard_normal(n) + 3, random_spd(rng, n, 2.0))
    flt.prepare(model, obs)
    full = flt.analysis(state, y_nan, obs, R, np.random.default_rng(3))
    flt.prepare(model, reduced)
    red = flt.analysis(state, y[present], reduced, R_red, np.random.default_rng(3))
    close(full.mean, red.mean)
    close(full.cov, red.cov)
    # ... and differs from using all observations
    flt.prepare(model, obs)
    every = flt.analysis(state, y, obs, R, np.random.default_rng(3))
    assert np.abs(every.mean - full.mean).max() > 1e-3


def _with_missing(s: Setting, seed: int, missing_rows=(), missing_cols=(), random_frac=0.0):
    sim = s.simulate(np.random.default_rng(seed))
    ys = sim.observations.copy()
    rng = np.random.default_rng(seed + 1)
    if random_frac:
        ys[rng.random(ys.shape) < random_frac] = np.nan
    ys[list(missing_rows)] = np.nan
    ys[:, list(missing_cols)] = np.nan
    return Simulation(sim.times, sim.truth, ys, sim.initial_truth)


@pytest.mark.parametrize("flt", [KalmanFilter(), UKF(), ETKF(N=10, inflation=1.05),
                                 EnKF(N=10), EnSRF(N=10)], ids=lambda f: f.name)
def test_nan_observations_in_a_run(flt):
    s = linear_gaussian(n=5, n_obs=12, seed=18)
    sim = _with_missing(s, 0, missing_rows=[3, 7], random_frac=0.3)
    ds = assimilate(flt, s, seed=4, simulation=sim)
    ys = sim.observations
    np.testing.assert_array_equal(ds.obs_used.values, np.sum(~np.isnan(ys), axis=1))
    np.testing.assert_array_equal(np.isnan(ds.innovation.values), np.isnan(ys))
    assert np.all(np.isfinite(ds.analysis_mean.values))
    for k in (3, 7):  # all-NaN cycles: the analysis is the forecast
        assert ds.obs_used.values[k] == 0
        np.testing.assert_array_equal(ds.analysis_mean.values[k], ds.forecast_mean.values[k])
        np.testing.assert_array_equal(ds.analysis_spread.values[k], ds.forecast_spread.values[k])
    used = [k for k in range(s.n_obs) if ds.obs_used.values[k] > 0]
    assert np.abs(ds.analysis_mean.values[used] - ds.forecast_mean.values[used]).max() > 1e-3


@pytest.mark.parametrize("flt", [KalmanFilter(), UKF(), EKF(), ETKF(N=10), EnKF(N=10), DEnKF(N=10),
                                 EnSRF(N=10), LETKF(N=10, radius=1.5)], ids=lambda f: f.name)
def test_missing_column_run_equals_reduced_operator_run(flt):
    s = linear_gaussian(n=5, n_obs=10, seed=19)
    missing = [1, 3]
    present = np.setdiff1d(np.arange(5), missing)
    sim = _with_missing(s, 0, missing_cols=missing)
    red_s = s.with_(obs=Subset(5, present), R=s.R.subset(present))
    red_sim = Simulation(sim.times, sim.truth, sim.observations[:, present], sim.initial_truth)
    a = assimilate(flt, s, seed=5, simulation=sim, store_cov=True)
    b = assimilate(flt, red_s, seed=5, simulation=red_sim, store_cov=True)
    close(a.analysis_mean.values, b.analysis_mean.values)
    close(a.analysis_cov.values, b.analysis_cov.values)
    np.testing.assert_array_equal(a.obs_used.values, np.full(10, 3))
