"""The diagonal-covariance EKF (``filters.DiagonalEKF``, method ``ekf-diag``).

Kinds of checks: against the full EKF (exact equality whenever the problem
stays diagonal; one analysis from a diagonal prior in general; the exact
diagonal of the forecast covariance), a case where the two must differ (so
the equalities are not vacuous), stability on Lorenz-96 and a linear-Gaussian
system against the exact Kalman filter, O(n) memory at a large n, and the
language-model side: the first chunk's analysis equals the full EKF's, ``ekf``
switches to it above ``max_dense_state``, and ``ekf`` runs on an SVF state of
n > 4096.
"""

import tracemalloc

import numpy as np
import pytest

from filters import (EKF, RTPP, RTPS, AdditiveInflation, DiagonalEKF, KalmanFilter,
                     MultiplicativeInflation, assimilate)
from filters.covariance import as_covariance
from filters.kalman import diagonal_kalman_analysis, diagonal_kalman_predict, kalman_analysis
from filters.models import CallableObservation, LinearObservation, Lorenz96, Model
from filters.settings import linear_gaussian, sakov2008
from filters.states import DiagonalGaussianState, GaussianState

EXACT = 1e-10  # float64 identities (relative to the magnitude of the compared numbers)


def close(a, b, tol=EXACT):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max()) <= tol * max(1.0, float(np.abs(b).max()))


def spd(rng, m):
    A = rng.standard_normal((m, m))
    return A @ A.T + m * np.eye(m)


class Componentwise(Model):
    """x_i <- x_i + dt sin(x_i): nonlinear, Jacobian diagonal."""

    def __init__(self, n, with_diagonal):
        self.ndim = n
        if with_diagonal:  # the O(n) hook the diagonal EKF looks for
            self.jacobian_diagonal = lambda x, t, dt: 1.0 + dt * np.cos(x)

    def step(self, x, t, dt):
        return x + dt * np.sin(x)

    def jacobian(self, x, t, dt):
        return np.diag(1.0 + dt * np.cos(x))


def sparse_obs(rng, n, m):
    """y_j = c_j * x_{i_j}^3 / 3 + x_{i_j} on distinct components i_j: one nonzero per row."""
    idx = rng.choice(n, size=m, replace=False)
    c = rng.uniform(0.5, 2.0, size=m)

    def fun(x):
        return c * (x[..., idx] ** 3 / 3.0 + x[..., idx])

    def jac(x):
        J = np.zeros((m, n))
        J[np.arange(m), idx] = c * (x[idx] ** 2 + 1.0)
        return J

    return CallableObservation(fun, ndim=n, nobs=m, jacobian=jac)


# ------------------------------------------------------------------ equations
def test_one_analysis_from_a_diagonal_prior_is_the_full_one():
    """Dense H, full R: mean and the diagonal of the covariance equal the full analysis."""
    rng = np.random.default_rng(0)
    for n, m in [(9, 6), (5, 12), (40, 40)]:
        mean, p = rng.standard_normal(n), rng.uniform(0.1, 3.0, n)
        H, d = rng.standard_normal((m, n)), rng.standard_normal(m)
        R = as_covariance(spd(rng, m), m, "R")
        m_full, P_full = kalman_analysis(mean, np.diag(p), d, H, R)
        m_diag, v_diag = diagonal_kalman_analysis(mean, p, d, H, R)
        assert close(m_diag, m_full) and close(v_diag, np.diag(P_full)), (n, m)
        assert np.all(v_diag > 0) and np.all(v_diag <= p)


def test_the_forecast_variances_are_the_diagonal_of_the_full_forecast():
    rng = np.random.default_rng(1)
    n = 7
    p, q, F = rng.uniform(0.1, 2.0, n), rng.uniform(0.0, 0.5, n), rng.standard_normal((n, n))
    full = F @ np.diag(p) @ F.T + np.diag(q)
    assert close(diagonal_kalman_predict(p, F, q), np.diag(full))
    f = rng.standard_normal(n)  # a diagonal Jacobian given by its diagonal
    assert close(diagonal_kalman_predict(p, f), np.diag(np.diag(f) @ np.diag(p) @ np.diag(f)))


