"""Models and observation operators.

* The Numba ``step`` of Lorenz-96 and Lorenz-63 equals the numpy RK4 of their
  ``tendency`` (the :class:`filters.models.RK4Model` base implementation).
* ``jacobian`` (the chain-rule tangent-linear model of one RK4 step) equals
  central finite differences of ``step``; ``tendency_jacobian`` equals finite
  differences of ``tendency``.
* Tendencies at points known by hand (fixed points, a small ring).
* Observation operators: shapes on states and ensembles, Jacobians.
"""

from __future__ import annotations

import numpy as np
import pytest

from filters.models import (CallableObservation, Identity, LinearGaussian, LinearObservation,
                            Lorenz63, Lorenz96, RK4Model, Subset, finite_difference_jacobian)

# Tolerances of this file (declared once).
RTOL = 1e-12  # Numba vs numpy RK4: same maths, different operation order
ATOL = 1e-12
FD_ATOL = 1e-6  # exact Jacobian vs central finite differences (step 1e-6)
FD_EPS = 1e-6

L96_DT, L63_DT = 0.05, 0.01


def models():
    return [pytest.param(Lorenz96(n=40), L96_DT, id="L96-40"),
            pytest.param(Lorenz96(n=7, forcing=5.0), L96_DT, id="L96-7"),
            pytest.param(Lorenz63(), L63_DT, id="L63"),
            pytest.param(Lorenz63(sigma=12.0, rho=20.0, beta=2.0), L63_DT, id="L63-other")]


def attractor_point(model, rng, dt):
    """A state on (near) the attractor: a random start integrated a while."""
    x = rng.standard_normal(model.ndim) + (np.array([0.0, 0.0, 25.0]) if model.ndim == 3 else 0.0)
    return model.integrate(x, 0.0, dt, 500)


