"""The speed work of issue 12 part 2 keeps the compiled path's results.

* ``_eigh_small`` (the compiled ETKF's eigendecomposition, filters/_compiled/_eigen.py)
  against its numpy twin ``numpy.linalg.eigh``: eigenvalues, orthonormal vectors
  and the ETKF's matrix functions ``V f(d) V^T`` to rounding; non-finite input
  goes to LAPACK as before.
* The compiled ETKF against the generic one: no longer bitwise (the eigen-solver
  differs from LAPACK's ``dsyevd`` at rounding level), held to 1e-12 relative.
* The counting sort of the CRPS kernel gives numpy's result bitwise, ties included.
* ``etkf_analysis`` with several column blocks (preallocated work arrays) equals the
  unblocked formula.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filters import ETKF, assimilate
from filters._compiled import _block
from filters._compiled._eigen import _eigh_small
from filters.covariance import as_covariance
from filters.ensemble import _equations, etkf_analysis
from filters.metrics import crps_ensemble
from filters.settings import linear_gaussian, sakov2008, sakov2012


def _ens_matrix(rng, N, m, scale):
    Y = scale * rng.standard_normal((N, m))
    Y -= Y.mean(axis=0)
    C = Y @ Y.T
    C.flat[:: N + 1] += N - 1.0
    return C


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), N=st.integers(2, 64), m=st.integers(1, 80),
       log_scale=st.floats(-4.0, 3.0))
def test_eigh_small_equals_numpy_eigh(seed, N, m, log_scale):
    C = _ens_matrix(np.random.default_rng(seed), N, m, 10.0**log_scale)
    d, V = _eigh_small(C)
    d0, V0 = np.linalg.eigh(C)
    big = np.abs(d0).max()
    np.testing.assert_allclose(d, d0, rtol=0, atol=1e-13 * big)
    assert np.all(np.diff(d) >= 0)
    assert V.flags.c_contiguous
    np.testing.assert_allclose(V.T @ V, np.eye(N), rtol=0, atol=1e-13 * N)
    np.testing.assert_allclose((V * d) @ V.T, C, rtol=0, atol=1e-13 * big)
    # The ETKF's symmetric square root of the inverse, as the generic path computes it.
    T, T0 = ((W * (1.0 / np.sqrt(e))) @ W.T for e, W in ((d, V), (d0, V0)))
    np.testing.assert_allclose(T, T0, rtol=0, atol=1e-12 * np.abs(T0).max() * big / d0.min())


@pytest.mark.parametrize("C", [np.eye(5) * 3.0, np.zeros((4, 4)), np.array([[2.0]]),
                               np.diag([1.0, 1.0, 2.0, 2.0]) + 1e-300])
def test_eigh_small_special_matrices(C):
    d, V = _eigh_small(C)
    # LAPACK itself is 1.3e-15 off the exact eigenvalue 1 of the last matrix.
    np.testing.assert_allclose(d, np.linalg.eigh(C)[0], rtol=0, atol=4e-15)
    np.testing.assert_allclose((V * d) @ V.T, C, rtol=0, atol=4e-15)


def test_eigh_small_non_finite_goes_to_lapack():
    C = np.eye(3)
    C[1, 0] = C[0, 1] = np.nan
    try:
        d, _ = _eigh_small(C)
    except np.linalg.LinAlgError:
        return
    assert not np.all(np.isfinite(d))


@pytest.mark.parametrize("name,setting", [("l96", sakov2008(n_obs=30)), ("l63", sakov2012(n_obs=30)),
                                          ("lg", linear_gaussian(n=4, n_obs=30, seed=1))])
@pytest.mark.parametrize("N", [10, 28])
def test_compiled_etkf_equals_generic_to_1e12(name, setting, N):
    runs = [assimilate(ETKF(N=N, inflation=1.02, rotate=True), setting, seed=3, compiled=c)
            for c in (True, False)]
    for v in runs[0].data_vars:
        if v == "wall_time":
            continue
        a, b = runs[0][v].values, runs[1][v].values
        scale = max(1.0, float(np.nanmax(np.abs(b)))) if b.size else 1.0
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * scale, err_msg=f"{name} {v}")


@pytest.mark.parametrize("N,n,ties", [(28, 40, False), (28, 40, True), (7, 40, True), (2, 3, True),
                                      (100, 50, False)])
def test_crps_counting_sort_is_numpy_bitwise(N, n, ties):
    rng = np.random.default_rng(N * n)
    for _ in range(10):
        E = rng.standard_normal((N, n))
        if ties:
            E = np.round(2 * E) / 2
        truth = rng.standard_normal(n)
        rank = np.zeros(n, np.int16)
        assert _block._scores(E, truth, rank) == crps_ensemble(E, truth).mean()
        np.testing.assert_array_equal(rank, np.sum(E < truth, axis=0))


def test_etkf_analysis_blocks_equal_unblocked(monkeypatch):
    rng = np.random.default_rng(5)
    N, n, m = 12, 1000, 30
    E = 3.0 + rng.standard_normal((N, n))
    HE = E[:, :m] + 0.1 * rng.standard_normal((N, m))
    y = rng.standard_normal(m)
    R = as_covariance(0.5, m)
    whole = etkf_analysis(E, HE, y, R)
    # 8 * 12 * 256 bytes: blocks of 256 columns, the last one short (1000 = 3 * 256 + 232).
    monkeypatch.setattr(_equations, "_ETKF_BLOCK_BYTES", 8 * N * 256)
    blocked = etkf_analysis(E, HE, y, R)
    np.testing.assert_allclose(blocked, whole, rtol=0, atol=1e-13)