def test_one_cycle_on_lorenz96_matches_the_full_ekf():
    """Forecast (full RK4 Jacobian) then analysis (nonlinear H): the diagonal of the full EKF."""
    rng = np.random.default_rng(2)
    model, n, m = Lorenz96(), 40, 25
    x0, p = 3.0 * rng.standard_normal(n), rng.uniform(0.1, 1.0, n)
    Q = as_covariance(rng.uniform(0.01, 0.1, n), n, "Q")
    full, diag = EKF(infl_rate=1.3), DiagonalEKF(infl_rate=1.3)
    fs = full.forecast(GaussianState(x0, np.diag(p)), model, 0.0, 0.05, 1, Q, None)
    ds = diag.forecast(DiagonalGaussianState(x0, p), model, 0.0, 0.05, 1, Q, None)
    assert close(ds.mean, fs.mean) and close(ds.variances, np.diag(fs.cov))
    W = rng.standard_normal((m, n)) / np.sqrt(n)
    H = CallableObservation(lambda x: np.tanh(x @ W.T), ndim=n, nobs=m,
                            jacobian=lambda x: (1.0 - np.tanh(W @ x) ** 2)[:, None] * W)
    R = as_covariance(0.5, m, "R")
    y = H(x0) + 0.3 * rng.standard_normal(m)
    start = GaussianState(ds.mean, np.diag(ds.variances))  # the same diagonal prior
    fa = full.analysis(start, y, H, R, None)
    da = diag.analysis(ds, y, H, R, None)
    assert close(da.mean, fa.mean) and close(da.variances, np.diag(fa.cov))


@pytest.mark.parametrize("with_diagonal", [True, False])
@pytest.mark.parametrize("Q_var", [0.05, None])
def test_a_problem_that_stays_diagonal_gives_the_full_ekf_exactly(with_diagonal, Q_var):
    """Componentwise model, diagonal Q and R, one nonzero per row of H: 30 cycles identical."""
    rng = np.random.default_rng(3)
    n, m, T = 12, 7, 30
    model = Componentwise(n, with_diagonal)
    H = sparse_obs(rng, n, m)
    R = as_covariance(rng.uniform(0.2, 1.0, m), m, "R")
    Q = None if Q_var is None else as_covariance(rng.uniform(0.5, 1.5, n) * Q_var, n, "Q")
    prior = GaussianState(rng.standard_normal(n), np.diag(rng.uniform(0.2, 1.0, n)))
    full, diag = EKF(infl_rate=1.1), DiagonalEKF(infl_rate=1.1)
    fs, ds = full.initialize(prior, None), diag.initialize(prior, None)
    for k in range(T):
        if k:
            fs = full.forecast(fs, model, 0.1 * k, 0.1, 3, Q, None)
            ds = diag.forecast(ds, model, 0.1 * k, 0.1, 3, Q, None)
        y = H(fs.mean) + rng.standard_normal(m)
        fs, ds = full.analysis(fs, y, H, R, None), diag.analysis(ds, y, H, R, None)
        off = fs.cov - np.diag(np.diag(fs.cov))
        assert float(np.abs(off).max()) < 1e-14  # the full EKF's covariance stays diagonal
        assert close(ds.mean, fs.mean) and close(ds.variances, np.diag(fs.cov)), k


def test_the_two_filters_differ_once_correlations_matter():
    """Dense H: after the second analysis the dropped correlations change the result."""
    rng = np.random.default_rng(4)
    n, m = 6, 4
    H = LinearObservation(rng.standard_normal((m, n)))
    R = as_covariance(0.5, m, "R")
    prior = GaussianState(np.zeros(n), np.eye(n))
    full, diag = EKF(), DiagonalEKF()
    fs, ds = full.initialize(prior, None), diag.initialize(prior, None)
    for _ in range(2):
        y = rng.standard_normal(m)
        fs, ds = full.analysis(fs, y, H, R, None), diag.analysis(ds, y, H, R, None)
    assert not close(ds.mean, fs.mean, 1e-6)


