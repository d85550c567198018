"""The compiled cycle path (filters._compiled) against the generic numpy path.

Every filter x setting runs both ways from the same seed; the Datasets must
agree (all variables but ``wall_time``).  Most cases agree bitwise; the
tolerance covers the few BLAS calls that numpy and Numba route to different
OpenBLAS builds (see filters/_compiled/_lapack.py), and the ETKF, whose small
eigen-solver rounds differently from LAPACK (tests/test_compiled_speed.py).  Each kernel is also held
to its numpy twin, the function of filters.ensemble / filters.inflation it
mirrors.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filters import (RTPP, RTPS, UKF, AdditiveInflation, DEnKF, DivergenceError, EnKF, EnSRF,
                     ETKF, LETKF, assimilate)
from filters._compiled import _analysis, _block, _lapack, unsupported_reason
from filters.covariance import as_covariance
from filters.ensemble import (denkf_analysis, enkf_analysis, ensrf_analysis, etkf_analysis,
                              letkf_analysis, random_rotation, taper_matrix)
from filters.models import Lorenz96, LinearObservation, Subset
from filters.settings import linear_gaussian, sakov2008, sakov2012
from filters.states import EnsembleState

# Compiled vs generic: chaotic models amplify a last-bit difference by ~10 per
# 10 cycles; 30 cycles keep it far below this.
RTOL = 1e-11
ATOL = 1e-11

FILTERS = {
    "ETKF": lambda: ETKF(N=20, inflation=1.02, rotate=True),
    "EnKF": lambda: EnKF(N=20, inflation=1.06),
    "DEnKF": lambda: DEnKF(N=20, inflation=1.02),
    "EnSRF": lambda: EnSRF(N=20, inflation=1.02),
    "EnSRF-given": lambda: EnSRF(N=12, order="given", rotate=True),
    "LETKF": lambda: LETKF(N=10, radius=4, inflation=1.04),
}
SETTINGS = {
    "sakov2008": lambda: sakov2008(n_obs=30),
    "sakov2012": lambda: sakov2012(n_obs=30),
    "linear_gaussian": lambda: linear_gaussian(n=4, n_obs=30, seed=1),
}


def assert_same(a, b):
    """Two runs agree in every variable but the wall time."""
    assert set(a.data_vars) == set(b.data_vars)
    for v in a.data_vars:
        if v != "wall_time":
            np.testing.assert_allclose(a[v].values, b[v].values, rtol=RTOL, atol=ATOL, err_msg=v)
    for key in ("rmse_analysis_mean", "crps_analysis_mean"):
        if key in a.attrs:
            np.testing.assert_allclose(a.attrs[key], b.attrs[key], rtol=RTOL)


def both(flt, setting, **kw):
    return (assimilate(flt(), setting, seed=3, compiled=True, **kw),
            assimilate(flt(), setting, seed=3, compiled=False, **kw))


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("name", sorted(FILTERS))
def test_compiled_equals_generic(name, setting):
    assert_same(*both(FILTERS[name], SETTINGS[setting]()))


def test_auto_takes_the_compiled_path_when_it_can():
    s = sakov2008(n_obs=5)
    assert unsupported_reason(ETKF(N=5), s) is None
    assert "UKF" in unsupported_reason(UKF(), s)

    class MyETKF(ETKF):  # a subclass may override forecast/analysis: generic path
        pass

    assert "MyETKF" in unsupported_reason(MyETKF(N=5), s)
    full_R = s.with_(R=as_covariance(np.eye(40) + 0.1 * np.eye(40, k=1) + 0.1 * np.eye(40, k=-1), 40))
    assert "R is not diagonal" in unsupported_reason(ETKF(N=5), full_R)
    # "auto" falls back without complaint
    assert assimilate(UKF(), s, compiled="auto").sizes["time"] == 5


@pytest.mark.parametrize("value", ["yes", 1, None, 0.5])
def test_compiled_argument_is_checked(value):
    with pytest.raises(ValueError, match="compiled must be 'auto', True or False"):
        assimilate(ETKF(N=5), sakov2008(n_obs=3), compiled=value)


def test_compiled_true_says_why_not():
    with pytest.raises(ValueError, match="compiled=True, but the filter UKF"):
        assimilate(UKF(), sakov2008(n_obs=3), compiled=True)


def test_missing_observations_and_other_operators():
    rng = np.random.default_rng(0)
    s = sakov2008(n_obs=25)
    sim = s.simulate(1)
    ys = sim.observations.copy()
    ys[rng.random(ys.shape) < 0.3] = np.nan
    ys[4] = np.nan  # a cycle with nothing observed: no analysis, no draws
    sim = type(sim)(sim.times, sim.truth, ys, sim.initial_truth)
    for make in (FILTERS["EnKF"], FILTERS["EnSRF"], FILTERS["LETKF"], FILTERS["ETKF"]):
        a, b = both(make, s, simulation=sim)
        assert_same(a, b)
        assert int(a.obs_used.values[4]) == 0
    sub = s.with_(obs=Subset(40, np.arange(0, 40, 2)), R=as_covariance(0.5, 20, "R"))
    H = rng.standard_normal((7, 40)) / 6.0
    lin = s.with_(obs=LinearObservation(H), R=as_covariance(np.linspace(0.5, 1.5, 7), 7, "R"))
    for setting in (sub, lin):
        for make in (FILTERS["ETKF"], FILTERS["EnKF"], FILTERS["DEnKF"]):
            assert_same(*both(make, setting))


def test_inflations_noise_and_stored_members():
    s = sakov2008(n_obs=20).with_(Q=as_covariance(0.01, 40, "Q"))
    infl = [1.01, RTPP(0.3), RTPS(0.4), AdditiveInflation(0.001)]
    a, b = both(lambda: EnKF(N=15, inflation=infl, rotate=True), s, store_ensemble=True,
                store_cov=True)
    assert_same(a, b)
    assert "analysis_ensemble" in a and "analysis_cov" in a
    lg = linear_gaussian(n=5, m=3, n_obs=20, seed=2)
    assert_same(*both(lambda: DEnKF(N=8, inflation=[RTPS(0.5), 1.1]), lg, store_cov=True))


@pytest.mark.parametrize("name", ["ETKF", "EnKF", "LETKF"])
def test_divergence_keeps_every_finished_cycle(name):
    # A threshold the Lorenz-96 state crosses within a few cycles: both paths stop at
    # the same cycle and keep the same cycles before it.
    s = sakov2008(n_obs=40)
    errors = []
    for compiled in (True, False):
        with pytest.raises(DivergenceError) as info:
            assimilate(FILTERS[name](), s, seed=3, compiled=compiled, divergence_threshold=9.0)
        errors.append(info.value)
    c, g = errors
    assert c.cycle == g.cycle and 0 < c.cycle < 40
    assert c.dataset.sizes["time"] == c.cycle
    assert_same(c.dataset, g.dataset)
    assert str(c).split(":")[0] == str(g).split(":")[0]


def test_analysis_divergence_from_huge_observation():
    s = sakov2008(n_obs=10)
    sim = s.simulate(0)
    ys = sim.observations.copy()
    ys[6, 3] = 1e300
    sim = type(sim)(sim.times, sim.truth, ys, sim.initial_truth)
    for compiled in (True, False):
        with pytest.raises(DivergenceError) as info:
            assimilate(ETKF(N=10), s, simulation=sim, compiled=compiled)
        assert info.value.cycle == 6 and info.value.dataset.sizes["time"] == 6
        assert np.isfinite(info.value.dataset.analysis_mean.values).all()


def test_progress_and_blocks(capsys, monkeypatch):
    monkeypatch.setattr("filters._compiled._runner._BLOCK_CYCLES", 7)
    s = sakov2012(n_obs=30)
    a = assimilate(ETKF(N=6, rotate=True), s, seed=1, compiled=True, progress=True)
    out = capsys.readouterr().out
    assert "ETKF: 30/30 cycles" in out
    assert_same(a, assimilate(ETKF(N=6, rotate=True), s, seed=1, compiled=False))


# ----------------------------------------------------------------------------
# Kernels against their numpy twins
# ----------------------------------------------------------------------------
SMALL = settings(max_examples=25, deadline=None)


def problem(seed, N, n, m):
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((N, n)) * 2.0 + 1.0
    HE = E[:, :m] + 0.1 * rng.standard_normal((N, m))
    y = rng.standard_normal(m)
    var = rng.uniform(0.5, 2.0, m)
    return rng, E, HE, y, var


@SMALL
@given(seed=st.integers(0, 2**32 - 1), N=st.integers(2, 30), k=st.integers(1, 50))
def test_syrk_and_cholesky_equal_numpy(seed, N, k):
    A = np.random.default_rng(seed).standard_normal((N, k))
    # Equal to rounding, not always bitwise: for a single column numpy's A.T @ A is a dot
    # product, not a syrk, and hypothesis found a 1-ulp difference there.
    tol = dict(rtol=1e-14, atol=1e-14 * max(1.0, float(np.abs(A).max()) ** 2 * N))
    np.testing.assert_allclose(_lapack._syrk(A, False), A @ A.T, **tol)
    np.testing.assert_allclose(_lapack._syrk(A, True), A.T @ A, **tol)
    C = A @ A.T + N * np.eye(N)
    np.testing.assert_allclose(_lapack._cholesky(C), np.linalg.cholesky(C), rtol=1e-14, atol=1e-14)
    with pytest.raises(np.linalg.LinAlgError):
        _lapack._cholesky(-C)


@SMALL
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 3000))
def test_pairwise_sum_is_numpys(seed, n):
    a = np.random.default_rng(seed).standard_normal(n) * 1e3
    assert _block._pairwise_sum(a, 0, n) == a.sum()


@SMALL
@given(seed=st.integers(0, 2**32 - 1), N=st.integers(2, 25), n=st.integers(3, 30),
       m=st.integers(1, 3))
def test_analysis_kernels_equal_twins(seed, N, n, m):
    rng, E, HE, y, var = problem(seed, N, n, m)
    R, sd = as_covariance(var, m), np.sqrt(var)
    tol = dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_analysis._etkf(E, HE, y, sd), etkf_analysis(E, HE, y, R), **tol)
    np.testing.assert_allclose(_analysis._denkf(E, HE, y, sd), denkf_analysis(E, HE, y, R), **tol)
    D = np.random.default_rng(seed).standard_normal((N, m))
    np.testing.assert_allclose(_analysis._enkf(E, HE, y, sd, D),
                               enkf_analysis(E, HE, y, R, np.random.default_rng(seed)), **tol)
    order = rng.permutation(m)
    np.testing.assert_allclose(_analysis._ensrf(E, HE, y, sd, order),
                               ensrf_analysis(E, HE, y, R, order), **tol)
    taper = taper_matrix(np.arange(n, dtype=float)[:, None], np.arange(m, dtype=float)[:, None],
                         2.0, [float(n)])
    np.testing.assert_allclose(_analysis._letkf(E, HE, y, sd, taper),
                               letkf_analysis(E, HE, y, R, taper), **tol)


@pytest.mark.parametrize("N", [2, 7, 64, 65])
def test_letkf_kernel_equals_twin_on_both_sides_of_small_n(N):
    # 2 <= N <= SMALL_N (64) takes _letkf_small, N = 65 the generic kernel; many observations
    # per point (up to 15 of the 40 at radius 2), the last 13 points none.
    from filters._compiled._eigen import SMALL_N
    assert SMALL_N == 64
    n, m = 60, 40
    rng, E, HE, y, var = problem(N, N, n, m)
    R, sd = as_covariance(var, m), np.sqrt(var)
    taper = taper_matrix(np.arange(n, dtype=float)[:, None], np.arange(m, dtype=float)[:, None],
                         2.0)
    assert (taper.sum(axis=1) == 0).any() and (np.count_nonzero(taper, axis=1) > 5).any()
    np.testing.assert_allclose(_analysis._letkf(E, HE, y, sd, taper),
                               letkf_analysis(E, HE, y, R, taper), rtol=1e-12, atol=1e-12)


@SMALL
@given(seed=st.integers(0, 2**32 - 1), N=st.integers(2, 20), n=st.integers(1, 12),
       par=st.floats(0.0, 1.0))
def test_inflation_rotation_and_scores_equal_twins(seed, N, n, par):
    from filters.ensemble._equations import _ones_first_basis
    from filters.inflation import MultiplicativeInflation
    from filters.metrics import crps_ensemble

    rng = np.random.default_rng(seed)
    Ef, Ea = rng.standard_normal((N, n)) * 2.0, rng.standard_normal((N, n))
    f, a = EnsembleState(Ef), EnsembleState(Ea)
    Z = np.random.default_rng(seed).standard_normal((N, n))
    twins = {_analysis.MULTIPLICATIVE: MultiplicativeInflation(1.0 + par),
             _analysis.ADDITIVE: AdditiveInflation(par), _analysis.RTPP: RTPP(par),
             _analysis.RTPS: RTPS(par)}
    for kind, twin in twins.items():
        p = twin.factor if kind == _analysis.MULTIPLICATIVE else (
            twin.variance if kind == _analysis.ADDITIVE else twin.alpha)
        out = _analysis._inflate(kind, p, Ef, Ea, Z)
        np.testing.assert_allclose(out, twin.apply(f, a, np.random.default_rng(seed)).members,
                                   rtol=1e-13, atol=1e-13)
    if N > 2:
        Zr = np.random.default_rng(seed).standard_normal((N - 1, N - 1))
        rot = random_rotation(N, np.random.default_rng(seed))
        np.testing.assert_allclose(_analysis._rotate(Ea, _ones_first_basis(N), Zr),
                                   a.mean + rot @ a.anomalies, rtol=1e-12, atol=1e-12)
    truth = rng.standard_normal(n)
    rank = np.zeros(n, np.int16)
    np.testing.assert_allclose(_block._scores(Ea, truth, rank), crps_ensemble(Ea, truth).mean(),
                               rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(rank, np.sum(Ea < truth, axis=0))


def test_model_with_process_noise_l63():
    s = sakov2012(n_obs=15).with_(Q=as_covariance(np.diag([0.1, 0.2, 0.3]) + 0.05, 3, "Q"))
    assert_same(*both(lambda: ETKF(N=8, inflation=1.01), s))
    assert_same(*both(lambda: EnSRF(N=8), sakov2008(n_obs=10).with_(model=Lorenz96(40, 6.0))))
