"""Every Numba kernel of :mod:`filters._kernels` against its numpy twin (tests/twins.py),
plus two equivalences of the ensemble kernels: the serial EnSRF has the batch
ETKF's analysis mean and covariance, and the LETKF with an unbounded radius is
the global ETKF."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import twins
from filters import _kernels
from filters.covariance import as_covariance
from filters.ensemble import (GC_HALF_WIDTH_PER_RADIUS, ensrf_analysis, etkf_analysis,
                              gaspari_cohn, letkf_analysis, taper_matrix)

# Tolerances of this file (declared once).
RTOL = 1e-12  # kernel vs twin: same maths, different floating-point order
ATOL = 1e-12  # for entries that are (near) zero
RTOL_LINALG = 1e-10  # results through an eigen/sqrtm/inverse of an (N, N) matrix
HYPOTHESIS = settings(max_examples=40, deadline=None)


def close(actual, desired, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol)


def random_ensemble_problem(rng, N, n, m):
    """Whitened inputs (mu, A, Y, dy) of the ensemble kernels."""
    mu = rng.standard_normal(n)
    A = rng.standard_normal((N, n))
    A -= A.mean(axis=0)
    Y = rng.standard_normal((N, m))
    Y -= Y.mean(axis=0)
    dy = rng.standard_normal(m)
    return mu, A, Y, dy


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------
@HYPOTHESIS
@given(N=st.integers(1, 5), n=st.integers(4, 24), nsteps=st.integers(1, 6),
       dt=st.floats(1e-3, 0.05), forcing=st.floats(-10.0, 10.0),
       seed=st.integers(0, 2**32 - 1), scale=st.floats(0.0, 10.0))
def test_l96_rk4_equals_twin(N, n, nsteps, dt, forcing, seed, scale):
    E = scale * np.random.default_rng(seed).standard_normal((N, n))
    out = _kernels._l96_rk4(E, forcing, dt, nsteps)
    close(out, twins.l96_rk4(E, forcing, dt, nsteps), atol=ATOL * max(1.0, scale, abs(forcing)))


def test_l96_rk4_does_not_modify_input():
    E = np.random.default_rng(0).standard_normal((3, 10))
    E0 = E.copy()
    _kernels._l96_rk4(E, 8.0, 0.05, 3)
    np.testing.assert_array_equal(E, E0)


@HYPOTHESIS
@given(N=st.integers(1, 6), nsteps=st.integers(1, 30), dt=st.floats(1e-4, 0.01),
       sigma=st.floats(1.0, 20.0), rho=st.floats(0.0, 40.0), beta=st.floats(0.5, 4.0),
       seed=st.integers(0, 2**32 - 1))
def test_l63_rk4_equals_twin(N, nsteps, dt, sigma, rho, beta, seed):
    E = np.random.default_rng(seed).standard_normal((N, 3)) * [8.0, 8.0, 8.0] + [0.0, 0.0, 25.0]
    out = _kernels._l63_rk4(E, sigma, rho, beta, dt, nsteps)
    close(out, twins.l63_rk4(E, sigma, rho, beta, dt, nsteps), atol=ATOL * 50)


# ----------------------------------------------------------------------------
# Localisation
# ----------------------------------------------------------------------------
def test_gaspari_cohn_equals_twin_and_paper_properties():
    r = np.concatenate([np.linspace(0.0, 2.5, 2001), [1.0, 2.0, 1e-9, 1 - 1e-12, 1 + 1e-12]])
    kern = np.array([_kernels._gaspari_cohn(x) for x in r])
    close(kern, twins.gaspari_cohn(r))
    close(gaspari_cohn(r), kern)
    # The paper's properties: 1 at 0, 0 from 2 on, in [0, 1], continuous at 1, decreasing.
    assert kern[0] == 1.0
    assert np.all(kern[r >= 2.0] == 0.0)
    assert np.all((kern >= 0.0) & (kern <= 1.0))
    near_two = np.array([_kernels._gaspari_cohn(2.0 - h) for h in np.logspace(-12, -3, 50)])
    assert np.all(near_two >= 0.0) and near_two.max() < 1e-9
    assert abs(_kernels._gaspari_cohn(1 - 1e-12) - _kernels._gaspari_cohn(1 + 1e-12)) < 1e-10
    assert np.all(np.diff(kern[:2001]) <= 1e-15)
    close(_kernels._gaspari_cohn(1.0), 5.0 / 24.0)  # eq. 4.10 at r = 1


@HYPOTHESIS
@given(D=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
       periodic=st.lists(st.booleans(), min_size=3, max_size=3))
def test_distance_equals_twin(D, seed, periodic):
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-30, 30, D), rng.uniform(-30, 30, D)
    period = np.where(periodic[:D], rng.uniform(1.0, 20.0, D), 0.0)
    close(_kernels._distance(a, b, period), twins.distance(a, b, period))


def test_distance_periodic_by_hand():
    # On a ring of 40 sites, sites 1 and 39 are 2 apart.
    assert _kernels._distance(np.array([1.0]), np.array([39.0]), np.array([40.0])) == 2.0
    assert _kernels._distance(np.array([1.0]), np.array([39.0]), np.array([0.0])) == 38.0
    close(_kernels._distance(np.array([0.0, 0.0]), np.array([3.0, 4.0]), np.zeros(2)), 5.0)


@HYPOTHESIS
@given(n=st.integers(1, 30), m=st.integers(1, 30), D=st.integers(1, 3),
       half_width=st.floats(0.1, 20.0), seed=st.integers(0, 2**32 - 1),
       periodic=st.booleans())
def test_taper_matrix_equals_twin(n, m, D, half_width, seed, periodic):
    rng = np.random.default_rng(seed)
    xs, ys = rng.uniform(0, 40, (n, D)), rng.uniform(0, 40, (m, D))
    period = np.full(D, 40.0) if periodic else np.zeros(D)
    out = _kernels._taper_matrix(xs, ys, period, half_width)
    assert out.shape == (n, m)
    close(out, twins.taper_matrix(xs, ys, period, half_width))
    # The public wrapper is the kernel at half-width radius * 1.82.
    radius = half_width / GC_HALF_WIDTH_PER_RADIUS
    close(taper_matrix(xs, ys, radius, period), out)


# ----------------------------------------------------------------------------
# Serial EnSRF
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("N,n,m", [(5, 3, 2), (10, 6, 8), (30, 12, 5), (4, 2, 9)])
def test_ensrf_serial_equals_twin(N, n, m):
    rng = np.random.default_rng(N * 100 + m)
    mu, A, Y, dy = random_ensemble_problem(rng, N, n, m)
    order = rng.permutation(m)
    args = (mu.copy(), A.copy(), Y.copy(), dy.copy())
    out = _kernels._ensrf_serial(*args, order.astype(np.int64))
    close(out, twins.ensrf_serial(mu, A, Y, dy, order))
    # Inputs are not modified.
    for before, after in zip((mu, A, Y, dy), args):
        np.testing.assert_array_equal(before, after)


def _kalman_with_ensemble_cov(E, H, y, Rm):
    """Kalman analysis of the ensemble mean and sample covariance (dense algebra)."""
    mu = E.mean(axis=0)
    P = np.cov(E, rowvar=False, ddof=1)
    K = P @ H.T @ np.linalg.inv(H @ P @ H.T + Rm)
    return mu + K @ (y - H @ mu), (np.eye(len(mu)) - K @ H) @ P


@pytest.mark.parametrize("N,n,m", [(8, 5, 3), (20, 6, 6), (6, 10, 12)])
def test_serial_ensrf_has_batch_etkf_mean_and_cov(N, n, m):
    """Serial and batch square-root filters agree in mean and covariance (diagonal R)."""
    rng = np.random.default_rng(7 + N)
    E = rng.standard_normal((N, n)) * rng.uniform(0.5, 2.0, n) + rng.standard_normal(n)
    H = rng.standard_normal((m, n))
    R = as_covariance(rng.uniform(0.3, 2.0, m), m, "R")
    y = rng.standard_normal(m)
    HE = E @ H.T
    Es = ensrf_analysis(E, HE, y, R, order=rng.permutation(m))
    Eb = etkf_analysis(E, HE, y, R)
    mk, Pk = _kalman_with_ensemble_cov(E, H, y, R.dense)
    for Ea in (Es, Eb):
        close(Ea.mean(axis=0), mk, rtol=RTOL_LINALG, atol=RTOL_LINALG)
        close(np.cov(Ea, rowvar=False), Pk, rtol=RTOL_LINALG, atol=RTOL_LINALG)
    # Same moments, but not the same members: the square roots differ by a rotation.
    assert not np.allclose(Es, Eb, rtol=1e-6, atol=1e-6) or m == 1


def test_ensrf_order_changes_members_not_moments():
    rng = np.random.default_rng(3)
    N, n, m = 12, 4, 4
    E = rng.standard_normal((N, n))
    R = as_covariance(0.5, m, "R")
    y = rng.standard_normal(m)
    E1 = ensrf_analysis(E, E, y, R, order=np.arange(m))
    E2 = ensrf_analysis(E, E, y, R, order=np.arange(m)[::-1])
    close(E1.mean(axis=0), E2.mean(axis=0), rtol=RTOL_LINALG, atol=RTOL_LINALG)
    close(np.cov(E1, rowvar=False), np.cov(E2, rowvar=False), rtol=RTOL_LINALG, atol=RTOL_LINALG)


# ----------------------------------------------------------------------------
# LETKF
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("N,n,m", [(5, 8, 8), (10, 20, 7), (7, 40, 40)])
def test_letkf_equals_twin(N, n, m):
    rng = np.random.default_rng(N + n + m)
    mu, A, Y, dy = random_ensemble_problem(rng, N, n, m)
    sites = np.arange(n, dtype=float)[:, None]
    obs_sites = rng.uniform(0, n, (m, 1))
    taper = taper_matrix(sites, obs_sites, radius=2.0, period=[float(n)])
    taper[0] = 0.0  # a grid point with no observation in reach keeps its forecast
    assert 0.0 < (taper > 0).mean() < 1.0  # really local: some, not all, pairs in reach
    out = _kernels._letkf(mu, A, Y, dy, taper)
    close(out, twins.letkf(mu, A, Y, dy, taper), rtol=RTOL_LINALG, atol=RTOL_LINALG)
    close(out[:, 0], mu[0] + A[:, 0])


def test_letkf_with_unbounded_radius_is_global_etkf():
    rng = np.random.default_rng(11)
    N, n, m = 9, 12, 6
    E = rng.standard_normal((N, n)) + 3.0
    H = rng.standard_normal((m, n))
    R = as_covariance(rng.uniform(0.5, 1.5, m), m, "R")
    y = rng.standard_normal(m)
    sites = np.arange(n, dtype=float)[:, None]
    taper = taper_matrix(sites, rng.uniform(0, n, (m, 1)), radius=1e6, period=[float(n)])
    assert np.all(taper > 1.0 - 1e-10)
    Eg = etkf_analysis(E, E @ H.T, y, R)
    close(letkf_analysis(E, E @ H.T, y, R, taper), Eg, rtol=RTOL_LINALG, atol=RTOL_LINALG)
    close(letkf_analysis(E, E @ H.T, y, R, np.ones((n, m))), Eg, rtol=RTOL_LINALG,
          atol=RTOL_LINALG)


def test_letkf_filter_with_unbounded_radius_is_etkf_filter():
    """Through ``assimilate``: same seed, same draws, the same analyses at every cycle."""
    from filters import ETKF, LETKF, assimilate
    from filters.settings import sakov2008

    s = sakov2008(n_obs=20, n=10)
    a = assimilate(LETKF(N=8, radius=1e6, inflation=1.02), s, seed=4)
    b = assimilate(ETKF(N=8, inflation=1.02), s, seed=4)
    close(a.analysis_mean.values, b.analysis_mean.values, rtol=1e-8, atol=1e-8)
    close(a.analysis_spread.values, b.analysis_spread.values, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("kind", ["l63", "l96"])
def test_rk4_tangent_linear_kernel_equals_numpy_chain_rule(kind):
    """_lorenz_rk4_tlm against its numpy twin: Model.integrate_tlm's loop over
    numpy RK4 Jacobians (RK4Model.jacobian) and steps, and against FD."""
    from filters.models import Lorenz63, Lorenz96, finite_difference_jacobian
    from filters.models.base import Model

    model = Lorenz63() if kind == "l63" else Lorenz96(n=12, forcing=8.0)
    x = np.random.default_rng(5).standard_normal(model.ndim) * 3.0
    xk, M = model.integrate_tlm(x, 0.0, 0.01, 9)
    xr, Mr = Model.integrate_tlm(model, x, 0.0, 0.01, 9)
    np.testing.assert_allclose(xk, xr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(M, Mr, rtol=1e-10, atol=1e-12)
    Mfd = finite_difference_jacobian(lambda X: model.integrate(X, 0.0, 0.01, 9), x, 1e-6)
    np.testing.assert_allclose(M, Mfd, rtol=1e-5, atol=1e-6)


def test_ekf_composed_forecast_equals_step_by_step():
    """The EKF's one-call forecast (no Q) equals the per-step Kalman predictions."""
    from filters import EKF, assimilate
    from filters.settings import sakov2012

    s = sakov2012(n_obs=60)
    fast = assimilate(EKF(infl_rate=180.0), s, seed=2)
    slow = assimilate(EKF(infl_rate=180.0, jacobian=s.model.jacobian), s, seed=2, store_cov=False)
    np.testing.assert_allclose(fast["analysis_mean"].values, slow["analysis_mean"].values,
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fast["analysis_spread"].values, slow["analysis_spread"].values,
                               rtol=1e-8, atol=1e-10)