def test_missing_observations_and_inflation_match_the_full_ekf():
    rng = np.random.default_rng(5)
    n, m = 8, 5
    H = LinearObservation(rng.standard_normal((m, n)))
    R = as_covariance(rng.uniform(0.3, 1.0, m), m, "R")
    p = rng.uniform(0.2, 1.0, n)
    y = rng.standard_normal(m)
    y[[1, 3]] = np.nan
    for inflation in (MultiplicativeInflation(1.3), AdditiveInflation(0.2), RTPS(0.6),
                      [MultiplicativeInflation(1.1), RTPS(0.3)]):
        fa = EKF(inflation=inflation).analysis(GaussianState(np.zeros(n), np.diag(p)), y, H,
                                               R, None)
        da = DiagonalEKF(inflation=inflation).analysis(DiagonalGaussianState(np.zeros(n), p),
                                                       y, H, R, None)
        assert close(da.mean, fa.mean) and close(da.variances, np.diag(fa.cov)), inflation
    with pytest.raises(ValueError, match="RTPP is not available for the diagonal EKF"):
        DiagonalEKF(inflation=RTPP(0.5)).validate()
    with pytest.raises(ValueError, match="infl_rate must be > 0"):
        DiagonalEKF(infl_rate=0.0).validate()


# ------------------------------------------------------------------- cycling
def test_stable_on_lorenz96_with_every_component_observed():
    """sakov2008 (n = 40, R = I): analysis RMSE well below the observation error."""
    ds = assimilate(DiagonalEKF(infl_rate=50.0), sakov2008(n_obs=500), seed=3)
    assert np.all(np.isfinite(ds.analysis_mean.values))
    assert float(ds.attrs["rmse_analysis_mean"]) < 0.5  # measured 0.37; full EKF 0.26


def test_close_to_the_kalman_filter_on_a_linear_gaussian_system():
    """A rotating linear system (non-diagonal M), half observed: RMSE within 2% of the KF."""
    s = linear_gaussian(n=10, m=5, n_obs=400)
    kf = float(assimilate(KalmanFilter(), s, seed=1).attrs["rmse_analysis_mean"])
    dk = float(assimilate(DiagonalEKF(), s, seed=1).attrs["rmse_analysis_mean"])
    assert dk < 1.02 * kf, (dk, kf)  # measured 0.4141 vs 0.4137


