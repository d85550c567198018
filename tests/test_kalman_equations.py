"""The Kalman equations against their textbook forms, written out here.

``kalman_analysis`` associates the Joseph form so that each product is
O(n^2 m); ``kalman_predict`` skips ``F P F^T`` for an identity ``F``.  Both
must equal the plain expressions: the analysis to rounding (1e-12 relative),
the identity prediction bit for bit.
"""

import numpy as np
import pytest

from filters.covariance import as_covariance
from filters.kalman import kalman_analysis, kalman_predict


def _spd(rng, n):
    A = rng.standard_normal((n, n))
    return A @ A.T / n + 0.1 * np.eye(n)


def _joseph(mean, P, d, H, R):
    """The textbook Joseph form: (I - K H) P (I - K H)^T + K R K^T."""
    K = P @ H.T @ np.linalg.inv(H @ P @ H.T + R)
    IKH = np.eye(P.shape[0]) - K @ H
    return mean + K @ d, IKH @ P @ IKH.T + K @ R @ K.T


@pytest.mark.parametrize("n,m", [(1, 1), (5, 3), (40, 8), (12, 30)])
@pytest.mark.parametrize("diagonal", [True, False])
def test_analysis_is_the_joseph_form(n, m, diagonal):
    rng = np.random.default_rng(n * 100 + m)
    P, H = _spd(rng, n), rng.standard_normal((m, n))
    R = np.diag(rng.uniform(0.2, 2.0, m)) if diagonal else _spd(rng, m)
    mean, d = rng.standard_normal(n), rng.standard_normal(m)
    got_m, got_P = kalman_analysis(mean, P, d, H, as_covariance(np.diag(R) if diagonal else R, m))
    want_m, want_P = _joseph(mean, P, d, H, R)
    np.testing.assert_allclose(got_m, want_m, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_P, want_P, rtol=1e-10, atol=1e-12 * np.abs(want_P).max())
    np.testing.assert_array_equal(got_P, got_P.T)


def test_identity_prediction_is_exact_and_other_transitions_are_not_skipped():
    rng = np.random.default_rng(1)
    P, Q, m = _spd(rng, 6), 0.01 * np.eye(6), rng.standard_normal(6)
    _, got = kalman_predict(m, P, np.eye(6), Q)
    np.testing.assert_array_equal(got, 0.5 * ((P + Q) + (P + Q).T))
    F = np.eye(6)
    F[2, 3] = 0.5  # one off-diagonal entry: not the identity
    _, got = kalman_predict(m, P, F, Q)
    np.testing.assert_allclose(got, F @ P @ F.T + Q, rtol=1e-12)
    F = np.eye(6) * 2.0  # the right zeros, the wrong diagonal
    _, got = kalman_predict(m, P, F, None)
    np.testing.assert_allclose(got, 4.0 * P, rtol=1e-12)
