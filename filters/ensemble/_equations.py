"""The ensemble Kalman analyses as pure functions of arrays (EnKF, ETKF, DEnKF, EnSRF, LETKF).

The filter classes of :mod:`filters.ensemble` (``._filters``) are short loops
over these functions.

All analyses work in ensemble space with whitened observation anomalies
``Y = (HE - mean) R^{-1/2}``, so their cost is dominated by two dense products
(``Y Y^T``: 2 m N^2 flops, and the transform applied to the anomalies:
2 n N^2 flops) that go to BLAS.  The serial EnSRF and the LETKF loops run in
Numba (:mod:`filters._kernels`).

Conventions follow DAPPER (Raanes et al.): anomalies use the divisor N - 1,
multiplicative inflation scales the analysis anomalies, and the random
rotation is mean-preserving.

References
----------
Burgers, van Leeuwen & Evensen (1998) perturbed observations;
Bishop, Etherton & Majumdar (2001), Wang et al. (2004), Sakov & Oke (2008b)
symmetric square-root ETKF; Sakov & Oke (2008a) DEnKF; Whitaker & Hamill (2002)
serial EnSRF; Hunt, Kostelich & Szunyogh (2007) LETKF; Gaspari & Cohn (1999).
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from .. import _kernels
from .._validation import as_float_array, check_positive
from ..covariance import Covariance

__all__ = ["enkf_analysis", "etkf_analysis", "denkf_analysis", "ensrf_analysis",
           "letkf_analysis", "gaspari_cohn", "taper_matrix", "random_rotation",
           "GC_HALF_WIDTH_PER_RADIUS"]


# ----------------------------------------------------------------------------
# Equations (pure functions). E (N, n) members, HE (N, m), y (m,), R (m, m).
# ----------------------------------------------------------------------------
def _whitened_obs(HE, y, R: Covariance):
    """Whitened observation anomalies ``Y`` (N, m) and mean innovation ``dy`` (m,)."""
    ym = HE.mean(axis=0)
    Y = HE - ym  # a new (N, m) array
    if R.is_diagonal and Y.dtype == np.float64:
        # Same values as R.whiten(Y) (same division), without a second (N, m) array.
        sd = np.sqrt(R.diag)
        Y /= sd
        return Y, (y - ym) / sd
    return R.whiten(Y), R.whiten(y - ym)


def _whitened(E, HE, y, R: Covariance):
    mu = E.mean(axis=0)
    A = E - mu  # (N, n)
    Y, dy = _whitened_obs(HE, y, R)  # (N, m), (m,)
    return mu, A, Y, dy


#: Column-block size (bytes of an (N, block) slice of E) of the ETKF transform.
_ETKF_BLOCK_BYTES = 1 << 21


def _ens_space_gain(Y: np.ndarray) -> np.ndarray:
    """``(Y Y^T + (N-1) I)^{-1}``, shape (N, N), by Cholesky."""
    N = Y.shape[0]
    C = Y @ Y.T
    C.flat[:: N + 1] += N - 1.0
    L = np.linalg.cholesky(C)
    Linv = np.linalg.solve(L, np.eye(N))
    return Linv.T @ Linv


def enkf_analysis(E, HE, y, R: Covariance, rng: np.random.Generator) -> np.ndarray:
    """Stochastic EnKF with perturbed observations (Burgers et al. 1998).

    The perturbations are centred (zero ensemble mean) so that the mean update
    is exactly the Kalman update with the ensemble covariance.

    Parameters
    ----------
    E : ndarray (N, n)
        Forecast members.
    HE : ndarray (N, m)
        Observed members ``H(E)``.
    y : ndarray (m,)
        Observations.
    R : Covariance
        Observation-error covariance.
    rng : numpy.random.Generator
        Draws the perturbations.

    Returns
    -------
    ndarray (N, n)
        Analysis members ``E + K (y + D - HE)``, ``K = A^T Y (Y^T Y + (N-1) R)^{-1}``
        evaluated in ensemble space.

    Examples
    --------
    >>> from filters.covariance import as_covariance
    >>> rng = np.random.default_rng(0)
    >>> E = rng.standard_normal((200, 2)) + [1.0, 0.0]  # observe the first component
    >>> Ea = enkf_analysis(E, E[:, :1], np.array([0.0]), as_covariance(1.0, 1), rng)
    >>> E.mean(axis=0).round(1).tolist(), Ea.mean(axis=0).round(2).tolist()
    ([0.9, 0.0], [0.46, 0.0])
    """
    N = E.shape[0]
    mu, A, Y, _ = _whitened(E, HE, y, R)
    D = rng.standard_normal((N, y.shape[0]))
    D -= D.mean(axis=0)  # centred perturbations, already white
    innov = R.whiten(y - HE) - D  # (N, m): whitened y - d_j - H(x_j)
    G = _ens_space_gain(Y)  # (N, N)
    return E + ((innov @ Y.T) @ G) @ A


def etkf_analysis(E, HE, y, R: Covariance) -> np.ndarray:
    """Ensemble transform Kalman filter with the symmetric square root.

    Parameters
    ----------
    E, HE, y, R
        As in :func:`enkf_analysis`; there is no ``rng``, as the transform draws
        nothing.

    Returns
    -------
    ndarray (N, n)
        ``mu + (w + T) A`` with ``C = Y Y^T + (N-1) I = V diag(d) V^T``,
        ``T = sqrt(N-1) V diag(d^{-1/2}) V^T`` and ``w = C^{-1} Y dy``.

    Examples
    --------
    >>> from filters.covariance import as_covariance
    >>> rng = np.random.default_rng(0)
    >>> E = rng.standard_normal((50, 2))
    >>> Ea = etkf_analysis(E, E[:, :1], np.array([0.3]), as_covariance(1.0, 1))
    >>> Ea.shape
    (50, 2)
    """
    N, n = E.shape
    Y, dy = _whitened_obs(HE, y, R)
    C = Y @ Y.T  # (N, N)
    C.flat[:: N + 1] += N - 1.0
    d, V = np.linalg.eigh(C)
    w = V @ ((V.T @ (Y @ dy)) / d)  # (N,)
    T = (V * (np.sqrt(N - 1.0) / np.sqrt(d))) @ V.T  # (N, N)
    T += w  # row r of (w + T) gives member r: adds w to every row
    # mu + T @ A by column blocks of E: each block's mean, anomalies and product
    # are computed while the block is in cache, so E is read from memory once and
    # the (N, n) anomalies are never stored whole.  Every column goes through the
    # same operations as the unblocked formula: the result is bitwise identical
    # when n fits in one block (n <= 2621 for N = 100), and with several blocks
    # the BLAS may round a product differently (measured: <= 4e-15 absolute).
    out = np.empty((N, n), dtype=np.result_type(E.dtype, T.dtype))
    step = max(256, _ETKF_BLOCK_BYTES // (8 * N))
    if n <= step:
        mu = E.mean(axis=0)
        np.matmul(T, E - mu, out=out)
        out += mu
        return out
    # The blocks' work arrays are allocated once and are contiguous: a strided
    # ``out=`` slice would make matmul compute into a temporary and copy.
    A = np.empty((N, step), dtype=out.dtype)
    ob = np.empty((N, step), dtype=out.dtype)
    mub = np.empty(step, dtype=out.dtype)
    for j in range(0, n, step):
        k = min(n, j + step) - j
        Eb = E[:, j:j + k]
        np.mean(Eb, axis=0, out=mub[:k])
        np.subtract(Eb, mub[:k], out=A[:, :k])
        np.matmul(T, A[:, :k], out=ob[:, :k])
        np.add(ob[:, :k], mub[:k], out=out[:, j:j + k])
    return out


def denkf_analysis(E, HE, y, R: Covariance) -> np.ndarray:
    """Deterministic EnKF (Sakov & Oke 2008a): the mean gets the Kalman update,
    anomalies get half the gain, ``A_a = A - K H A / 2``.

    Parameters
    ----------
    E, HE, y, R
        As in :func:`enkf_analysis`.

    Returns
    -------
    ndarray (N, n)
        Analysis members ``mu + K dy + (I - K H / 2) A``.

    Examples
    --------
    >>> from filters.covariance import as_covariance
    >>> E = np.random.default_rng(0).standard_normal((200, 2)) + [1.0, 0.0]
    >>> Ea = denkf_analysis(E, E[:, :1], np.array([0.0]), as_covariance(1.0, 1))
    >>> Ea.mean(axis=0).round(2).tolist(), Ea.var(axis=0, ddof=1).round(2).tolist()
    ([0.46, 0.0], [0.55, 1.02])
    """
    mu, A, Y, dy = _whitened(E, HE, y, R)
    G = _ens_space_gain(Y)  # (N, N)
    YtG = Y.T @ G  # (m, N)
    dmu = (dy @ YtG) @ A  # (n,)
    T = -0.5 * (Y @ YtG)  # (N, N)
    T.flat[:: T.shape[0] + 1] += 1.0
    return mu + dmu + T @ A


def ensrf_analysis(E, HE, y, R: Covariance, order: np.ndarray | None = None) -> np.ndarray:
    """Serial ensemble square-root filter (Whitaker & Hamill 2002).

    Observations are whitened by ``R^{-1/2}`` (so correlated errors are allowed)
    and then assimilated one at a time in ``order`` (default: as given).

    Parameters
    ----------
    E, HE, y, R
        As in :func:`enkf_analysis`.
    order : ndarray of int of shape (m,), optional
        Order in which the (whitened) observations are assimilated.

    Returns
    -------
    ndarray (N, n)
        Analysis members; mean and covariance equal the Kalman update's with
        the ensemble covariance.

    Examples
    --------
    Both components observed, one after the other in either order: the same
    mean and covariance.

    >>> from filters.covariance import as_covariance
    >>> E = np.random.default_rng(0).standard_normal((200, 2)) + [1.0, 0.0]
    >>> R = as_covariance(1.0, 2)
    >>> Ea = ensrf_analysis(E, E, np.zeros(2), R)
    >>> Eb = ensrf_analysis(E, E, np.zeros(2), R, order=np.array([1, 0]))
    >>> Ea.mean(axis=0).round(2).tolist(), np.allclose(np.cov(Ea.T), np.cov(Eb.T))
    ([0.46, 0.0], True)
    """
    mu, A, Y, dy = _whitened(E, HE, y, R)
    if order is None:
        order = np.arange(y.shape[0])
    return _kernels._ensrf_serial(mu, np.ascontiguousarray(A), np.ascontiguousarray(Y), dy,
                                  np.asarray(order, dtype=np.int64))


def gaspari_cohn(r) -> np.ndarray:
    """Gaspari & Cohn (1999, eq. 4.10) fifth-order taper at scaled distance ``r``.

    1 at ``r = 0``, 0 for ``r >= 2``.

    Parameters
    ----------
    r : array_like
        Distance divided by the taper's half-width (the sign is ignored).

    Returns
    -------
    ndarray
        The taper coefficients, same shape as ``r``.

    Examples
    --------
    >>> gaspari_cohn([0.0, 1.0, 2.0]).round(4).tolist()
    [1.0, 0.2083, 0.0]
    """
    r = np.abs(np.asarray(r, dtype=float))
    return np.vectorize(_kernels._gaspari_cohn, otypes=[float])(r)


#: DAPPER's radius convention: the Gaspari-Cohn coefficient is exp(-1/2) at
#: ``distance == radius`` when the taper's half-width is ``radius * 1.82``.
GC_HALF_WIDTH_PER_RADIUS = 1.82


def taper_matrix(state_coords, obs_coords, radius: float, period=None) -> np.ndarray:
    """Gaspari-Cohn localisation coefficients between state and observation sites.

    Parameters
    ----------
    state_coords : array_like (n, D)
    obs_coords : array_like (m, D)
    radius : float
        Localisation radius, DAPPER's convention: the coefficient is about
        ``exp(-1/2)`` at this distance and 0 beyond ``2 * 1.82 * radius``.
    period : array_like (D,), optional
        Length of the periodic domain along each coordinate (0: not periodic).

    Returns
    -------
    ndarray (n, m)

    Examples
    --------
    >>> sites = np.arange(4.0)[:, None]  # a periodic ring of 4 sites
    >>> taper_matrix(sites, np.array([[0.0]]), radius=1.0, period=[4.0]).round(3).ravel().tolist()
    [1.0, 0.634, 0.145, 0.634]
    """
    xs = as_float_array(state_coords, "state_coords", ndim=2)
    ys = as_float_array(obs_coords, "obs_coords", ndim=2, shape=(None, xs.shape[1]))
    check_positive(radius, "radius")
    per = np.zeros(xs.shape[1]) if period is None else as_float_array(period, "period", shape=(xs.shape[1],))
    return _kernels._taper_matrix(xs, ys, per, radius * GC_HALF_WIDTH_PER_RADIUS)


def letkf_analysis(E, HE, y, R: Covariance, taper: np.ndarray) -> np.ndarray:
    """Local ETKF (Hunt et al. 2007) with R-localisation by ``taper`` (n, m).

    Each state component gets its own ETKF analysis using the observations
    whose taper coefficient is positive, with whitened anomalies and
    innovations multiplied by the square root of the coefficient (DAPPER's
    convention).  ``R`` must be diagonal.

    Parameters
    ----------
    E, HE, y, R
        As in :func:`enkf_analysis`; ``R`` diagonal.
    taper : ndarray (n, m)
        Localisation coefficients (:func:`taper_matrix`).

    Returns
    -------
    ndarray (N, n)
        Analysis members; with all coefficients 1 this is the global ETKF.

    Examples
    --------
    >>> from filters.covariance import as_covariance
    >>> E = np.random.default_rng(0).standard_normal((200, 2)) + [1.0, 0.0]
    >>> args = (E, E[:, :1], np.array([0.0]), as_covariance(1.0, 1))
    >>> bool(np.allclose(letkf_analysis(*args, taper=np.ones((2, 1))), etkf_analysis(*args)))
    True
    """
    if not R.is_diagonal:
        raise ValueError("R must be diagonal for the LETKF (localisation assumes independent "
                         "observation errors)")
    mu, A, Y, dy = _whitened(E, HE, y, R)
    args = (mu, np.ascontiguousarray(A), np.ascontiguousarray(Y), dy, np.ascontiguousarray(taper))
    # The local analyses are independent, so the thread count does not change the
    # result.  Small problems (e.g. Lorenz-96, 40 domains of ~30 obs) run on one
    # thread: the parallel region costs more than it saves, and on a loaded machine
    # its barrier waits for descheduled threads (measured: 0.4 ms a cycle on one
    # thread, 16 ms on two with another process busy).
    N, n = A.shape
    m_local = int(np.count_nonzero(taper[0] > 0.0)) if n else 0
    if n * (N**3 + N**2 * m_local) >= _LETKF_PARALLEL_FLOPS:
        return _kernels._letkf(*args)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return _kernels._letkf(*args)
    finally:
        numba.set_num_threads(threads)


#: Rough flop count (sum over local domains) above which the LETKF uses all threads.
_LETKF_PARALLEL_FLOPS = 2_000_000


@functools.lru_cache(maxsize=16)
def _ones_first_basis(N: int) -> np.ndarray:
    """Orthonormal (N, N) basis whose first column is ``ones / sqrt(N)``."""
    M = np.eye(N)
    M[:, 0] = 1.0
    Qm, _ = np.linalg.qr(M)
    return Qm * np.sign(Qm[0, 0])


def random_rotation(N: int, rng: np.random.Generator) -> np.ndarray:
    """Random orthogonal (N, N) matrix that maps the ones vector to itself.

    Left-multiplying anomalies by it keeps the ensemble mean and covariance
    (Sakov & Oke 2008b); the rotation is Haar-distributed on the orthogonal
    complement of the ones vector.

    Parameters
    ----------
    N : int
        Ensemble size.
    rng : numpy.random.Generator
        Draws the rotation.

    Returns
    -------
    ndarray (N, N)
        The orthogonal matrix.

    Examples
    --------
    >>> T = random_rotation(5, np.random.default_rng(0))
    >>> bool(np.allclose(T @ np.ones(5), np.ones(5))), bool(np.allclose(T @ T.T, np.eye(5)))
    (True, True)
    """
    V = _ones_first_basis(N)
    Z = rng.standard_normal((N - 1, N - 1))
    Qr, Rr = np.linalg.qr(Z)
    Qr = Qr * np.sign(np.diag(Rr))  # Haar measure (Mezzadri 2007)
    B = np.eye(N)
    B[1:, 1:] = Qr
    return V @ B @ V.T