def test_large_state_analysis_uses_no_n_by_n_matrix():
    """n = 50000, m = 32: memory O(n m) (an n x n float64 matrix would be 20 GB)."""
    rng = np.random.default_rng(6)
    n, m = 50_000, 32
    H = rng.standard_normal((m, n)).astype(float) / np.sqrt(n)
    obs = LinearObservation(H)
    state = DiagonalGaussianState(np.zeros(n), np.full(n, 0.1))
    tracemalloc.start()
    out = DiagonalEKF().analysis(state, rng.standard_normal(m), obs, as_covariance(1.0, m),
                                 None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.variances.shape == (n,) and np.all(out.variances > 0)
    assert peak < 8 * n * m * 8  # a few (n, m) arrays


# ------------------------------------------------------------ language models
@pytest.fixture(scope="module")
def gpt2():
    from da_embed.testing import tiny_gpt2

    return tiny_gpt2(seed=0, initializer_range=0.4)


def _stream(model, length=81):
    from da_embed.testing import random_input_ids

    return random_input_ids(model, batch=1, length=length, seed=0)[0].numpy()


def test_first_chunk_analysis_equals_the_full_ekf_on_hidden_scale(gpt2, one_torch_thread):
    """From the prior N(0, P0 I) the first analysis is exact; later chunks differ."""
    from da_embed.assimilator import OnlineAssimilator, PrequentialConfig
    from da_embed.placements import HiddenScale

    protocol = PrequentialConfig(chunk=8, context=16)
    ids = _stream(gpt2)
    full = OnlineAssimilator(HiddenScale(gpt2), "ekf", protocol=protocol).run(ids)
    diag = OnlineAssimilator(HiddenScale(gpt2), "ekf-diag", protocol=protocol).run(ids)
    assert full.attrs["filter"] == "EKF" and diag.attrs["filter"] == "diagonal EKF"
    assert close(diag.analysis_mean.values[0], full.analysis_mean.values[0], 1e-9)
    assert close(diag.analysis_spread.values[0], full.analysis_spread.values[0], 1e-9)
    assert not close(diag.analysis_mean.values[-1], full.analysis_mean.values[-1], 1e-6)
    # The full EKF's covariance is far from diagonal, so the equality of the
    # first analysis is the diagonal-prior identity, not a trivial case.
    C = full.analysis_covariance.values
    assert np.abs(C - np.diag(np.diag(C))).max() > 1e-3 * np.abs(np.diag(C)).max()
    assert np.isfinite(diag.attrs["perplexity"]) and diag.attrs["status"] == "complete"


def test_ekf_switches_to_the_diagonal_filter_above_max_dense_state(gpt2, one_torch_thread):
    from da_embed.assimilator import OnlineAssimilator, PrequentialConfig
    from da_embed.placements import HiddenScale

    protocol = PrequentialConfig(chunk=8, context=16)
    ids = _stream(gpt2)
    auto = OnlineAssimilator(HiddenScale(gpt2), "ekf", protocol=protocol,
                             max_dense_state=16).run(ids)
    named = OnlineAssimilator(HiddenScale(gpt2), "ekf-diag", protocol=protocol).run(ids)
    obj = OnlineAssimilator(HiddenScale(gpt2), EKF(), protocol=protocol, max_dense_state=16)
    given = obj.run(ids)  # an EKF object switches too (compare passes objects)
    assert auto.attrs["filter"] == "diagonal EKF" and auto.attrs["method"] == "ekf"
    assert given.attrs["filter"] == "diagonal EKF" and isinstance(obj.filter_, DiagonalEKF)
    for ds in (auto, given):
        np.testing.assert_array_equal(ds.analysis_mean.values, named.analysis_mean.values)
        np.testing.assert_array_equal(ds.analysis_spread.values, named.analysis_spread.values)
    with pytest.raises(ValueError, match="3dvar keeps an n x n covariance; n = 32 exceeds"):
        OnlineAssimilator(HiddenScale(gpt2), "3dvar", protocol=protocol,
                          max_dense_state=16).run(ids)


def test_ekf_runs_on_an_svf_state_larger_than_4096(one_torch_thread):
    """SVF on every matrix of a 17-layer tiny GPT-2: n = 4352 > 4096 with the defaults."""
    from da_embed.assimilator import OnlineAssimilator, PrequentialConfig
    from da_embed.compare import make_placement
    from da_embed.testing import tiny_gpt2

    model = tiny_gpt2(seed=0, n_embd=64, n_layer=17, initializer_range=0.1)
    placement = make_placement(model, "svf:all")
    assert placement.state_dim == 4352
    run = OnlineAssimilator(placement, "ekf", protocol=PrequentialConfig(chunk=8, context=16))
    ds = run.run(_stream(model, 33))
    assert ds.attrs["filter"] == "diagonal EKF" and ds.sizes["time"] == 4
    assert isinstance(run.state_, DiagonalGaussianState)
    assert np.all(np.isfinite(ds.analysis_mean.values))
    moved = np.abs(ds.analysis_mean.values[-1]).max()
    assert moved > 0  # the observations moved the state
    assert np.all(ds.analysis_spread.values[-1] <= np.sqrt(0.1 + 4 * 0.01) + 1e-12)


def test_cli_ekf_on_an_svf_state_larger_than_4096(tmp_path, capsys, one_torch_thread):
    """``da-embed compare --placement svf:all --methods ekf`` with n = 4352: it runs."""
    from da_embed.cli import main
    from da_embed.reference import train_tokenizer
    from da_embed.testing import tiny_gpt2
    from da_embed.trajectory import open_trajectory

    text = "The quick brown fox jumps over the lazy dog; 速い 🦊.\n" * 30
    tokenizer = train_tokenizer(text, vocab_size=300)
    model = tiny_gpt2(seed=0, n_embd=64, n_layer=17, vocab_size=len(tokenizer),
                      initializer_range=0.1)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    code = main(["compare", "--model", str(tmp_path / "model"), "--corpus",
                 str(tmp_path / "corpus.txt"), "--placement", "svf:all", "--methods",
                 "frozen,ekf", "--chunk", "8", "--context", "16", "--max-tokens", "41",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "(state n = 4352)" in out.out
    ds = open_trajectory(tmp_path / "out" / "ekf.nc")
    assert ds.attrs["filter"] == "diagonal EKF" and ds.sizes["time"] == 5
