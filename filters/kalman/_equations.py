"""The Kalman equations as pure functions of arrays: prediction, analysis, smoothing.

The filter classes of :mod:`filters.kalman` (``._filters``) are short loops
over these functions.

References
----------
Kalman (1960); Rauch, Tung & Striebel (1965); Bucy & Joseph (1968) for the
Joseph-form covariance update.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ..base import symmetrize
from ..covariance import Covariance

__all__ = ["kalman_predict", "kalman_analysis", "rts_smoother", "diagonal_kalman_predict",
           "diagonal_kalman_analysis"]


def kalman_predict(mean: np.ndarray, cov: np.ndarray, F: np.ndarray, Q: np.ndarray | None,
                   new_mean: np.ndarray | None = None):
    """One prediction step: ``(F m, F P F^T + Q)``.

    Parameters
    ----------
    mean : ndarray (n,)
    cov : ndarray (n, n)
    F : ndarray (n, n)
        Transition matrix (or the model's Jacobian, for the EKF).
    Q : ndarray (n, n) or None
        Process-noise covariance of this step.
    new_mean : ndarray (n,), optional
        The propagated mean when the model is nonlinear (EKF); ``F m`` otherwise.

    Returns
    -------
    mean, cov : ndarray (n,), ndarray (n, n)

    Examples
    --------
    >>> F = np.array([[1.0, 1.0], [0.0, 1.0]])  # constant velocity
    >>> m, P = kalman_predict(np.array([1.0, 0.0]), np.eye(2), F, 0.1 * np.eye(2))
    >>> m.tolist(), P.round(6).tolist()
    ([1.0, 0.0], [[2.1, 1.0], [1.0, 1.1]])
    """
    m = F @ mean if new_mean is None else new_mean
    # An identity F (the random walk of the LM scale states) leaves P as it is, bit for bit;
    # the O(n^2) check saves two O(n^3) products.
    P = cov if _is_identity(F) else F @ cov @ F.T
    if Q is not None:
        P = P + Q
    return m, symmetrize(P)


def kalman_analysis(mean: np.ndarray, cov: np.ndarray, innovation: np.ndarray, H: np.ndarray,
                    R: Covariance):
    """Kalman analysis in Joseph form.

    Parameters
    ----------
    mean : ndarray (n,)
    cov : ndarray (n, n)
    innovation : ndarray (m,)
        ``y - h(mean)``.
    H : ndarray (m, n)
        Observation operator (or its Jacobian at the mean).
    R : Covariance
        Observation-error covariance (m, m).

    Returns
    -------
    mean, cov : ndarray (n,), ndarray (n, n)
        ``m + K d`` and ``(I - K H) P (I - K H)^T + K R K^T`` with
        ``K = P H^T (H P H^T + R)^{-1}``.

    Examples
    --------
    >>> from filters.covariance import as_covariance
    >>> m, P = kalman_analysis(np.zeros(1), np.eye(1), np.array([1.0]), np.eye(1),
    ...                        as_covariance(1.0, 1))
    >>> m.round(12).tolist(), P.round(12).tolist()
    ([0.5], [[0.5]])
    """
    PHt = cov @ H.T  # (n, m)
    S = symmetrize(H @ PHt + R.dense)  # (m, m)
    cho = sla.cho_factor(S, lower=True, check_finite=False)
    K = sla.cho_solve(cho, PHt.T, check_finite=False).T  # (n, m)
    new_mean = mean + K @ innovation
    # The Joseph form, associated so that every product is O(n^2 m) rather than O(n^3):
    # (I - K H) P (I - K H)^T = M - (M H^T) K^T with M = P - K (P H^T)^T.
    M = cov - K @ PHt.T
    KR = K * R.diag if R.is_diagonal else K @ R.matrix
    P = M - (M @ H.T) @ K.T + KR @ K.T
    return new_mean, symmetrize(P)


def _is_identity(F: np.ndarray) -> bool:
    """Whether the square matrix ``F`` is exactly the identity (O(n^2), no copy of size n^2)."""
    n = F.shape[0]
    if F.ndim != 2 or F.shape[1] != n or not np.all(F.diagonal() == 1.0):
        return False
    return np.count_nonzero(F) == n


def rts_smoother(filtered_mean, filtered_cov, predicted_mean, predicted_cov, transitions):
    """Rauch-Tung-Striebel backward pass.

    Parameters
    ----------
    filtered_mean, filtered_cov : (T, n), (T, n, n)
        Analysis moments at times 1..T.
    predicted_mean, predicted_cov : (T, n), (T, n, n)
        Forecast moments at times 1..T.
    transitions : (T - 1, n, n)
        ``F_k`` with ``x_{k+1} = F_k x_k + noise`` between analysis times.

    Returns
    -------
    mean, cov : (T, n), (T, n, n)
        Smoothed moments.

    Examples
    --------
    >>> # a scalar random walk, two analysis times
    >>> ms, Ps = rts_smoother(np.array([[0.0], [1.0]]), np.array([[[1.0]], [[0.5]]]),
    ...                       np.array([[0.0], [0.0]]), np.array([[[2.0]], [[2.0]]]),
    ...                       np.array([[[1.0]]]))
    >>> ms.ravel().round(12).tolist(), Ps.ravel().round(12).tolist()  # exact up to rounding
    ([0.5, 1.0], [0.625, 0.5])
    """
    T = filtered_mean.shape[0]
    ms = filtered_mean.copy()
    Ps = filtered_cov.copy()
    for k in range(T - 2, -1, -1):
        F = transitions[k]
        G = sla.solve(predicted_cov[k + 1], F @ filtered_cov[k], assume_a="pos").T  # P F^T Pp^-1
        ms[k] = filtered_mean[k] + G @ (ms[k + 1] - predicted_mean[k + 1])
        Ps[k] = symmetrize(filtered_cov[k] + G @ (Ps[k + 1] - predicted_cov[k + 1]) @ G.T)
    return ms, Ps


# The diagonal-covariance equations (large states, :class:`~filters.kalman.DiagonalEKF`).
#: Floor of a posterior variance, relative to its prior variance (guards round-off).
_DIAG_VAR_FLOOR = 1e-12


def diagonal_kalman_predict(variances: np.ndarray, F: np.ndarray, Q: np.ndarray | None = None):
    """The diagonal of ``F diag(p) F^T + diag(q)``: the forecast variances.

    Parameters
    ----------
    variances : ndarray (n,)
        p, the diagonal of the current covariance (assumed diagonal).
    F : ndarray (n,) or (n, n)
        The model's Jacobian: its diagonal when the model acts component by
        component (then the result is exact), or the full matrix.
    Q : ndarray (n,), optional
        q, the process-noise variances of this step.

    Returns
    -------
    ndarray (n,)
        ``F**2 * p + q`` for a diagonal ``F``, ``(F * F) @ p + q`` for a full
        one: the exact diagonal of the full forecast covariance ``F P F^T + Q``
        from a diagonal ``P`` (its off-diagonal part is dropped).

    Examples
    --------
    >>> diagonal_kalman_predict(np.array([1.0, 2.0]), np.array([[1.0, 1.0], [0.0, 1.0]]),
    ...                         np.array([0.1, 0.1])).tolist()
    [3.1, 2.1]
    """
    p = np.asarray(variances, dtype=float)
    F = np.asarray(F, dtype=float)
    out = F * F * p if F.ndim == 1 else (F * F) @ p
    return out if Q is None else out + Q


def diagonal_kalman_analysis(mean: np.ndarray, variances: np.ndarray, innovation: np.ndarray,
                             H: np.ndarray, R: Covariance):
    """Kalman analysis from a diagonal prior covariance, keeping the posterior's diagonal.

    With ``P = diag(p)`` the gain ``K = P H^T (H P H^T + R)^{-1}`` costs
    O(n m^2) and O(n m) memory (no n x n matrix is formed); the posterior
    covariance ``P - K H P`` is reduced to its diagonal,
    ``p_i - sum_j K_ij (P H^T)_ij``.

    Parameters
    ----------
    mean : ndarray (n,)
    variances : ndarray (n,)
        p, the prior variances (> 0).
    innovation : ndarray (m,)
        ``y - h(mean)``.
    H : ndarray (m, n)
        Observation operator (or its Jacobian at the mean).
    R : Covariance
        Observation-error covariance (m, m), diagonal or full.

    Returns
    -------
    mean, variances : ndarray (n,), ndarray (n,)
        ``m + K d`` (the full Kalman filter's analysis mean for this prior) and
        ``diag(P - K H P)`` (floored at 1e-12 times the prior variance
        against round-off).

    Notes
    -----
    From a diagonal prior both outputs are exact: the mean is the full
    Kalman analysis mean and the variances are the diagonal of the full
    posterior covariance.  What is lost is the posterior's off-diagonal part,
    which the next cycle assumes zero.  For revealed-token observations with
    ``H`` the per-token gradients this is the diagonal-Fisher form of online
    natural gradient (Ollivier 2018, "Online natural gradient as a Kalman
    filter"): the precision ``P^{-1}`` accumulates ``H^T R^{-1} H`` but only
    its diagonal survives each cycle.

    Examples
    --------
    >>> from filters.covariance import as_covariance
    >>> m, v = diagonal_kalman_analysis(np.zeros(2), np.array([1.0, 3.0]), np.array([1.0]),
    ...                                 np.array([[1.0, 0.0]]), as_covariance(1.0, 1))
    >>> m.round(12).tolist(), v.round(12).tolist()  # the observed component halves its variance
    ([0.5, 0.0], [0.5, 3.0])
    """
    p = np.asarray(variances, dtype=float)
    PHt = H.T * p[:, None]  # (n, m)
    S = symmetrize(H @ PHt + R.dense)  # (m, m), O(n m^2)
    cho = sla.cho_factor(S, lower=True, check_finite=False)
    K = sla.cho_solve(cho, PHt.T, check_finite=False).T  # (n, m)
    new_mean = mean + K @ innovation
    reduction = np.einsum("ij,ij->i", K, PHt)  # diag(K H P), (n,)
    return new_mean, np.maximum(p - reduction, _DIAG_VAR_FLOOR * p)