# ----------------------------------------------------------------------------
# step: Numba kernel vs numpy RK4 of the tendency
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("model,dt", models())
def test_step_equals_numpy_rk4_of_tendency(model, dt):
    rng = np.random.default_rng(0)
    x = attractor_point(model, rng, dt)
    E = x + rng.standard_normal((6, model.ndim))
    # single state
    out = model.step(x, 0.0, dt)
    assert out.shape == (model.ndim,)
    np.testing.assert_allclose(out, RK4Model.step(model, x, 0.0, dt), rtol=RTOL, atol=ATOL)
    # ensemble
    outE = model.step(E, 0.0, dt)
    assert outE.shape == E.shape
    np.testing.assert_allclose(outE, RK4Model.step(model, E, 0.0, dt), rtol=RTOL, atol=ATOL)
    # each member stepped alone gives the same as the ensemble call
    np.testing.assert_array_equal(outE, np.array([model.step(e, 0.0, dt) for e in E]))
    # several steps at once equal repeated steps
    ref = E
    for k in range(5):
        ref = RK4Model.step(model, ref, k * dt, dt)
    np.testing.assert_allclose(model.integrate(E, 0.0, dt, 5), ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("model,dt", models())
def test_step_does_not_modify_input(model, dt):
    E = np.random.default_rng(1).standard_normal((3, model.ndim))
    E0 = E.copy()
    model.step(E, 0.0, dt)
    model.step(E[0], 0.0, dt)
    np.testing.assert_array_equal(E, E0)


def test_step_accepts_lists_and_non_contiguous_arrays():
    m = Lorenz96(n=6)
    E = np.asfortranarray(np.random.default_rng(2).standard_normal((4, 6)))
    np.testing.assert_allclose(m.step(E, 0.0, L96_DT), RK4Model.step(m, E, 0.0, L96_DT),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(m.step(E[:, ::-1], 0.0, L96_DT),
                               RK4Model.step(m, E[:, ::-1], 0.0, L96_DT), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(m.step(list(E[0]), 0.0, L96_DT), m.step(E[0], 0.0, L96_DT))


# ----------------------------------------------------------------------------
# Jacobians
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("model,dt", models())
def test_jacobian_matches_finite_differences_of_step(model, dt):
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = attractor_point(model, rng, dt)
        J = model.jacobian(x, 0.0, dt)
        assert J.shape == (model.ndim, model.ndim)
        J_fd = finite_difference_jacobian(lambda X: model.step(X, 0.0, dt), x, FD_EPS)
        np.testing.assert_allclose(J, J_fd, rtol=0, atol=FD_ATOL)
        # Not trivially the identity: the dynamics couple components.
        assert np.abs(J - np.eye(model.ndim)).max() > 100 * FD_ATOL


@pytest.mark.parametrize("model,dt", models())
def test_tendency_jacobian_matches_finite_differences(model, dt):
    x = attractor_point(model, np.random.default_rng(4), dt)
    J_fd = finite_difference_jacobian(model.tendency, x, FD_EPS)
    np.testing.assert_allclose(model.tendency_jacobian(x), J_fd, rtol=0, atol=FD_ATOL)


def test_jacobian_with_larger_step_still_exact():
    """The chain rule holds for any dt (it is the derivative of the discrete step)."""
    m = Lorenz96(n=10)
    x = attractor_point(m, np.random.default_rng(5), L96_DT)
    J_fd = finite_difference_jacobian(lambda X: m.step(X, 0.0, 0.2), x, FD_EPS)
    np.testing.assert_allclose(m.jacobian(x, 0.0, 0.2), J_fd, rtol=0, atol=FD_ATOL)


def test_linear_model_step_and_jacobian():
    M = np.random.default_rng(6).standard_normal((4, 4))
    m = LinearGaussian(M)
    x = np.arange(4.0)
    np.testing.assert_allclose(m.step(x, 0.0, 1.0), M @ x, rtol=RTOL)
    E = np.random.default_rng(7).standard_normal((5, 4))
    np.testing.assert_allclose(m.step(E, 0.0, 1.0), E @ M.T, rtol=RTOL)
    np.testing.assert_array_equal(m.jacobian(x, 0.0, 1.0), M)
    np.testing.assert_allclose(finite_difference_jacobian(lambda X: m.step(X, 0, 1), x), M,
                               atol=FD_ATOL)


def test_finite_difference_jacobian_of_known_function():
    f = lambda X: np.stack([X[..., 0] * X[..., 1], np.sin(X[..., 1]), X[..., 0] ** 3], -1)  # noqa: E731
    x = np.array([1.5, -0.7])
    J = np.array([[x[1], x[0]], [0.0, np.cos(x[1])], [3 * x[0] ** 2, 0.0]])
    np.testing.assert_allclose(finite_difference_jacobian(f, x), J, atol=FD_ATOL)


# ----------------------------------------------------------------------------
# Tendencies at known points
# ----------------------------------------------------------------------------
def test_l96_tendency_by_hand():
    # n = 5, F = 8, x = (0, 1, 2, 3, 4): dx_i = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + 8
    #   i=0: (1 - 3) * 4 - 0 + 8 = 0      i=1: (2 - 4) * 0 - 1 + 8 = 7
    #   i=2: (3 - 0) * 1 - 2 + 8 = 9      i=3: (4 - 1) * 2 - 3 + 8 = 11
    #   i=4: (0 - 2) * 3 - 4 + 8 = -2
    m = Lorenz96(n=5, forcing=8.0)
    np.testing.assert_array_equal(m.tendency(np.arange(5.0)), [0.0, 7.0, 9.0, 11.0, -2.0])
    # Vectorised over an ensemble.
    E = np.stack([np.arange(5.0), np.ones(5)])
    np.testing.assert_array_equal(m.tendency(E), [[0.0, 7.0, 9.0, 11.0, -2.0], [7.0] * 5])


def test_l96_uniform_forcing_is_a_fixed_point():
    m = Lorenz96(n=40, forcing=8.0)
    x = np.full(40, 8.0)
    np.testing.assert_array_equal(m.tendency(x), np.zeros(40))
    np.testing.assert_array_equal(m.step(x, 0.0, L96_DT), x)


def test_l63_fixed_points():
    m = Lorenz63()
    c = np.sqrt(m.beta * (m.rho - 1.0))
    for x in (np.zeros(3), np.array([c, c, m.rho - 1.0]), np.array([-c, -c, m.rho - 1.0])):
        np.testing.assert_allclose(m.tendency(x), 0.0, atol=1e-12)
        np.testing.assert_allclose(m.integrate(x, 0.0, L63_DT, 10), x, atol=1e-11)
    np.testing.assert_allclose(m.tendency(np.array([1.0, 2.0, 3.0])),
                               [10.0 * 1.0, 1.0 * 25.0 - 2.0, 2.0 - 8.0], rtol=RTOL)


def test_l96_coordinates_and_period():
    m = Lorenz96(n=12)
    assert m.coordinates.shape == (12, 1)
    np.testing.assert_array_equal(m.coordinates[:, 0], np.arange(12))
    np.testing.assert_array_equal(m.period, [12.0])


# ----------------------------------------------------------------------------
# Observation operators
# ----------------------------------------------------------------------------
def test_identity_observation():
    H = Identity(4)
    x = np.arange(4.0)
    E = np.random.default_rng(8).standard_normal((6, 4))
    assert (H.nobs, H.ndim, H.linear) == (4, 4, True)
    np.testing.assert_array_equal(H(x), x)
    np.testing.assert_array_equal(H(E), E)
    np.testing.assert_array_equal(H.jacobian(x), np.eye(4))
    np.testing.assert_array_equal(H.site_indices, np.arange(4))


def test_subset_observation():
    H = Subset(5, [3, 0])
    x = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    E = np.random.default_rng(9).standard_normal((6, 5))
    assert (H.nobs, H.ndim, H.linear) == (2, 5, True)
    np.testing.assert_array_equal(H(x), [13.0, 10.0])
    assert H(E).shape == (6, 2)
    np.testing.assert_array_equal(H(E), E[:, [3, 0]])
    J = H.jacobian(x)
    assert J.shape == (2, 5)
    np.testing.assert_array_equal(J @ x, H(x))
    np.testing.assert_allclose(finite_difference_jacobian(H, x), J, atol=FD_ATOL)


def test_linear_observation():
    rng = np.random.default_rng(10)
    Hm = rng.standard_normal((3, 5))
    H = LinearObservation(Hm, locations=np.arange(3.0)[:, None])
    x, E = rng.standard_normal(5), rng.standard_normal((7, 5))
    assert (H.nobs, H.ndim, H.linear) == (3, 5, True)
    np.testing.assert_allclose(H(x), Hm @ x, rtol=RTOL)
    assert H(E).shape == (7, 3)
    np.testing.assert_allclose(H(E), E @ Hm.T, rtol=RTOL)
    np.testing.assert_array_equal(H.jacobian(x), Hm)
    assert H.locations.shape == (3, 1)


def test_callable_observation_jacobians():
    fun = lambda X: np.stack([X[..., 0] ** 2, X[..., 1] * X[..., 2]], axis=-1)  # noqa: E731
    jac = lambda x: np.array([[2 * x[0], 0.0, 0.0], [0.0, x[2], x[1]]])  # noqa: E731
    x = np.array([1.5, -2.0, 0.5])
    E = np.random.default_rng(11).standard_normal((4, 3))
    H = CallableObservation(fun, ndim=3, nobs=2)
    assert (H.nobs, H.ndim, H.linear) == (2, 3, False)
    np.testing.assert_array_equal(H(x), [2.25, -1.0])
    assert H(E).shape == (4, 2)
    np.testing.assert_allclose(H.jacobian(x), jac(x), atol=FD_ATOL)  # finite differences
    Hj = CallableObservation(fun, ndim=3, nobs=2, jacobian=jac)
    np.testing.assert_array_equal(Hj.jacobian(x), jac(x))  # the given one, exactly
    assert H.locations is None
    Hl = CallableObservation(fun, ndim=3, nobs=2, locations=[[0.0], [2.0]])
    assert Hl.locations.shape == (2, 1)


def test_operator_params_are_json():
    import json

    for H in (Identity(3), Subset(4, [1, 2]), LinearObservation(np.eye(2)),
              CallableObservation(np.sin, ndim=2, nobs=2)):
        p = json.loads(json.dumps(H.params()))
        assert (p["nobs"], p["ndim"]) == (H.nobs, H.ndim)
